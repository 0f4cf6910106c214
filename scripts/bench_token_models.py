"""Benchmark condlab on token models: a tiny GPT-2 and a ~10M-parameter GPT-2, against
hessian-eigenthings' Hugging Face path.

Models (Hugging Face ``GPT2LMHeadModel`` built from a config here, eager attention, no download,
float32, at their seeded initialization -- nothing is trained):

- ``gpt2-tiny``: 2 layers, width 32, 2 heads, vocabulary 100 (the CI test's model), 30,752 parameters;
- ``gpt2-10m``: 6 layers, width 320, 5 heads, vocabulary 8,192, tied head, 10,040,640 parameters.

Data: ``--sequences`` token sequences of length 64 (default 256) drawn from a seeded random
Markov chain over the vocabulary, in batches of ``--batch`` sequences. The loss is the mean
next-token cross-entropy over the 63 predicted positions of each sequence, the same function
for both tools: condlab gets ``input_ids`` and targets shifted by one with the last position
ignored (``sequence-cross-entropy``, ignore index -100); hessian-eigenthings gets
``{"input_ids", "labels"}`` batches and ``hf_lm_loss`` (the model's own shifted loss).

Tasks: ``top1`` (largest Hessian eigenvalue, tol 1e-3) and ``trace`` (Hutchinson, 30 Rademacher
probes). condlab runs ``condlab.measure`` with single-vector Lanczos (``block_size=1``: one
eigenvalue; its default block of 8 spends 8 products a step) and its stopping rule on the true
residual. hessian-eigenthings' ``lanczos`` has no stopping rule of its own: it
is given as many Lanczos steps as condlab spent products on the same model (so both see the same
number of products) and its answer is compared with condlab's; its trace is ``hutchinson`` with
30 samples.

Each (model, tool, task) cell runs in a fresh process (one torch thread unless ``--threads``),
so its peak memory is its own: the growth of the peak resident set size (``getrusage``
``ru_maxrss``) from after the model and data are built to the end of the task. Reported per
cell: Hessian-vector products, CPU seconds (``time.process_time``) and wall seconds, CPU seconds
per product divided by the CPU seconds of one gradient of the same loss (plain autograd, timed in
the same process after the task), and the peak-memory growth.

    OMP_NUM_THREADS=1 python scripts/bench_token_models.py --quick    # tiny GPT-2 only (~1 min)
    OMP_NUM_THREADS=1 python scripts/bench_token_models.py            # both models

Writes ``OUT/bench_token_models.{md,json}`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peers import count_matvecs, timed, versions  # noqa: E402

import condlab  # noqa: E402

SEQ_LEN = 64
MODELS = {
    "gpt2-tiny": {"n_layer": 2, "n_embd": 32, "n_head": 2, "vocab_size": 100},
    "gpt2-10m": {"n_layer": 6, "n_embd": 320, "n_head": 5, "vocab_size": 8192},
    # issue 21's scale models: the 10M GPT-2 of its trade-off (4 x 32 tokens), GPT-2 small from
    # transformers' default GPT2Config (124,439,808 parameters, 4 x 64 tokens) and a 64M-parameter
    # embedding-bag classifier (256 samples of 8 tokens), measured at condlab's defaults
    "gpt2-10m-l4": {"n_layer": 4, "n_embd": 384, "n_head": 6, "vocab_size": 8192},
    "gpt2-small": {},
    "embbag-64m": {},
}
SCALE = {"gpt2-10m-l4": (4, 32), "gpt2-small": (4, 64), "embbag-64m": (256, 8)}  # (rows, tokens)
TASKS = ("top1", "trace")
TOOLS = ("condlab", "eigenthings", "power", "product")
TOL, PROBES = 1e-3, 30
SCALE_PROBES = 10  # issue 21: a 10-probe Hutchinson trace at scale
BLOCK = 1  # one eigenvalue: single-vector Lanczos (the default block of 8 spends 8 products a step)


# -- the problem -----------------------------------------------------------------------------------
def seq_len(name: str) -> int:
    return SCALE.get(name, (0, SEQ_LEN))[1]


class EmbeddingBag(torch.nn.Module):
    """``nn.Embedding(1_000_000, 64)`` averaged over a sample's tokens, then a linear head."""

    def __init__(self, vocab: int = 1_000_000, width: int = 64, classes: int = 10):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, width)
        self.head = torch.nn.Linear(width, classes)

    def forward(self, input_ids):
        return self.head(self.emb(input_ids).mean(dim=1))


