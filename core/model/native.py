"""The CPU's C kernels: the update of a layer in one pass over its activations (cpu_update.c) and the
projection step's reductions over the vocabulary (cpu_vocab.c: top-k, candidate ranks, sums of powers),
built once per machine with the system's C compiler into one library and called through ctypes.

Why not torch.compile on the CPU: Inductor's C++ fuses the reductions well, but stores a bool tensor
(the firing mask, which the event sample needs) several times slower than eager `torch.gt`, and it
has no cheap way to the per-firing work (histogram bin, sampling level, sign case), which eager torch
does by listing the firings first. The kernel does all of it while each row of h is in cache
(docs/design.md, "The CPU's one-pass update"). Inductor needs the same compiler, so a machine where
this one fails has no compiled path either: the accumulator's eager update and the projections' numpy
and torch reductions run (one line says why), with the same results.

The library is built with `-O3 -march=native` into a cache folder keyed by the sources, the compiler
and the CPU's flags (a home folder shared by machines of different CPUs gets one library each), so
the compiler runs once per machine, in about a second; $NEURON_TUI_KERNELS moves the folder.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

ENV = "NEURON_TUI_KERNELS"
SOURCES = tuple(Path(__file__).with_name(name) for name in ("cpu_update.c", "cpu_vocab.c"))
DTYPES = (torch.float32, torch.bfloat16)  # what the kernel reads; others take the eager update
MAX_BINS = 64  # cpu_update.c's: the histogram bins its stack holds per block
FLAGS = ("-O3", "-shared", "-fPIC", "-fno-math-errno")
# tried in order: OpenMP (torch's own threads: cpu_update.c says why) and the CPU's own instructions,
# then without either where the compiler lacks it (clang without libomp: one thread)
OPTIONAL = (("-fopenmp", "-march=native"), ("-fopenmp",), ("-march=native",), ())


class _Args(ctypes.Structure):
    """cpu_update.c's `Args`, field for field."""

    _fields_ = [(name, ctypes.c_void_p) for name in ("h", "up")] + [
        (name, ctypes.c_int64) for name in ("R", "T", "F")] + [
        ("bf16", ctypes.c_int), ("abs_rule", ctypes.c_int), ("tau", ctypes.c_float)] + [
        (name, ctypes.c_void_p) for name in (
            "pos_count", "act_count", "count_pos", "sum_fired", "sum_pos", "h_sum", "seq_max", "seq_arg",
            "bin_steps", "bin_upper", "hist")] + [("bins", ctypes.c_int64)] + [
        (name, ctypes.c_void_p) for name in ("levels", "positions")] + [("cap", ctypes.c_int64)] + [
        (name, ctypes.c_void_p) for name in ("level", "fill", "ev_pos", "ev_z", "level_hist",
                                             "sign_count", "sign_val", "sign_row", "top_val", "top_pos",
                                             "ctx_val")] + [
        (name, ctypes.c_int64) for name in ("top_k", "width", "left")] + [
        (name, ctypes.c_int64 * 2) for name in ("pos_step", "z_step", "lh_step")] + [
        ("ctx_step", ctypes.c_int64 * 3)] + [(name, ctypes.c_int64) for name in ("lo", "hi")]
# the tensors read through their strides (any layout), and the field that takes them
STRIDED = {"ev_pos": "pos_step", "ev_z": "z_step", "level_hist": "lh_step", "ctx_val": "ctx_step"}


def kernel_dir() -> Path:
    """$NEURON_TUI_KERNELS, else $XDG_CACHE_HOME/neuron-tui/kernels (~/.cache by default)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "neuron-tui" / "kernels"


def _cpu_flags() -> str:
    """The CPU's feature flags (what -march=native compiles for), or the machine's name where unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    import platform

    return platform.machine() + platform.processor()


