"""Run every shipped compare config (quick and full size) and generate docs/reproductions.md
and docs/reproductions_summary.md from what this code prints.

    python scripts/reproduce.py                      # run what is missing, then write the docs
    python scripts/reproduce.py --sizes quick        # only the --quick runs (minutes)
    python scripts/reproduce.py --render-only        # write the docs from the runs already kept

Rows go to ``--runs`` (default ``runs/reproduce``), one CSV per (config, size), with a
``.key.json`` beside it: the run-relevant part of the config (everything but the lr grids, the
target, the criterion, the findings and the name) and each entry's hyperparameters. A later call
keeps the rows of every run whose key still matches (so widening an lr grid only runs the new
lrs, and a change of target or findings only re-renders) and runs the rest. Rows of a run cut
short are rerun from its start. The page records the commit that rendered it, whether the tree
had local changes, the commit each CSV's rows were first written at, torch/numpy versions, the
date and each run's CPU seconds (``time.process_time``; the machine is shared, so wall times are
not comparable and are not printed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from condlab.compare import load_config, report_from_rows  # noqa: E402
from condlab.compare.csvlog import CsvLog, read_rows  # noqa: E402
from condlab.compare.render import (  # noqa: E402
    SCALE_NOTE,
    edge_notes,
    findings_markdown,
    grid_rows,
    markdown_table,
    scale_dependent,
    summary_rows,
)
from condlab.compare.runner import plan, row_key, run_all  # noqa: E402

CONFIGS = ("b_linreg", "b_logreg", "a_decay", "a_norm", "c")
SIZES = ("quick", "full")
NOT_RUN_RELEVANT = ("optimizers", "findings", "target_loss", "criterion", "name")


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_key(cfg) -> dict:
    """What the rows of a run depend on, beyond (variant, optimizer label, lr, seed)."""
    d = cfg.to_dict()
    base = {k: v for k, v in d.items() if k not in NOT_RUN_RELEVANT}
    entries = {e.label: {"name": e.name, "basis": e.basis, "hparams": _plain(e.hparams)}
               for e in cfg.optimizers}
    return {"config": base, "entries": entries}


def _plain(x):
    return json.loads(json.dumps(x, default=str))


def _kept(old_rows: list[dict], old_key: dict, key: dict, cfg) -> list[dict]:
    """The old rows whose run is in the plan and was produced under the same key."""
    if old_key.get("config") != key["config"]:
        return []
    same = {lab for lab, e in key["entries"].items() if old_key["entries"].get(lab) == e}
    wanted = {s.key for s in plan(cfg)}
    return [r for r in old_rows if r["optimizer"] in same and row_key(r) in wanted]


def paths(runs: Path, name: str, size: str) -> tuple[Path, Path]:
    csv = runs / f"{name}-{size}.csv"
    return csv, csv.with_suffix(".key.json")


def run_config(name: str, size: str, runs: Path, log=print) -> dict:
    """Run (what is missing of) one config at one size; returns its record."""
    cfg = load_config(ROOT / "configs" / f"compare_{name}.yaml", quick=size == "quick")
    csv, side = paths(runs, name, size)
    key = run_key(cfg)
    old_rows, meta = [], {}
    if csv.exists() and side.exists():
        meta = json.loads(side.read_text())
        try:
            old_rows = read_rows(csv, repair=True)
        except Exception as e:  # a CSV of another column set: start over
            log(f"  {csv.name}: not reused ({e})")
            old_rows = []
        old_rows = _kept(old_rows, meta.get("key", {}), key, cfg)
    total = len(plan(cfg))
    done_keys = {row_key(r) for r in old_rows}
    log(f"{name} {size}: {total} runs, {len(done_keys)} with rows kept")
    tmp = csv.with_suffix(".tmp.csv")
    cpu = dict(meta.get("cpu_seconds", {}))
    t_run = [None, None]

    def on_event(kind: str, payload: dict) -> None:
        if kind != "run":
            return
        now = time.process_time()
        if t_run[0] is not None:
            cpu[t_run[0]] = cpu.get(t_run[0], 0.0) + now - t_run[1]
        spec = payload["spec"]
        t_run[0], t_run[1] = "|".join(map(str, spec.key)), now
        if payload["resumed"] == 0 or spec.key not in done_keys:
            log(f"  [{payload['index'] + 1}/{payload['total']}] {spec.describe()}")

    with CsvLog(tmp, append=False) as out:
        for r in old_rows:
            out.write(r)
        rows = run_all(cfg, existing=old_rows, emit=out.write, on_event=on_event)
    if t_run[0] is not None:
        cpu[t_run[0]] = cpu.get(t_run[0], 0.0) + time.process_time() - t_run[1]
    with CsvLog(tmp, append=False) as out:  # in plan order (kept rows were written first)
        for r in rows:
            out.write(r)
    tmp.replace(csv)
    wanted = {"|".join(map(str, s.key)) for s in plan(cfg)}
    record = {"key": key, "first_written_at": meta.get("first_written_at")
              if old_rows else _commit(), "written_at": _commit(),
              "cpu_seconds": {k: v for k, v in cpu.items() if k in wanted},
              "rows": len(rows), "runs": total}
    side.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def _commit() -> str:
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return git("rev-parse", "--short", "HEAD") + ("+local changes" if dirty else "")


# -- the pages ---------------------------------------------------------------------------------
PAPERS = {
    "b_linreg": "B (Liu et al. 2025), linear regression",
    "b_logreg": "B (Liu et al. 2025), logistic regression",
    "a_decay": "A (Ye 2024), Adam / Adam + L2 / AdamW / Adam-L1",
    "a_norm": "A (Ye 2024), input standardization and BatchNorm",
    "c": "C (Li, Lyu, Arora 2020), the intrinsic learning rate",
}
INTRO = {
    "b_linreg": """A linear model on Gaussian features with block covariance `(1 - e) 11^T + e I`
