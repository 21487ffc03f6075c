from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import calibration

# Six images, three classes, worked out by hand with n_bins=5: bins (0,.2] (.2,.4] (.4,.6] (.6,.8] (.8,1].
#   image  probs              label  conf  bin  correct
#   a      [.9, .05, .05]     0      .9    4    yes
#   b      [.8, .1, .1]       1      .8    3    no   (0.8 lies on an edge: right-closed bin 3)
#   c      [.1, .7, .2]       1      .7    3    yes
#   d      [.4, .35, .25]     2      .4    1    no   (edge)
#   e      [.2, .2, .6]       2      .6    2    yes  (edge)
#   f      [1., 0., 0.]       0      1.    4    yes
# bin 4: conf .95, acc 1 (gap .05, 2 images); bin 3: conf .75, acc .5 (gap .25, 2); bin 2: .6 vs 1 (.4, 1);
# bin 1: .4 vs 0 (.4, 1)  ->  ECE = (2*.05 + 2*.25 + .4 + .4) / 6 = 1.4 / 6, MCE = .4
P = np.array([[.9, .05, .05], [.8, .1, .1], [.1, .7, .2], [.4, .35, .25], [.2, .2, .6], [1., 0., 0.]])
Y = np.array([0, 1, 1, 2, 2, 0])


def test_ece_and_mce_match_a_hand_computation():
    assert calibration.expected_calibration_error(P, Y, n_bins=5) == pytest.approx(1.4 / 6)
    assert calibration.maximum_calibration_error(P, Y, n_bins=5) == pytest.approx(0.4)
    bins = calibration.reliability_bins(P, Y, n_bins=5)
    assert bins["count"].tolist() == [0, 1, 1, 2, 2]
    np.testing.assert_allclose(bins["accuracy"].to_numpy()[1:], [0, 1, .5, 1])
    np.testing.assert_allclose(bins["confidence"].to_numpy()[1:], [.4, .6, .75, .95])
    np.testing.assert_allclose(bins["gap"].to_numpy()[1:], [.4, -.4, .25, -.05])
    assert np.isnan(bins.loc[0, "accuracy"]) and bins["share"].sum() == pytest.approx(1)
    # tensors work the same
    assert calibration.expected_calibration_error(torch.tensor(P), torch.tensor(Y), n_bins=5) == \
        pytest.approx(1.4 / 6)


def test_per_class_calibration_matches_a_hand_computation():
    # predicted as 0: a (.9 right), b (.8 wrong), d (.4 wrong), f (1. right)
    #   bins: 4 -> .95 vs 1, 3 -> .8 vs 0, 1 -> .4 vs 0: (2*.05 + .8 + .4) / 4 = .325
    # predicted as 1: c (.7 right): .3 ; predicted as 2: e (.6 right): .4
    per_class = calibration.per_class_calibration_error(P, Y, n_bins=5)
    np.testing.assert_allclose(per_class, [.325, .3, .4])
    # Kull et al. classwise term for class 2: p_2 = [.05, .1, .2, .25, .6, 0], is-2 = [0, 0, 0, 1, 1, 0]
    #   bin 0 holds four (mean .0875, freq 0), bin 1: .25 vs 1, bin 2: .6 vs 1 -> (.35 + .75 + .4) / 6
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
    assert calibration.negative_log_likelihood(probs, y) == pytest.approx(F.cross_entropy(logits.double(), y).item())
    onehot = F.one_hot(y, 4).double()
    assert calibration.brier_score(probs, y) == pytest.approx(((probs - onehot) ** 2).sum(1).mean().item())
    # a probability of exactly 0 is floored, not -log 0 = inf
    assert np.isfinite(calibration.negative_log_likelihood(np.array([[1.0, 0.0]]), np.array([1])))


def _synthetic_logits(n, c, temperature, seed):
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(size=(n, c)) * 2.0
    p = np.exp(true_logits - true_logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = (rng.random(n)[:, None] > p.cumsum(1)).sum(1)        # drawn from the true probabilities
    return true_logits * temperature, labels                      # scaled: T0 undoes it


@pytest.mark.parametrize("t0", [2.5, 0.5])
def test_temperature_scaling_recovers_a_known_temperature(t0):
    logits, labels = _synthetic_logits(20_000, 5, t0, seed=int(t0 * 10))
    fit = calibration.fit_temperature(logits, labels)
    assert fit.temperature == pytest.approx(t0, rel=0.05)
    assert fit.nll_after < fit.nll_before
    # the optimum: a nearby temperature is no better
    for t in (fit.temperature * 0.98, fit.temperature * 1.02):
        assert calibration.negative_log_likelihood(calibration.apply_temperature(logits, t), labels) >= fit.nll_after
    assert calibration.negative_log_likelihood(fit.apply(logits), labels) == pytest.approx(fit.nll_after)
    # the same fit from probabilities (log p differs from the logits by a constant per row)
    probs = calibration.apply_temperature(logits, 1.0)
    from_probs = calibration.fit_temperature(probs, labels, kind="probs")
    assert from_probs.temperature == pytest.approx(fit.temperature, rel=1e-4)
    np.testing.assert_allclose(from_probs.apply(probs), fit.apply(logits), atol=1e-6)
    # predictions never change; the ECE drops for the over-confident case
    assert (fit.apply(logits).argmax(1) == logits.argmax(1)).all()
    assert calibration.expected_calibration_error(fit.apply(logits), labels) < \
        calibration.expected_calibration_error(probs, labels)


def test_temperature_scaling_lowers_validation_nll_of_an_overconfident_model():
    logits, labels = _synthetic_logits(3000, 6, 3.0, seed=7)
    val, test = slice(0, 1500), slice(1500, None)
    fit = calibration.fit_temperature(torch.tensor(logits[val]), torch.tensor(labels[val]))
    assert fit.nll_after < fit.nll_before - 0.1 and fit.n == 1500
    before = calibration.negative_log_likelihood(calibration.apply_temperature(logits[test], 1.0), labels[test])
    after = calibration.negative_log_likelihood(fit.apply(logits[test]), labels[test])
    assert after < before   # fitted on validation, it helps on held-out images too


@pytest.mark.parametrize("call, match", [
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
])
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_logits_that_look_like_probabilities_warn():
    with pytest.warns(UserWarning, match="kind='probs'"):
        calibration.fit_temperature(P, Y)


def test_summary_has_a_row_per_entry():
    table = calibration.summary({"raw": P, "sharp": calibration.apply_temperature(P, 0.5, kind="probs")}, Y, n_bins=5)
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
    run = SimpleNamespace(train_set=images, model=_Tiny(), config=train.TrainConfig(weights=None, seed=0))
    probs, labels = calibration.validation_predictions(run, device="cpu")
    idx = calibration.validation_indices(run)
    with torch.no_grad():
        expected = run.model(images.x[idx]).softmax(1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    np.testing.assert_array_equal(labels, images.labels.numpy()[idx])


def test_per_class_undefined_names_classes_never_predicted():
    probs = np.array([[.8, .1, .1], [.6, .3, .1], [.2, .7, .1]])
    labels = np.array([0, 2, 1])
    assert calibration.per_class_undefined(probs, labels) == [None, None, calibration.NEVER_PREDICTED]
    assert np.isnan(calibration.per_class_calibration_error(probs, labels)[2])
    assert calibration.per_class_undefined(probs, labels, by="classwise") == [None] * 3
    with pytest.raises(ValueError, match="unknown by"):
        calibration.per_class_undefined(probs, labels, by="nope")
