r"""The memory plan: what a run needs against what the process may use, decided before work.

What the process may still allocate (:func:`available`) is the smallest of

- the device: free CUDA memory (``torch.cuda.mem_get_info`` plus what torch's allocator holds
  unused), or on the host ``MemAvailable`` of ``/proc/meminfo``;
- a container's cap: cgroup v2 ``memory.max - memory.current``, cgroup v1
  ``memory.limit_in_bytes - memory.usage_in_bytes`` (host runs only);
- ``ulimit -v`` (``RLIMIT_AS``) less the address space already mapped (``VmSize``);
- ``--memory-limit`` (bytes the process may hold in all) less what it holds now (``VmRSS``, or
  on a GPU the bytes torch has allocated there).

What a run needs (:func:`plan`), in bytes of one ``[P]`` vector ``v`` (the working dtype):

- products: the curvature operator's own estimate (``memory_profile``: the kept gradient
  graphs, measured as autograd saves them, and the temporaries of one product column); an
  operator without one is charged ``2 v`` per column;
- Lanczos: the basis ``V [P, m]`` (``m = max_basis``, in the basis dtype) plus the working
  block (``Q``, ``A Q`` and two Gram-Schmidt temporaries: ``4 b`` vectors) and, after the run,
  the Ritz vectors and their true-residual check (``4 (top + bottom)`` vectors);
- Hutchinson: a probe block and its product (``2`` vectors per probe in the block); Hutch++
  also keeps its sketch ``[P, probes / 3]``;
- SLQ: ``density_steps`` Lanczos vectors per probe run together.

The plan sizes what is free to size -- ``max_basis`` when not given: the default (at least
``4 (top + bottom) + 32`` columns, up to 256 within 1 GiB) but no more bytes than one product's
own footprint (kept graphs and a column's temporaries) or 1 GiB, whichever is larger, so a
large model's basis does not dwarf its product (GPT-2 small: 6 columns, not 36), at most what
fits and at least ``top + bottom + max(4, 2 b)`` -- the block ``b``
(never above the basis's room), the probe block and the SLQ block -- keeping a ``HEADROOM``
share free for the allocator and the loss's own temporaries. A run whose smallest form does
not fit is refused with one line naming what does not fit and the option that makes it fit
(:class:`MemoryRefused`, a usage error, raised before the first product).

Allocator errors met later anyway (another process took the memory) become one line with the
fix through :func:`guard`; no raw out-of-memory error reaches a user.
"""

from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import asdict, dataclass, field

import torch

from condlab.errors import CondlabError, UsageError

HEADROOM = 0.15  # share of the available memory the plan leaves free (allocator, loss temporaries)
DEFAULT_BASIS_BYTES = 2**30  # the default basis: up to 256 columns within 1 GiB ...
DEFAULT_BASIS_COLUMNS = 256
PRODUCTS_KEPT_BYTES = 2**28  # A V is kept beside V (true residuals without products) up to this
PRODUCTS_KEPT_MIN_COLUMNS = 32  # ... for a basis' first columns, at least this many of them
LEAN_BASIS = 8  # a default basis of at most this many columns: two-pass Lanczos instead
UNLIMITED = 2**60  # cgroup and rlimit values at or above this mean "no limit"
GiB = 2**30


class MemoryRefused(UsageError):
    """The run cannot fit the memory the process may use; the message names the fix."""


def fmt(n: float) -> str:
    """``n`` bytes for a person: ``1.23 GB`` (decimal units, as ``free`` and ``prlimit``)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


# -- what the process may use -------------------------------------------------------------------
def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _status_bytes(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmSize``) in bytes."""
    text = _read("/proc/self/status") or ""
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return None


def _meminfo_available() -> int | None:
    text = _read("/proc/meminfo") or ""
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def _cgroup_available() -> tuple[int, str] | None:
    """Bytes below this process's cgroup memory cap (v2, else v1), or None without a cap."""
    text = _read("/proc/self/cgroup") or ""
    found = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, path = parts
        if hier == "0" and controllers == "":  # v2 unified hierarchy
            for base in (f"/sys/fs/cgroup{path}", "/sys/fs/cgroup"):
                cap, used = _read(f"{base}/memory.max"), _read(f"{base}/memory.current")
                if cap is not None and used is not None:
                    if cap.strip() != "max" and int(cap) < UNLIMITED:
                        found.append((int(cap) - int(used), "cgroup v2 memory.max"))
                    break
        elif "memory" in controllers.split(","):  # v1
            for base in (f"/sys/fs/cgroup/memory{path}", "/sys/fs/cgroup/memory"):
                cap = _read(f"{base}/memory.limit_in_bytes")
                used = _read(f"{base}/memory.usage_in_bytes")
                if cap is not None and used is not None:
                    if int(cap) < UNLIMITED:
                        found.append((int(cap) - int(used), "cgroup v1 memory.limit_in_bytes"))
                    break
    return min(found) if found else None


