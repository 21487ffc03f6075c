"""Verdict rules: a word is used only when its interval supports it.

Each rule is a small function ``rule(row, ctx) -> [(kind, clause), ...]`` with its threshold
(in :data:`THRESHOLDS`) and its reason in the docstring; ``kind`` is "note", "good" or "bad".
``ctx`` (:class:`Context`) holds the thresholds and the model-level facts. The false-alarm rate
of each rule that has a null (how often it fires when nothing is wrong) is simulated in
tests/test_trust_rules.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as _st

from .. import stats
from .common import (
    CI,
    LEVEL,
    WITHSTANDING,
    corruption_label,
    grey,
    interval_text,
    is_ci,
    is_missing,
    join_and,
    num,
    pct,
)

__all__ = [
    "THRESHOLDS",
    "RULES",
    "Context",
    "model_verdict",
    "robustness_verdict",
    "sanity_clause",
    "verdict_items",
    "verdicts",
]

THRESHOLDS = {
    # accuracy: "accurate" when the Wilson interval lies above this
    "accurate": 0.85,
    # accuracy / precision: "often wrong" / "false alarm" when the interval lies below
    "inaccurate": 0.75,
    # "less accurate than the other classes": one-sided Fisher exact p below this
    "weak_p": 0.025,
    # "well calibrated" when the ECE's interval lies below this
    "calibrated": 0.05,
    # "over-/under-confident" when consistency resampling gives p below this
    "miscalibrated_p": 0.05,
    # robust at the budget when the interval of R lies above this; fragile below
    "robust_share": 0.5,
    # model-level: every class's R interval below this -> "not robust at the budget"
    "not_robust": 0.5,
    # object/background: sign test p below this AND the ratio's interval excludes 1
    "context_p": 0.05,
    # localisation component L: "points at the object" when its interval lies above this
    "localised": 0.0,
    # ... and a one-sided t test of relevance mass > mask share gives p below this
    "localised_p": 0.025,
    # L: "no better than chance" when its interval lies below this
    "unlocalised": 0.1,
    # S: "learned early and stably" above, "unstable in training" below (interval)
    "stable_share": 0.75,
    # natural corruptions: "fragile to <c>" when the share withstanding c lies below (interval);
    # "withstands natural corruptions" when every corruption's interval lies above
    "natural_share": 0.5,
    # the sanity check passes when the correlation's interval lies below this
    "sanity_max": 0.5,
    # model not usable: Wilson lower bound (this z) of overall accuracy <= chance
    "chance_z": 1.96,
    # fewer test images than this: "its numbers rest on only n images"
    "few_images": 10,
}


@dataclass
class Context:
    t: dict
    model: dict = field(default_factory=dict)
    budget: float | None = None
    totals: tuple[int, int] | None = None  # (right, images) over all classes


def _ci(row, column):
    return num(row, column + CI[0]), num(row, column + CI[1])


# ----------------------------------------------------------------------------- rules
def rule_few_images(row, ctx) -> list:
    """Note when a class has fewer than ``few_images`` test images: its intervals are wide."""
    n = num(row, "n_test")
    if n is None or n >= ctx.t["few_images"]:
        return []
    return [
        (
            "note",
            f"its numbers rest on only {int(n)} test image{'s' if n != 1 else ''}"
            if n > 0
            else "it has no test image, so most of its numbers are not defined",
        )
    ]


def rule_never_predicted(row, ctx) -> list:
    """A class the model never predicts: a fact, not an estimate."""
    return (
        [("bad", "never predicted: the model does not answer this class for any test image")]
        if num(row, "n_predicted") == 0
        else []
    )


def rule_accuracy(row, ctx) -> list:
    """Absolute accuracy. "accurate" when the Wilson interval lies above ``accurate`` (0.85);
    "often wrong" when it lies below ``inaccurate`` (0.75); otherwise no word. A class whose true
    accuracy sits at a threshold gets the word at most 2.5 % of the time."""
    acc = num(row, "accuracy")
    lo, hi = _ci(row, "accuracy")
    if acc is None or lo is None:
        return []
    why = interval_text(row, "accuracy")
    if lo >= ctx.t["accurate"]:
        return [("good", f"accurate: {pct(acc)} right ({why})")]
    if hi < ctx.t["inaccurate"]:
        return [("bad", f"often wrong: {pct(acc)} right ({why})")]
    return []


def weaker_than_rest(k: int, n: int, k_all: int, n_all: int) -> float:
    """One-sided Fisher exact p-value that the class (k of n right) is less accurate than the
    other classes together (k_all - k of n_all - n right)."""
    rest_k, rest_n = k_all - k, n_all - n
    if n == 0 or rest_n == 0:
        return float("nan")
    return float(
        _st.fisher_exact([[k, n - k], [rest_k, rest_n - rest_k]], alternative="less").pvalue
    )


def rule_weak_class(row, ctx) -> list:
    """ "Less accurate than the other classes" when a one-sided Fisher exact test of the class
    against the rest gives p < ``weak_p`` (0.025). A class exactly as accurate as the model is
    singled out at most 2.5 % of the time (Fisher's test is exact and conservative)."""
    acc, n = num(row, "accuracy"), num(row, "n_test")
    if acc is None or not n or ctx.totals is None:
        return []
    k = int(round(acc * n))
    k_all, n_all = ctx.totals
    p = weaker_than_rest(k, int(n), k_all, n_all)
    if math.isnan(p) or p >= ctx.t["weak_p"]:
        return []
    rest = (k_all - k) / (n_all - n)
    return [
        (
            "bad",
            f"less accurate than the other classes: {pct(acc)} right against {pct(rest)} "
            f"(one-sided Fisher test p = {p:.2g}, {int(n)} images)",
        )
    ]


def rule_precision(row, ctx) -> list:
    """ "Often a false alarm" when the Wilson interval of precision lies below ``inaccurate``."""
    prec = num(row, "precision")
    lo, hi = _ci(row, "precision")
    if prec is None or hi is None or hi >= ctx.t["inaccurate"]:
        return []
    return [
        (
            "bad",
            f"often a false alarm: only {pct(prec)} of the images it predicts as {row.name} are "
            f"{row.name} ({interval_text(row, 'precision')})",
        )
    ]


def rule_calibration(row, ctx) -> list:
    """Miscalibration by consistency resampling: the class's observed ECE is compared with the
    ECE its own confidences give when correctness is drawn as Bernoulli(confidence) (honest
    confidence; ``calibration_p_value``). "over-/under-confident" when p < ``miscalibrated_p``
    (0.05): a perfectly calibrated class is called miscalibrated at most 5 % of the time,
    whereas a fixed ECE threshold of 0.05 calls a calibrated class of 45 images miscalibrated
    most of the time (its expected ECE is about 0.06). "well calibrated" only when the whole
    bootstrap interval of the ECE lies below ``calibrated`` (0.05)."""
    ce, p = num(row, "calibration_error"), num(row, "calibration_p_value")
    if ce is None:
        return []
    lo, hi = _ci(row, "calibration_error")
    expected = num(row, "calibration_error_expected")
    n = num(row, "n_predicted")
    if p is not None and p < ctx.t["miscalibrated_p"]:
        conf, prec = num(row, "mean_confidence"), num(row, "precision")
        way = "mis" if conf is None or prec is None else ("over-" if conf > prec else "under-")
        said = f"; says {pct(conf)} on average and is right {pct(prec)}" if way != "mis" else ""
        word = "miscalibrated" if way == "mis" else f"{way}confident"
        return [
            (
                "bad",
                f"{word} (ECE {ce:.2f}, honest confidence would give about {expected:.2f} with "
                f"{int(n)} images, p = {p:.2g}{said})",
            )
        ]
    if hi is not None and hi < ctx.t["calibrated"] - 1e-9:
        return [("good", f"well calibrated (ECE {ce:.2f}, 95 % CI {lo:.2f} to {hi:.2f})")]
    if p is not None and expected is not None:
        return [
            (
                "note",
                f"calibration error {ce:.2f} is within what honest confidence gives with {int(n)} "
                f"images (about {expected:.2f}; p = {p:.2g}): no evidence of miscalibration",
            )
        ]
    return []


def rule_robustness(row, ctx) -> list:
    """Absolute robustness at the budget (``ctx.budget``, grey levels): R is the share of the
    class's attacked images whose smallest flipping epsilon exceeds it. "robust at b" when R's
    Wilson interval lies above ``robust_share`` (0.5: most images withstand b); "fragile at b"
    when it lies below. A class whose true share is exactly one half gets either word at most
    2.5 % of the time. The median smallest epsilon is quoted with its interval."""
    r = num(row, "component_robustness")
    lo, hi = _ci(row, "component_robustness")
    if r is None or lo is None or ctx.budget is None:
        return []
    b = grey(ctx.budget)
    med = num(row, "median_eps_whole")
    mlo, mhi = _ci(row, "median_eps_whole")
    median = ""
    if med is not None:
        cap = ctx.model.get("attack_max_eps")

        def eps_text(e):
            return (
                (f"more than {grey(float(cap))}" if cap else "never fooled")
                if math.isinf(e)
                else grey(e)
            )

        if mlo is not None and mhi is not None and math.isinf(mlo):
            ci = ", 95 % CI wholly beyond the largest change searched"
        elif mlo is not None and mhi is not None:
            ci = f", 95 % CI {eps_text(mlo)} to {eps_text(mhi)}"
        else:
            ci = ""
        median = f"; median smallest change {eps_text(med)}{ci}"
    n = int(num(row, "n_attacked") or 0)
    if lo > ctx.t["robust_share"]:
        return [
            (
                "good",
                f"robust at {b}: {pct(r)} of its {n} attacked images withstand it "
                f"(95 % CI {pct(lo)} to {pct(hi)}{median})",
            )
        ]
    if hi < ctx.t["robust_share"]:
        return [
            (
                "bad",
                f"fragile at {b}: only {pct(r)} of its {n} attacked images withstand it "
                f"(95 % CI {pct(lo)} to {pct(hi)}{median})",
            )
        ]
    return []


def rule_object_background(row, ctx) -> list:
    """Which region of equal pixel count the attack needs less change in. Fires only when the
    bootstrap interval of the median per-image ratio eps(object)/eps(background) excludes 1
    AND the exact sign test gives p < ``context_p`` (0.05): with exchangeable regions (no
    preference) it fires at most 5 % of the time. Ratio above 1: "leans on the background"
    (changing the background fools it with less); below 1: "relies on the object"."""
    ratio = num(row, "object_background_ratio")
    lo, hi = _ci(row, "object_background_ratio")
    p = num(row, "object_background_p_value")
    if ratio is None or lo is None or p is None or p >= ctx.t["context_p"]:
        return []
    n = int(num(row, "n_object_background") or 0)
    ci = f"95 % CI {lo:.3g} to {hi:.3g}, sign test p = {p:.2g}, {n} images"
    if lo > 1:
        return [
            (
                "bad",
                "leans on the background: a change confined to the background fools it with a "
                f"{ratio:.3g}x smaller epsilon than one on the object of the same size "
                f"(median ratio; {ci})",
            )
        ]
    if hi < 1:
        return [
            (
                "good",
                f"relies on the object: the object needs a {1 / ratio:.3g}x smaller change than a "
                f"background region of the same size (median ratio {ratio:.3g}; {ci})",
            )
        ]
    return []


def rule_localisation(row, ctx) -> list:
    """Where the explanations (of the PREDICTED class) point, judged only when the explanation
    method passes the sanity check (``sanity_gate``). "point at the object more than chance"
    when the bootstrap interval of L lies above ``localised`` (0: chance) AND a one-sided t test
    of relevance mass > mask share gives p < ``localised_p`` (0.025; the percentile bootstrap of a
    mean of 10 values alone is too narrow: 5.6 % false alarms in simulation); "no better than
    chance" when L's interval lies below ``unlocalised`` (0.1). A failed or undecided sanity
    check is said instead. Maps at chance level are called localised at most 5 % of the time."""
    if "component_localisation" not in row.index and "relevance_mass" not in row.index:
        return []
    gate = ctx.model.get("sanity_gate")
    if gate in ("fail", "undecided"):
        return []  # said once for the model (sanity_clause)
    loc = num(row, "component_localisation")
    lo, hi = _ci(row, "component_localisation")
    if loc is None or lo is None:
        return []
    mass, share = num(row, "relevance_mass"), num(row, "mask_share")
    facts = (
        f"relevance mass {mass:.2f} against {share:.2f} by chance; L = {loc:.2f}, 95 % CI {lo:.2f} "
        f"to {hi:.2f}, {int(num(row, 'n_explained') or 0)} images"
    )
    p = num(row, "localisation_p_value")
    if lo > ctx.t["localised"] and (p is None or p < ctx.t["localised_p"]):
        return [
            (
                "good",
                f"explanations of its predictions point at the object more than chance ({facts})",
            )
        ]
    if hi < ctx.t["unlocalised"]:
        return [
            (
                "bad",
                "explanations of its predictions no better than chance at finding the object "
                f"({facts})",
            )
        ]
    return []


def rule_stability(row, ctx) -> list:
    """Training stability S = share learned early (right from the first half of training on,
    never forgotten, right at the audited epoch). "learned early and stably" when the Wilson
    interval of S lies above ``stable_share`` (0.75); "unstable in training" when it lies below
    (more than a quarter learned late, forgotten or never learned). A class at exactly 0.75
    gets either word at most 2.5 % of the time. Never-learned images count against stability."""
    s = num(row, "component_stability")
    if s is None:
        s = num(row, "share_learned_early")
        lo, hi = _ci(row, "share_learned_early")
    else:
        lo, hi = _ci(row, "component_stability")
    if s is None or lo is None:
        return []
    parts = [
        (num(row, f"share_{c}"), c.replace("_", " "))
        for c in ("learned_late", "forgotten", "never_learned")
    ]
    detail = ", ".join(f"{pct(v)} {name}" for v, name in parts if v is not None)
    n = int(num(row, "n_history") or 0)
    if lo > ctx.t["stable_share"]:
        return [
            (
                "good",
                f"learned early and stably: {pct(s)} of its {n} images "
                f"(95 % CI {pct(lo)} to {pct(hi)})",
            )
        ]
    if hi < ctx.t["stable_share"]:
        return [
            (
                "bad",
                f"unstable in training: only {pct(s)} of its {n} images learned early and kept "
                f"(95 % CI {pct(lo)} to {pct(hi)}; {detail})",
            )
        ]
    return []


def _family_wilson(row, column, n: int, tries: int) -> tuple[float, float]:
    """The Wilson interval of a share of ``n`` images at level 1 - 0.05 / ``tries``
    (Bonferroni): ``tries`` shares judged together err at most 5 % of the time in all."""
    k = int(round(num(row, column) * n))
    return stats.wilson(k, n, level=1 - (1 - LEVEL) / tries)


def rule_natural(row, ctx) -> list:
    """Natural robustness at the stated severities (ImageNet-C level 3 by default): for each
    corruption, the share of the class's correctly classified images whose prediction survives
    it up to its stated severity. "fragile to natural corruptions" names the corruptions whose
    share lies below ``natural_share`` (0.5: most of its images flip under them); "withstands
    natural corruptions" only when every share lies above it. The k corruptions are judged
    together (Wilson intervals at level 1 - 0.05 / k, Bonferroni), so a class whose true share
    is exactly 0.5 under every corruption gets either word in at most 2.5 % of draws; the
    sentence quotes each share's own 95 % interval."""
    shares = [c for c in row.index if c.startswith(WITHSTANDING) and not is_ci(c)]
    found = [(c, num(row, c), *_ci(row, c)) for c in shares]
    found = [f for f in found if None not in f[1:]]
    n = int(num(row, "n_corrupted") or 0)
    if not found or n == 0:
        return []
    t = ctx.t["natural_share"]
    at = ctx.model.get("natural_level") or "the stated severities"
    family = {c: _family_wilson(row, c, n, len(found)) for c, *_ in found}
    note = f"judged over the {len(found)} corruptions together"
    weak = [
        f"{corruption_label(c).lower()} ({pct(v)} withstand it, 95 % CI {pct(lo)} to {pct(hi)})"
        for c, v, lo, hi in found
        if family[c][1] < t
    ]
    if weak:
        return [
            (
                "bad",
                f"fragile to natural corruptions: most of its {n} images flip under "
                f"{join_and(weak)} at {at} ({note})",
            )
        ]
    if len(found) == len(shares) and all(family[c][0] > t for c, *_ in found):
        c, v, lo, hi = min(found, key=lambda f: f[1])
        return [
            (
                "good",
                f"withstands natural corruptions at {at}: most of its {n} images keep their "
                f"prediction under each of the {len(found)} corruptions (the fewest under "
                f"{corruption_label(c).lower()}: {pct(v)}, 95 % CI {pct(lo)} to {pct(hi)}; "
                f"{note})",
            )
        ]
    return []


RULES = (
    rule_few_images,
    rule_never_predicted,
    rule_accuracy,
    rule_weak_class,
    rule_precision,
    rule_calibration,
    rule_robustness,
    rule_object_background,
    rule_localisation,
    rule_stability,
    rule_natural,
)


# ----------------------------------------------------------------------------- model level
def model_verdict(table: pd.DataFrame, *, thresholds: dict | None = None) -> str | None:
    """A clause when the model as a whole is not usable, else None.

    Rule: the overall accuracy (the classes' ``accuracy`` weighted by ``n_test``) is compared
    with chance, the accuracy of always answering the largest class (1/C when balanced). The
    model is "not usable" when the lower end of the Wilson interval of its accuracy (``z =
    chance_z``, 1.96) is at or below chance: its accuracy cannot be told apart from guessing."""
    t = {**THRESHOLDS, **(thresholds or {})}
    if not {"accuracy", "n_test"} <= set(table.columns):
        return None
    n = table["n_test"].astype(float).to_numpy()
    acc = table["accuracy"].astype(float).to_numpy()
    ok = (n > 0) & ~np.isnan(acc)
    total = n[ok].sum()
    if total <= 0:
        return "no class has a test image, so nothing about the model can be judged"
    p = float((acc[ok] * n[ok]).sum() / total)
    chance = float(n.max() / n.sum())
    level = 2 * _st.norm.cdf(float(t["chance_z"])) - 1
    low, _ = stats.wilson(round(p * total), total, level=level)
    if low > chance:
        return None
    return (
        f"the model is no better than chance: {p:.0%} of {int(total)} test images right, "
        f"guessing gets {chance:.0%}"
    )


def robustness_verdict(
    table: pd.DataFrame, *, thresholds: dict | None = None, short: bool = False
) -> str | None:
    """A sentence when the model is not robust at the budget: every class's R interval lies
    below ``not_robust`` (0.5: in every class most attacked images flip within the budget), so
    no class is called robust and ranking them by robustness would rank noise."""
    t = {**THRESHOLDS, **(thresholds or {})}
    col = "component_robustness_ci_high"
    budget = table.attrs.get("score", {}).get("budget")
    if col not in table.columns or budget is None:
        return None
    hi = table[col].astype(float).to_numpy()
    hi = hi[~np.isnan(hi)]
    if len(hi) == 0 or np.any(hi >= t["not_robust"]):
        return None
    if short:
        return f"the model is not robust at {grey(budget)}"
    return (
        f"the model is not robust at a budget of {grey(budget)} (one grey level is the smallest "
        "change an 8-bit image can store): in every class most attacked images flip within it (at "
        f"most {hi.max():.0%} withstand it, upper ends of 95 % intervals), so no class is robust, "
        "whatever their order"
    )


def sanity_clause(table: pd.DataFrame, *, short: bool = False) -> str | None:
    """The sanity-check gate in words when it does not pass (model level)."""
    model = table.attrs.get("model_level", {})
    gate = model.get("sanity_gate")
    if gate is None or gate == "pass":
        return None
    corr, lo, hi = (
        model.get(k)
        for k in ("sanity_correlation", "sanity_correlation_ci_low", "sanity_correlation_ci_high")
    )
    n = model.get("n_sanity")
    ci = (
        f", 95 % CI {float(lo):.2f} to {float(hi):.2f}"
        if lo is not None and not is_missing(lo)
        else ", no interval"
    )
    what = "fail" if gate == "fail" else "are undecided on"
    if short:
        return f"its explanations {what} the sanity check, so where they point is not judged"
    few = ""
    if (
        gate == "undecided"
        and lo is not None
        and not is_missing(lo)
        and (float(hi) < THRESHOLDS["sanity_max"] or float(lo) > THRESHOLDS["sanity_max"])
    ):
        few = " (too few images checked for a decision, although the interval lies on one side)"
    corr_text = "not defined" if corr is None or is_missing(corr) else f"{float(corr):.2f}"
    return (
        f"the explanations {what} the sanity check{few} (mean correlation after randomising the "
        f"weights {corr_text}{ci}, {n} images; threshold {THRESHOLDS['sanity_max']:g}), so where "
        "they point is not judged"
    )


def _totals(table):
    if not {"accuracy", "n_test"} <= set(table.columns):
        return None
    n = table["n_test"].astype(float).fillna(0).to_numpy()
    acc = table["accuracy"].astype(float).fillna(0).to_numpy()
    return int(round((acc * n).sum())), int(n.sum())


def verdict_items(
    table: pd.DataFrame, *, thresholds: dict | None = None, budget: float | None = None
) -> dict:
    """The verdict of each class as a list of ``(kind, clause)``, ``kind`` one of ``"model"``
    (the model is not usable, :func:`model_verdict`), ``"model_note"`` (a model-level fact
    that limits every class: not robust at the budget, the explanations' sanity check),
    ``"note"``, ``"good"`` and ``"bad"``. The clauses come from :data:`RULES` in order.
    ``budget``: default the scored table's."""
    unknown = set(thresholds or {}) - set(THRESHOLDS)
    if unknown:
        raise ValueError(f"unknown threshold(s) {sorted(unknown)}; known: {sorted(THRESHOLDS)}")
    t = {**THRESHOLDS, **(thresholds or {})}
    model = dict(table.attrs.get("model_level", {}))
    if budget is None:
        budget = table.attrs.get("score", {}).get("budget")
    ctx = Context(t=t, model=model, budget=budget, totals=_totals(table))
    unusable = model_verdict(table, thresholds=thresholds)
    model_notes = [
        x for x in (robustness_verdict(table, thresholds=thresholds), sanity_clause(table)) if x
    ]
    out = {}
    for cls, row in table.iterrows():
        items = [("model", unusable)] if unusable else []
        items += [("model_note", x) for x in model_notes]
        for rule in RULES:
            items += rule(row, ctx)
        order = {"model": 0, "model_note": 1, "note": 2, "good": 3, "bad": 4}
        out[cls] = sorted(items, key=lambda e: order[e[0]])
    return out


def _clauses_sentence(kinds: dict) -> str:
    """One sentence from a class's clauses by kind: model-level facts first ("Not usable:
    ..."), then notes, strengths, "but" and the weaknesses."""
    good, bad = kinds["good"], kinds["bad"]
    if good and bad:
        text = f"{join_and(good)}, but {'; '.join(bad)}."
    elif good:
        text = f"{join_and(good)}."
    elif bad:
        text = f"{'; '.join(bad)}."
    else:
        text = "no strength or weakness is supported by the intervals of its numbers."
    for key in ("note", "model_note"):
        if kinds[key]:
            text = "; ".join(kinds[key]) + ". " + text[0].upper() + text[1:]
    if kinds["model"]:
        text = f"Not usable: {kinds['model'][0]}. " + text[0].upper() + text[1:]
    return text


def _trust_head(row: pd.Series, n_classes: int) -> str:
    """ "trust 0.71 (95 % CI 0.55 to 0.80; rank 2 of 6, 1 to 3 in 95 % of bootstrap draws): "
    (the parts the row has), or "" without a ``trust_score``."""
    if "trust_score" not in row.index:
        return ""
    ts = num(row, "trust_score")
    lo, hi = _ci(row, "trust_score")
    rank = ""
    if "rank" in row.index:
        rlo, rhi = num(row, "rank_ci_low"), num(row, "rank_ci_high")
        spread = (
            f", {int(rlo)} to {int(rhi)} in 95 % of bootstrap draws"
            if rlo is not None and rhi is not None and rlo != rhi
            else ""
        )
        rank = f"rank {int(row['rank'])} of {n_classes}{spread}"
    if ts is None:
        return f"trust score not defined ({rank}): " if rank else "trust score not defined: "
    ci = f"95 % CI {lo:.2f} to {hi:.2f}" if lo is not None and hi is not None else ""
    inner = "; ".join(x for x in (ci, rank) if x)
    return f"trust {ts:.2f} ({inner}): " if inner else f"trust {ts:.2f}: "


def verdicts(
    table: pd.DataFrame, *, thresholds: dict | None = None, budget: float | None = None
) -> pd.Series:
    """One sentence per class (a Series indexed like ``table``) joined from
    :func:`verdict_items`: model-level facts first ("Not usable: ..."), then notes, strengths,
    "but" and the weaknesses; "no word is supported by the intervals" when no rule fires. With
    a ``trust_score`` the sentence starts with "trust 0.71 (95 % CI 0.55 to 0.80; rank 2 of 6, 1 to
    3 in 95 % of bootstrap draws): ". ``attrs["items"]`` holds the lists (the HTML shows them)."""
    items = verdict_items(table, thresholds=thresholds, budget=budget)
    # the model-level facts in short (the HTML report says them in full, once)
    short = [
        x
        for x in (
            robustness_verdict(table, thresholds=thresholds, short=True),
            sanity_clause(table, short=True),
        )
        if x
    ]
    out = {}
    for cls, row in table.iterrows():
        kinds = {
            k: [text for kind, text in items[cls] if kind == k]
            for k in ("model", "model_note", "note", "good", "bad")
        }
        if kinds["model_note"]:
            kinds["model_note"] = short
        text = _trust_head(row, len(table)) + _clauses_sentence(kinds)
        out[cls] = text[0].upper() + text[1:]
    series = pd.Series(out, name="verdict").rename_axis(table.index.name)
    series.attrs["items"] = items
    return series
