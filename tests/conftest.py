"""Shared pytest setup: every test runs on the ci preset with its own artifacts folder."""

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("BERTBOOK_PRESET", "ci")
os.environ.setdefault("MPLBACKEND", "Agg")


def ci_preset_in_own_folder(tmp_path_factory, overrides: dict):
    """For a module-scoped fixture: the ci preset with ``overrides``, one artifacts folder for the module
    (tokenizer, token cache) and one torch thread (a tiny model is fastest so, and robust on a busy machine);
    both are restored when the module is done."""
    import torch

    from bertbook.config import get_preset

    mp = pytest.MonkeyPatch()
    mp.setenv("BERTBOOK_ARTIFACTS", str(tmp_path_factory.mktemp("artifacts")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield get_preset("ci", **overrides)
    torch.set_num_threads(threads)
    mp.undo()


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    """An empty artifacts folder for one test (sets BERTBOOK_ARTIFACTS)."""
    monkeypatch.setenv("BERTBOOK_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"


@pytest.fixture(scope="module")
def tiny_task_model(tmp_path_factory):
    """``make(task, **options) -> (model, tokenizer, info)``: a random ci-sized encoder with a task's head
    (notebook 08), for the tests of one module, with its artifacts in a private folder."""
    from bertbook import tasks
    from bertbook.config import get_preset

    patch = pytest.MonkeyPatch()
    patch.setenv("BERTBOOK_ARTIFACTS", str(tmp_path_factory.mktemp("artifacts")))
    yield lambda task, **options: tasks.build_task_model(get_preset("ci"), task, "random", **options)
    patch.undo()


@pytest.fixture(scope="session")
def script():
    """``script(name)``: the module ``scripts/<name>.py`` of the project, loaded for its functions."""
    def load(name: str):
        path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
