"""Conditioning along a user's own training run: a sweep over its checkpoints
(:mod:`condlab.tracking.sweep`, ``condlab track``) and a hook for its training loop
(:class:`condlab.tracking.hook.Tracker`), both writing the rows of :mod:`condlab.tracking.rows`."""

from condlab.tracking.hook import Tracker
from condlab.tracking.rows import COLUMNS

__all__ = ["COLUMNS", "Tracker"]
