"""Every lesson is committed in one clean form and keeps the lesson shape
described in docs/writing-lessons.md."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

_spec = importlib.util.spec_from_file_location("nbclean", ROOT / "tools" / "nbclean.py")
nbclean = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nbclean)


def test_there_are_lessons():
    assert [p.name[:2] for p in NOTEBOOKS][:2] == ["00", "01"]


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.name)
def notebook(request):
    path = request.param
    return path, nbformat.read(path, as_version=4)


def test_committed_in_clean_form(notebook):
    path, nb = notebook
    assert path.read_text(encoding="utf-8") == nbclean.serialise(nbclean.clean(nb)), (
        f"{path.name} is not in its clean form: run python tools/nbclean.py {path}"
    )


def test_has_the_lesson_shape(notebook):
    path, nb = notebook
    number = path.name[:2]
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith(f"# {number} ·"), (
        f"{path.name} must open with a '# {number} · Title' markdown cell"
    )
    headings = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for heading in ("## What you will learn", "## Key points"):
        assert heading in headings, f"{path.name} has no '{heading}' section"
    if number != "00":
        assert "## Try it" in headings, f"{path.name} has no '## Try it' section"


def test_checks_the_outputs_that_make_its_point(notebook):
    path, nb = notebook
    checked = [c for c in nb.cells if "nbval-check-output" in c.metadata.get("tags", [])]
    assert checked, f"{path.name} checks no output: tag the cells that prove its point"
    for cell in checked:
        assert cell.cell_type == "code" and cell.outputs, (
            f"{path.name}: a checked cell must be code and keep its expected output"
        )


def test_never_reads_stdin(notebook):
    path, nb = notebook
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not re.search(r"(?<![\w.])input\(", cell.source), (
                f"{path.name}: input() raises under nbval (no stdin); script the input instead"
            )
