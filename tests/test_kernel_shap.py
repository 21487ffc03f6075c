"""Tests for Kernel SHAP over LIME's superpixels (``explain`` method ``kernel_shap``).

Known answers: a game small enough (M = 5 superpixels, 2^5 coalitions) to compute the exact
Shapley values here by enumeration; the efficiency (additivity) property; seeds; the same
superpixels and the same way of hiding them as LIME; the registry entry."""

from itertools import combinations
from math import factorial

import numpy as np
import pytest
import torch
from torch import nn

from helpers import explain as E

SIDE = 10
M = 5  # superpixels of the hand-made segmentation: five vertical bands of two columns


def bands() -> torch.Tensor:
    """[SIDE, SIDE] labels 0..M-1: superpixel s is columns 2s and 2s+1."""
    return (torch.arange(SIDE) // (SIDE // M)).expand(SIDE, SIDE).clone()


def band_image() -> torch.Tensor:
    """[1,3,SIDE,SIDE] in (0, 1) with texture inside every band (so a band's mean colour differs
    from the band itself)."""
    g = torch.Generator().manual_seed(0)
    return 0.2 + 0.6 * torch.rand(1, 3, SIDE, SIDE, generator=g)


def presence(batch: torch.Tensor, image: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """z_s in [0, 1] per image of ``batch`` and superpixel: the band's channel-0 sum relative to
    ``image``'s (1 = shown, 0 = black)."""
    one_hot = torch.nn.functional.one_hot(segments.flatten(), M).double()  # [H*W, M]
    sums = batch[:, 0].flatten(1).double() @ one_hot
    return sums / (image[:, 0].flatten(1).double() @ one_hot)


# The game: v(z) = C + A.z + B z_0 z_3 (a linear part and one pairwise interaction); its
# Shapley values are A_s, plus B/2 for superpixels 0 and 3 (the interaction split evenly).
A = torch.tensor([0.10, -0.06, 0.04, 0.08, -0.03], dtype=torch.float64)
B, C = 0.2, 0.4


def game(z: torch.Tensor, interaction: float = B) -> torch.Tensor:
    return C + z @ A + interaction * z[:, 0] * z[:, 3]


class GameModel(nn.Module):
    """Two classes whose softmax probability of class 1 is ``game(z)`` exactly (logits 0 and
    log(g / (1 - g))): the probability Kernel SHAP explains is a known function of the bands."""

    def __init__(self, image, segments, interaction=B):
        super().__init__()
        self.image, self.segments, self.interaction = image, segments, interaction

    def forward(self, x):
        g = game(presence(x, self.image, self.segments), self.interaction)
        logit = torch.log(g / (1 - g))
        return torch.stack([torch.zeros_like(logit), logit], dim=1).float()


def exact_shapley(value) -> np.ndarray:
    """phi_i = sum over S not containing i of |S|! (M-|S|-1)! / M! (v(S+i) - v(S)), by
    enumerating all 2^M coalitions; ``value(set)`` is the game."""
    phi = np.zeros(M)
    for i in range(M):
        others = [j for j in range(M) if j != i]
        for k in range(M):
            w = factorial(k) * factorial(M - k - 1) / factorial(M)
            for S in combinations(others, k):
                phi[i] += w * (value(set(S) | {i}) - value(set(S)))
    return phi


def coalition_value(forward, image, hidden, segments, target):
    def value(S):
        shown = torch.isin(segments, torch.tensor(sorted(S), dtype=torch.long))
        with torch.no_grad():
            return float(forward(torch.where(shown, image, hidden))[0, target])

    return value


@pytest.fixture
def hand_segments(monkeypatch):
    """Every segmentation returns the five bands (for the calls through ``attribute``)."""
    monkeypatch.setattr(E, "_segmenter", lambda *a, **k: lambda image: bands().numpy())


# --------------------------------------------------------------------------- exact values
def test_the_enumeration_itself_gives_the_known_shapley_values():
    image, segments = band_image(), bands()
    model = GameModel(image, segments)

    def forward(x):
        return torch.softmax(model(x), dim=1)

    value = coalition_value(forward, image, torch.zeros_like(image), segments, 1)
    expected = A.numpy() + np.array([B / 2, 0, 0, B / 2, 0])
    np.testing.assert_allclose(exact_shapley(value), expected, atol=1e-6)


def test_a_linear_game_is_solved_exactly(hand_segments):
    """No interaction: every coalition's value is linear in z, so the regression fits exactly
    and recovers the Shapley values (= A) to float32 round-off, whatever coalitions are drawn
    (200 draws over 30 non-trivial coalitions: full rank)."""
    image = band_image()
    model = GameModel(image, bands(), interaction=0.0)
    e = E.attribute(model, image, 1, "kernel_shap", num_samples=200, baseline="black")
    phi = np.array([e.extras["weights"][0][s] for s in range(M)])
    np.testing.assert_allclose(phi, A.numpy(), atol=1e-5)
    assert e.extras["score"].item() == pytest.approx(1.0, abs=1e-6)


def test_sampled_values_match_the_enumerated_shapley_values(hand_segments):
    """With the interaction, the regression on sampled coalitions only estimates the Shapley
    values (its error shrinks like 1/sqrt(samples)). Tolerance 0.015: the largest error over the
    five superpixels, measured at 2000 samples, is 0.0046 with seed 0 (0.003-0.007 over seeds
    0-4; 0.010-0.023 at 300 samples), and a method that gave the interaction B to one of its
    two superpixels, or to neither, would miss by B/2 = 0.1."""
    image = band_image()
    model = GameModel(image, bands())
    e = E.attribute(model, image, 1, "kernel_shap", num_samples=2000, baseline="black", seed=0)
    phi = np.array([e.extras["weights"][0][s] for s in range(M)])

    def forward(x):
        return torch.softmax(model(x), dim=1)

    value = coalition_value(forward, image, torch.zeros_like(image), bands(), 1)
    np.testing.assert_allclose(phi, exact_shapley(value), atol=0.015)


# --------------------------------------------------------------------------- additivity
def test_values_add_up_to_output_minus_base_value(hand_segments):
    """Efficiency: sum(phi) + base_value = output. captum does not impose it: it weights the two
    end coalitions 1e6 against 1 for each drawn one, so the fit misses at the ends by about
    (draws / 1e6) x a typical residual, under 1e-4 for 300 draws of residuals under 0.3, plus
    float32 round-off (~1e-7). Measured here: |gap| 2e-9 to 1.3e-6 over seeds 0-4 at 300
    draws, up to 4e-6 at 5000. ``output`` and ``base_value`` are checked against the game."""
    image = band_image()
    model = GameModel(image, bands())
    e = E.attribute(model, image, 1, "kernel_shap", num_samples=300, baseline="black")
    total = sum(e.extras["weights"][0].values())
    gap = total + e.extras["base_value"].item() - e.extras["output"].item()
    assert abs(gap) < 1e-4
    assert e.extras["additivity_gap"].item() == pytest.approx(gap, abs=1e-7)  # float32 terms
    everything = game(torch.ones(1, M, dtype=torch.float64)).item()
    assert e.extras["output"].item() == pytest.approx(everything, abs=1e-6)
    assert e.extras["base_value"].item() == pytest.approx(C, abs=1e-6)


def test_additivity_on_a_cnn_with_lime_segments():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()  # fmt: skip
    x = smooth_images(2)
    e = E.attribute(model, x, torch.tensor([0, 2]), "kernel_shap", num_samples=100)
    probs = torch.softmax(model(x), dim=1)[[0, 1], [0, 2]]
    torch.testing.assert_close(e.extras["output"], probs, atol=1e-6, rtol=0)
    assert e.extras["additivity_gap"].abs().max() < 1e-4
    assert ((e.extras["score"] >= -1) & (e.extras["score"] <= 1)).all()
    painted = e.map[0][e.extras["segments"][0] == 0]
    assert torch.all(painted == painted[0]) and painted[0] == pytest.approx(
        e.extras["weights"][0][0], abs=1e-7
    )


# --------------------------------------------------------------------------- like LIME
def smooth_images(n: int, side: int = 32) -> torch.Tensor:
    """Blurred noise: a handful of superpixels per image, as on a photo."""
    g = torch.Generator().manual_seed(5)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear").clamp(0, 1)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()  # fmt: skip


@pytest.mark.parametrize("segmentation", ["quickshift", "slic"])
def test_same_superpixels_as_lime(tiny, segmentation):
    x = smooth_images(2)
    kw = dict(num_samples=20, segmentation=segmentation, seed=3)
    lime = E.attribute(tiny, x, 1, "lime", **kw)
    shap = E.attribute(tiny, x, 1, "kernel_shap", **kw)
    assert torch.equal(lime.extras["segments"], shap.extras["segments"])
    assert shap.extras["segments"][0].max() > 0, "a single superpixel says nothing"
    table = E.superpixel_agreement(lime, shap)
    assert list(table.superpixels) == [len(w) for w in lime.extras["weights"]]
    assert list(table.columns) == [
        "superpixels",
        "spearman",
        "top5_shared",
        "output",
        "base_value",
        "lime_sum",
        "additivity_gap",
    ]
    assert table.output.tolist() == shap.extras["output"].tolist()


def test_hidden_superpixels_show_their_mean_colour_as_in_lime(tiny):
    """The default baseline is lime_image's hide_color=None: each superpixel in its mean colour
    (computed here with numpy, as lime does), so base_value is the model on that image."""
    x = smooth_images(1)
    e = E.attribute(tiny, x, 2, "kernel_shap", num_samples=10)
    segments = e.extras["segments"][0].numpy()
    image = x[0].permute(1, 2, 0).double().numpy()
    fudged = image.copy()
    for s in np.unique(segments):
        fudged[segments == s] = image[segments == s].mean(axis=0)
    hidden = torch.from_numpy(fudged).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        expected = torch.softmax(tiny(hidden), dim=1)[0, 2].item()
    assert e.extras["base_value"].item() == pytest.approx(expected, abs=1e-6)
    assert not torch.allclose(hidden, x, atol=1e-3), "the test image has no texture"


# --------------------------------------------------------------------------- seeds
def test_same_seed_same_values_other_seed_other_values(tiny):
    x = smooth_images(1)
    kw = dict(num_samples=30, segmentation_params={"rng": 0})  # fixed superpixels
    a = E.attribute(tiny, x, 1, "kernel_shap", seed=1, **kw)
    b = E.attribute(tiny, x, 1, "kernel_shap", seed=1, **kw)
    c = E.attribute(tiny, x, 1, "kernel_shap", seed=2, **kw)
    assert a.extras["weights"] == b.extras["weights"] and torch.equal(a.map, b.map)
    assert torch.equal(a.extras["segments"], c.extras["segments"])
    assert a.extras["weights"] != c.extras["weights"]
    state = torch.random.get_rng_state()
    E.attribute(tiny, x, 1, "kernel_shap", seed=1, **kw)
    assert torch.equal(torch.random.get_rng_state(), state), "the caller's generator moved"


# --------------------------------------------------------------------------- edges, registry
def test_one_superpixel_gets_everything(tiny):
    x = torch.full((1, 3, 16, 16), 0.5)
    x[:, 0, :, :8] = 0.7  # one superpixel under the "mean" baseline would be the image itself
    e = E.attribute(tiny, x, 0, "kernel_shap", num_samples=10, baseline="black",
                    segmentation_params={"kernel_size": 100, "max_dist": 1000})  # fmt: skip
    assert e.extras["segments"].max() == 0
    assert e.extras["weights"][0][0] == pytest.approx(
        e.extras["output"].item() - e.extras["base_value"].item(), abs=1e-7
    )
    assert e.extras["additivity_gap"].abs().item() < 1e-7


def test_registry_entry_and_errors(tiny):
    record = E.METHODS["kernel_shap"]
    assert record.label == "Kernel SHAP" and not record.needs_grad and not record.compare
    assert "Kernel SHAP" not in E.settings(), "notebook 06 must not compare it"
    assert E.hyperparameters("kernel_shap")["baseline"] == "mean"
    assert "``kernel_shap``" in E.__doc__
    x = smooth_images(1, side=16)
    with pytest.raises(ValueError, match="unknown baseline 'grey'.*mean"):
        E.explain(tiny, x, 0, "kernel_shap", baseline="grey")
    with pytest.raises(ValueError, match="positive integer"):
        E.explain(tiny, x, 0, "kernel_shap", num_samples=0)
    shap = E.attribute(tiny, x, 0, "kernel_shap", num_samples=10, seed=0)
    other = E.attribute(tiny, x, 0, "kernel_shap", num_samples=10, seed=0, segmentation="slic")
    with pytest.raises(ValueError, match="same superpixels"):
        E.superpixel_agreement(other, shap)
    assert E.superpixel_agreement(shap, shap).spearman.item() == pytest.approx(1.0)


def test_agreement_table_by_hand():
    segments = torch.zeros(1, 2, 2, dtype=torch.long)
    lime = E.Explanation(
        torch.zeros(1, 2, 2), extras={"segments": segments, "weights": [{0: 3, 1: 2, 2: 1, 3: -1}]}
    )
    shap = E.Explanation(
        torch.zeros(1, 2, 2),
        extras={
            "segments": segments,
            "weights": [{0: 0.3, 1: 0.1, 2: 0.2, 3: -0.2}],
            "output": torch.tensor([0.9]),
            "base_value": torch.tensor([0.5]),
            "additivity_gap": torch.tensor([-1e-6]),
        },
    )
    row = E.superpixel_agreement(lime, shap, top=2).iloc[0]
    # ranks 4 3 2 1 against 4 2 3 1: rho = 1 - 6 * 2 / (4 * 15) = 0.8; top two {0, 1} and {0, 2}
    assert row.spearman == pytest.approx(0.8) and row.top2_shared == 1
    assert row.lime_sum == 5 and row.additivity_gap == pytest.approx(1e-6)
    assert row.output == pytest.approx(0.9) and row.base_value == pytest.approx(0.5)


def test_a_model_that_ignores_the_image_gets_zeros(tiny):
    """Null players: when no coalition changes the output, every Shapley value is 0 exactly (not
    the regression's float32 round-off, ~1e-8)."""
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3))
    with torch.no_grad():
        flat[1].weight.zero_()
    e = E.attribute(flat, smooth_images(1), 1, "kernel_shap", num_samples=30)
    assert e.map.abs().max() == 0 and e.extras["score"].item() == 1.0
    assert e.extras["output"].item() == pytest.approx(e.extras["base_value"].item())
