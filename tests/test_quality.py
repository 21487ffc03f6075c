import numpy as np
import pandas as pd
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from helpers import quality as q
from helpers.models import ImageClassifier, build_model

SIZE = 8
# scattered pixels, far enough apart that a blur spreads each one out
KEY_PIXELS = [(1, 1), (1, 4), (1, 7), (4, 1), (4, 4), (4, 7), (7, 1), (7, 4)]


class KeyPixelModel(nn.Module):
    """Two classes; the logit of class 1 is the sum of the key pixels (all channels) minus 12,
    class 0 has logit 0. Nothing else in the image matters."""

    def __init__(self):
        super().__init__()
        w = torch.zeros(1, 1, SIZE, SIZE)
        for r, c in KEY_PIXELS:
            w[..., r, c] = 1.0
        self.register_buffer("w", w)
        self.dummy = nn.Parameter(torch.zeros(()))  # so that the model has a device
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        logit = (x * self.w).sum((1, 2, 3)) - 12.0 + self.dummy
        return torch.stack([torch.zeros_like(logit), logit], 1)


def key_images(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 0.2 * torch.rand(n, 3, SIZE, SIZE, generator=g)
    for r, c in KEY_PIXELS:
        x[:, :, r, c] = 1.0
    return x


def oracle_maps(n):
    m = torch.zeros(n, SIZE, SIZE)
    for r, c in KEY_PIXELS:
        m[:, r, c] = 1.0
    return m


def tiny_cnn(seed=0, classes=3):
    torch.manual_seed(seed)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 6, 3, padding=1))
    net.add_module("relu1", nn.ReLU())
    net.add_module("conv2", nn.Conv2d(6, 6, 3, padding=1))
    net.add_module("relu2", nn.ReLU())
    net.add_module("pool", nn.AdaptiveAvgPool2d(2))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(24, classes))
    return ImageClassifier(
        net, (0.5,) * 3, (0.25,) * 3, arch="tiny", class_names=[str(i) for i in range(classes)]
    ).eval()


def gradient_fn(model, x, target):
    x = x.clone().requires_grad_(True)
    out = model(x)
    out.gather(1, torch.as_tensor(target).view(-1, 1)).sum().backward()
    return x.grad.sum(1).detach()


def edge_fn(model, x, target):
    """Ignores the model: the gradient magnitude of the grey image."""
    g = x.mean(1)
    dy = torch.zeros_like(g)
    dx = torch.zeros_like(g)
    dy[:, 1:] = g[:, 1:] - g[:, :-1]
    dx[:, :, 1:] = g[:, :, 1:] - g[:, :, :-1]
    return (dx**2 + dy**2).sqrt()


