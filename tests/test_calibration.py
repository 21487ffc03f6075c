from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import calibration

# Six images, three classes, worked out by hand with n_bins=5:
# bins (0,.2] (.2,.4] (.4,.6] (.6,.8] (.8,1].
#   image  probs              label  conf  bin  correct
#   a      [.9, .05, .05]     0      .9    4    yes
#   b      [.8, .1, .1]       1      .8    3    no   (0.8 lies on an edge: right-closed bin 3)
#   c      [.1, .7, .2]       1      .7    3    yes
#   d      [.4, .35, .25]     2      .4    1    no   (edge)
#   e      [.2, .2, .6]       2      .6    2    yes  (edge)
#   f      [1., 0., 0.]       0      1.    4    yes
# bin 4: conf .95, acc 1 (gap .05, 2 images); bin 3: conf .75, acc .5 (gap .25, 2);
# bin 2: .6 vs 1 (.4, 1); bin 1: .4 vs 0 (.4, 1)
#   ->  ECE = (2*.05 + 2*.25 + .4 + .4) / 6 = 1.4 / 6, MCE = .4
P = np.array(
    [
        [0.9, 0.05, 0.05],
        [0.8, 0.1, 0.1],
        [0.1, 0.7, 0.2],
        [0.4, 0.35, 0.25],
        [0.2, 0.2, 0.6],
        [1.0, 0.0, 0.0],
    ]
)
Y = np.array([0, 1, 1, 2, 2, 0])


def test_ece_and_mce_match_a_hand_computation():
    assert calibration.expected_calibration_error(P, Y, n_bins=5) == pytest.approx(1.4 / 6)
    assert calibration.maximum_calibration_error(P, Y, n_bins=5) == pytest.approx(0.4)
    bins = calibration.reliability_bins(P, Y, n_bins=5)
    assert bins["count"].tolist() == [0, 1, 1, 2, 2]
    np.testing.assert_allclose(bins["accuracy"].to_numpy()[1:], [0, 1, 0.5, 1])
    np.testing.assert_allclose(bins["confidence"].to_numpy()[1:], [0.4, 0.6, 0.75, 0.95])
    np.testing.assert_allclose(bins["gap"].to_numpy()[1:], [0.4, -0.4, 0.25, -0.05])
    assert np.isnan(bins.loc[0, "accuracy"]) and bins["share"].sum() == pytest.approx(1)
    # tensors work the same
    assert calibration.expected_calibration_error(
        torch.tensor(P), torch.tensor(Y), n_bins=5
    ) == pytest.approx(1.4 / 6)


def test_per_class_calibration_matches_a_hand_computation():
    # predicted as 0: a (.9 right), b (.8 wrong), d (.4 wrong), f (1. right)
    #   bins: 4 -> .95 vs 1, 3 -> .8 vs 0, 1 -> .4 vs 0: (2*.05 + .8 + .4) / 4 = .325
    # predicted as 1: c (.7 right): .3 ; predicted as 2: e (.6 right): .4
    per_class = calibration.per_class_calibration_error(P, Y, n_bins=5)
    np.testing.assert_allclose(per_class, [0.325, 0.3, 0.4])
    # Kull et al. classwise term for class 2: p_2 = [.05, .1, .2, .25, .6, 0],
    #   is-2 = [0, 0, 0, 1, 1, 0]
    #   bin 0 holds four (mean .0875, freq 0), bin 1: .25 vs 1, bin 2: .6 vs 1
    #   -> (.35 + .75 + .4) / 6
    classwise = calibration.per_class_calibration_error(P, Y, n_bins=5, by="classwise")
    assert classwise[2] == pytest.approx(1.5 / 6)
    # a class never predicted has no calibration error
    assert np.isnan(calibration.per_class_calibration_error(P[:1], Y[:1], n_bins=5)[1])


def _toy(n, rng, *, shortfall):
    """Three classes; the confidence is uniform on [0.4, 1] and the prediction is right with
    probability confidence - shortfall (0: perfectly calibrated)."""
    conf = rng.uniform(0.4, 1.0, n)
    pred = rng.integers(0, 3, n)
    probs = np.repeat(((1 - conf) / 2)[:, None], 3, axis=1)
    probs[np.arange(n), pred] = conf
    right = rng.random(n) < conf - shortfall
    labels = np.where(right, pred, (pred + rng.integers(1, 3, n)) % 3)
    return probs, labels