def _rlimit_available() -> int | None:
    """Address space left under ``ulimit -v`` (``RLIMIT_AS``), or None without a limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft >= UNLIMITED:
        return None
    return soft - (_status_bytes("VmSize") or 0)


def _cuda_free(device: torch.device) -> int:
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def _held(device: torch.device) -> int:
    """Bytes the process holds now: on a GPU torch's allocation there, else the resident set."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    return _status_bytes("VmRSS") or 0


@dataclass(frozen=True)
class Budget:
    """Bytes the process may still allocate, and the cap that binds."""

    bytes: int
    source: str
    caps: dict = field(default_factory=dict)  # every cap found: source -> bytes left


def products_kept_columns(P: int, itemsize: int, device="cpu", basis: int = UNLIMITED,
                          free: int | None = None) -> int:
    """How many of a ``basis``-column Lanczos basis' products ``A V`` (``[P]`` each) a run keeps
    beside ``V``: those within ``PRODUCTS_KEPT_BYTES`` and a sixteenth of ``free`` (what the
    process may still allocate), the whole basis' or at least ``PRODUCTS_KEPT_MIN_COLUMNS``
    (a run stops past a few columns: fewer would be memory held for nothing), else none."""
    free = available(device).bytes if free is None else free
    cols = min(basis, min(PRODUCTS_KEPT_BYTES, free // 16) // max(1, P * itemsize))
    return cols if cols >= min(basis, PRODUCTS_KEPT_MIN_COLUMNS) else 0


def available(device="cpu", memory_limit: int | None = None) -> Budget:
    """The bytes the process may still allocate on ``device`` (see the module docstring)."""
    device = torch.device(device)
    caps: dict[str, int] = {}
    if device.type == "cuda":
        caps["free device memory"] = _cuda_free(device)
    else:
        mem = _meminfo_available()
        if mem is not None:
            caps["MemAvailable"] = mem
        cg = _cgroup_available()
        if cg is not None:
            caps[cg[1]] = cg[0]
        rl = _rlimit_available()
        if rl is not None:
            caps["RLIMIT_AS (ulimit -v)"] = rl
    if memory_limit is not None:
        caps["--memory-limit"] = int(memory_limit) - _held(device)
    if not caps:  # nothing readable (not Linux): a plan cannot be made, so nothing is capped
        return Budget(UNLIMITED, "unknown", {})
    source = min(caps, key=caps.get)
    return Budget(max(0, caps[source]), source, dict(caps))


def parse_bytes(text) -> int:
    """``"12G"``, ``"500MB"``, ``"6e9"`` or an int -> bytes (decimal units; ``GiB`` binary)."""
    if isinstance(text, (int, float)):
        return int(text)
    s = str(text).strip().lower().replace(" ", "")
    units = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "kb": 1e3, "mb": 1e6,
             "gb": 1e9, "tb": 1e12, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "b": 1}
    for unit, size in units.items():
        if s.endswith(unit):
            s, mult = s[: -len(unit)], size
            break
    else:
        mult = 1
    try:
        value = float(s) * mult
    except ValueError:
        raise UsageError(f"--memory-limit {text!r} is not a size; use e.g. 12G, 500MB or 6e9") \
            from None
    if not value > 0:
        raise UsageError(f"--memory-limit must be > 0, got {text!r}")
    return int(value)


# -- what the run needs --------------------------------------------------------------------------
@dataclass
class MemoryPlan:
    """The sizes a run uses and the bytes behind them (``details.memory_plan``)."""

    device: str
    available_bytes: int  # what the process may still allocate when the plan was made
    limited_by: str  # the cap that binds (MemAvailable, cgroup, RLIMIT_AS, --memory-limit, ...)
    vector_bytes: int  # one [P] vector in the working dtype
    graph_bytes: int  # kept gradient graphs still to be built (measured on batch 0) or 0
    graph_held_bytes: int  # kept graphs already built when the plan was made (batch 0's)
    product_bytes_per_vector: int  # temporaries of one product column
    product_block: int  # columns per product call
    max_basis: int | None = None  # Lanczos basis columns (None: no Lanczos)
    block_size: int | None = None  # Lanczos block b
    basis_bytes: int = 0
    products_kept_bytes: int = 0  # A V kept beside the basis for the true residuals
    default_basis: int | None = None  # what the default would be without a memory limit
    krylov: str | None = None  # 'basis' (thick-restarted block Lanczos) or 'two-pass' (no basis)
    probe_block: int | None = None  # trace probes per block
    density_block: int | None = None  # SLQ recurrences run together
    need_bytes: int = 0  # the planned peak beyond what the process held at planning
    notes: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """A few lines for ``--verbose``."""
        lines = [
            f"memory plan on {self.device}: {fmt(self.available_bytes)} available "
            f"(limited by {self.limited_by}); planned peak {fmt(self.need_bytes)} more",
            f"  one vector {fmt(self.vector_bytes)}; kept graphs {fmt(self.graph_held_bytes)} "
            f"built, {fmt(self.graph_bytes)} to come; "
            f"product {fmt(self.product_bytes_per_vector)} per vector, "
            f"{self.product_block} per call",
        ]
        if self.krylov == "two-pass":
            lines.append(f"  two-pass Lanczos (no basis: a {self.max_basis}-column basis would "
                         "be all that fits the no-hoarding rule)")
        elif self.max_basis is not None:
            lines.append(
                f"  Lanczos basis {self.max_basis} columns ({fmt(self.basis_bytes)}), block "
                f"{self.block_size}" + (f"; default would be {self.default_basis}"
                                        if self.default_basis != self.max_basis else ""))
        if self.probe_block is not None:
            lines.append(f"  trace probes {self.probe_block} per block")
        if self.density_block is not None:
            lines.append(f"  density: {self.density_block} recurrence(s) at once")
        lines += [f"  {n}" for n in self.notes]
        return "\n".join(lines)


def _profiled(A):
    """The operator (``A`` or one it wraps as ``.A``/``.op``/``.inner``) with a
    ``memory_profile() -> (graph bytes to come, bytes per product column, graph bytes held)``,
    or None."""
    for _ in range(16):
        if A is None or callable(getattr(A, "memory_profile", None)):
            return A
        inner = None
        for name in ("A", "op", "inner"):  # explicit: a dense tensor has no truth value
            inner = getattr(A, name, None)
            if inner is not None:
                break
        A = inner
    return None


def default_max_basis(P: int, nwant: int, b: int, itemsize: int) -> int:
    """The basis columns with no memory limit: ``4 (top + bottom) + 32`` or ``nwant + 8 b``,
    up to 256 within 1 GiB, at most ``P``."""
    by_memory = DEFAULT_BASIS_BYTES // max(1, P * itemsize)
    return min(P, max(4 * nwant + 32, nwant + 8 * b, min(DEFAULT_BASIS_COLUMNS, by_memory)))


def min_basis(P: int, nwant: int, b: int) -> int:
    """The smallest basis a thick-restarted block Lanczos runs with."""
    return min(P, nwant + max(4, 2 * b))


def plan(
    A,
    *,
    top: int = 0,
    bottom: int = 0,
    block_size: int | None = None,
    max_basis: int | None = None,
    basis_dtype: torch.dtype | None = None,
    basis_device=None,
    trace_probes: int = 0,
    trace_method: str = "hutchinson",
    density_probes: int = 0,
    density_steps: int = 0,
    memory_limit: int | None = None,
    budget: Budget | None = None,
) -> MemoryPlan:
    """Size the basis, the Lanczos block, the probe block and the SLQ block to fit, or refuse.

    ``A`` is the operator (its ``memory_profile()`` is used when it or an operator it wraps has
    one); ``budget`` replaces :func:`available` (tests use a fake one).
    """

    P = int(A.shape[0])
    device = torch.device(A.device)
    itemsize = torch.empty(0, dtype=A.dtype).element_size()
    vec = P * itemsize
    inner = _profiled(A)
    graph, per_vec, held = inner.memory_profile() if inner is not None else (0, 2 * vec, 0)
    product_block = max(1, int(getattr(inner, "block_size", 1) or 1))
    budget = budget or available(device, memory_limit)
    usable = int(budget.bytes * (1 - HEADROOM))
    result = MemoryPlan(
        device=str(device), available_bytes=budget.bytes, limited_by=budget.source,
        vector_bytes=vec, graph_bytes=int(graph), graph_held_bytes=int(held),
        product_bytes_per_vector=int(per_vec), product_block=product_block,
    )

    def room_after(fixed: float) -> float:
        return usable - graph - fixed

    fix_limit = ("raise --memory-limit" if budget.source == "--memory-limit" else
                 "free memory on the machine or raise its limit")

    def refuse(what: str, need: float, fix: str) -> None:
        raise MemoryRefused(
            f"does not fit in memory: {what} needs {fmt(need)} but {fmt(budget.bytes)} is "
            f"available ({budget.source}, {fmt(usable)} after {int(HEADROOM * 100)}% headroom); "
            f"{fix}"
        )

    # the product itself, column by column at the least
    one_product = per_vec + 2 * vec
    if room_after(one_product) < 0:
        refuse("one curvature product (kept gradient graph and one column)", graph + one_product,
               "lower --batch-size (the graph grows with the samples per batch) or " + fix_limit)
    by_product = int(max(1, room_after(0) // max(1, per_vec + 2 * vec)))
    if by_product < product_block:
        result.product_block = by_product
        result.notes.append(f"product block lowered from {product_block} to {by_product}")
    need = graph + result.product_block * (per_vec + 2 * vec)

    nwant = top + bottom
    if nwant > 0:
        vdtype = basis_dtype or A.dtype
        vbytes = P * torch.empty(0, dtype=vdtype).element_size()
        same_device = basis_device is None or torch.device(basis_device) == device
        b = block_size if block_size is not None else default_block_size(P, top, bottom, device)
        b = max(1, min(b, P))
        default = max_basis if max_basis is not None else default_max_basis(P, nwant, b, vbytes // P)
        result.default_basis = default
        if max_basis is None:  # no hoarding: the basis holds at most what one product does
            footprint = graph + per_vec + 2 * vec
            default = min(default, max(DEFAULT_BASIS_BYTES, footprint) // vbytes)
        # a step holds the basis and either the block's product or the Gram-Schmidt of its
        # result (Q, A Q and two temporaries per column); the end of the run holds the basis
        # too while the Ritz vectors get their true-residual check (about 4 vectors per pair
        # and the product of them: extreme_eigenpairs checks them before it returns)
        step = max(min(b, result.product_block) * (per_vec + 2 * vec), (4 * b + 2) * vec)
        end = 4 * nwant * vec + min(nwant, result.product_block) * (per_vec + vec)
        # two-pass Lanczos (no basis): pass 2 holds q_{j-1}, q_j, the product and the Ritz
        # vectors beside a product's temporaries; the check, the vectors and their products
        lean = max((3 + nwant) * vec + per_vec,
                   2 * nwant * vec + min(nwant, result.product_block) * per_vec)
        lean_ok = (max_basis is None and block_size in (None, 1) and top <= 1 and bottom <= 1
                   and basis_dtype is None and basis_device is None
                   and P > 2 * nwant + 8)  # smaller: extreme_eigenpairs runs to full depth
        fit = int(room_after(max(step, end)) // vbytes) if same_device else default
        lowest = min_basis(P, nwant, b if block_size is not None else 1)
        # small because memory is short, not because the operator is (P = 2 takes 2 columns)
        short = min(default, fit) <= LEAN_BASIS < result.default_basis
        if lean_ok and room_after(lean) >= 0 and (room_after(end) < 0 or fit < lowest or short):
            # a basis this small restarts every few products (about twice a full Krylov run's
            # products); two-pass Lanczos spends as many and holds no basis at all
            m = max(0, min(default, fit)) if room_after(max(step, end)) >= 0 else 0
            result.max_basis, result.block_size, result.basis_bytes = m, 1, 0
            result.krylov = "two-pass"
            result.notes.append(f"two-pass Lanczos instead of a {m}-column basis: about the "
                                "same products, memory of a power iteration plus two vectors")
            need = max(need, graph + lean)
        else:
            if room_after(end) < 0:
                refuse(f"the {nwant} Ritz vectors and their residual check", graph + end,
                       f"lower --top/--bottom or {fix_limit}")
            work, fixed = step, graph
            if max_basis is not None:
                if same_device and max_basis > fit:
                    refuse(f"the Lanczos basis of --max-basis {max_basis} columns",
                           max_basis * vbytes + work + fixed,
                           f"lower --max-basis to {max(fit, lowest)}" if fit >= lowest else
                           f"lower --top/--bottom or --block-size, or {fix_limit}")
                m = max_basis
            else:
                if fit < lowest:
                    extra = ("lower --block-size, " if block_size is not None and block_size > 1
                             else "")
                    refuse(f"the smallest Lanczos basis ({lowest} columns of {fmt(vbytes)}) "
                           f"with the product", lowest * vbytes + work + fixed,
                           f"{extra}lower --top/--bottom, use --krylov-device cpu on a GPU, or "
                           f"{fix_limit}")
                m = max(lowest, min(default, fit))
                if block_size is None:
                    b = max(1, min(b, (m - nwant) // 2))
                if m < default:
                    result.notes.append(
                        f"Lanczos basis {m} columns instead of {default}: more restarts, "
                        "so somewhat more products")
            result.max_basis, result.block_size = m, b
            if block_size is None and verified_list(top, bottom, b, device):
                result.notes.append(f"single-vector Lanczos verified on the deflated operator; "
                                    f"the block of {b} only if the verification fails")
            result.basis_bytes = m * vbytes if same_device else 0
            result.krylov = "basis"
            # extreme_eigenpairs keeps the basis' first products A V beside V while they are
            # small (true residuals without more products): charged here, so the peak is planned
            cols = products_kept_columns(P, vbytes // P, basis=m, free=UNLIMITED) \
                if same_device else 0
            kept = cols * vbytes if cols > nwant else 0
            if kept and room_after(result.basis_bytes + max(step, end) + kept) >= 0:
                result.products_kept_bytes = kept
            need = max(need, graph + result.basis_bytes + result.products_kept_bytes
                       + max(step, end))

    if trace_probes > 0:
        keep = (trace_probes // 3) * vec if trace_method == "hutch++" else 0
        per_probe = 2 * vec + per_vec  # the probe, its product, the product's temporaries
        room = room_after(keep)
        if room < per_probe:
            what = (f"the Hutch++ sketch of {trace_probes // 3} vectors" if keep else
                    "one trace probe and its product")
            refuse(what, keep + per_probe + graph,
                   "use --trace-method hutchinson or fewer --probes" if keep else fix_limit)
        # a block of probes buys speed only where the product batches its columns; column by
        # column (a large model's kept graph on a CPU) it would only hold more vectors
        batched = bool(getattr(inner, "batches_columns", True))
        result.probe_block = int(max(1, min(trace_probes, result.product_block if batched else 1,
                                            room // per_probe)))
        need = max(need, graph + keep + result.probe_block * per_probe)

    if density_probes > 0 and density_steps > 0:
        per_run = density_steps * vec + 2 * vec + per_vec
        room = room_after(0)
        if room < per_run:
            steps = int(max(0, (room - 2 * vec - per_vec) // vec))
            refuse(f"the spectral density's {density_steps} Lanczos vectors per probe",
                   per_run + graph,
                   f"lower --density-steps to {steps}" if steps >= 2 else fix_limit)
        together = DEFAULT_BASIS_BYTES // max(1, density_steps * vec)  # slq_density's own rule
        result.density_block = int(max(1, min(density_probes, together, room // per_run)))
        need = max(need, graph + result.density_block * per_run)
    result.need_bytes = int(need)
    return result


def share_parameters(model, spec, theta, partial: bool = False) -> None:
    """Point a model's selected parameters at their views in ``theta [P]``: the products call the
    model with ``theta``'s views, so the parameters' own copy would be dead weight (one more
    ``[P]`` vector: 0.5 GB for GPT-2 small). ``partial``: names the model lacks are skipped."""
    named = dict(model.named_parameters())
    for name, view in spec.unflatten(theta).items():
        p = named.get(name)
        if p is None and partial:
            continue
        if p.shape == view.shape and p.dtype == view.dtype and p.device == view.device:
            p.data = view


RELEASE_FROM = 2**26  # vectors of at least 64 MiB: hand the heap's free pages back after a product
_libc = []


def release_heap(vector_bytes: int) -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``) where vectors
    are large. A model's parameters and a backward's temporaries (a few MB each) live in the
    heap, which glibc keeps after they are freed, while ``[P]`` vectors (hundreds of MB) are
    mapped apart and cannot reuse it: the kept pages only add to the peak. Measured on the 10M
    GPT-2: after building the Problem and one product the process held 6.2 vectors more than
    before, 3.5 after the trim. No-op off glibc and below ``RELEASE_FROM`` (the trim walks the
    heap: a small model's products would pay for it)."""
    if vector_bytes < RELEASE_FROM:
        return
    if not _libc:
        import ctypes
        import ctypes.util

        try:
            _libc.append(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim)
        except (OSError, AttributeError):
            _libc.append(None)
    if _libc[0] is not None:
        _libc[0](0)


on_plan: list = []  # callables given each plan as it is made (the CLI's --verbose prints it)


def plan_for(A, s) -> MemoryPlan:
    """The plan for the estimator settings ``s`` (the fields of
    :class:`condlab.measure.EstimatorSettings`, as a mapping or the object) on operator ``A``;
    lowers the product block of the operator it wraps when the plan must, and hands the plan
    to every ``on_plan`` callable."""
    get = s.get if isinstance(s, dict) else (lambda k, d=None: getattr(s, k, d))
    limit = get("memory_limit")
    limit = parse_bytes(limit) if limit is not None else env_memory_limit()
    dtype = getattr(torch, get("krylov_dtype")) if get("krylov_dtype") else None
    inner = _profiled(A)
    if inner is not None and limit is not None and hasattr(inner, "memory_limit"):
        inner.memory_limit = limit  # the kept-graph budget reads it (no environment detour)
    p = plan(
        A, top=get("top", 0), bottom=get("bottom", 0), block_size=get("block_size"),
        max_basis=get("max_basis"), basis_dtype=dtype, basis_device=get("krylov_device"),
        trace_probes=get("probes", 0) if get("trace") else 0,
        trace_method=get("trace_method", "hutchinson"),
        density_probes=get("density_probes", 0) if get("density") else 0,
        density_steps=min(get("density_steps", 0), int(A.shape[0])) if get("density") else 0,
        memory_limit=limit,
    )
    inner = _profiled(A)
    if inner is not None and getattr(inner, "block_size", 0) > p.product_block:
        inner.block_size = p.product_block
    for fn in on_plan:
        fn(p)
    return p


# -- allocator errors ----------------------------------------------------------------------------
def is_out_of_memory(e: BaseException) -> bool:
    """An allocator's out-of-memory error (CUDA, or the host's ``can't allocate memory``)."""
    if isinstance(e, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text
        or "not enough memory" in text or "failed to allocate" in text)


@contextlib.contextmanager
def guard(what: str, fix: str):
    """Turn an allocator error inside into one line: what ran out of memory and the fix."""
    try:
        yield
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        raise CondlabError(f"out of memory during {what}; {fix}") from None


def memory_fix() -> str:
    return ("run with --memory-limit set to what the process may use (the plan then sizes the "
            "basis and blocks to it), or lower --batch-size / --product-block / --max-basis")


def env_memory_limit() -> int | None:
    """``CONDLAB_MEMORY_LIMIT`` from the environment, as bytes (None when unset)."""
    text = os.environ.get("CONDLAB_MEMORY_LIMIT")
    return parse_bytes(text) if text else None


__all__ = [
    "Budget", "MemoryPlan", "MemoryRefused", "available", "plan", "guard", "parse_bytes",
    "default_max_basis", "min_basis", "is_out_of_memory", "GiB",
]


def verified_list(top: int, bottom: int, b: int, device) -> bool:
    """Whether a run with no block size given lists by single-vector Lanczos verified on the
    deflated operator (:mod:`condlab.estimators.verify`), the block of ``b`` only where the proof
    fails: a top list (two values or more, no bottom list) on a CPU, where a block of ``b``
    costs about ``b`` products; its values are a Hessian's separated outliers, where the proof
    costs fewer products than the block (docs/benchmarks.md)."""
    return torch.device(device).type == "cpu" and bottom == 0 and top > 1 and b > 1


def default_block_size(P: int, top: int, bottom: int, device) -> int:
    """``b`` when none is given: the number of eigenvalues wanted at the larger end, at most 8
    on a CPU (16 on a GPU) and ``P / 8``.

    A block of ``b`` vectors sees ``b`` directions of every eigenspace, so with ``b >= top`` and
    ``b >= bottom`` the listed values are right whatever their multiplicities (an eigenvalue
    repeated ``m >= b`` times fills the whole list); a larger block costs products (on a CPU a
    vector in a block costs about what a single product does) without listing anything more.
    """
    cap = 8 if torch.device(device).type == "cpu" else 16
    return max(1, min(cap, max(top, bottom), P // 8))