# ----------------------------------------------------------------------------- deletion / insertion
def test_oracle_beats_random_map_on_deletion_and_insertion():
    model, x = KeyPixelModel(), key_images(4)
    oracle = oracle_maps(4)
    random = torch.rand(4, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    d_oracle = q.deletion_curve(model, x, 1, oracle, steps=16)
    d_random = q.deletion_curve(model, x, 1, random, steps=16)
    i_oracle = q.insertion_curve(model, x, 1, oracle, steps=16)
    i_random = q.insertion_curve(model, x, 1, random, steps=16)
    assert np.all(d_oracle.auc < d_random.auc)
    assert np.all(i_oracle.auc > i_random.auc)
    assert d_oracle.auc.mean() < 0.2 and i_oracle.auc.mean() > 0.8
    # reversed oracle (least relevant first) is the worst case for deletion
    assert np.all(q.deletion_curve(model, x, 1, -oracle, steps=16).auc > d_random.auc)


def test_curves_start_and_end_where_they_must():
    model, x = KeyPixelModel(), key_images(3)
    maps = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    p = lambda imgs: model(imgs).softmax(1)[:, 1].detach().numpy()  # noqa: E731
    d = q.deletion_curve(model, x, 1, maps, steps=5)
    i = q.insertion_curve(model, x, 1, maps, steps=5)
    np.testing.assert_allclose(d.fractions, np.linspace(0, 1, 6))
    assert d.probs.shape == i.probs.shape == (3, 6) and d.auc.shape == (3,)
    np.testing.assert_allclose(d.probs[:, 0], p(x), atol=1e-6)
    np.testing.assert_allclose(d.probs[:, -1], p(torch.zeros_like(x)), atol=1e-6)
    np.testing.assert_allclose(i.probs[:, 0], p(q.make_baseline(x, "blurred")), atol=1e-6)
    np.testing.assert_allclose(i.probs[:, -1], p(x), atol=1e-6)
    np.testing.assert_allclose(
        d.auc,
        np.trapezoid(d.probs, d.fractions, axis=1)
        if hasattr(np, "trapezoid")
        else np.trapz(d.probs, d.fractions, axis=1),
    )
    assert d["auc"] is d.auc and i.kind == "insertion" and i.baseline == "blurred"


def test_blurred_baseline_matches_scipy_gaussian():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    ours = q.make_baseline(x, "blurred", sigma=1.5).numpy()
    ref = gaussian_filter(x.numpy(), sigma=(0, 0, 1.5, 1.5), mode="mirror", truncate=3.0)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert q.make_baseline(x, "black").abs().sum() == 0
    with pytest.raises(ValueError, match="unknown baseline"):
        q.make_baseline(x, "purple")


def test_batching_gives_identical_results_and_batches_the_forwards():
    model = tiny_cnn()
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    maps = torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    one = q.deletion_curve(model, x, [0, 1, 2], maps, steps=4, batch_size=1)
    many = q.deletion_curve(model, x, [0, 1, 2], maps, steps=4, batch_size=64)
    np.testing.assert_allclose(one.probs, many.probs, rtol=0, atol=1e-6)
    counting = KeyPixelModel()
    q.insertion_curve(counting, key_images(3), 1, oracle_maps(3), steps=4, batch_size=8)
    assert counting.calls == 2  # 15 (image, step) pairs in batches of 8


def test_ranking_is_signed_and_stable_for_ties():
    order = q.rank_pixels(torch.ones(2, 3, 3))
    assert order.tolist() == [list(range(9))] * 2  # constant map: row-major order
    m = torch.tensor([[[0.0, -5.0], [2.0, 2.0]]])
    assert q.rank_pixels(m).tolist() == [[2, 3, 0, 1]]  # most positive first, ties in order
    # deleting a constant map's first pixel removes exactly pixel (0, 0)
    model = KeyPixelModel()
    x = key_images(1)
    before = model(x).softmax(1)[0, 1].item()
    d = q.deletion_curve(model, x, 1, torch.ones(1, SIZE, SIZE), steps=SIZE * SIZE)
    assert d.probs[0, 1] == pytest.approx(before, abs=1e-7)  # pixel (0,0) is not a key pixel
    again = q.deletion_curve(model, x, 1, torch.ones(1, SIZE, SIZE), steps=SIZE * SIZE)
    np.testing.assert_array_equal(d.probs, again.probs)
    changed = np.nonzero(np.abs(np.diff(d.probs[0])) > 1e-7)[0]
    assert changed[0] == 1 * SIZE + 1  # the first key pixel, (1, 1), goes at step 10


def test_model_mode_is_restored():
    model = tiny_cnn().train()
    q.deletion_curve(model, torch.rand(1, 3, SIZE, SIZE), 0, torch.rand(1, SIZE, SIZE), steps=2)
    assert model.training


# ----------------------------------------------------------------------------- localisation
def test_pointing_game_hand_cases():
    mask = np.zeros((1, 6, 6), bool)
    mask[0, 1:3, 1:3] = True
    inside = np.zeros((1, 6, 6))
    inside[0, 2, 2] = 1.0
    outside = np.zeros((1, 6, 6))
    outside[0, 5, 5] = 1.0
    near = np.zeros((1, 6, 6))
    near[0, 2, 4] = 1.0  # two pixels right of the mask
    assert q.pointing_game(inside, mask).tolist() == [True]
    assert q.pointing_game(outside, mask).tolist() == [False]
    assert q.pointing_game(near, mask).tolist() == [False]
    assert q.pointing_game(near, mask, tolerance=1).tolist() == [False]
    assert q.pointing_game(near, mask, tolerance=2).tolist() == [True]
    # constant map: a miss, even with a mask that covers everything; no crash on zeros
    assert q.pointing_game(np.ones((1, 6, 6)), np.ones((1, 6, 6), bool)).tolist() == [False]
    assert q.pointing_game(torch.zeros(2, 6, 6), np.repeat(mask, 2, 0)).tolist() == [False, False]
    # signed: the most positive pixel counts, not the largest magnitude
    signed = np.zeros((1, 6, 6))
    signed[0, 5, 5] = -9.0
    signed[0, 1, 1] = 0.5
    assert q.pointing_game(signed, mask).tolist() == [True]


def test_relevance_mass_and_rank_by_hand():
    m = np.array(
        [[4.0, 3.0, 0.0, -2.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [-1.0, 0.0, 0.0, 0.0]]
    )[None]
    mask = np.zeros((1, 4, 4), bool)
    mask[0, 0, 0] = mask[0, 0, 1] = mask[0, 3, 0] = True  # holds 4 + 3 (and a negative -1)
    assert q.relevance_mass(m, mask)[0] == pytest.approx(7 / 10)
    # top-3 pixels are 4, 3, 2: two of them inside
    assert q.relevance_rank(m, mask)[0] == pytest.approx(2 / 3)
    assert q.relevance_mass(np.zeros((1, 4, 4)), mask).tolist() == [0.0]
    assert q.relevance_mass(-np.ones((1, 4, 4)), mask).tolist() == [0.0]
    # constant map: rank accuracy at chance level (ties share the places)
    assert q.relevance_rank(np.ones((1, 4, 4)), mask)[0] == pytest.approx(3 / 16)


def test_compactness_hand_cases():
    one_hot = np.zeros((1, 10, 10))
    one_hot[0, 3, 3] = 5.0
    c = q.compactness(one_hot)
    assert list(c.columns) == ["area_50", "area_90", "gini"]
    assert c.loc[0, "gini"] == pytest.approx(0.99) and c.loc[0, "area_50"] == pytest.approx(0.01)
    assert c.loc[0, "area_90"] == pytest.approx(0.01)
    for flat in (np.full((1, 10, 10), 3.0), np.zeros((1, 10, 10))):
        c = q.compactness(flat)
        assert c.loc[0, "gini"] == 0.0
        assert c.loc[0, "area_50"] == pytest.approx(0.5) and c.loc[0, "area_90"] == pytest.approx(
            0.9
        )
        assert np.isfinite(c.to_numpy()).all()
    # 4 pixels of 3 and 12 of 1 (total 24; 16 pixels): 50 % = 12 -> the four 3s (4/16);
    # 90 % = 21.6 -> the four 3s + 10 ones = 22 (14/16)
    two = np.ones((1, 4, 4))
    two[0, 0] = -3.0  # absolute mass
    c = q.compactness(two)
    assert c.loc[0, "area_50"] == pytest.approx(4 / 16) and c.loc[0, "area_90"] == pytest.approx(
        14 / 16
    )
    # Gini by the mean-absolute-difference definition
    v = np.abs(two.ravel())
    gini = np.abs(v[:, None] - v[None, :]).sum() / (2 * len(v) ** 2 * v.mean())
    assert c.loc[0, "gini"] == pytest.approx(gini)


def test_shortcut_share():
    maps = np.zeros((2, 10, 10))
    maps[0, 2:4, 5:8] = 1.0  # all inside the box
    maps[0, 9, 9] = 0.01
    maps[1] = 1.0  # uniform
    boxes = [(5, 2, 8, 4), (5, 2, 8, 4)]  # x0, y0, x1, y1 (exclusive): 3 x 2 pixels
    share, area = q.shortcut_share(maps, boxes)
    assert area.tolist() == [0.06, 0.06]
    assert share[0] == pytest.approx(6 / 6.01) and share[1] == pytest.approx(0.06)
    share, area = q.shortcut_share(-maps, boxes)
    assert share.tolist() == [0.0, 0.0]
    share, _ = q.shortcut_share(-maps, boxes, mode="absolute")
    assert share[1] == pytest.approx(0.06)
    share, area = q.shortcut_share(maps, [None, boxes[1]])
    assert np.isnan(share[0]) and share[1] == pytest.approx(0.06)


def test_shortcut_share_with_a_real_mark():
    from helpers.scenes import add_shortcut_mark

    image, box = add_shortcut_mark(np.zeros((32, 32, 3), np.uint8), np.random.default_rng(0))
    marked = np.any(image > 0, axis=-1).astype(float)[None]  # a map that is exactly the mark
    share, area = q.shortcut_share(marked, [box])
    assert share[0] == pytest.approx(1.0) and area[0] == pytest.approx(marked.sum() / 32**2)


# ----------------------------------------------------------------------------- randomisation
def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_randomisation_drops_for_gradients_and_leaves_the_model_alone():
    model = tiny_cnn()
    before = _state(model)
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(6))
    df = q.model_randomisation(model, x, [0, 1, 2], gradient_fn)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert list(df["stage"]) == ["original", "fc", "conv2", "conv1"]
    assert df.loc[0, "spearman_abs"] == pytest.approx(1.0) and df.loc[
        0, "spearman"
    ] == pytest.approx(1.0)
    assert df["spearman_abs"].iloc[-1] < 0.5
    assert (df["undefined"] == 0).all()


def test_randomisation_of_a_map_that_ignores_the_model_stays_at_one():
    model = tiny_cnn()
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    df, maps = q.model_randomisation(model, x, 0, edge_fn, return_maps=True)
    np.testing.assert_allclose(df["spearman_abs"], 1.0)
    np.testing.assert_allclose(df["spearman"], 1.0)
    assert list(maps) == list(df["stage"]) and maps["conv1"].shape == (2, SIZE, SIZE)


def test_randomisation_constant_maps_that_stay_constant_count_as_unchanged():
    df = q.model_randomisation(
        tiny_cnn(), torch.rand(2, 3, SIZE, SIZE), 0, lambda m, x, t: torch.zeros(len(x), SIZE, SIZE)
    )
    assert (df["undefined"] == 2).all() and np.isfinite(df["spearman_abs"]).all()
    np.testing.assert_allclose(df["spearman_abs"], 1.0)  # all-zero before and after: no change
    assert df["per_image_undefined"].tolist() == [(True, True)] * len(df)


def test_a_map_that_vanishes_after_randomisation_counts_as_changed():
    """Two images keep their (model-independent) edge map, the third one's map goes all-zero
    once the head is random: that image HAS changed, so the mean is 2/3, not 1."""
    model = tiny_cnn()
    trained_head = model.net.fc.weight.detach().clone()
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(8))

    def vanishing(m, xs, t):
        maps = edge_fn(m, xs, t).clone()
        if not torch.equal(m.net.fc.weight, trained_head):
            maps[2] = 0
        return maps

    df = q.model_randomisation(model, x, 0, vanishing)
    randomised = df[df["stage"] != "original"]
    np.testing.assert_allclose(randomised["spearman_abs"], 2 / 3)
    assert (randomised["undefined"] == 1).all() and df.loc[0, "undefined"] == 0
    assert all(r == pytest.approx((1.0, 1.0, 0.0)) for r in randomised["per_image"])
    assert all(u == (False, False, True) for u in randomised["per_image_undefined"])
    sanity = df.assign(method="m")
    assert q.cascade_correlation(sanity)["m"] == pytest.approx(2 / 3)
    gate = q.sanity_gate(sanity, "m")
    assert gate["mean"] == pytest.approx(2 / 3) and gate["n_images"] == 3
    assert gate["n_undefined"] == len(randomised)  # one undefined correlation per randomised stage
    import matplotlib

    matplotlib.use("Agg")
    from helpers import plots

    fig = plots.randomisation_plot({"m": df})
    assert "n = 3 images" in fig.axes[0].get_title()
    plots.plt.close("all")


