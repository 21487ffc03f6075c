"""Writing the trust table: CSV (every number with its interval and n) and the HTML page
(:mod:`helpers.report`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..plumbing import atomic_write_bytes
from .common import is_missing
from .table import undefined

__all__ = ["format_value", "write_csv", "read_csv", "write_html"]


def format_value(
    value, *, column: str = "", max_eps: float | None = None, reason: str | None = None
) -> str:
    """How a cell prints: ``"not defined (<reason>)"`` for NaN/None with a ``reason``,
    ``"MISSING"`` without one, integers as they are, other numbers to 3 significant digits,
    ``inf`` in an epsilon column as ``"> max_eps"`` (never flipped up to the largest epsilon
    searched) and ``"inf"`` elsewhere, texts as they are."""
    if is_missing(value):
        return f"not defined ({reason})" if reason else "MISSING"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isinf(v):
            if column.startswith("median_eps") and max_eps is not None and v > 0:
                return f"> {max_eps:.3g}"
            return "inf" if v > 0 else "-inf"
        if (column.startswith("rank") or column.startswith("n_")) and v == int(v):
            return str(int(v))
        return f"{v:.3g}"
    return str(value)


def _write(path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, data)


def verdict_series(verdicts_, table) -> pd.Series | None:
    if verdicts_ is None:
        return None
    series = pd.Series(verdicts_)
    series.index = series.index.astype(str)
    missing = [c for c in table.index if c not in series.index]
    if missing:
        raise ValueError(f"verdicts lack class(es) {missing}")
    return series.loc[list(table.index)]


def write_csv(table: pd.DataFrame, path, *, verdicts=None) -> Path:
    """Write the table (one row per class, index ``class``: every number with its
    ``<column>_ci_low`` / ``<column>_ci_high`` and the ``n_<source>`` counts; a ``verdict``
    column when ``verdicts`` are given) as CSV, atomically. Missing values are written ``NaN``;
    numbers at full precision, so :func:`read_csv` gives the same values back. A
    ``not_defined`` column says which values cannot be computed and why (``"-"`` when none)."""
    frame = table.copy()
    series = verdict_series(verdicts, table)
    if series is not None:
        frame["verdict"] = series.to_numpy()
    reasons = {
        k: v for k, v in undefined(table).items() if not k[1].endswith(("_ci_low", "_ci_high"))
    }
    if reasons:
        frame["not_defined"] = [
            "; ".join(f"{col}: {why}" for (c, col), why in reasons.items() if c == cls) or "-"
            for cls in table.index
        ]
    text = frame.to_csv(index_label="class", na_rep="NaN")
    return _write(path, text.encode("utf-8"))


def read_csv(path) -> pd.DataFrame:
    """A table written by :func:`write_csv` (values only: provenance lives in the HTML report)."""
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    return pd.read_csv(path, index_col="class", **exact)


def write_html(table: pd.DataFrame, path, **kw) -> Path:
    """The self-contained HTML report: see :func:`helpers.report.write_html` (same arguments)."""
    from ..report import write_html as _write_html

    return _write_html(table, path, **kw)
