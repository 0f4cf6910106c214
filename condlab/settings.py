"""The settings measured beside the baseline: preconditioners (issue 3) and normalizations
(issue 4). Each yields ``(setting name, operator or problem, extra record fields)``."""

from __future__ import annotations


def preconditioned_settings(cfg, problem, A, baseline):
    return iter(())


def normalized_settings(cfg, loaded):
    return iter(())