def build(name: str, sequences: int, seed: int = 0):
    """(model, token ids [sequences, tokens + 1]) for ``name``, seeded; for ``embbag-64m`` the
    ids are ``[sequences, 8]`` and the last column is replaced by a class label in 0..9."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if name == "embbag-64m":
        model = EmbeddingBag().float().eval()
        ids = torch.randint(0, 1_000_000, (sequences, SCALE[name][1] + 1), generator=g)
        ids[:, -1] = torch.randint(0, 10, (sequences,), generator=g)
        return model, ids
    import transformers

    transformers.logging.set_verbosity_error()
    T = seq_len(name)
    extra = {} if name == "gpt2-small" else {"n_positions": T + 1}  # small: the default 1024
    cfg = transformers.GPT2Config(**MODELS[name], **extra, use_cache=False, bos_token_id=0,
                                  eos_token_id=0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    model = model.float().eval()
    V = cfg.vocab_size
    # a random Markov chain: each token has 8 likely successors, so the data has structure
    succ = torch.randint(0, V, (V, 8), generator=g)
    ids = torch.empty(sequences, T + 1, dtype=torch.long)
    ids[:, 0] = torch.randint(0, V, (sequences,), generator=g)
    for t in range(1, T + 1):
        pick = torch.randint(0, 8, (sequences,), generator=g)
        ids[:, t] = succ[ids[:, t - 1], pick]
    return model, ids


def condlab_batches(ids: torch.Tensor, batch: int) -> list:
    """``({"input_ids"}, next tokens)`` with the last position ignored: T - 1 predictions per
    row, the positions the model's own shifted loss predicts."""
    T = ids.shape[1] - 1
    x = ids[:, :T]
    y = torch.cat([ids[:, 1:T], torch.full((len(ids), 1), -100)], dim=1)
    return [({"input_ids": xb}, yb) for xb, yb in zip(x.split(batch), y.split(batch))]


def hf_batches(ids: torch.Tensor, batch: int) -> list:
    x = ids[:, : ids.shape[1] - 1]
    return [{"input_ids": xb, "labels": xb} for xb in x.split(batch)]


def problem_batches(name: str, ids: torch.Tensor, batch: int) -> tuple[list, str]:
    """condlab's batches and loss name for ``name``."""
    if name == "embbag-64m":
        return [(x[:, :-1], x[:, -1]) for x in ids.split(batch)], "cross-entropy"
    return condlab_batches(ids, batch), "sequence-cross-entropy"


def plain_loss(name: str, model, ids: torch.Tensor, batch: int):
    """The mean loss as plain autograd sees it (the model's own shifted loss for GPT-2)."""
    import torch.nn.functional as F

    if name == "embbag-64m":
        return F.cross_entropy(model(ids[:, :-1]), ids[:, -1])
    hf = hf_batches(ids, batch)
    return sum(model(**b).loss * (len(b["input_ids"]) / len(ids)) for b in hf)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def gradient_seconds(name: str, model, ids: torch.Tensor, batch: int) -> float:
    """CPU seconds of one gradient of the mean loss (plain autograd, all batches)."""
    params = [p for p in model.parameters()]

    def grad():
        gs = torch.autograd.grad(plain_loss(name, model, ids, batch), params)
        return float(gs[0].sum())

    grad()  # warm
    return timed(grad, torch.device("cpu"))[1]