def test_randomisation_is_cumulative_seeded_and_resets_batchnorm():
    model = build_model("resnet18", 3, weights=None)
    with torch.no_grad():
        model.net.bn1.running_mean.fill_(0.3)
        model.net.bn1.weight.fill_(2.0)
    keys = [
        "net.fc.weight",
        "net.layer4.0.conv1.weight",
        "net.bn1.running_mean",
        "net.bn1.weight",
        "net.conv1.weight",
    ]
    seen = []

    def spy(m, x, t):
        state = m.state_dict()
        seen.append({k: state[k].clone() for k in keys})
        return torch.rand(1, 4, 4)

    df = q.model_randomisation(model, None, 0, spy, seed=3)
    assert list(df["stage"]) == [
        "original",
        "fc",
        "layer4",
        "layer3",
        "layer2",
        "layer1",
        "conv1+bn1",
    ]
    orig = model.state_dict()
    changed = lambda s, key: not torch.equal(s[key], orig[key])  # noqa: E731
    # seen[0]: the original model, seen[1]: the untouched copy, seen[2]: fc random ...
    assert not any(changed(seen[1], k) for k in keys)
    assert changed(seen[2], "net.fc.weight") and not changed(seen[2], "net.layer4.0.conv1.weight")
    assert changed(seen[3], "net.fc.weight") and changed(seen[3], "net.layer4.0.conv1.weight")
    assert torch.equal(seen[3]["net.fc.weight"], seen[2]["net.fc.weight"])  # cumulative
    assert not changed(seen[6], "net.bn1.running_mean")
    last = seen[7]
    assert torch.equal(last["net.bn1.running_mean"], torch.zeros(64))
    assert torch.equal(last["net.bn1.weight"], torch.ones(64))
    assert changed(last, "net.conv1.weight")
    first_run = seen[:]
    seen.clear()
    q.model_randomisation(model, None, 0, spy, seed=3)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(first_run, seen) for k in keys)


