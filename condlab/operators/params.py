"""Old home of :mod:`condlab.params` (the flat parameter vector belongs to the problem, below
the operators); kept for code in flight."""

from condlab.params import ParamSpec, select_params  # noqa: F401