(blocks 8, 5, 3, `e = 0.05`; a reconstruction consistent with paper B's description, not its own
example), noise `sigma^2 = 0.01`, 20% held out. Quadrants: basis (identity, or the eigenvectors of
`G` at the start, per optimizer) x noise (full batch, or batches of 32: the two variants). Adam
(0.9, 0.999) against GN^-1 and GN^-1/2 (exact `diag(U^T G U)`, refreshed every 10 steps), each
without momentum (paper B's comparison) and with Adam's momentum (`+mom`, beta1 0.9: condlab's own
control, so that only the denominator differs). Every lr is tuned on a grid; a race whose racer is
best at a grid edge reads *inconclusive*.""",
    "b_logreg": """The same quadrants on 2-class logistic regression (label noise 0.5) with the
same block covariance; the softmax shift is a null space (`null_threshold`), so kappa is over the
positive part. The target is about 1% above the minimum training loss of each size's data
(computed by L-BFGS; the config says which).""",
    "a_decay": """Least squares (10 features, covariance kappa 100 in a random basis, mean 1), linear
model, full batch, `lam = 0.1`. `fixed_points` records, at every tracked step, the relative
distance of the weights to every candidate end point, each computed independently of the
optimizer (one Newton step on the quadratic; the lasso points by coordinate descent,
`condlab.train.lasso`): the L2 point `(H + lam I)^-1 H p*`, the P-weighted point
`(H + lam P)^-1 H p*` with the live `P`, the unregularized minimizer `p*`, the weighted lasso
with the live `P`, and the plain lasso at `lam` and at `lam^2`. A claimed end point must be
nearer than every control by the stated factor on every seed; where the claim and its control
are not told apart the verdict is *not distinguishable*. With the live `P` the P-weighted and
weighted-lasso points follow the iterate, so their distances alone restate that the update is
small: read them against `p*` and the `lam^2` lasso, and against how the distances move with
steps (first -> last tracked step).""",
    "a_norm": """A tanh MLP 16-8-1, regression on 1024 samples whose 16 features have mean 3 and
scales 0.25 to 2; variants raw / standardized inputs / BatchNorm after the hidden Linear (batch
statistics), each built from the same seed. Tracked: kappa of the GGN and of the head's block
(the "extended hidden-variable matrix"), at initialization and after the same training with the
lr tuned per variant. BatchNorm conditioning that block is paper A's claim; the other
statements are derived from it.""",
    "c": """A scale-invariant network (the first layer feeds a BatchNorm without affine training;
the head is frozen), SGD + weight decay over a grid of `(lr, wd)` on digits. Equal `lr * wd`
reaching the same effective lr is paper C's claim; the equilibrium scalings are derived from its
SDE (research.md).""",
}


def _report(runs: Path, name: str, size: str):
    cfg = load_config(ROOT / "configs" / f"compare_{name}.yaml", quick=size == "quick")
    csv, side = paths(runs, name, size)
    if not csv.exists() or not side.exists():
        return None, None
    meta = json.loads(side.read_text())
    rows = read_rows(csv)
    wanted = {s.key for s in plan(cfg)}
    if {row_key(r) for r in rows} != wanted or meta.get("key") != run_key(cfg):
        return None, meta  # not (all) run with this config
    return report_from_rows(cfg, rows), meta


def _cpu(meta: dict | None) -> str:
    return "-" if not meta else f"{sum(meta.get('cpu_seconds', {}).values()):.0f} s"


def write_docs(runs: Path, docs: Path, versions: dict) -> None:
    """docs/reproductions.md (every table) and docs/reproductions_summary.md (the verdicts)."""
    reports = {(n, s): _report(runs, n, s) for n in CONFIGS for s in SIZES}
    cpu_model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    head = [
        "<!-- generated by scripts/reproduce.py: do not edit by hand, rerun the script -->",
        "# Reproductions: `condlab compare` against papers A, B and C", "",
        f"Generated by `python scripts/reproduce.py` at commit `{versions['commit']}` on "
        f"{versions['date']} (torch {versions['torch']}, numpy {versions['numpy']}, Python "
        f"{versions['python']}, {cpu_model}, float64, one torch thread). Every table below is what "
        "this code prints for the shipped configs in `configs/compare_*.yaml`, recomputed from the "
        "runs' CSV rows; rows are reused across invocations only when everything they depend on "
        "is unchanged (the script's docstring). CPU seconds are `time.process_time` of the runs on "
        "a shared 2-core machine (wall times are not comparable there and are not given).", "",
        "Seeded data are the same bytes under every OpenBLAS kernel (`tests/test_same_bytes.py` "
        "hashes them under Prescott, Haswell and SkylakeX), so these numbers do not depend on the "
        "machine's BLAS.", "",
        "| config | paper | runs (full) | CPU (full) | runs (quick) | CPU (quick) | rows first written at |",
        "|---|---|---|---|---|---|---|",
    ]
    missing = []
    for n in CONFIGS:
        (rf, mf), (rq, mq) = reports[(n, "full")], reports[(n, "quick")]
        if rf is None:
            missing.append(f"{n} (full)")
        if rq is None:
            missing.append(f"{n} (quick)")
        written = mf.get("first_written_at", "-") if mf else "-"
        head.append(f"| `compare_{n}.yaml` | {PAPERS[n]} | {len(rf.runs) if rf else 'not run'} | "
                    f"{_cpu(mf) if rf else '-'} | {len(rq.runs) if rq else 'not run'} | "
                    f"{_cpu(mq) if rq else '-'} | {written} |")
    if missing:
        head += ["", "**Not generated at this commit** (no complete runs with the current config): "
                 + ", ".join(missing) + "."]
    head += ["", STATIC]
    body = []
    summary = ["<!-- generated by scripts/reproduce.py: do not edit by hand -->",
               "# Reproduction verdicts (summary)", "",
               f"From `scripts/reproduce.py` at commit `{versions['commit']}`, {versions['date']}; "
               "every table, margin and control is in [reproductions.md](reproductions.md). Verdicts: "
               "yes / no beyond the stated margin on every seed; *tie*, *not distinguishable* and "
               "*inconclusive* (a racer best at its lr grid's edge) otherwise; `-` reported only.",
               "", "| paper | finding | source | full size | quick size |", "|---|---|---|---|---|"]
    for n in CONFIGS:
        body += ["", f"## {PAPERS[n]}: `configs/compare_{n}.yaml`", "", INTRO[n], ""]
        for size in ("full", "quick"):
            rep, meta = reports[(n, size)]
            if rep is None:
                body += [f"### {size} size: not run with the current config", ""]
                continue
            flag = " (`--quick`)" if size == "quick" else ""
            body += [f"### {size.capitalize()} size{flag}: {len(rep.runs)} runs, "
                     f"{rep.config.steps} steps, seeds {list(rep.config.seeds)}", ""]
            cols, rows = summary_rows(rep)
            body += [markdown_table(cols, rows)]
            if any(scale_dependent(c) for c in rep.choices):
                body += [SCALE_NOTE + ".", ""]
            cols, rows = grid_rows(rep)
            if rows:
                body += [f"Learning-rate grids (criterion `{rep.config.criterion}`, median over "
                         "seeds; * chosen):", "", markdown_table(cols, rows)]
            notes = edge_notes(rep)
            body += [("Grid edges: " + "; ".join(notes) + ".") if notes else
                     "Grid edges: no tuned entry is best at an end of its grid.", ""]
            if rep.findings:
                body += ["Findings:", "", findings_markdown(rep)]
        full, quick = reports[(n, "full")][0], reports[(n, "quick")][0]
        by_claim = {_key(f.claim): f for f in (quick.findings if quick else [])}
        for f in (full.findings if full else (quick.findings if quick else [])):
            q = by_claim.get(_key(f.claim))
            summary.append(f"| {n.split('_')[0][0].upper()} | {_short(f.claim)} | {f.source} | "
                           f"{f.verdict if full else 'not run'} | {q.verdict if q else '-'} |")
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "reproductions.md").write_text("\n".join(head + body).rstrip() + "\n")
    (docs / "reproductions_summary.md").write_text("\n".join(summary) + "\n")
    print(f"wrote {docs / 'reproductions.md'} and {docs / 'reproductions_summary.md'}"
          + (f"; not run: {', '.join(missing)}" if missing else ""))


def _key(claim: str) -> str:
    """A claim with its numbers blanked: the same finding at both sizes (targets, steps differ)."""
    return re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", claim)


def _short(claim: str) -> str:
    """The claim without its paper prefix and its margin (the full page states both)."""
    text = claim.split(": ", 1)[1] if ": " in claim[:30] else claim
    text = re.sub(r"; by >= \d+ steps on every seed, else tie", "", text)
    text = re.sub(r" \(by >= \d+ steps on every seed, else tie\)", "", text)
    text = re.sub(r";? ?by [\d.]+x on every seed", "", text)
    text = re.sub(r",? nearer than each control by [\d.]+x on every seed", "", text)
    text = text.replace(" ()", "").replace("(; ", "(").replace("; )", ")")
    return text.replace("|", "\\|")


STATIC = """## How to read the tables

- `kappa(A)`: the condition number of the Hessian or GGN (`track.curvature`) of the training
  loss, over the positive part (eigenvalues within `null_threshold * ||A||` of 0 count as zero);
  `> bound` where float64 cannot resolve it. `kappa(P^-1/2 A P^-1/2)`: the same for the operator
  each optimizer's update sees, from its **live** diagonal `P` (Adam's `sqrt(v_hat) + eps`, GN's
  `diag(U^T G U) + eps`), coupled decay inside (`P^-1/2 (A + lam I) P^-1/2`: scale-free, `P` and
  `c P` give the same kappa), decoupled decay outside (`P^-1/2 A P^-1/2 + lam I`: **not**
  scale-free, marked §, never compared with another row). `max sharp/thr`: the largest
  `lambda_max(P^-1/2 A P^-1/2)` over the method's stability threshold. Steps: the first logged
  step at or below the target; a tuned lr (`*`) is the grid value with the fewest median steps.
