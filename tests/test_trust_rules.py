"""The verdict rules by simulation: how often each fires when nothing is wrong (false alarms,
at most 5 %), and that it does fire when something clearly is (power). Default sizes of the
embedded profile: 6 classes, 50 test images each, 8 attacked and 10 explained per class.

The rates measured (seeds fixed) are printed with ``pytest -s``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers import trust
from helpers.trust import rules

C, N_TEST, N_ATTACKED, N_EXPLAINED = 6, 50, 8, 10
CLASSES = [f"class {k}" for k in range(C)]
NO = {"accuracy": 0, "calibration": 0, "robustness": 0, "localisation": 0, "stability": 0}


def only(component):
    return {**NO, component: 1}


def _said(items, cls, text):
    return any(text in clause for _, clause in items[cls])


def _rate(name, fired, draws):
    rate = fired / draws
    print(f"\n{name}: fired in {fired} of {draws} draws ({rate:.1%})")
    return rate


# ----------------------------------------------------------------------------- calibration
def _calibration_draw(rng, shift=0.0):
    """6 classes x 50 images, each predicted as its class with confidence ~ U(0.4, 1); correct ~
    Bernoulli(confidence - shift) (shift 0: perfectly calibrated)."""
    conf = rng.uniform(0.4, 1.0, size=(C, N_TEST))
    correct = rng.random((C, N_TEST)) < np.clip(conf - shift, 0, 1)
    pred = np.repeat(np.arange(C), N_TEST)
    other = (pred + rng.integers(1, C, size=pred.size)) % C
    labels = np.where(correct.ravel(), pred, other)
    probs = np.tile(((1 - conf.ravel()) / (C - 1))[:, None], (1, C))
    probs[np.arange(pred.size), pred] = conf.ravel()
    return labels, probs


def _calibration_fires(labels, probs):
    src = trust.per_class_from_predictions(labels, probs, CLASSES, n_boot=50, n_null=1000)
    table = trust.build_table({"p": src})
    items = trust.verdict_items(table)
    return [
        any("confident" in c or "miscalibrated" in c for k, c in items[cls] if k == "bad")
        for cls in CLASSES
    ], src


def test_a_perfectly_calibrated_class_is_rarely_called_miscalibrated():
    rng = np.random.default_rng(0)
    fired = naive = draws = 0
    for _ in range(150):
        flags, src = _calibration_fires(*_calibration_draw(rng))
        fired += sum(flags)
        naive += int((src["calibration_error"] > 0.05).sum())
        draws += C
    rate = _rate("calibration rule, perfectly calibrated class of 50", fired, draws)
    naive_rate = _rate("old fixed threshold ECE > 0.05 on the same draws", naive, draws)
    assert rate <= 0.05
    assert naive_rate > 0.5  # why the fixed threshold had to go (issue 11)


def test_an_over_confident_class_is_caught():
    rng = np.random.default_rng(1)
    fired = draws = 0
    for _ in range(20):
        flags, _ = _calibration_fires(
            *_calibration_draw(rng, shift=0.25)
        )  # right 25 points less often
        fired += sum(flags)
        draws += C
    assert _rate("calibration rule, 25 points over-confident", fired, draws) > 0.8


# ----------------------------------------------------------------------------- accuracy
def test_a_class_as_accurate_as_the_model_is_rarely_singled_out():
    from helpers import stats

    rng = np.random.default_rng(2)
    for p in (0.8, 0.95):
        fired = draws = 0
        for _ in range(500):
            k = rng.binomial(N_TEST, p, size=C)
            ctx = rules.Context(t=rules.THRESHOLDS, totals=(int(k.sum()), C * N_TEST))
            for j in range(C):
                lo, hi = stats.wilson(k[j], N_TEST)
                row = pd.Series(
                    {
                        "accuracy": k[j] / N_TEST,
                        "n_test": N_TEST,
                        "accuracy_ci_low": lo,
                        "accuracy_ci_high": hi,
                    },
                    name=CLASSES[j],
                )
                fired += bool(rules.rule_weak_class(row, ctx))
                draws += 1
        assert _rate(f"weak-class rule, every class at {p:.0%}", fired, draws) <= 0.05
    # power: one class at 60 % among classes at 90 %
    fired = 0
    for _ in range(200):
        k = rng.binomial(N_TEST, [0.6] + [0.9] * (C - 1))
        ctx = rules.Context(t=rules.THRESHOLDS, totals=(int(k.sum()), C * N_TEST))
        fired += bool(
            rules.rule_weak_class(
                pd.Series({"accuracy": k[0] / N_TEST, "n_test": N_TEST}, name="x"), ctx
            )
        )
    assert _rate("weak-class rule, 60 % among 90 %", fired, 200) > 0.8


def test_accuracy_words_at_their_thresholds():
    """A class whose true accuracy sits exactly at a threshold gets the word rarely."""
    rng = np.random.default_rng(3)
    ctx = rules.Context(t=rules.THRESHOLDS)
    from helpers import stats

    for p, word in (
        (rules.THRESHOLDS["accurate"], "accurate"),
        (rules.THRESHOLDS["inaccurate"], "often wrong"),
    ):
        k = rng.binomial(N_TEST, p, size=3000)
        lo, hi = stats.wilson(k, np.full(k.shape, N_TEST))
        fired = sum(
            any(
                c.startswith(word)
                for _, c in rules.rule_accuracy(
                    pd.Series(
                        {
                            "accuracy": k[i] / N_TEST,
                            "accuracy_ci_low": lo[i],
                            "accuracy_ci_high": hi[i],
                            "n_test": N_TEST,
                        },
                        name="x",
                    ),
                    ctx,
                )
            )
            for i in range(len(k))
        )
        assert _rate(f"'{word}' at a true accuracy of {p:.0%}", fired, len(k)) <= 0.05


# ----------------------------------------------------------------------------- robustness
def _fragility(
    rng, p_withstand, *, n=N_ATTACKED, budget=1 / 255, with_regions=False, scale=4 / 255
):
    """Minimal epsilons: each image withstands the budget with probability p_withstand."""
    rows = []
    for k in range(C):
        for i in range(n):
            image = k * n + i
            above = rng.random() < p_withstand
            eps = budget * (1 + rng.uniform(0.05, 3)) if above else budget * rng.uniform(0.1, 0.95)
            regions = {"whole": eps}
            if with_regions:  # object and background exchangeable
                regions["object"], regions["background"] = rng.exponential(scale, size=2)
            for region, e in regions.items():
                rows.append(
                    {
                        "image": image,
                        "region": region,
                        "label": k,
                        "epsilon": e,
                        "flipped": True,
                        "already_wrong": False,
                    }
                )
    frame = pd.DataFrame(rows)
    frame.attrs["max_eps"] = 16 / 255
    return frame


def test_robust_and_fragile_at_a_share_of_one_half():
    rng = np.random.default_rng(4)
    robust = fragile = draws = 0
    for _ in range(60):
        table = trust.build_table(
            {"a": trust.per_class_from_fragility(_fragility(rng, 0.5), CLASSES, n_boot=50)}
        )
        scored = trust.score(table, weights=only("robustness"), n_boot=50)
        items = trust.verdict_items(scored)
        robust += sum(_said(items, c, "robust at") for c in CLASSES)
        fragile += sum(_said(items, c, "fragile at") for c in CLASSES)
        draws += C
    # each word is its own claim with its own null (share <= 0.5 for "robust", >= 0.5 for
    # "fragile"); at exactly 0.5 both nulls hold, and each word fires at most 5 % of the time
    assert _rate("'robust at 1/255', true share 0.5, 8 images", robust, draws) <= 0.05
    assert _rate("'fragile at 1/255', true share 0.5, 8 images", fragile, draws) <= 0.05
    _rate("either word (both nulls at once)", robust + fragile, draws)
    # power: every image withstands the budget / none does
    table = trust.build_table(
        {"a": trust.per_class_from_fragility(_fragility(rng, 1.0), CLASSES, n_boot=50)}
    )
    items = trust.verdict_items(trust.score(table, weights=only("robustness"), n_boot=50))
    assert all(_said(items, c, "robust at 1/255") for c in CLASSES)
    table = trust.build_table(
        {"a": trust.per_class_from_fragility(_fragility(rng, 0.0), CLASSES, n_boot=50)}
    )
    scored = trust.score(table, weights=only("robustness"), n_boot=50)
    items = trust.verdict_items(scored)
    assert all(_said(items, c, "fragile at 1/255") for c in CLASSES)
    assert trust.robustness_verdict(scored) is not None  # and the model is not robust at 1/255


def test_object_vs_background_with_exchangeable_regions():
    rng = np.random.default_rng(5)
    fired = draws = 0
    for _ in range(100):
        src = trust.per_class_from_fragility(
            _fragility(rng, 0.5, with_regions=True), CLASSES, n_boot=400
        )
        items = trust.verdict_items(trust.build_table({"a": src}))
        fired += sum(
            _said(items, c, "leans on the background") or _said(items, c, "relies on the object")
            for c in CLASSES
        )
        draws += C
    assert _rate("object/background rule, exchangeable regions, 8 images", fired, draws) <= 0.05
    # power: the background needs a 4x smaller change on every image
    frame = _fragility(rng, 0.5, with_regions=True)
    frame.loc[frame["region"] == "background", "epsilon"] = (
        frame.loc[frame["region"] == "object", "epsilon"].to_numpy() / 4
    )
    items = trust.verdict_items(
        trust.build_table({"a": trust.per_class_from_fragility(frame, CLASSES, n_boot=400)})
    )
    assert all(_said(items, c, "leans on the background") for c in CLASSES)


# ----------------------------------------------------------------------------- localisation
def _localisation(rng, lift=0.0, n=N_EXPLAINED, side=16):
    """Positive noise maps (chance level) over random rectangular objects; ``lift`` adds
    attribution on the object."""
    total = C * n
    masks = np.zeros((total, side, side), bool)
    for i in range(total):
        h, w = rng.integers(4, 12, size=2)
        top, left = rng.integers(0, side - h), rng.integers(0, side - w)
        masks[i, top : top + h, left : left + w] = True
    maps = rng.random((total, side, side)) + lift * masks
    return maps, masks, np.repeat(np.arange(C), n)


def test_explanations_at_chance_are_rarely_called_localised():
    rng = np.random.default_rng(6)
    fired = draws = 0
    for _ in range(60):
        src = trust.per_class_localisation(*_localisation(rng), CLASSES, n_boot=400)
        scored = trust.score(
            trust.build_table({"e": src}), weights=only("localisation"), n_boot=400
        )
        items = trust.verdict_items(scored)
        fired += sum(_said(items, c, "point at the object more than chance") for c in CLASSES)
        draws += C
    assert _rate("localisation rule, maps at chance, 10 images", fired, draws) <= 0.05
    src = trust.per_class_localisation(*_localisation(rng, lift=1.0), CLASSES, n_boot=400)
    items = trust.verdict_items(
        trust.score(trust.build_table({"e": src}), weights=only("localisation"))
    )
    assert all(_said(items, c, "point at the object more than chance") for c in CLASSES)


# ----------------------------------------------------------------------------- stability
def _history(rng, p_early, epochs=6):
    """Each test image learned early (right at every epoch) with probability p_early, else never."""
    labels = np.repeat(np.arange(C), N_TEST)
    early = rng.random(labels.size) < p_early
    preds = np.where(early[None], labels[None], ((labels + 1) % C)[None]).repeat(epochs, 0)
    return preds, labels


def test_stability_words_at_their_threshold():
    rng = np.random.default_rng(7)
    p = rules.THRESHOLDS["stable_share"]
    stable = unstable = draws = 0
    for _ in range(60):
        src = trust.per_class_from_history(*_history(rng, p), CLASSES, n_boot=50)
        items = trust.verdict_items(
            trust.score(trust.build_table({"h": src}), weights=only("stability"), n_boot=50)
        )
        stable += sum(_said(items, c, "learned early and stably") for c in CLASSES)
        unstable += sum(_said(items, c, "unstable in training") for c in CLASSES)
        draws += C
    assert (
        _rate(
            f"'learned early and stably', true share learned early {p:.0%}, 50 images",
            stable,
            draws,
        )
        <= 0.05
    )
    assert (
        _rate(
            f"'unstable in training', true share learned early {p:.0%}, 50 images", unstable, draws
        )
        <= 0.05
    )
    _rate("either word (both nulls at once)", stable + unstable, draws)
    src = trust.per_class_from_history(*_history(rng, 0.98), CLASSES, n_boot=50)
    items = trust.verdict_items(
        trust.score(trust.build_table({"h": src}), weights=only("stability"), n_boot=50)
    )
    assert all(_said(items, c, "learned early and stably") for c in CLASSES)


def test_every_rule_has_a_reason():
    for rule in rules.RULES:
        assert rule.__doc__ and len(rule.__doc__.split()) > 8, rule.__name__
    assert "FGSM" not in trust.COLUMNS["n_attacked"] and "PGD" in trust.COLUMNS["n_attacked"]
    assert "PREDICTED" in trust.COLUMNS["n_explained"]
    assert "PREDICTED" in trust.per_class_localisation.__doc__


# ----------------------------------------------------------------------------- the score's interval
def test_trust_score_interval_covers_the_true_score():
    """Accuracy 0.8 and share learned early 0.7 on separate images of one class (50 each): the
    true score is sqrt(0.8 * 0.7); its 95 % interval, combined from the two sources' bootstrap
    replicates, should cover it about 95 % of the time."""
    rng = np.random.default_rng(8)
    truth = np.sqrt(0.8 * 0.7)
    covered = draws = 0
    for _ in range(100):
        labels = np.repeat(np.arange(C), N_TEST)
        right = rng.random(labels.size) < 0.8
        probs = np.full((labels.size, C), 0.02)
        probs[np.arange(labels.size), np.where(right, labels, (labels + 1) % C)] = 0.9
        preds, hist_labels = _history(rng, 0.7)
        table = trust.build_table(
            {
                "p": trust.per_class_from_predictions(labels, probs, CLASSES, n_boot=20, n_null=20),
                "h": trust.per_class_from_history(preds, hist_labels, CLASSES, n_boot=20),
            }
        )
        scored = trust.score(table, weights={**NO, "accuracy": 1, "stability": 1}, n_boot=1000)
        covered += int(
            (
                (scored["trust_score_ci_low"] <= truth) & (truth <= scored["trust_score_ci_high"])
            ).sum()
        )
        draws += C
    rate = _rate("trust-score interval covering the true score", covered, draws)
    assert 0.9 <= rate <= 0.99