def _compile(compiler: str, target: Path) -> None:
    """Compile SOURCES into `target` (atomically: a half-written library is never loaded), with the first
    of OPTIONAL's flags the compiler takes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        out = Path(work) / target.name
        errors = ""
        for extra in OPTIONAL:
            done = subprocess.run([compiler, *FLAGS, *extra, *map(str, SOURCES), "-o", str(out), "-lm"],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                os.replace(out, target)
                return
            errors = done.stderr.strip()
        raise RuntimeError(errors.splitlines()[-1] if errors else f"{compiler} failed")


def build() -> ctypes.CDLL:
    """The kernels' library, compiled on first use on this machine (raises with the reason where it
    cannot be: no compiler, a compile error, an unwritable folder and temporary folder)."""
    named = os.environ.get("CC")
    compiler = shutil.which(named) if named else shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise RuntimeError(f"no C compiler {named!r}" if named else "no C compiler found (cc, gcc or clang; or set CC)")
    parts = [*(source.read_bytes() for source in SOURCES), compiler.encode(), repr((FLAGS, OPTIONAL)).encode(),
             _cpu_flags().encode()]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    name = f"cpu_kernels-{key}.so"
    errors = []
    for folder in (kernel_dir(), Path(tempfile.gettempdir()) / "neuron-tui-kernels"):
        target = folder / name
        try:
            if not target.exists():
                _compile(compiler, target)
            lib = ctypes.CDLL(str(target))
        except OSError as exc:  # a folder we cannot write: the temporary one next
            errors.append(f"{folder}: {exc.strerror or exc}")
            continue
        lib.neuron_tui_update.argtypes = [ctypes.POINTER(_Args), ctypes.c_int]
        lib.neuron_tui_update.restype = None
        lib.neuron_tui_vector_bins.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
        lib.neuron_tui_vector_bins.restype = ctypes.c_int
        lib.neuron_tui_count_below.argtypes = [ctypes.c_void_p, *[ctypes.c_int64] * 3, ctypes.c_void_p, ctypes.c_int64,
                                               ctypes.c_void_p, ctypes.c_int]
        lib.neuron_tui_count_below.restype = None
        lib.neuron_tui_power_sums.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                              ctypes.c_int]
        lib.neuron_tui_power_sums.restype = None
        lib.neuron_tui_top_bottom.argtypes = [ctypes.c_void_p, *[ctypes.c_int64] * 4, *[ctypes.c_void_p] * 4,
                                              ctypes.c_int]
        lib.neuron_tui_top_bottom.restype = None
        return lib
    raise RuntimeError("; ".join(errors))


_LIBRARY: ctypes.CDLL | None = None
_FAILURE: str | None = None
_LOCK = threading.Lock()


def library() -> ctypes.CDLL | None:
    """The kernels' library, built once per process (None, after one line on stderr, where it cannot be)."""
    global _LIBRARY, _FAILURE
    with _LOCK:
        if _LIBRARY is None and _FAILURE is None:
            try:
                _LIBRARY = build()
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                _FAILURE = str(exc)[:200]
                print(f"neuron-tui: the CPU kernels could not be built ({_FAILURE}); the eager update and "
                      "reductions run (slower, the same results)", file=sys.stderr)
        return _LIBRARY


def failure() -> str | None:
    """Why the kernels could not be built in this process, None where it was (or was not tried)."""
    return _FAILURE


def runs(h: torch.Tensor, up: torch.Tensor | None) -> bool:
    """Whether the kernel can take this batch: CPU tensors of a dtype it reads, contiguous."""
    return (h.device.type == "cpu" and h.dtype in DTYPES and h.is_contiguous()
            and (up is None or (up.dtype == h.dtype and up.is_contiguous())))


def vector_bins(lib: ctypes.CDLL, upper: torch.Tensor, abs_rule: bool) -> bool:
    """Whether the kernel bins the dense rows of a layer with these upper edges (FiringHistogram.upper)
    16 values at a time (cpu_update.c's `vector_bins`: a CPU with AVX-512 and log-spaced edges) rather
    than through its step table: what the tests and bench/collect.py check it ran."""
    upper = upper.detach().to("cpu", torch.float32).contiguous()
    return bool(lib.neuron_tui_vector_bins(upper.data_ptr(), upper.numel(), int(abs_rule)))


