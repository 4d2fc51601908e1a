"""Where things live: the project root, the data directory and the per-preset artifact folders.

Taught in notebook 00. Artifacts that one notebook hands to a later one (the tokenizer, pretraining
checkpoints, fine-tuned models) live in ``artifacts/<preset>/`` (git-ignored), so presets never overwrite
each other. ``BERTBOOK_ARTIFACTS`` moves that folder; ``BERTBOOK_DATA_DIR`` points at the data.
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import preset_name

__all__ = ["project_root", "data_dirs", "cache_dir", "artifacts_dir"]


def project_root() -> Path:
    """The checkout this package was installed from (editable install), else the working directory."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").exists():
        return here
    return Path.cwd()


def cache_dir() -> Path:
    """The project's local data cache (``data/cache``), where downloads land."""
    return project_root() / "data" / "cache"


def data_dirs() -> list[Path]:
    """Folders searched for datasets, in order: ``BERTBOOK_DATA_DIR``, the local cache, ``../shared/data``."""
    dirs: list[Path] = []
    env = os.environ.get("BERTBOOK_DATA_DIR")
    if env:
        dirs.append(Path(env).expanduser().resolve())
    dirs.append(cache_dir())
    shared = project_root().parent / "shared" / "data"
    if shared.is_dir():
        dirs.append(shared.resolve())
    return dirs


def artifacts_dir(preset: str | None = None, *parts: str) -> Path:
    """``artifacts/<preset>/<parts...>`` (created on demand).

    A relative ``BERTBOOK_ARTIFACTS`` is taken from the project root, not from the working directory: a
    notebook's kernel runs in ``notebooks/``, the command line wherever it is started, and both must find
    the same folder."""
    base = Path(os.environ["BERTBOOK_ARTIFACTS"]).expanduser() if os.environ.get("BERTBOOK_ARTIFACTS") \
        else project_root() / "artifacts"
    if not base.is_absolute():
        base = project_root() / base
    path = base / (preset or preset_name()).strip()
    for p in parts:
        path = path / p
    path.mkdir(parents=True, exist_ok=True)
    return path
