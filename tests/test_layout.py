"""The package's shape, kept by a test: no function in helpers/ reaches 60 lines (docstring
included), and runs.py, the run cache, imports no analysis module (data flows down the layers:
attacks and explanations use runs, never the other way round)."""

from __future__ import annotations

import ast
from pathlib import Path

HELPERS = Path(__file__).resolve().parents[1] / "helpers"
MAX_LINES = 60


def function_lengths():
    for path in sorted(HELPERS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{path.relative_to(HELPERS.parent)}:{node.name}"
                yield name, node.end_lineno - node.lineno + 1


def test_no_function_in_helpers_reaches_60_lines():
    long = {name: n for name, n in function_lengths() if n >= MAX_LINES}
    assert not long, f"functions of {MAX_LINES} lines or more: {long}"


def test_the_measure_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    tree = ast.parse(f"def f():\n{body}\n")
    node = tree.body[0]
    assert node.end_lineno - node.lineno + 1 == MAX_LINES + 1


def test_runs_imports_no_analysis_module():
    tree = ast.parse((HELPERS / "runs.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            imported |= {node.module or ""} | {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers"):
            imported |= {node.module.split(".")[-1]} | {a.name for a in node.names}
    analysis = {"attacks", "explain", "quality", "trust", "report", "plots", "synthesis"}
    assert not imported & analysis, imported & analysis