def test_ece_is_about_zero_for_a_calibrated_predictor_and_the_gap_for_an_overconfident_one():
    rng = np.random.default_rng(0)
    probs, labels = _toy(200_000, rng, shortfall=0.0)
    assert calibration.expected_calibration_error(probs, labels) < 0.01
    probs, labels = _toy(200_000, rng, shortfall=0.15)
    assert calibration.expected_calibration_error(probs, labels) == pytest.approx(0.15, abs=0.01)
    assert calibration.maximum_calibration_error(probs, labels) == pytest.approx(0.15, abs=0.03)
    # over-confident: every bin's gap is positive
    assert (calibration.reliability_bins(probs, labels)["gap"].dropna() > 0).all()


def test_nll_and_brier_match_references():
    logits = torch.randn(50, 4, generator=torch.Generator().manual_seed(0)) * 3
    y = torch.randint(0, 4, (50,), generator=torch.Generator().manual_seed(1))
    probs = logits.softmax(1).double()
    assert calibration.negative_log_likelihood(probs, y) == pytest.approx(
        F.cross_entropy(logits.double(), y).item()
    )
    onehot = F.one_hot(y, 4).double()
    assert calibration.brier_score(probs, y) == pytest.approx(
        ((probs - onehot) ** 2).sum(1).mean().item()
    )
    # a probability of exactly 0 is floored, not -log 0 = inf
    assert np.isfinite(calibration.negative_log_likelihood(np.array([[1.0, 0.0]]), np.array([1])))


