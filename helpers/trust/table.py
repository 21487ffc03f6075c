"""The trust table: the per-class sources joined, checked, with provenance."""

from __future__ import annotations

import pandas as pd

from .common import Bag, class_list, is_missing

__all__ = ["build_table", "undefined", "provenance"]


def _indexed_by_class(sources: dict) -> dict:
    """``{source name: frame}`` with each frame indexed by its class names (as strings)."""
    if not isinstance(sources, dict) or not sources:
        raise ValueError("sources must be a non-empty dict {source name: per-class DataFrame}")
    frames = {}
    for name, frame in sources.items():
        if not isinstance(frame, pd.DataFrame):
            raise ValueError(
                f"source {name!r} is a {type(frame).__name__}, "
                "expected a DataFrame indexed by class"
            )
        if "class" in frame.columns:
            frame = frame.set_index("class")
        index = frame.index.astype(str)
        if index.has_duplicates:
            raise ValueError(
                f"source {name!r} has several rows for class(es) "
                f"{sorted(set(index[index.duplicated()]))}"
            )
        frames[name] = frame.set_axis(index, axis=0)
    return frames


def _check_source(name: str, frame: pd.DataFrame, order: list, seen: dict) -> None:
    """Raise unless the source has a row for exactly the classes of ``order`` and no column of
    an earlier source; record its columns in ``seen`` ``{column: source name}``."""
    missing = [c for c in order if c not in frame.index]
    if missing:
        raise ValueError(
            f"source {name!r} has no row for class(es) {missing} (it has {list(frame.index)})"
        )
    unknown = [c for c in frame.index if c not in order]
    if unknown:
        raise ValueError(
            f"source {name!r} has rows for unknown class(es) {unknown}; classes are {order}"
        )
    for column in frame.columns:
        if column in seen:
            raise ValueError(
                f"column {column!r} comes from both source {seen[column]!r} and {name!r}; "
                "rename it in one of them"
            )
        seen[column] = name


def _model_level_values(name: str, frame: pd.DataFrame, columns) -> dict:
    """``{column: value}`` of the source's model-level ``columns`` (each the same on every row)."""
    model = {}
    for column in columns:
        values = frame[column]
        if values.nunique(dropna=False) != 1:
            raise ValueError(
                f"model-level column {column!r} of source {name!r} differs between classes"
            )
        model[column] = values.iloc[0]
    return model


def _missing_cells(table: pd.DataFrame, reasons: dict, seen: dict, allow_missing):
    """``(holes, undefined)``: the missing cells without a reason (raising unless allowed) and
    those a source explained ``{(class, column): reason}``."""
    allowed = set(table.columns) if allow_missing is True else set(allow_missing or ())
    unknown_allowed = allowed - set(table.columns)
    if unknown_allowed:
        raise ValueError(f"allow_missing names unknown column(s) {sorted(unknown_allowed)}")
    empty = [
        (cls, col) for col in table.columns for cls in table.index if is_missing(table.at[cls, col])
    ]
    undefined_ = {cell: reasons[cell] for cell in empty if cell in reasons}
    holes = [cell for cell in empty if cell not in undefined_]
    bad = [(cls, col) for cls, col in holes if col not in allowed]
    if bad:
        listed = "; ".join(f"{col} of {cls!r} (source {seen[col]!r})" for cls, col in bad[:12])
        more = f" and {len(bad) - 12} more" if len(bad) > 12 else ""
        raise ValueError(
            f"{len(bad)} missing value(s): {listed}{more}. Fix the source, or pass "
            f"allow_missing={sorted({c for _, c in bad})} to show them as errors in the report"
        )
    return holes, undefined_


def _samples(sources: dict) -> Bag:
    """The per-image values every source kept ``{name: {class: values}}``, classes as strings."""
    samples = Bag()
    for source in sources.values():
        for key, per_class in source.attrs.get("samples", {}).items():
            samples[key] = {str(c): v for c, v in per_class.items()}
    return samples


def build_table(sources: dict, *, classes=None, allow_missing=False) -> pd.DataFrame:
    """Join the per-class ``sources`` (``{source name: DataFrame}``) into one table, one row
    per class (index ``class``), in the order of ``classes`` (default: the first source's).

    Checks, each with an error that names the source, class and column: every source has a row
    for exactly the classes (no missing, no unknown, no duplicate class); no column name is in
    two sources; no value is missing (NaN/None) unless ``allow_missing`` is True or a
    collection of the column names allowed to miss (the missing cells are then listed in
    ``attrs["missing"]`` and shown as errors in the HTML). ``inf`` is a value, not missing. A
    NaN whose source gave a reason (``attrs["undefined"]``, e.g. the precision of a class the
    model never predicts) is *not defined*, an expected gap that never raises: it is listed
    in ``attrs["undefined"]`` and shown as "not defined (<reason>)".

    ``attrs``: ``provenance`` ``{column: source name}``, ``model_level`` ``{column: value}``
    (constant columns a source declared in its ``attrs["model_level"]``), ``sources`` (names in
    order), ``missing`` (``[(class, column), ...]``) and ``undefined`` ``{(class, column):
    reason}``, ``samples`` (the per-image values the sources kept for the score's bootstrap)."""
    frames = _indexed_by_class(sources)
    first = next(iter(frames))
    order = class_list(frames[first].index if classes is None else classes)
    seen: dict[str, str] = {}
    model: dict = {}
    reasons: dict = {}
    for name, frame in frames.items():
        attrs = sources[name].attrs
        reasons.update(
            {(str(cls), col): why for (cls, col), why in attrs.get("undefined", {}).items()}
        )
        _check_source(name, frame, order, seen)
        model.update(_model_level_values(name, frame, attrs.get("model_level", ())))
    table = pd.concat([frames[name].loc[order] for name in frames], axis=1)
    table.index.name = "class"
    holes, undefined_ = _missing_cells(table, reasons, seen, allow_missing)
    table.attrs = {
        "provenance": dict(seen),
        "model_level": model,
        "sources": list(frames),
        "missing": holes,
        "undefined": undefined_,
        "samples": _samples(sources),
    }
    return table


def undefined(table: pd.DataFrame) -> dict:
    """``{(class, column): reason}``: the values of ``table`` that are not defined, and why."""
    return dict(table.attrs.get("undefined", {}))


def provenance(table: pd.DataFrame) -> dict:
    """``{column: source name}`` of a table from :func:`build_table` (derived columns:
    ``"trust score"``)."""
    prov = table.attrs.get("provenance")
    if not prov:
        raise ValueError("this table has no provenance; build it with trust.build_table(sources)")
    unknown = [c for c in table.columns if c not in prov]
    if unknown:
        raise ValueError(f"column(s) {unknown} were added after build_table and have no source")
    return dict(prov)