def update(lib: ctypes.CDLL, h: torch.Tensor, up: torch.Tensor | None, tau: float, abs_rule: bool, cap: int,
           bins: int, top_k: int, width: int, left: int, **tensors: torch.Tensor | None) -> None:
    """Run cpu_update.c on one batch h [B, T, F] (and up [B, T, F] for a gated FFN, else None), with the
    event sample's cap `cap`, `bins` histogram bins (0: no histogram), and the top contexts' K, window
    width W (0: no windows) and the window's centre `left`; `tensors` are the other pointers of its
    `Args`, by name: contiguous CPU tensors of the dtypes `Args` gives them, the accumulator's own
    where the kernel changes them (in place: a strided one would be written wrong, so it is refused; the
    event sample's three (STRIDED) are read through their strides, whatever their layout)."""
    B, T, F = h.shape
    if bins > MAX_BINS:
        raise ValueError(f"{bins} histogram bins: the CPU kernel holds at most {MAX_BINS}")
    strided = [name for name, t in tensors.items() if t is not None and name not in STRIDED and not t.is_contiguous()]
    if strided:
        raise ValueError(f"the CPU kernel takes contiguous tensors; {', '.join(strided)} are not")
    args = _Args(h=h.data_ptr(), up=None if up is None else up.data_ptr(), R=B * T, T=T, F=F,
                 bf16=int(h.dtype == torch.bfloat16), abs_rule=int(abs_rule), tau=tau, cap=cap,
                 bins=bins, top_k=top_k, width=width, left=left,
                 **{field: (ctypes.c_int64 * tensors[name].dim())(*tensors[name].stride())
                    for name, field in STRIDED.items() if tensors.get(name) is not None},
                 **{name: None if t is None else t.data_ptr() for name, t in tensors.items()})
    lib.neuron_tui_update(ctypes.byref(args), torch.get_num_threads())


def _rows(scores: torch.Tensor) -> None:
    """What cpu_vocab.c reads as scores: float32 CPU rows of unit stride."""
    if scores.dtype != torch.float32 or scores.dim() != 2 or scores.stride(-1) != 1 or scores.device.type != "cpu":
        raise ValueError("cpu_vocab.c reads [rows, V] float32 CPU scores whose rows have unit stride")


def top_bottom(lib: ctypes.CDLL, scores: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """(top values, top items, bottom values, bottom items), each [B, k]: per row of scores [B, V], its
    k highest scores descending and k lowest ascending, in a stable sort's order (of equal scores the
    earlier item first; NaN above every number, as torch.topk orders it; cpu_vocab.c)."""
    _rows(scores)
    B, V = scores.shape
    if not 1 <= k <= V:
        raise ValueError(f"top_bottom takes 1 <= k <= V = {V}, not {k}")
    top_val, bot_val = torch.empty(B, k), torch.empty(B, k)
    top_idx, bot_idx = torch.empty(B, k, dtype=torch.int64), torch.empty(B, k, dtype=torch.int64)
    lib.neuron_tui_top_bottom(scores.data_ptr(), B, V, scores.stride(0), k, top_val.data_ptr(), top_idx.data_ptr(),
                              bot_val.data_ptr(), bot_idx.data_ptr(), torch.get_num_threads())
    return top_val, top_idx, bot_val, bot_idx


def count_below(lib: ctypes.CDLL, scores: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """[B, K] int64: per row of scores [B, V] (float32 on the CPU, rows of unit stride), the number of
    scores strictly below each of the row's K values [B, K] (cpu_vocab.c; numpy's `<`, NaN below nothing)."""
    _rows(scores)
    values = values.to(torch.float32).contiguous()
    B, V = scores.shape
    out = torch.empty(values.shape, dtype=torch.int64)
    lib.neuron_tui_count_below(scores.data_ptr(), B, V, scores.stride(0), values.data_ptr(), values.shape[1],
                               out.data_ptr(), torch.get_num_threads())
    return out


def power_sums(lib: ctypes.CDLL, x: torch.Tensor, sums: torch.Tensor) -> None:
    """sums [4, B] float64 += the row sums of x, x^2, x^3 and x^4 of x [B, n] (float32, contiguous, on
    the CPU), each power in float64 (cpu_vocab.c)."""
    if x.dtype != torch.float32 or not x.is_contiguous() or x.device.type != "cpu":
        raise ValueError("power_sums reads a contiguous float32 CPU block")
    if sums.dtype != torch.float64 or not sums.is_contiguous() or tuple(sums.shape) != (4, x.shape[0]):
        raise ValueError("power_sums adds into a contiguous float64 [4, rows] tensor")
    lib.neuron_tui_power_sums(x.data_ptr(), x.shape[0], x.shape[1], sums.data_ptr(), torch.get_num_threads())
