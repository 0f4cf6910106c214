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
}
TASKS = ("top1", "trace")
TOOLS = ("condlab", "eigenthings")
TOL, PROBES = 1e-3, 30
BLOCK = 1  # one eigenvalue: single-vector Lanczos (the default block of 8 spends 8 products a step)


# -- the problem -----------------------------------------------------------------------------------
def build(name: str, sequences: int, seed: int = 0):
    """(model, token ids [sequences, SEQ_LEN + 1]) for ``name``, seeded."""
    import transformers

    transformers.logging.set_verbosity_error()
    cfg = transformers.GPT2Config(**MODELS[name], n_positions=SEQ_LEN + 1, use_cache=False,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    model = model.float().eval()
    V = cfg.vocab_size
    g = torch.Generator().manual_seed(seed)
    # a random Markov chain: each token has 8 likely successors, so the data has structure
    succ = torch.randint(0, V, (V, 8), generator=g)
    ids = torch.empty(sequences, SEQ_LEN + 1, dtype=torch.long)
    ids[:, 0] = torch.randint(0, V, (sequences,), generator=g)
    for t in range(1, SEQ_LEN + 1):
        pick = torch.randint(0, 8, (sequences,), generator=g)
        ids[:, t] = succ[ids[:, t - 1], pick]
    return model, ids


def condlab_batches(ids: torch.Tensor, batch: int) -> list:
    """``({"input_ids"}, next tokens)`` with the last position ignored: 63 predictions per row,
    the positions the model's own shifted loss predicts."""
    x = ids[:, :SEQ_LEN]
    y = torch.cat([ids[:, 1:SEQ_LEN], torch.full((len(ids), 1), -100)], dim=1)
    return [({"input_ids": xb}, yb) for xb, yb in zip(x.split(batch), y.split(batch))]


def hf_batches(ids: torch.Tensor, batch: int) -> list:
    x = ids[:, :SEQ_LEN]
    return [{"input_ids": xb, "labels": xb} for xb in x.split(batch)]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def gradient_seconds(model, batches: list) -> float:
    """CPU seconds of one gradient of the mean loss (plain autograd, all batches)."""
    params = [p for p in model.parameters()]

    def grad():
        total = 0.0
        for b in batches:
            loss = model(**b).loss * (len(b["input_ids"]) / sum(len(c["input_ids"]) for c in batches))
            gs = torch.autograd.grad(loss, params)
            total += float(gs[0].sum())
        return total

    grad()  # warm
    return timed(grad, torch.device("cpu"))[1]


# -- one cell --------------------------------------------------------------------------------------
def run_condlab(model, ids, task: str, batch: int, product_block: int = 16) -> dict:
    def go():
        problem = condlab.Problem(model, condlab_batches(ids, batch), "sequence-cross-entropy",
                                  dtype=torch.float32)
        H = condlab.HessianOperator(problem, block_size=product_block)
        if task == "top1":
            s = condlab.EstimatorSettings(top=1, bottom=0, tol=TOL, block_size=BLOCK)
        else:
            s = condlab.EstimatorSettings(top=0, bottom=0, trace=True, trace_method="hutchinson",
                                          probes=PROBES)
        return condlab.measure(H, s).result

    r, cpu, wall = timed(go, torch.device("cpu"))
    out = {"hvps": r.hvp_count, "cpu_s": cpu, "wall_s": wall}
    if task == "top1":
        out.update(value=r.eigenvalues_top[0], converged=bool(r.converged_top[0]))
    else:
        out.update(value=r.trace, stderr=r.trace_stderr)
    return out


def run_eigenthings(model, ids, task: str, batch: int, steps: int) -> dict:
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


def cell(spec: str, sequences: int, batch: int, steps: int, product_block: int = 16) -> dict:
    name, tool, task = spec.split(":")
    model, ids = build(name, sequences)
    for p in model.parameters():
        p.requires_grad_(True)
    rss0 = peak_rss_mib()
    if tool == "condlab":
        out = run_condlab(model, ids, task, batch, product_block)
    else:
        out = run_eigenthings(model, ids, task, batch, steps)
    out["peak_mib"] = peak_rss_mib() - rss0
    out["grad_cpu_s"] = gradient_seconds(model, hf_batches(ids, batch))
    out["hvp_per_grad"] = out["cpu_s"] / max(out["hvps"], 1) / out["grad_cpu_s"]
    n_params = sum(p.numel() for p in model.parameters())
    return {"model": name, "tool": tool, "task": task, "n_params": n_params,
            "sequences": sequences, "product_block": product_block, **out}


# -- the driver ------------------------------------------------------------------------------------
def run_cell(args, spec: str, steps: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--cell", spec, "--sequences", str(args.sequences), "--batch",
           str(args.batch), "--steps", str(steps), "--product-block", str(args.product_block)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"cell {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


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
        print(json.dumps(cell(args.cell, args.sequences, args.batch, args.steps,
                              args.product_block)))
        return 0
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
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