@pytest.mark.parametrize(
    "arch, first, last, count",
    [
        ("resnet18", ("net.fc",), ("net.conv1", "net.bn1"), 6),
        ("mobilenet_v2", ("net.classifier",), ("net.features.0",), 20),
        ("efficientnet_lite0", ("net.classifier",), ("net.conv_stem", "net.bn1"), 10),
    ],
)
def test_default_stages_per_arch(arch, first, last, count):
    model = build_model(arch, 3, weights=None)
    stages = q.randomisation_stages(model)
    assert stages[0] == first and stages[-1] == last and len(stages) == count
    names = dict(model.named_modules())
    assert all(n in names for s in stages for n in s)


def test_fallback_stages_and_bad_layer_names():
    assert q.randomisation_stages(tiny_cnn()) == [("net.fc",), ("net.conv2",), ("net.conv1",)]
    plain = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    assert q.randomisation_stages(plain) == [("3",), ("0",)]
    with pytest.raises(ValueError, match="no module"):
        q.model_randomisation(tiny_cnn(), torch.rand(1, 3, 4, 4), 0, edge_fn, layers=["net.nope"])


# ----------------------------------------------------------------------------- summary
def test_summarise_one_row_per_method():
    model, x = KeyPixelModel(), key_images(2)
    masks = oracle_maps(2).bool().numpy()
    table = q.summarise(
        model, x, 1, {"oracle": oracle_maps(2), "flat": torch.ones(2, SIZE, SIZE)}, masks, steps=4
    )
    assert list(table.index) == ["oracle", "flat"]
    assert {"deletion_auc", "insertion_auc", "pointing_game", "relevance_mass", "gini"} <= set(
        table.columns
    )
    assert (
        table.loc["oracle", "relevance_mass"] == 1.0 and table.loc["flat", "pointing_game"] == 0.0
    )
    assert np.isfinite(table.to_numpy(dtype=float)).all()
    assert isinstance(table, pd.DataFrame)


