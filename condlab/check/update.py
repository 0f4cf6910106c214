"""``condlab check --update``: write new stored values into the baseline's own text.

PyYAML drops comments when it dumps, so the file is edited as text: ``yaml.compose`` gives the
node of every guard's ``value`` with its character span, and the new number replaces exactly
that span. A guard without ``value`` gets a ``value:`` line after its ``metric:`` line (or
``, value: X`` inside a flow mapping). Comments, ordering, tolerances and formatting elsewhere
are untouched; the result is re-parsed and compared before it is written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from condlab.check.run import CheckRun
from condlab.errors import CondlabError

Key = tuple[int, int]  # (check index, guard index)
NOT_STORED = ("missing", "unconverged", "error")  # verdicts whose number is not written


def yaml_number(x: float) -> str:
    """``x`` as a YAML 1.1 float that reads back exactly (``1e-05`` is a string to PyYAML)."""
    if isinstance(x, int):
        return str(x)
    text = repr(float(x))
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exp = text.split("e")
        text = f"{mantissa}.0e{exp}"
    return text


def new_values(run: CheckRun) -> dict[Key, float]:
    """The measured value of every guard that has a trustworthy one (not ``NOT_STORED``)."""
    out = {}
    for c in run.checks:
        for g in c.guards:
            if g.verdict.verdict not in NOT_STORED and g.new is not None and math.isfinite(g.new):
                new = int(g.new) if g.guard.metric == "nullity" else g.new
                out[(c.check.index, g.guard.index)] = new
    return out


def _get(node: MappingNode, key: str) -> tuple[ScalarNode, Node] | None:
    for k, v in node.value:
        if isinstance(k, ScalarNode) and k.value == key:
            return k, v
    return None


def _guard_nodes(root: Node) -> dict[Key, MappingNode]:
    checks = _get(root, "checks") if isinstance(root, MappingNode) else None
    if checks is None or not isinstance(checks[1], SequenceNode):
        raise CondlabError("the baseline has no 'checks' list to update")
    out = {}
    for i, check in enumerate(checks[1].value):
        metrics = _get(check, "metrics") if isinstance(check, MappingNode) else None
        if metrics is None or not isinstance(metrics[1], SequenceNode):
            continue
        for j, guard in enumerate(metrics[1].value):
            if isinstance(guard, MappingNode):
                out[(i, j)] = guard
    return out


def splice_values(text: str, values: dict[Key, float]) -> str:
    """``text`` with the stored ``value`` of each guard ``(i, j)`` in ``values`` replaced."""
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement) on ``text``
    nodes = _guard_nodes(yaml.compose(text, Loader=yaml.SafeLoader))
    for key, x in values.items():
        guard = nodes.get(key)
        if guard is None:
            raise CondlabError(f"metric #{key[1] + 1} of check #{key[0] + 1} is not in the file")
        number = yaml_number(x)
        found = _get(guard, "value")
        if found is not None:
            node = found[1]
            edits.append((node.start_mark.index, node.end_mark.index, number))
            continue
        mkey, mval = _get(guard, "metric")
        if guard.flow_style:
            edits.append((mval.end_mark.index, mval.end_mark.index, f", value: {number}"))
        else:
            eol = text.find("\n", mval.end_mark.index)
            eol = len(text) if eol < 0 else eol
            indent = " " * mkey.start_mark.column
            edits.append((eol, eol, f"\n{indent}value: {number}"))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def update_baseline(run: CheckRun) -> int:
    """Write the measured values of ``run`` into its baseline file; returns how many.

    Raises CondlabError if the file changed since it was read (edit, then run again).
    """
    from condlab.load.checkpoint import atomic_write_text

    path: Path = run.baseline.path
    if path.read_text(encoding="utf-8") != run.baseline.text:
        raise CondlabError(f"'{path}' changed while condlab measured; run the update again")
    values = new_values(run)
    text = splice_values(run.baseline.text, values)
    data = yaml.safe_load(text)
    for (i, j), x in values.items():
        if data["checks"][i]["metrics"][j].get("value") != x:  # a bug guard, not a user error
            raise CondlabError(f"updating '{path}' failed at check #{i + 1}, metric #{j + 1}; file unchanged")
    atomic_write_text(path, text)
    return len(values)
