"""``condlab check``: re-measure named spectrum checks and compare them with stored values.

The pipeline, one module each: :mod:`~condlab.check.schema` holds the baseline's types and
:mod:`~condlab.check.load` reads and validates the file; :mod:`~condlab.check.run` measures every check with ``run_spectrum`` and judges its guards
by the rules of :mod:`~condlab.check.verdict`; :mod:`~condlab.check.render` turns the run into
tables, JSON and JUnit XML; :mod:`~condlab.check.update` writes new stored values into the file
(``--update``) without touching comments or tolerances. docs/ci.md is the user's guide.
"""

from condlab.check.load import load_baseline, parse_baseline
from condlab.check.render import check_table, json_document, junit_xml, rows, summary
from condlab.check.run import CheckResult, CheckRun, GuardResult, judge_check, run_checks
from condlab.check.schema import Baseline, Check, Guard, Ref, Tolerance
from condlab.check.update import splice_values, update_baseline, yaml_number
from condlab.check.verdict import Verdict, change, change_text, judge

__all__ = [
    "Baseline",
    "Check",
    "CheckResult",
    "CheckRun",
    "Guard",
    "GuardResult",
    "Ref",
    "Tolerance",
    "Verdict",
    "change",
    "change_text",
    "check_table",
    "json_document",
    "judge",
    "judge_check",
    "junit_xml",
    "load_baseline",
    "parse_baseline",
    "rows",
    "run_checks",
    "splice_values",
    "summary",
    "update_baseline",
    "yaml_number",
]