def test_cascade_correlation_averages_the_randomised_stages_only():
    import pandas as pd

    sanity = pd.DataFrame(
        {
            "method": ["a"] * 3 + ["b"] * 3,
            "stage": ["original", "s1", "s2"] * 2,
            "spearman_abs": [1.0, 0.5, 0.1, 1.0, 0.9, 0.7],
        }
    )
    result = q.cascade_correlation(sanity)
    assert result.to_dict() == pytest.approx({"a": 0.3, "b": 0.8})


def _sanity_frame(per_image_by_stage, method="m"):
    """A sanity_check-like frame from per-image correlations by stage (the original first)."""
    rows = []
    for stage, values in per_image_by_stage.items():
        rows.append(
            {
                "stage": stage,
                "spearman_abs": float(np.mean(values)),
                "per_image": tuple(values),
                "per_image_undefined": tuple(False for _ in values),
                "method": method,
            }
        )
    return pd.DataFrame(rows)


def test_sanity_gate_on_few_images_is_wide_and_undecided_when_it_straddles():
    # three images, mean 0.43 below the 0.5 gate, but one image is far above it
    few = _sanity_frame({"original": [1, 1, 1], "head": [0.1, 0.9, 0.3], "body": [0.1, 0.9, 0.28]})
    gate = q.sanity_gate(few, "m", threshold=0.5, seed=0)
    assert gate["mean"] == pytest.approx(q.cascade_correlation(few)["m"])
    assert gate["ci_low"] < 0.5 < gate["ci_high"] and gate["ci_high"] - gate["ci_low"] > 0.3
    assert gate["decision"] == "undecided" and gate["n_images"] == 3 and gate["n_undefined"] == 0
    # the same spread of values on 40 images is decided
    rng = np.random.default_rng(0)
    low = rng.uniform(0.0, 0.4, 40)
    gate = q.sanity_gate(
        _sanity_frame({"original": [1] * 40, "head": list(low), "body": list(low)}), "m"
    )
    assert gate["decision"] == "pass" and gate["ci_high"] < 0.5 and gate["n_images"] == 40
    high = rng.uniform(0.6, 1.0, 40)
    assert (
        q.sanity_gate(_sanity_frame({"original": [1] * 40, "head": list(high)}), "m")["decision"]
        == "fail"
    )
    # one image: no interval to decide on; fewer than min_images: reported, not decided
    assert (
        q.sanity_gate(_sanity_frame({"original": [1], "head": [0.0]}), "m")["decision"]
        == "undecided"
    )
    tight = _sanity_frame({"original": [1] * 4, "head": [0.1, 0.12, 0.11, 0.1]})
    assert (
        q.sanity_gate(tight, "m")["ci_high"] < 0.5
        and q.sanity_gate(tight, "m")["decision"] == "undecided"
    )
    assert q.sanity_gate(tight, "m", min_images=2)["decision"] == "pass"


