"""Notebook outputs that nbval compares do not depend on the machine.

The committed notebooks were executed on one machine; a learner's CPU sums floats in another order (other
vector units, another thread count), so a printed float can differ in its last digit: ``tensor([1., 1.])``
here, ``tensor([1.00, 1.00])`` there. Cells marked ``# NBVAL_CHECK_OUTPUT`` must therefore print numbers
with an explicit format or assert with a tolerance. ``test_notebooks_on_one_thread`` makes this class of
failure show up on the machine that wrote the outputs: it runs nbval over every notebook, in a fresh process
and artifacts folder, the way another CPU would compute: on one thread (``OMP_NUM_THREADS=1``,
``MKL_NUM_THREADS=1``), which changes how sums are split, and with PyTorch's plain (non-vectorised) CPU
kernels (``ATEN_CPU_CAPABILITY=default``), which add in another order than the AVX2 or AVX-512 ones. The
latter reproduces the reported failure exactly: softmax row sums of 0.99999994 printed as ``1.00``. The test
fails if any compared output differs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bertbook.course import notebooks
from bertbook.paths import project_root

ROOT = project_root()
ANOTHER_CPU = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "default"}


def run_nbval(paths: list[Path], artifacts: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """pytest with nbval (the project's options from pyproject.toml) over ``paths``, in a new process on the
    ci preset with ``env`` added; returns the finished process (its output holds nbval's report)."""
    full_env = {**os.environ, "BERTBOOK_PRESET": "ci", "BERTBOOK_ARTIFACTS": str(artifacts), "MPLBACKEND": "Agg",
                **env}
    full_env.pop("PYTEST_ADDOPTS", None)
    cmd = [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT),
           "-p", "no:cacheprovider", "-q", *map(str, paths)]
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def _notebook(path: Path, source: str, output: str) -> Path:
    """A one-cell notebook whose compared cell prints ``output`` when it was executed."""
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3", "language": "python",
                                                                         "display_name": "Python 3"}},
          "cells": [{"cell_type": "code", "id": "check", "metadata": {}, "execution_count": 1,
                     "source": "# NBVAL_CHECK_OUTPUT\n" + source,
                     "outputs": [{"output_type": "stream", "name": "stdout", "text": output}]}]}
    path.write_text(json.dumps(nb))
    return path


def test_the_runner_computes_as_another_cpu_and_fails_on_a_different_output(tmp_path):
    # The kernel nbval starts runs on one thread with plain CPU kernels, and an output that differs from the
    # stored one fails.
    source = "import torch\nprint(torch.get_num_threads(), torch.backends.cpu.get_cpu_capability())\n"
    same = _notebook(tmp_path / "same.ipynb", source, "1 DEFAULT\n")
    other = _notebook(tmp_path / "other.ipynb", source, "2 AVX2\n")
    passed = run_nbval([same], tmp_path / "artifacts", ANOTHER_CPU, timeout=300)
    assert passed.returncode == 0, passed.stdout[-3000:] + passed.stderr[-2000:]
    failed = run_nbval([other], tmp_path / "artifacts", ANOTHER_CPU, timeout=300)
    assert failed.returncode == 1 and "Cell outputs differ" in failed.stdout, failed.stdout[-3000:]


@pytest.mark.slow
def test_notebooks_on_one_thread(tmp_path):
    paths = notebooks()
    assert len(paths) >= 8
    result = run_nbval(paths, tmp_path / "artifacts", ANOTHER_CPU, timeout=3600)
    assert result.returncode == 0, (
        "The notebooks' compared outputs differ on one thread, as they would on another CPU: print the "
        "numbers of # NBVAL_CHECK_OUTPUT cells with an explicit format, or assert with a tolerance.\n"
        + result.stdout[-6000:] + result.stderr[-2000:])
