"""The per-class trust report: one table per model, one row per class, every number with its
95 % interval and the count of images it rests on, traced to the analysis it came from; one
trust score per class with an interval, a ranking that says which classes cannot be told
apart, verdicts from rules that use a word only when the interval supports it, CSV and HTML.

How the pieces fit (notebook 10)::

    sources = {
        "predictions":  trust.per_class_from_predictions(labels, probs, classes,
                                                         calibrated_probs=probs_ts),
        # up to best_epoch
        "training":     trust.per_class_from_history(run.history, labels, classes),
        # regions: the fragility_by_region frame
        "attacks":      trust.per_class_from_fragility(regions, classes),
        # natural: the corruptions.natural_fragility frame (optional: without it N is left out)
        "corruptions":  trust.per_class_from_corruptions(natural, classes),
        "explanations": trust.per_class_localisation(maps, masks, labels_explained, classes),
        "sanity check": trust.from_sanity_check(sanity_df, "gradcam", classes),
    }
    table = trust.build_table(sources)          # joins, checks, provenance, per-image samples
    table = trust.score(table, budget=1 / 255)  # components, trust_score, rank, with intervals
    words = trust.verdicts(table)               # one sentence per class, from trust.RULES
    trust.ranking(table)                        # rank intervals, classes that cannot be told apart
    trust.write_csv(table, "trust.csv", verdicts=words)
    trust.write_html(table, "trust.html", verdicts=words, ...)   # helpers/report.py

Modules: :mod:`.sources` (one function per analysis), :mod:`.table` (join and check),
:mod:`.score` (components, score, ranking), :mod:`.rules` (verdict rules and thresholds),
:mod:`.output` (CSV, HTML). Intervals: :mod:`helpers.stats`.

Two kinds of empty cell are told apart. A value that *cannot be computed* for this model is
**not defined**, and the source says why in ``frame.attrs["undefined"]`` ``{(class, column):
reason}``. A NaN that no source explains is **missing** (a bug): :func:`build_table` raises
unless ``allow_missing``.
"""

from __future__ import annotations

from . import common, output
from .common import (
    COLUMNS,
    COMPONENTS,
    LEVEL,
    N_BOOT,
    N_COLUMN,
    NEVER_PREDICTED,
    NO_TEST_IMAGE,
    NONE_ATTACKED,
    NONE_CORRUPTED,
    NONE_EXPLAINED,
    ci_columns,
    is_ci,
)
from .output import format_value, read_csv, write_csv, write_html
from .rules import (
    RULES,
    THRESHOLDS,
    model_verdict,
    robustness_verdict,
    sanity_clause,
    verdict_items,
    verdicts,
)
from .score import (
    DEFAULT_BUDGET,
    SCORE_FORMULA,
    components,
    pairwise_better,
    rank_probabilities,
    ranking,
    score,
)
from .sources import (
    SANITY_THRESHOLD,
    from_sanity_check,
    model_level,
    per_class_from_corruptions,
    per_class_from_fragility,
    per_class_from_history,
    per_class_from_predictions,
    per_class_localisation,
    per_class_means,
)
from .table import build_table, provenance, undefined

# Private helpers that helpers/report.py reaches through the package (trust._is_missing, ...):
# bound by assignment, not re-exported in __all__.
_DERIVED = common.DERIVED
_is_missing = common.is_missing
_verdict_series = output.verdict_series

__all__ = [
    "COLUMNS",
    "COMPONENTS",
    "THRESHOLDS",
    "SCORE_FORMULA",
    "DEFAULT_BUDGET",
    "RULES",
    "N_COLUMN",
    "LEVEL",
    "N_BOOT",
    "NEVER_PREDICTED",
    "NO_TEST_IMAGE",
    "NONE_ATTACKED",
    "NONE_CORRUPTED",
    "NONE_EXPLAINED",
    "SANITY_THRESHOLD",
    "per_class_means",
    "per_class_from_predictions",
    "per_class_from_history",
    "per_class_from_fragility",
    "per_class_from_corruptions",
    "per_class_localisation",
    "model_level",
    "from_sanity_check",
    "build_table",
    "provenance",
    "undefined",
    "components",
    "score",
    "ranking",
    "rank_probabilities",
    "pairwise_better",
    "model_verdict",
    "robustness_verdict",
    "sanity_clause",
    "verdict_items",
    "verdicts",
    "format_value",
    "write_csv",
    "read_csv",
    "write_html",
    "ci_columns",
    "is_ci",
]
