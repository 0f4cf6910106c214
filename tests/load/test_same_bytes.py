"""Seeded data are the same bytes under every OpenBLAS kernel and thread count.

numpy's OpenBLAS picks a kernel per CPU (``OPENBLAS_CORETYPE`` forces one). Kernels sum in
different orders and LAPACK returns different eigenvectors for repeated eigenvalues, so data
built with ``@``, ``qr`` or ``eigh`` differ between machines (the block covariance of paper B's
configs gave other X and other labels under Prescott, Haswell and SkylakeX, and the b_logreg
reproduction failed on two of the three). Each check runs in a subprocess per kernel and
compares SHA-256 hashes of the bytes: every shipped compare config's data (both sizes, split and
standardized as compare does), initial weights, mini-batch order and trace probes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# kernels this x86-64 CPU can run (all need at most AVX-512; the test runs where the flags allow)
KERNELS = ("Prescott", "Haswell", "SkylakeX")

HASHES = r"""
import hashlib, json, sys
from pathlib import Path
import numpy as np, torch
from condlab.compare import load_config
from condlab.compare.setup import DTYPES, Setup, load_data
from condlab.estimators._matmat import make_generator, random_probes
from condlab.load.data import load_dataset

def h(*arrays):
    m = hashlib.sha256()
    for a in arrays:
        m.update(np.ascontiguousarray(a.detach().cpu().numpy() if torch.is_tensor(a) else a).tobytes())
    return m.hexdigest()[:16]

out = {}
for spec in ("logreg:n=1024,d=16,blocks=[8,5,3],e=0.05,classes=2,noise=0.5",
             "linreg:n=300,d=6,eigs=[1,1,1,0.1,0.1,0.01],rotate=true,exact=true,scale=[1,2,1,2,1,2]"):
    ds = load_dataset(spec)
    out[spec] = h(ds.X, ds.y)
for path in sorted(Path(sys.argv[1]).glob("compare_*.yaml")):
    for quick in (True, False):
        cfg = load_config(path, quick=quick)
        for v in cfg.variants:
            problem = cfg.problem(v)
            data = load_data(problem, DTYPES[cfg.dtype])
            key = f"{path.stem}/{'quick' if quick else 'full'}/{v.label}"
            parts = [data.train.X, data.train.y]
            if data.test is not None:
                parts += [data.test.X, data.test.y]
            out[key + "/data"] = h(*parts)
            for seed in cfg.seeds:
                s = Setup(problem, data, seed, DTYPES[cfg.dtype], cfg.track)
                batches = s.batches()
                first = [next(batches) for _ in range(3)]
                out[f"{key}/{seed}/init+batches"] = h(s.theta0, *[x for b in first for x in b])
                probes = random_probes(s.theta0.numel(), 4, make_generator(None, seed), like=s.theta0)
                out[f"{key}/{seed}/probes"] = h(probes)
print(json.dumps(out))
"""


def _env(kernel: str, threads: int) -> dict:
    env = {**os.environ, "OPENBLAS_CORETYPE": kernel, "OPENBLAS_NUM_THREADS": str(threads),
           "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    return env


def _hashes(kernel: str, threads: int = 1) -> dict:
    done = subprocess.run([sys.executable, "-c", HASHES, str(ROOT / "configs")], env=_env(kernel, threads),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cpu_runs_all_kernels() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return all(f in flags for f in ("avx2", "fma", "avx512f", "avx512dq", "avx512bw"))


needs_avx512 = pytest.mark.skipif(not _cpu_runs_all_kernels(),
                                  reason="this CPU cannot run the SkylakeX (AVX-512) kernel")


@pytest.mark.slow
@needs_avx512
def test_seeded_data_are_the_same_bytes_under_three_kernels_and_two_thread_counts():
    runs = {k: _hashes(k) for k in KERNELS}
    runs["SkylakeX, 2 threads"] = _hashes("SkylakeX", threads=2)
    first = runs[KERNELS[0]]
    assert len(first) > 20
    for name, got in runs.items():
        differ = sorted(k for k in first if got.get(k) != first[k])
        assert not differ, f"{name} differs from {KERNELS[0]} in {differ}"


@needs_avx512
def test_the_kernels_differ_in_blas_itself():
    """The control: numpy's BLAS-backed ``eigh`` of a block covariance does give other
    eigenvectors (or at least other bytes) under these kernels, so the test above can fail."""
    code = ("import hashlib, numpy as np; d=16; S=np.zeros((d,d)); i=0\n"
            "for b in (8,5,3):\n S[i:i+b,i:i+b]=0.95*np.ones((b,b))+0.05*np.eye(b); i+=b\n"
            "w,V=np.linalg.eigh(S); Z=np.random.default_rng(0).standard_normal((64,d))\n"
            "print(hashlib.sha256((Z@(V*np.sqrt(w)).T).tobytes()).hexdigest())")
    outs = set()
    for k in KERNELS:
        done = subprocess.run([sys.executable, "-c", code], env=_env(k, 1), capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        outs.add(done.stdout.strip())
    assert len(outs) > 1


@pytest.mark.slow
@needs_avx512
@pytest.mark.parametrize("kernel", KERNELS)
def test_paper_b_reproduction_passes_under_each_kernel(kernel):
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         str(ROOT / "tests" / "compare" / "test_reproductions.py"), "-k", "test_paper_b_quadrants and b_logreg"],
        env=_env(kernel, 1), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:]
