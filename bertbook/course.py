"""Notebook start-up and the headless course runner.

Every notebook begins with ``P = start()``: it picks the preset from ``BERTBOOK_PRESET``, prints it with
the versions and the device, seeds every random generator and sets the plot style. Taught in notebook 00.

``python -m bertbook course --preset laptop --out build/course-laptop`` executes every notebook in order
on a preset and writes the executed copies and a summary (``make course``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .config import ConfigError, ModelConfig, Preset, get_preset
from .paths import artifacts_dir, project_root
from .utils import device, machine, set_seed

__all__ = ["start", "environment_report", "size_report", "notebooks", "run_course"]


def start(seed: int = 0, verbose: bool = True) -> Preset:
    """The first cell of every notebook: choose the preset, print it, seed everything, style plots."""
    import matplotlib.pyplot as plt
    import torch

    from . import __version__

    preset = get_preset()
    set_seed(seed)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    from .viz import plot_fonts

    plt.rcParams.update({"figure.dpi": 100, "figure.figsize": (6.4, 3.6), "axes.grid": True,
                         "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
                         "font.family": plot_fonts()})  # + any installed CJK font, for Chinese tokens
    if verbose:
        print(f"bertbook {__version__} | torch {torch.__version__} | {machine()} | device {device()}")
        print(preset.summary())
        print(f"artifacts: {artifacts_dir(preset.name)}")
    return preset


def environment_report() -> list[dict]:
    """Installed versions of bertbook's dependencies against what ``pyproject.toml`` asks (notebook 00)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    rows, seen = [], set()
    for spec in metadata.requires("bertbook") or []:
        req = Requirement(spec)
        if req.name in seen:
            continue
        seen.add(req.name)
        if req.marker is not None and not req.marker.evaluate({"extra": "lab"}) \
                and not req.marker.evaluate({"extra": "test"}):
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            version = None
        ok = version is not None and req.specifier.contains(version.split("+")[0], prereleases=True)
        rows.append({"package": req.name, "installed": version or "missing",
                     "required": str(req.specifier) or "any", "ok": ok})
    return rows


def size_report(model: "ModelConfig", tokens: float = 0.0) -> str:  # noqa: F821
    """Parameters of a model config and the training compute for ``tokens`` tokens (notebook 00).

    Training costs about 6 x parameters x tokens floating-point operations: 2 for the forward pass and 4 for
    the backward pass per parameter and token (Kaplan et al. 2020, "Scaling Laws for Neural Language Models").
    """
    n = model.num_parameters()
    text = (f"L={model.num_hidden_layers} H={model.hidden_size} A={model.num_attention_heads} "
            f"(d_k={model.head_dim}) FFN={model.intermediate_size} vocab={model.vocab_size}: "
            f"{n:,} parameters ({n / 1e6:.1f} M)")
    if tokens:
        text += f"; {tokens:,.0f} training tokens = {6 * n * tokens:.2e} FLOPs"
    return text


def size_text(layers: int, hidden: int, heads: int, ffn_ratio: int = 4, vocab: int = 30522,
              million_tokens: float = 100.0) -> str:
    """What the size panel shows: the parameter count and compute, or the config error (notebook 00)."""

    try:
        model = ModelConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=ffn_ratio * hidden)
    except ConfigError as err:
        return f"not a valid model: {err}"
    return size_report(model, million_tokens * 1e6)


def notebooks(root: Path | None = None) -> list[Path]:
    """The course notebooks in order (``notebooks/NN_*.ipynb``)."""
    folder = (root or project_root()) / "notebooks"
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def run_course(preset: str, out: Path | None, only: list[str] | None = None, in_place: bool = False,
               timeout: int = 3600, paths: list[Path] | None = None) -> list[dict]:
    """Execute the notebooks on ``preset`` (each in a fresh kernel); return one record per notebook.

    A failing notebook is recorded (with its last error line) and the run goes on to the next one."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    os.environ["BERTBOOK_PRESET"] = preset
    records = []
    for path in paths if paths is not None else notebooks():
        if only and not any(path.name.startswith(o) for o in only):
            continue
        nb = nbformat.read(path, as_version=4)
        t0 = time.time()
        status, error = "ok", ""
        print(f"[{preset}] {path.name} ...", flush=True)
        try:
            NotebookClient(nb, timeout=timeout, kernel_name="python3",
                           resources={"metadata": {"path": str(path.parent)}}).execute()
        except CellExecutionError as exc:  # keep going: the summary says which notebook failed
            status, error = "error", str(exc).strip().splitlines()[-1][:300]
        seconds = time.time() - t0
        target = path if in_place else (out / path.name if out else None)
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, target)
        records.append({"notebook": path.name, "status": status, "seconds": round(seconds, 1),
                        "error": error})
        print(f"    {status} in {seconds:.0f} s {error}", flush=True)
    return records


