"""The project's own promises: install files agree, the quick start holds, the course runner works."""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_torch_is_pinned_by_constraints_not_by_pyproject():
    constraints = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^torch==\d+\.\d+\.\d+$", constraints, re.M)
    deps = pyproject()["project"]["dependencies"]
    torch_dep = [d for d in deps if re.match(r"torch\b", d)]
    assert torch_dep and "==" not in torch_dep[0]
    # every pip install in the Makefile goes through the constraints file
    make = (ROOT / "Makefile").read_text()
    assert "INSTALL := $(PIP) install -c constraints.txt" in make
    raw_pip = [line for line in make.splitlines() if "$(PIP) install" in line and "INSTALL :=" not in line]
    assert all("--upgrade pip" in line for line in raw_pip), "install packages through $(INSTALL)"
    assert sum("$(INSTALL)" in line for line in make.splitlines()) >= 2


def _environment():
    """environment.yml is simple enough to read without a YAML library: collect its list items."""
    text = (ROOT / "environment.yml").read_text().split("dependencies:", 1)[1]
    items = [line.strip()[2:].strip() for line in text.splitlines() if line.strip().startswith("- ")]
    return items


def test_environment_yml_installs_this_package_with_its_extras():
    items = _environment()
    project = pyproject()["project"]
    python = next(i for i in items if i.startswith("python="))
    version = python.split("=", 1)[1]
    low = project["requires-python"].removeprefix(">=")
    assert tuple(map(int, version.split("."))) >= tuple(map(int, low.split(".")))
    assert "-c constraints.txt" in items
    editable = next(i for i in items if i.startswith("-e ."))
    extras = set(re.search(r"\[(.*)\]", editable).group(1).split(","))
    assert extras == set(project["optional-dependencies"]), "environment.yml must install every extra"
    # nothing else is installed behind pyproject's back
    assert set(items) - {python, "pip", "-c constraints.txt", editable, "pip:"} == set()


def test_readme_quick_start_is_two_commands_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
    assert commands == ["make lab", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    make = (ROOT / "Makefile").read_text()
    for target in ("lab:", "test:", "course:", "data:"):
        assert re.search(rf"^{target}", make, re.M), target


def test_every_notebook_starts_with_the_preset_and_holds_no_error():
    from bertbook.course import notebooks

    paths = notebooks()
    assert paths and paths[0].name.startswith("00_")
    assert [p.name[:2] for p in paths] == [f"{i:02d}" for i in range(len(paths))], "numbering has a gap"
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), path.name
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert "P = start()" in first_code.source, f"{path.name}: first code cell must call start()"
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                assert out.get("output_type") != "error", f"{path.name} stores an error output"


def test_cli_lists_commands_and_presets():
    out = subprocess.run([sys.executable, "-m", "bertbook"], capture_output=True, text=True, check=True)
    for command in ("data", "parity", "pretrain", "bench", "finetune", "predict", "course"):
        assert command in out.stdout
    out = subprocess.run([sys.executable, "-m", "bertbook", "presets", "--json"], capture_output=True,
                         text=True, check=True)
    assert '"name": "gpu"' in out.stdout
    bad = subprocess.run([sys.executable, "-m", "bertbook", "nonsense"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command" in bad.stderr


def test_course_runner_executes_and_reports_failures(tmp_path, monkeypatch):
    from bertbook.course import run_course

    ok = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os\nx = os.environ['BERTBOOK_PRESET']")])
    bad = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 / 0")])
    nbformat.write(ok, tmp_path / "00_ok.ipynb")
    nbformat.write(bad, tmp_path / "01_bad.ipynb")
    monkeypatch.setenv("BERTBOOK_PRESET", "ci")
    records = run_course("ci", tmp_path / "out", paths=sorted(tmp_path.glob("*.ipynb")), timeout=120)
    assert [r["status"] for r in records] == ["ok", "error"]
    assert "ZeroDivisionError" in records[1]["error"]
    assert (tmp_path / "out" / "00_ok.ipynb").exists()
    json.dumps(records)


def test_a_relative_artifacts_folder_is_found_from_any_working_directory(tmp_path, monkeypatch):
    """A notebook's kernel runs in notebooks/, the command line in the project root: a relative
    BERTBOOK_ARTIFACTS must name the same folder for both."""
    from bertbook.paths import artifacts_dir, project_root

    monkeypatch.setenv("BERTBOOK_ARTIFACTS", "build/relative-artifacts-test")
    monkeypatch.chdir(project_root())
    from_root = artifacts_dir("ci")
    monkeypatch.chdir(project_root() / "notebooks")
    assert artifacts_dir("ci") == from_root == project_root() / "build" / "relative-artifacts-test" / "ci"
    monkeypatch.chdir(tmp_path)
    assert artifacts_dir("ci") == from_root
