"""Old home of the pipeline, for code written before :mod:`condlab.pipeline`; remove once
nothing imports it (``grep -rn condlab.spectrum``)."""

from condlab.pipeline import (  # noqa: F401
    Progress,
    SpectrumReport,
    estimate,
    ggn_nullity_bound,
    loss_record,
    run_spectrum,
)
