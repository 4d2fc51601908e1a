"""Shared pytest setup: every test runs on the ci preset with its own artifacts folder."""

import os

import pytest

os.environ.setdefault("BERTBOOK_PRESET", "ci")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    """An empty artifacts folder for one test (sets BERTBOOK_ARTIFACTS)."""
    monkeypatch.setenv("BERTBOOK_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"
