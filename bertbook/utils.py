"""Small helpers that several concept modules share, written once.

- ``atomic_write``: a file appears complete or not at all (write a temporary sibling, then rename);
- ``replace_folder``: a finished temporary folder takes the place of an old one by renames;
- ``autocast_dtype`` / ``autocast``: bf16 autocast where the hardware supports it, plain fp32 elsewhere;
- ``eval_mode``: switch a model to eval mode for a block and restore its mode afterwards;
- ``device_of``: the device a model's weights live on;
- ``device``, ``machine``, ``set_seed``: the fastest device here, a line naming this machine, every generator
  seeded;
- ``jsonable``: numbers and arrays as plain JSON values;
- ``PeakRSS``: the peak memory of this process while a block runs.

Only the standard library is imported at load time (torch when autocast is asked for), so the command line
can use these without loading torch.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["atomic_write", "replace_folder", "cpu_computes_bf16", "autocast_dtype", "autocast", "eval_mode",
           "device_of",
           "device", "machine", "set_seed", "jsonable", "PeakRSS"]


def atomic_write(path: str | os.PathLike, content: str | bytes | Callable[[str], None]) -> Path:
    """Write ``content`` to ``path`` through a temporary file in the same folder, then rename it into
    place: a crash or a full disk never leaves half a file, and readers see the old file or the new one.

    ``content`` is text (written as UTF-8), bytes, or a function that writes the file at the path it is
    given (for libraries that write files themselves, such as ``safetensors.torch.save_file``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if callable(content):
            os.close(fd)
            content(tmp)
        else:
            data = content.encode("utf-8") if isinstance(content, str) else content
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def replace_folder(tmp: str | os.PathLike, out: str | os.PathLike, keep_old: str | os.PathLike | None = None) -> Path:
    """Move the finished folder ``tmp`` to ``out``. An old ``out`` is first renamed aside (to ``keep_old``
    if given, else a hidden sibling) and removed only after the move, so a crash at any moment leaves one
    complete folder: ``out``, or mid-swap the renamed old one (which ``keep_old`` lets a caller find)."""
    tmp, out = Path(tmp), Path(out)
    old = Path(keep_old) if keep_old is not None else out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    return out


def cpu_computes_bf16() -> bool:
    """Whether this CPU multiplies bf16 numbers in hardware (AVX512-BF16 or AMX: recent AMD EPYC and Ryzen,
    Intel Xeon since Cooper Lake). There bf16 autocast trains the laptop model about twice as fast as
    fp32 (``python -m bertbook bench`` measures the two side by side); elsewhere bf16 is emulated and slower."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own probes (private)
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting: ``"bf16"``, ``"fp32"``, or ``"auto"``: bf16 on a GPU that
    supports it and on a CPU that computes bf16 in hardware (:func:`cpu_computes_bf16`), else fp32.
    None means plain fp32. ``BERTBOOK_PRECISION=fp32`` (or ``bf16``) decides for every ``"auto"``."""
    import torch

    precision = os.environ.get("BERTBOOK_PRECISION", precision) if precision == "auto" else precision
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r} "
                         "(check BERTBOOK_PRECISION).")
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and (device.type == "cuda" and torch.cuda.is_bf16_supported()
                                or device.type == "cpu" and cpu_computes_bf16()):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or a no-op context for plain fp32 (dtype None)."""
    import torch

    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode (no dropout) inside the block; the model's previous mode is restored afterwards, also
    when the block raises. Gradients are not switched off: combine with ``torch.no_grad()`` for that."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def device_of(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (bertbook models keep all weights on one device)."""
    return next(model.parameters()).device


def set_seed(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device() -> torch.device:
    """The fastest device here: CUDA if present, else CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def machine() -> str:
    """A one-line description of this machine, for result tables."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    cores = os.cpu_count() or 1
    return f"{platform.machine()} CPU, {cores} cores ({platform.system()})"


def jsonable(x: Any) -> Any:
    """``json.dump``'s ``default=``: NumPy numbers and arrays as plain numbers and lists, paths as strings."""
    import numpy as np

    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.ndarray,)):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


class PeakRSS:
    """Peak resident memory (RSS) of this process while the block runs, sampled every ``every_s`` seconds.

    ``with PeakRSS() as mem: ...`` then ``mem.peak_mb`` (the highest RSS seen) and ``mem.extra_mb`` (that
    peak minus the RSS at the start: what the block needed on top). RSS counts everything the process holds
    (Python, torch, the data), not only tensors; freed memory the allocator keeps is still counted.
    """

    def __init__(self, every_s: float = 0.02) -> None:
        self.every_s = every_s
        self.start_mb = self.peak_mb = 0.0
        self._stop = None

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:  # not Linux: the lifetime peak is the best we can read
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak_mb = max(self.peak_mb, self.rss_mb())

    def __enter__(self) -> "PeakRSS":
        import threading

        self.start_mb = self.peak_mb = self.rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.rss_mb())

    @property
    def extra_mb(self) -> float:
        return self.peak_mb - self.start_mb