- Verdicts (`condlab.compare.findings`): **yes** / **no** only beyond a margin stated in the claim,
  on every seed; a race within its margin is a **tie** (margin: two logged intervals); a race
  whose racer is best at an end of its lr grid is **inconclusive** ("best lr at the grid edge");
  a claim whose control comes as close is **not distinguishable**; `-` is reported without a
  direction. Each finding names its control: what would win were the claim false.
- Source: **paper claim** (in the paper's text as research.md summarizes it), **derived**
  (follows from the paper's framework, not read in its text), **condlab's own** (a control or a
  statement condlab adds)."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "reproduce")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma-separated subset of {', '.join(CONFIGS)}")
    ap.add_argument("--sizes", default=",".join(SIZES), help="quick, full or quick,full")
    ap.add_argument("--render-only", action="store_true", help="write the docs from kept rows")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [n for n in names if n not in CONFIGS] + [s for s in sizes if s not in SIZES]
    if bad:
        print(f"error: unknown {', '.join(bad)}; configs are {', '.join(CONFIGS)}, sizes "
              f"{', '.join(SIZES)}", file=sys.stderr)
        return 2
    args.runs.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if not args.render_only:
        for size in sizes:
            for name in names:
                run_config(name, size, args.runs)
                sys.stdout.flush()
    write_docs(args.runs, args.docs, versions={
        "commit": _commit(), "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
