"""The course map in notebook 00 lists every notebook, and every notebook points to the next one.

Fast: the notebooks are read as JSON, never executed. A notebook added to ``notebooks/`` without a row in
the map of ``00_setup_and_ssl.ipynb`` (section 0.6), or a notebook whose last cell does not name the next
notebook's file, fails here with a message that says what to add.
"""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MAP_NOTEBOOK = NOTEBOOKS / "00_setup_and_ssl.ipynb"
NAME = re.compile(r"(\d{2})_\w+\.ipynb")  # "05_pretraining.ipynb": a two-digit number, then a name


def course() -> list[Path]:
    """The course's notebooks, in order of their numbers."""
    paths = sorted(p for p in NOTEBOOKS.glob("*.ipynb") if NAME.fullmatch(p.name))
    assert paths, f"no notebooks named like 00_name.ipynb in {NOTEBOOKS}"
    return paths


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


def course_map() -> dict[str, str]:
    """The rows of the course-map table in notebook 00, by their number: {"05": "| 05 | ... |"}."""
    heading = re.compile(r"^#+ .*course map", re.MULTILINE | re.IGNORECASE)
    maps = [source(c) for c in cells(MAP_NOTEBOOK) if c["cell_type"] == "markdown" and heading.search(source(c))]
    assert len(maps) == 1, f"{MAP_NOTEBOOK.name} should have one markdown cell headed 'course map', found {len(maps)}"
    return {m.group(1): m.group(0) for m in re.finditer(r"^\|\s*(\d{2})\s*\|.*$", maps[0], re.MULTILINE)}


def test_the_notebooks_are_numbered_without_gaps():
    numbers = [int(NAME.fullmatch(p.name).group(1)) for p in course()]
    assert numbers == list(range(len(numbers))), f"notebook numbers should run 00, 01, ... without gaps: {numbers}"


@pytest.mark.parametrize("path", course(), ids=lambda p: p.name)
def test_every_notebook_is_on_the_course_map(path):
    number = NAME.fullmatch(path.name).group(1)
    rows = course_map()
    assert number in rows, (f"{path.name} has no row in the course map of {MAP_NOTEBOOK.name} (section 0.6): "
                            f"add '| {number} | `{path.name}`: ... | what it builds | time on laptop |'.")
    assert f"`{path.name}`" in rows[number], (f"the course map's row {number} should name the file `{path.name}`: "
                                              f"{rows[number]}")


def test_the_course_map_lists_no_missing_notebook():
    files = {NAME.fullmatch(p.name).group(1) for p in course()}
    extra = sorted(set(course_map()) - files)
    assert not extra, f"the course map has rows for notebooks that are not in {NOTEBOOKS}: {extra}"


@pytest.mark.parametrize("path, following", list(zip(course(), course()[1:])), ids=lambda p: p.name)
def test_every_notebook_ends_pointing_to_the_next(path, following):
    last = cells(path)[-1]
    assert last["cell_type"] == "markdown" and f"`{following.name}`" in source(last), (
        f"{path.name} should end with a markdown cell that points to the next notebook: "
        f"'**Next:** notebook {following.name[:2]}, `{following.name}`, ...'.")


def test_the_last_notebook_points_back_to_the_map():
    last = cells(course()[-1])[-1]
    assert last["cell_type"] == "markdown" and f"`{MAP_NOTEBOOK.name}`" in source(last), (
        f"{course()[-1].name} is the last notebook: its last cell should point to the course map in "
        f"`{MAP_NOTEBOOK.name}`.")
