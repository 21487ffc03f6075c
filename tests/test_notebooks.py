"""The committed notebooks as a reader sees them on GitHub: every figure inside the notebook,
no progress-bar residue or widget placeholder, no error, and files small enough to render.

These tests read the committed files; they execute nothing (nbval re-executes the notebooks).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FIGURES = ROOT / "figures"

MAX_NOTEBOOK_BYTES = 4 * 1024 * 1024
MAX_FIGURE_BYTES = 1024 * 1024
MAX_FIGURES_TOTAL_BYTES = 12 * 1024 * 1024
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# A cell makes a figure when it saves one or binds a figure object (fig = ..., fig, ax = ...).
MAKES_FIGURE = re.compile(r"save_figure\(|^\s*fig\s*(,\s*\w+\s*)?=", re.MULTILINE)
SAVED_SLUG = re.compile(r"save_figure\(\s*\w+\s*,\s*[\"'](\w+)[\"']")
PROGRESS_RESIDUE = re.compile(r"\d+%\|")


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _text(output) -> str:
    if output.get("output_type") == "stream":
        text = output.get("text", "")
    else:
        text = output.get("data", {}).get("text/plain", "")
    return "".join(text) if isinstance(text, list) else text


def notebook_problems(nb: dict) -> list[str]:
    """What a reader of the rendered notebook would stumble on, one line per problem."""
    problems = []
    for k, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        outputs = cell.get("outputs", [])
        where = f"cell {k}"
        if MAKES_FIGURE.search(_source(cell)) and not any(
            "image/png" in o.get("data", {}) for o in outputs
        ):
            problems.append(f"{where} makes a figure but shows no image")
        for o in outputs:
            if o.get("output_type") == "error":
                problems.append(f"{where} has an error output: {o.get('ename')}: {o.get('evalue')}")
            if WIDGET_MIME in o.get("data", {}):
                problems.append(f"{where} stores a widget placeholder (progress bar?)")
            if PROGRESS_RESIDUE.search(_text(o)):
                problems.append(f"{where} stores progress-bar text: {_text(o)[:60]!r}")
            if o.get("output_type") == "stream" and "Traceback" in _text(o):
                problems.append(f"{where} printed a traceback")
    return problems


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 11


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_reads_cleanly(path):
    nb = _load(path)
    assert notebook_problems(nb) == []
    assert any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), "never executed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_size(path):
    assert path.stat().st_size <= MAX_NOTEBOOK_BYTES, f"{path.name}: {path.stat().st_size} bytes"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_saved_figure_is_committed(path):
    slugs = [s for c in _load(path)["cells"] for s in SAVED_SLUG.findall(_source(c))]
    missing = [s for s in slugs if not (FIGURES / f"{s}.png").is_file()]
    assert missing == []


def test_figure_sizes():
    sizes = {p.name: p.stat().st_size for p in FIGURES.glob("*.png")}
    assert sizes, "no figures committed"
    too_big = {name: size for name, size in sizes.items() if size > MAX_FIGURE_BYTES}
    assert too_big == {}
    assert sum(sizes.values()) <= MAX_FIGURES_TOTAL_BYTES, (
        f"figures/ holds {sum(sizes.values())} bytes"
    )


def test_readme_figures_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", readme)
    assert linked
    assert [p for p in linked if not (ROOT / p).is_file()] == []


# The checker itself must be able to fail.
def _nb(*cells):
    return {"cells": [{"cell_type": "code", "source": src, "outputs": outs} for src, outs in cells]}


IMAGE = {"output_type": "display_data", "data": {"image/png": "iVBOR", "text/plain": "<Image>"}}


def test_checker_flags_figure_cell_without_image():
    nb = _nb(('fig = plots.class_balance(counts)\nplots.save_figure(fig, "01_x");', []))
    assert notebook_problems(nb) == ["cell 0 makes a figure but shows no image"]
    nb = _nb(("fig, ax = plots.subplots()\nax.plot([1])", []))
    assert len(notebook_problems(nb)) == 1


def test_checker_accepts_figure_cell_with_image():
    nb = _nb(
        ('fig = plots.class_balance(counts)\nplots.save_figure(fig, "01_x");', [IMAGE]),
        ("print(1)", [{"output_type": "stream", "name": "stdout", "text": "1\n"}]),
    )
    assert notebook_problems(nb) == []


def test_checker_flags_widgets_progress_text_and_errors():
    widget = {
        "output_type": "display_data",
        "data": {WIDGET_MIME: {"model_id": "x"}, "text/plain": "scanning images:   0%|  | 0/10"},
    }
    stderr = {"output_type": "stream", "name": "stderr", "text": "epochs:  40%|####  | 4/10"}
    error = {"output_type": "error", "ename": "ValueError", "evalue": "bad", "traceback": []}
    problems = notebook_problems(_nb(("x = 1", [widget, stderr, error])))
    assert len(problems) == 4  # widget + its text, stderr bar, error