def test_sanity_gate_stages_and_errors():
    frame = _sanity_frame({"original": [1, 1], "head": [0.9, 0.7], "body": [0.1, 0.3]})
    assert q.sanity_images(frame, "m")["correlation"].tolist() == pytest.approx([0.5, 0.5])
    assert q.sanity_images(frame, "m", stage="last")["correlation"].tolist() == pytest.approx(
        [0.1, 0.3]
    )
    assert q.sanity_gate(frame, "m", stage="head")["mean"] == pytest.approx(0.8)
    a = q.sanity_gate(frame, "m", seed=1)
    assert a == q.sanity_gate(frame, "m", seed=1)
    with pytest.raises(ValueError, match="no method"):
        q.sanity_gate(frame, "other")
    with pytest.raises(ValueError, match="no stage"):
        q.sanity_gate(frame, "m", stage="nope")
    with pytest.raises(ValueError, match="per-image"):
        q.sanity_gate(frame.drop(columns="per_image"), "m")


def test_sanity_gate_rarely_decides_when_the_true_mean_sits_on_the_threshold():
    """Per-image correlations whose population mean is exactly the 0.5 gate: on 16 images the
    gate should call it "pass" or "fail" in about 5 % of draws (a 95 % interval), not often."""
    rng = np.random.default_rng(0)
    decided = 0
    for trial in range(300):
        values = list(rng.beta(2, 2, 16))  # mean 0.5, spread like real images
        gate = q.sanity_gate(
            _sanity_frame({"original": [1] * 16, "all": values}), "m", seed=trial, n_boot=1000
        )
        decided += gate["decision"] != "undecided"
    assert decided / 300 <= 0.12