# -- one cell --------------------------------------------------------------------------------------
def run_condlab(name, model, ids, task: str, batch: int, product_block: int | None = 16,
                max_basis: int | None = None) -> dict:
    """condlab.measure; at the scale models its defaults (block, basis, product block: the
    memory plan's), elsewhere single-vector Lanczos and ``product_block``."""
    scale = name in SCALE

    def go():
        batches, loss = problem_batches(name, ids, batch)
        # at scale the model is handed over as the CLI's own is (share_weights: its weights
        # become views of theta, one copy instead of two); elsewhere the library default
        problem = condlab.Problem(model, batches, loss, dtype=torch.float32, share_weights=scale)
        block = {} if product_block is None else {"block_size": product_block}
        H = condlab.HessianOperator(problem, **block)
        if task == "top1":
            s = condlab.EstimatorSettings(top=1, bottom=0, tol=TOL, max_basis=max_basis,
                                          **({} if scale else {"block_size": BLOCK}))
        else:
            s = condlab.EstimatorSettings(top=0, bottom=0, trace=True, trace_method="hutchinson",
                                          probes=SCALE_PROBES if scale else PROBES)
        return condlab.measure(H, s).result

    r, cpu, wall = timed(go, torch.device("cpu"))
    plan = r.details.get("memory_plan") or {}
    out = {"hvps": r.hvp_count, "cpu_s": cpu, "wall_s": wall, "memory_plan": plan}
    if task == "top1":
        out.update(value=r.eigenvalues_top[0], converged=bool(r.converged_top[0]),
                   residual=r.residuals_top[0],
                   max_basis=("2-pass" if plan.get("krylov") == "two-pass"
                              else plan.get("max_basis")),
                   block_size=r.details.get("block_size"))
    else:
        out.update(value=r.trace, stderr=r.trace_stderr)
    return out


def run_eigenthings(name, model, ids, task: str, batch: int, steps: int) -> dict:
    import hessian_eigenthings as he

    def go():
        op = he.HessianOperator(model, hf_batches(ids, batch), he.hf_lm_loss())
        count = count_matvecs(op)
        if task == "top1":
            r = he.lanczos(op, k=1, max_iter=steps, tol=TOL, which="LA", reorthogonalize=True,
                           seed=0)
            return count[0], {"value": float(r.eigenvalues[0]), "converged": bool(r.converged.all())}
        r = he.hutchinson(op, num_samples=PROBES, seed=0)
        return count[0], {"value": float(r.estimate)}

    (hvps, res), cpu, wall = timed(go, torch.device("cpu"))
    return {"hvps": hvps, "cpu_s": cpu, "wall_s": wall, **res}


def run_power(name, model, ids, task: str, batch: int, steps: int) -> dict:
    """A plain double-backward power iteration (PyHessian's recipe): ``g`` with its graph kept,
    then ``H v = d(g . v)/d theta`` per step, on the parameter list. It converges to the
    eigenvalue of largest MAGNITUDE, which on an indefinite Hessian may be a negative one, not
    lambda_max (GPT-2 small at initialization: a negative one)."""
    if task != "top1":
        raise SystemExit("the power iteration only runs top1")
    params = [p for p in model.parameters()]
    g0 = torch.Generator().manual_seed(0)

    def go():
        c0 = time.process_time()
        grads = torch.autograd.grad(plain_loss(name, model, ids, batch), params, create_graph=True)
        build = time.process_time() - c0
        v = [torch.randn(p.shape, generator=g0) for p in params]
        norm = sum(float((x * x).sum()) for x in v) ** 0.5
        v = [x / norm for x in v]
        lam = 0.0
        for _ in range(steps):
            Hv = torch.autograd.grad(grads, params, v, retain_graph=True)
            lam = sum(float((a * b).sum()) for a, b in zip(v, Hv))
            norm = sum(float((x * x).sum()) for x in Hv) ** 0.5
            v = [x / norm for x in Hv]
            del Hv
        return lam, build

    (lam, build), cpu, wall = timed(go, torch.device("cpu"))
    return {"hvps": steps, "cpu_s": cpu, "wall_s": wall, "value": lam, "converged": False,
            "build_cpu_s": build, "cpu_per_hvp_after_build": (cpu - build) / max(steps, 1),
            "note": "max |lambda|, not lambda_max"}