def _synthetic_logits(n, c, temperature, seed):
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(size=(n, c)) * 2.0
    p = np.exp(true_logits - true_logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = (rng.random(n)[:, None] > p.cumsum(1)).sum(1)  # drawn from the true probabilities
    return true_logits * temperature, labels  # scaled: T0 undoes it


@pytest.mark.parametrize("t0", [2.5, 0.5])
def test_temperature_scaling_recovers_a_known_temperature(t0):
    logits, labels = _synthetic_logits(20_000, 5, t0, seed=int(t0 * 10))
    fit = calibration.fit_temperature(logits, labels)
    assert fit.temperature == pytest.approx(t0, rel=0.05)
    assert fit.nll_after < fit.nll_before
    # the optimum: a nearby temperature is no better
    for t in (fit.temperature * 0.98, fit.temperature * 1.02):
        assert (
            calibration.negative_log_likelihood(calibration.apply_temperature(logits, t), labels)
            >= fit.nll_after
        )
    assert calibration.negative_log_likelihood(fit.apply(logits), labels) == pytest.approx(
        fit.nll_after
    )
    # the same fit from probabilities (log p differs from the logits by a constant per row)
    probs = calibration.apply_temperature(logits, 1.0)
    from_probs = calibration.fit_temperature(probs, labels, kind="probs")
    assert from_probs.temperature == pytest.approx(fit.temperature, rel=1e-4)
    np.testing.assert_allclose(from_probs.apply(probs), fit.apply(logits), atol=1e-6)
    # predictions never change; the ECE drops for the over-confident case
    assert (fit.apply(logits).argmax(1) == logits.argmax(1)).all()
    assert calibration.expected_calibration_error(
        fit.apply(logits), labels
    ) < calibration.expected_calibration_error(probs, labels)


def test_temperature_scaling_lowers_validation_nll_of_an_overconfident_model():
    logits, labels = _synthetic_logits(3000, 6, 3.0, seed=7)
    val, test = slice(0, 1500), slice(1500, None)
    fit = calibration.fit_temperature(torch.tensor(logits[val]), torch.tensor(labels[val]))
    assert fit.nll_after < fit.nll_before - 0.1 and fit.n == 1500
    before = calibration.negative_log_likelihood(
        calibration.apply_temperature(logits[test], 1.0), labels[test]
    )
    after = calibration.negative_log_likelihood(fit.apply(logits[test]), labels[test])
    assert after < before  # fitted on validation, it helps on held-out images too


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: calibration.expected_calibration_error(P[0], Y), r"\[N, C\]"),
        (lambda: calibration.expected_calibration_error(P, Y[:3]), "one per row"),
        (lambda: calibration.expected_calibration_error(P, Y + 1), r"class indices in \[0, 3\)"),
        (lambda: calibration.expected_calibration_error(P, Y + 0.5), "integer"),
        (lambda: calibration.expected_calibration_error(P * 2, Y), "lie in"),
        (lambda: calibration.expected_calibration_error(P[:, :2] / 1.0, Y.clip(0, 1)), "sum to 1"),
        (lambda: calibration.expected_calibration_error(P, Y, n_bins=0), "n_bins"),
        (lambda: calibration.per_class_calibration_error(P, Y, by="true"), "by="),
        (lambda: calibration.fit_temperature(P, Y, kind="scores"), "kind"),
        (lambda: calibration.apply_temperature(P, 0.0), "temperature"),
        (lambda: calibration.fit_temperature(np.array([[np.nan, 1.0]]), np.array([0])), "NaN"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_logits_that_look_like_probabilities_warn():
    with pytest.warns(UserWarning, match="kind='probs'"):
        calibration.fit_temperature(P, Y)


def test_summary_has_a_row_per_entry():
    table = calibration.summary(
        {"raw": P, "sharp": calibration.apply_temperature(P, 0.5, kind="probs")}, Y, n_bins=5
    )
    assert list(table.index) == ["raw", "sharp"]
    assert table.loc["raw", "ece"] == pytest.approx(1.4 / 6)
    assert table.loc["raw", "accuracy"] == table.loc["sharp", "accuracy"] == pytest.approx(4 / 6)


# ----------------------------------------------------------------------------- the validation split
class _Tiny(nn.Module):
    def __init__(self, classes=3, pixels=12):
        super().__init__()
        self.net = nn.Module()
        self.net.fc = nn.Linear(pixels, classes)
        self.body = nn.Linear(1, 1)

    def forward(self, x):
        return self.net.fc(x.flatten(1))


class _Images:
    def __init__(self, labels, seed=0):
        self.labels = torch.as_tensor(labels)
        self.classes = ["a", "b", "c"]
        self.paths = [f"img{i}.jpg" for i in range(len(labels))]
        self.x = torch.rand(len(labels), 3, 2, 2, generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.x[i], int(self.labels[i]), i


def test_validation_indices_are_the_split_fine_tune_holds_out(monkeypatch, tmp_path):
    """Spy on the split inside train.fine_tune and stop it there: the calibration helper must
    hand out exactly the validation images training held out."""
    from helpers import data, models, train

    class Stop(Exception):
        pass

    seen = {}
    real_split = data.split_train_val

    def spy(*args, **kwargs):
        seen["split"] = real_split(*args, **kwargs)
        raise Stop

    monkeypatch.setattr(data, "split_train_val", spy)
    monkeypatch.setattr(models, "build_model", lambda *a, **k: _Tiny())
    images = _Images(np.repeat(np.arange(3), 20))
    cfg = train.TrainConfig(weights=None, seed=3, val_fraction=0.2, device="cpu")
    with pytest.raises(Stop):
        train.fine_tune(cfg, images, images, tmp_path, progress=False)
    monkeypatch.undo()
    run = SimpleNamespace(train_set=images, config=cfg)
    val = calibration.validation_indices(run)
    np.testing.assert_array_equal(val, seen["split"][1])
    assert len(val) == 12


def test_validation_predictions_are_the_model_on_the_validation_images():
    from helpers import train

    torch.manual_seed(0)
    images = _Images(np.repeat(np.arange(3), 10), seed=1)
    run = SimpleNamespace(
        train_set=images, model=_Tiny(), config=train.TrainConfig(weights=None, seed=0)
    )
    probs, labels = calibration.validation_predictions(run, device="cpu")
    idx = calibration.validation_indices(run)
    with torch.no_grad():
        expected = run.model(images.x[idx]).softmax(1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    np.testing.assert_array_equal(labels, images.labels.numpy()[idx])


def test_per_class_undefined_names_classes_never_predicted():
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    labels = np.array([0, 2, 1])
    assert calibration.per_class_undefined(probs, labels) == [
        None,
        None,
        calibration.NEVER_PREDICTED,
    ]
    assert np.isnan(calibration.per_class_calibration_error(probs, labels)[2])
    assert calibration.per_class_undefined(probs, labels, by="classwise") == [None] * 3
    with pytest.raises(ValueError, match="unknown by"):
        calibration.per_class_undefined(probs, labels, by="nope")


# ----------------------------------------------------------------------------- cross-fitting
def test_stratified_folds_are_balanced_per_class_and_seeded():
    labels = np.repeat(np.arange(3), [50, 50, 23])
    fold = calibration.stratified_folds(labels, 5, seed=0)
    for k in range(3):
        counts = np.bincount(fold[labels == k], minlength=5)
        assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(fold, calibration.stratified_folds(labels, 5, seed=0))
    assert not np.array_equal(fold, calibration.stratified_folds(labels, 5, seed=1))


@pytest.mark.parametrize("t0", [2.0, 0.6])
def test_cross_fitted_temperature_recovers_a_known_temperature(t0):
    logits, labels = _synthetic_logits(6000, 6, t0, seed=int(t0 * 10) + 1)
    fit = calibration.cross_fit_temperature(logits, labels, kind="logits", folds=5, seed=0)
    assert fit.temperatures.shape == (5,) and fit.probs.shape == (6000, 6)
    np.testing.assert_allclose(fit.temperatures, t0, rtol=0.08)
    assert fit.nll_after < fit.nll_before and fit.ece_after < fit.ece_before
    # the same from probabilities, the default kind
    from_probs = calibration.cross_fit_temperature(
        calibration.apply_temperature(logits, 1.0), labels
    )
    np.testing.assert_allclose(from_probs.temperatures, fit.temperatures, rtol=1e-4)
    assert (fit.probs.argmax(1) == logits.argmax(1)).all()


def test_cross_fitting_does_not_leak_a_folds_labels_into_its_own_probabilities():
    logits, labels = _synthetic_logits(600, 4, 2.0, seed=3)
    fit = calibration.cross_fit_temperature(logits, labels, kind="logits", folds=5, seed=0)
    for f in range(5):
        changed = labels.copy()
        held = fit.fold == f
        changed[held] = (changed[held] + 1) % 4  # every label of fold f is now wrong
        refit = calibration.cross_fit_temperature(logits, changed, kind="logits", folds=fit.fold)
        np.testing.assert_array_equal(refit.probs[held], fit.probs[held])
        assert refit.temperatures[f] == fit.temperatures[f]
        # the other folds did see the changed labels (so the check can fail)
        assert not np.allclose(refit.probs[~held], fit.probs[~held])


def test_cross_fitting_leaves_a_calibrated_model_about_as_it_was():
    """Noise = the ECE's own bootstrap interval on the uncalibrated probabilities."""
    worse = []
    for seed in range(8):
        logits, labels = _synthetic_logits(300, 6, 1.0, seed=100 + seed)  # already calibrated
        fit = calibration.cross_fit_temperature(logits, labels, kind="logits", seed=seed)
        assert np.all((fit.temperatures > 0.75) & (fit.temperatures < 1.33))
        assert fit.nll_after < fit.nll_before + 0.01
        before = calibration.ece_interval(
            calibration.apply_temperature(logits, 1.0), labels, n_boot=300
        )
        assert fit.ece_after <= before.loc["all", "high"]
        worse.append(fit.ece_after - fit.ece_before)
    assert np.mean(worse) < 0.015


def test_cross_fitting_rejects_bad_folds():
    with pytest.raises(ValueError, match="folds"):
        calibration.cross_fit_temperature(P, Y, folds=1)
    with pytest.raises(ValueError, match="folds"):
        calibration.cross_fit_temperature(P, Y, folds=np.zeros(6, dtype=int))


# ------------------------------------------------------------------------ intervals and the null
def test_ece_interval_brackets_the_ece_and_is_seeded():
    probs, labels = _toy(400, np.random.default_rng(1), shortfall=0.1)
    table = calibration.ece_interval(probs, labels, classes=["a", "b", "c"], n_boot=500)
    assert list(table.index) == ["all", "a", "b", "c"]
    assert table.loc["all", "ece"] == pytest.approx(
        calibration.expected_calibration_error(probs, labels)
    )
    np.testing.assert_allclose(
        table.loc[["a", "b", "c"], "ece"], calibration.per_class_calibration_error(probs, labels)
    )
    assert table.loc["all", "n"] == 400 and table.loc[["a", "b", "c"], "n"].sum() == 400
    assert (table["low"] <= table["ece"]).all() and (table["ece"] <= table["high"]).all()
    assert (table["high"] - table["low"] > 0.01).all()
    # a class has fewer images than all together: its interval is wider
    assert (
        table.loc[["a", "b", "c"], "high"] - table.loc[["a", "b", "c"], "low"]
        > table.loc["all", "high"] - table.loc["all", "low"]
    ).all()
    pd.testing.assert_frame_equal(
        table, calibration.ece_interval(probs, labels, classes=["a", "b", "c"], n_boot=500)
    )


def test_ece_consistency_flags_a_calibrated_class_rarely_and_an_overconfident_one_often():
    rng = np.random.default_rng(0)
    calibrated, overconfident = [], []
    for trial in range(500):
        conf = rng.uniform(0.5, 1.0, 50)
        calibrated.append(
            calibration.ece_consistency(
                conf, rng.random(50) < conf, n_bins=15, n_draws=400, seed=trial
            ).p_value
            < 0.05
        )
        overconfident.append(
            calibration.ece_consistency(
                conf, rng.random(50) < conf - 0.25, n_bins=15, n_draws=400, seed=trial
            ).p_value
            < 0.05
        )
    assert np.mean(calibrated) <= 0.08  # about 5 % by construction (sd of the share ~1 % here)
    assert np.mean(overconfident) >= 0.8


def test_ece_consistency_matches_a_hand_count_and_unpacks():
    # one image at confidence 1, correct: the null always draws correct, ECE 0 = observed -> p = 1
    ece, p, q = calibration.ece_consistency([1.0], [True], n_bins=5, n_draws=10)
    assert (ece, p, q) == (0.0, 1.0, 0.0)
    # at confidence 1 and wrong: observed ECE 1, never reached by the null -> p = 1 / 11
    r = calibration.ece_consistency([1.0], [False], n_bins=5, n_draws=10)
    assert r.ece == 1.0 and r.p_value == pytest.approx(1 / 11) and r.null_quantile_95 == 0.0
    assert calibration.ece_consistency(
        np.array([0.6, 0.7]), np.array([1, 0]), n_draws=50, seed=3
    ) == calibration.ece_consistency(np.array([0.6, 0.7]), np.array([1, 0]), n_draws=50, seed=3)
    assert all(np.isnan(calibration.ece_consistency([], [])))
    with pytest.raises(ValueError, match="confidence"):
        calibration.ece_consistency([1.5], [True])


def test_per_class_consistency_uses_the_images_predicted_as_the_class():
    probs, labels = _toy(300, np.random.default_rng(2), shortfall=0.0)
    table = calibration.per_class_consistency(probs, labels, classes=["a", "b", "c"], n_draws=200)
    pred = probs.argmax(1)
    assert table["n"].tolist() == np.bincount(pred, minlength=3).tolist()
    sel = pred == 1
    expected = calibration.ece_consistency(probs.max(1)[sel], labels[sel] == 1, n_draws=200, seed=1)
    assert tuple(table.loc["b", ["ece", "p_value", "null_quantile_95"]]) == pytest.approx(
        tuple(expected)
    )


def test_reliability_diagram_gives_the_ece_interval_and_n():
    import matplotlib

    matplotlib.use("Agg")
    from helpers import plots

    probs, labels = _toy(200, np.random.default_rng(4), shortfall=0.1)
    row = calibration.ece_interval(probs, labels, n_bins=10).loc["all"]
    fig = plots.reliability_diagram(probs, labels, n_bins=10)
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert f"ECE 95 % interval [{row['low']:.3f}, {row['high']:.3f}], n = 200" in texts
    fig = plots.reliability_diagram(probs, labels, n_bins=10, interval=False)
    assert not any("interval" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    plots.plt.close("all")
