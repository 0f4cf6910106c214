"""Old names of the load stage, for branches written before :mod:`condlab.inputs`; remove once
nothing imports them (``grep -rn condlab.build``)."""

from condlab.inputs import Inputs as Loaded  # noqa: F401
from condlab.inputs import default_loss_for, set_threads, token_model_spec  # noqa: F401
from condlab.problem import make_problem  # noqa: F401