def run_product_cost(name, model, ids, batch: int, reps: int = 5) -> dict:
    """CPU seconds of one Hessian-vector product, condlab's (``HessianOperator @ v`` through
    its kept graph) against a plain double backward (``d(g . v)`` on the parameter list,
    PyHessian's), both graphs built first (timed apart), then ``reps`` products of each,
    alternating so that both see the same machine load; the medians are compared."""
    import statistics

    params = [p for p in model.parameters()]
    g0 = torch.Generator().manual_seed(0)
    v = [torch.randn(p.shape, generator=g0) for p in params]
    c0 = time.process_time()
    grads = torch.autograd.grad(plain_loss(name, model, ids, batch), params, create_graph=True)
    plain_build = time.process_time() - c0
    batches, loss = problem_batches(name, ids, batch)
    H = condlab.HessianOperator(condlab.Problem(model, batches, loss, dtype=torch.float32))
    x = torch.cat([t.reshape(-1) for t in v])[:, None]
    c0 = time.process_time()
    H @ x  # builds the graph and takes the first product
    first = time.process_time() - c0
    plain, ours = [], []
    for _ in range(reps):
        c0 = time.process_time()
        Hv = torch.autograd.grad(grads, params, v, retain_graph=True)
        plain.append(time.process_time() - c0)
        del Hv
        c0 = time.process_time()
        y = H @ x
        ours.append(time.process_time() - c0)
        del y
    mp, mo = statistics.median(plain), statistics.median(ours)
    return {"hvps": 2 * reps + 1, "cpu_s": sum(plain) + sum(ours) + first, "wall_s": 0.0,
            "plain_build_cpu_s": plain_build, "plain_cpu_per_hvp": mp,
            "condlab_first_cpu_s": first, "condlab_cpu_per_hvp": mo,
            "ratio": mo / mp, "plain_all": plain, "condlab_all": ours}


def cell(spec: str, sequences: int, batch: int, steps: int, product_block: int | None = 16) -> dict:
    name, tool, task, *rest = spec.split(":")
    max_basis = int(rest[0]) if rest else None
    if name in SCALE:
        sequences, batch = SCALE[name][0], SCALE[name][0]
    model, ids = build(name, sequences)
    for p in model.parameters():
        p.requires_grad_(True)
    rss0 = peak_rss_mib()
    if tool == "condlab":
        out = run_condlab(name, model, ids, task, batch, product_block, max_basis)
    elif tool == "power":
        out = run_power(name, model, ids, task, batch, steps or 20)
    elif tool == "product":
        out = run_product_cost(name, model, ids, batch)
    else:
        out = run_eigenthings(name, model, ids, task, batch, steps)
    out["peak_mib"] = peak_rss_mib() - rss0
    out["rss_mib"] = peak_rss_mib()  # the whole process's peak resident set
    out["model_mib"] = rss0
    out["cpu_per_hvp"] = out["cpu_s"] / max(out["hvps"], 1)
    out["grad_cpu_s"] = gradient_seconds(name, model, ids, batch)
    out["hvp_per_grad"] = out["cpu_per_hvp"] / out["grad_cpu_s"]
    n_params = sum(p.numel() for p in model.parameters())
    return {"model": name, "tool": tool, "task": task, "n_params": n_params,
            "sequences": sequences, "product_block": product_block, "status": "ok", **out}


# -- the driver ------------------------------------------------------------------------------------
def run_cell(args, spec: str, steps: int = 0, as_limit: int | None = None) -> dict:
    """One cell in a fresh process (under ``prlimit --as`` when ``as_limit`` is given); a scale
    cell that fails comes back as a row with its last error line, the others raise."""
    cmd = [sys.executable, __file__, "--cell", spec, "--sequences", str(args.sequences), "--batch",
           str(args.batch), "--steps", str(steps), "--product-block", str(args.product_block)]
    if as_limit:
        cmd = ["prlimit", f"--as={int(as_limit)}", *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        if spec.split(":")[0] in SCALE:
            last = [x for x in proc.stderr.strip().splitlines() if x.strip()][-1:] or ["?"]
            name, tool, task, *_ = spec.split(":")
            return {"model": name, "tool": tool, "task": task, "status": f"failed: {last[0][:300]}",
                    "hvps": 0, "cpu_s": 0.0, "rss_mib": float("nan"), "spec": spec,
                    "as_limit": as_limit}
        raise RuntimeError(f"cell {spec} failed:\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**row, "spec": spec, "as_limit": as_limit}


# issue 21's scale runs: (cell, address-space limit); the 10M model's trade-off runs the basis
# the plan picks, the old default's 36 columns and the smallest (5)
SCALE_CELLS = (
    ("gpt2-small:power:top1", "small"), ("gpt2-small:condlab:top1", "small"),
    ("gpt2-small:condlab:trace", "small"), ("gpt2-small:eigenthings:top1", "small"),
    ("gpt2-small:product:cost", "small"),
    ("embbag-64m:power:top1", 6_000_000_000), ("embbag-64m:condlab:top1", 6_000_000_000),
    ("gpt2-10m-l4:power:top1", None), ("gpt2-10m-l4:condlab:top1", None),
    ("gpt2-10m-l4:condlab:top1:36", None), ("gpt2-10m-l4:condlab:top1:5", None),
)


def scale_markdown(rows: list[dict], info: dict) -> str:
    lines = [
        "| model | params | tool | task | basis | value | converged | HVPs | CPU s / HVP | "
        "peak RSS GiB | vs power | status |",
        "|---|---:|---|---|---:|---|---|---:|---:|---:|---:|---|",
    ]
    power = {r["model"]: r["rss_mib"] for r in rows if r["tool"] == "power" and r["status"] == "ok"}
    for r in rows:
        ok = r["status"] == "ok"
        v = f"{r['value']:.5g}" if ok and r.get("value") is not None else "–"
        if ok and r.get("stderr") is not None:
            v += f" ± {r['stderr']:.2g}"
        if ok and r["tool"] == "product":
            v = (f"{r['ratio']:.2f}x: {r['condlab_cpu_per_hvp']:.2f} s vs "
                 f"{r['plain_cpu_per_hvp']:.2f} s plain")
        conv = {True: "yes", False: "no"}.get(r.get("converged")) if r["task"] == "top1" else "–"
        if r["tool"] == "power":
            conv = "no rule (max abs)"
        ratio = r["rss_mib"] / power[r["model"]] if ok and r["model"] in power else float("nan")
        lines.append(
            f"| {r['model']} | {r.get('n_params', 0):,} | {r['tool']} | {r['task']} | "
            f"{r.get('max_basis') or '–'} | {v} | {conv} | {r['hvps']} | "
            f"{r['cpu_s'] / max(r['hvps'], 1):.2f} | {r['rss_mib'] / 1024:.2f} | {ratio:.2f} | "
            f"{r['status']}" + (f" (prlimit --as={r['as_limit']})" if r.get("as_limit") else "")
            + " |"
        )
    v = info["versions"]
    lines += ["", f"{info['threads']} thread(s), float32; commit {v.get('commit', '?')}, torch "
              f"{v['torch']}, hessian-eigenthings {v.get('hessian_eigenthings', '-')}; load average "
              f"before/after {info['load_before']} / {info['load_after']} (a shared machine)."]
    return "\n".join(lines) + "\n"


def run_scale(args, log) -> int:
    info = {"threads": args.threads, "load_before": ", ".join(f"{x:.2f}" for x in os.getloadavg())}
    rows: list[dict] = []
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for spec, limit in SCALE_CELLS:
        name, tool, task, *_ = spec.split(":")
        if args.models != list(MODELS) and name not in args.models:
            continue
        limit = args.small_as if limit == "small" else limit
        steps = (args.power_steps if tool == "power" else args.eigenthings_steps
                 if tool == "eigenthings" else 0)
        log(f"{spec} ...")
        row = run_cell(args, spec, steps, limit)
        rows.append(row)
        log(f"  {row['status']}: {row['hvps']} products, {row['cpu_s']:.1f} CPU s, "
            f"{row['rss_mib']:.0f} MiB")
        info["load_after"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        info["versions"] = versions()
        md = scale_markdown(rows, info)
        (args.out_dir / "bench_scale.md").write_text(md)
        (args.out_dir / "bench_scale.json").write_text(json.dumps({**info, "rows": rows}, indent=1))
    print(md)
    return 0


def markdown(rows: list[dict], info: dict) -> str:
    lines = [
        "| model | params | tool | task | value | HVPs | CPU s | wall s | HVP / gradient | peak MiB |",
        "|---|---:|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        v = f"{r['value']:.5g}"
        if r["task"] == "top1":
            v += "" if r.get("converged") else " (not converged)"
        elif "stderr" in r:
            v += f" ± {r['stderr']:.2g}"
        lines.append(
            f"| {r['model']} | {r['n_params']:,} | {r['tool']} | {r['task']} | {v} | {r['hvps']} | "
            f"{r['cpu_s']:.1f} | {r['wall_s']:.1f} | {r['hvp_per_grad']:.1f} | {r['peak_mib']:.0f} |"
        )
    v = info["versions"]
    lines.append("")
    lines.append(
        f"{info['sequences']} sequences x {SEQ_LEN} tokens, batches of {info['batch']}, float32, "
        f"{info['threads']} thread(s); commit {v.get('commit', '?')}, torch {v['torch']}, "
        f"hessian-eigenthings {v.get('hessian_eigenthings', '-')}, load average before/after "
        f"{info['load_before']} / {info['load_after']}."
    )
    return "\n".join(lines) + "\n"


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    csv = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    ap.add_argument("--models", type=csv, default=list(MODELS))
    ap.add_argument("--tools", type=csv, default=list(TOOLS))
    ap.add_argument("--tasks", type=csv, default=list(TASKS))
    ap.add_argument("--sequences", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32, help="sequences per batch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--product-block", type=int, default=16,
                    help="vectors per vmapped condlab product (its default 16; the 10M model's "
                    "trace needs less memory with fewer)")
    ap.add_argument("--quick", action="store_true", help="the tiny GPT-2 only, 64 sequences")
    ap.add_argument("--scale", action="store_true", help="issue 21's scale runs (GPT-2 small, the "
                    "64M embedding bag under prlimit --as=6e9, the 10M GPT-2's basis trade-off); "
                    "--models narrows them")
    ap.add_argument("--small-as", type=int, default=12_000_000_000,
                    help="address-space limit (bytes) of the GPT-2 small cells (prlimit --as)")
    ap.add_argument("--power-steps", type=int, default=20, help="power iteration steps")
    ap.add_argument("--eigenthings-steps", type=int, default=10,
                    help="hessian-eigenthings Lanczos steps in --scale (it keeps every step's "
                    "vector: about 0.5 GB a step on GPT-2 small, so 20 would pass the cap)")
    ap.add_argument("--out-dir", type=Path, default=Path("bench_out"))
    ap.add_argument("--cell", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.sequences = ["gpt2-tiny"], 64
    for what, got, allowed in (("model", args.models, MODELS), ("tool", args.tools, TOOLS),
                               ("task", args.tasks, TASKS)):
        bad = [g for g in got if g not in allowed]
        if bad:
            ap.error(f"unknown {what} {', '.join(bad)}; choose from {', '.join(allowed)}")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    warnings.filterwarnings("ignore")
    if args.cell:
        torch.set_num_threads(args.threads)
        if os.environ.get("CONDLAB_BENCH_LOG"):  # the two-pass Lanczos' progress on stderr
            import logging

            logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        print(json.dumps(cell(args.cell, args.sequences, args.batch, args.steps,
                              args.product_block)))
        return 0
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.scale:
        return run_scale(args, log)
    tools = list(args.tools)
    if "eigenthings" in tools:
        try:
            import hessian_eigenthings  # noqa: F401
        except ImportError as e:
            log(f"skipping eigenthings: {e} (pip install -e .[bench])")
            tools.remove("eigenthings")
    md = ""
    info = {"sequences": args.sequences, "batch": args.batch, "threads": args.threads,
            "load_before": ", ".join(f"{x:.2f}" for x in os.getloadavg())}
    rows: list[dict] = []
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        steps = {}
        for task in args.tasks:
            for tool in tools:
                if tool == "eigenthings" and task == "top1" and task not in steps:
                    steps[task] = 20  # no condlab run to match: its default is 2k
                log(f"{name} {tool} {task} ...")
                row = run_cell(args, f"{name}:{tool}:{task}", steps.get(task, 0))
                if tool == "condlab":
                    steps[task] = row["hvps"]
                rows.append(row)
                log(f"  {row['hvps']} products, {row['cpu_s']:.1f} CPU s, {row['peak_mib']:.0f} MiB")
                md = write(args, rows, info)  # after every cell: a long run keeps what it did
    print(md)
    return 0


def write(args, rows: list[dict], info: dict) -> str:
    info["load_after"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    info["versions"] = versions()
    md = markdown(rows, info)
    (args.out_dir / "bench_token_models.md").write_text(md)
    (args.out_dir / "bench_token_models.json").write_text(json.dumps({**info, "rows": rows}, indent=1))
    return md


if __name__ == "__main__":
    sys.exit(main())
