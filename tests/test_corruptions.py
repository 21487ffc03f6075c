"""Natural corruptions (helpers.corruptions): identity at 0, ImageNet-C's severity 5 at 1
(Hendrycks & Dietterich 2019), per-image seeds, and the smallest flipping severity checked
against closed forms and brute-force scans on hand-made models."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from skimage import color
from torch import nn

from helpers import attacks
from helpers import corruptions as C
from helpers.attacks import search
from helpers.stats import wilson

NAMES = list(C.CORRUPTIONS)


def images(n=4, side=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, side, side, generator=g)
    return F.avg_pool2d(x, 3, 1, 1)  # some spatial structure, still in [0, 1]


class Threshold(nn.Module):
    """Class 1 where ``feature(x) > t`` (logits ``-+k (feature - t) / 2``), else class 0."""

    def __init__(self, feature, t, k=40.0):
        super().__init__()
        self.feature, self.t, self.k = feature, t, k

    def forward(self, x):
        z = self.k * (self.feature(x) - self.t)
        return torch.stack([-z / 2, z / 2], 1)


def spread(x):
    """Root mean of the per-channel pixel variances: contrast scales it by 1 - 0.95 s."""
    return x.var((2, 3), unbiased=False).mean(1).sqrt()


def mean_value(x):
    """Mean HSV value (max over channels): brightness raises it."""
    return x.amax(1).mean((1, 2))


def predict(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def first_flips(model, x, y, name, step=1e-3, seed=0):
    """Brute force: per image, the first severity on a grid of ``step`` that flips it."""
    s = torch.arange(0, 1 + step / 2, step)
    n, k = len(x), len(s)
    xs = C.corrupt(
        x.repeat_interleave(k, 0),
        name,
        s.repeat(n),
        seeds=(seed + torch.arange(n)).repeat_interleave(k),
    )
    wrong = (predict(model, xs) != y.repeat_interleave(k)).view(n, k)
    first = torch.where(wrong.any(1), wrong.int().argmax(1), -1)
    return np.where(first.numpy() >= 0, s[first.clamp_min(0)].numpy(), np.nan)


@pytest.mark.parametrize("name", NAMES)
def test_severity_zero_is_the_identity_and_outputs_stay_in_range(name):
    x = images()
    assert torch.equal(C.corrupt(x, name, 0.0), x)
    s = torch.tensor([0.0, 0.3, 0.0, 1.0])
    out = C.corrupt(x, name, s)
    assert torch.equal(out[[0, 2]], x[[0, 2]])
    assert out.dtype == x.dtype and out.shape == x.shape
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.equal(out[3], x[3])
    x64 = x.double()
    assert C.corrupt(x64, name, 0.5).dtype == torch.float64


@pytest.mark.parametrize("name", NAMES)
def test_each_image_is_the_same_alone_as_in_a_batch(name):
    x = images(4)
    s = torch.tensor([0.3, 0.6, 0.9, 1.0])
    batch = C.corrupt(x, name, s, seeds=[13, 10, 12, 11])
    for i, seed in ((0, 13), (2, 12)):
        assert torch.equal(C.corrupt(x[i : i + 1], name, s[i], seeds=[seed])[0], batch[i])
    # default seeds: image i uses seed + i
    assert torch.equal(C.corrupt(x, name, s, seed=5)[1], C.corrupt(x[1:2], name, s[1:2], seed=6)[0])
    assert torch.equal(C.corrupt(x, name, s, seed=5), C.corrupt(x, name, s, seed=5))


def test_gaussian_noise_at_one_has_imagenet_c_sigma_and_a_fixed_pattern():
    grey = torch.full((2, 3, 96, 96), 0.5)
    d = C.corrupt(grey, "gaussian_noise", 1.0) - grey
    rng = np.random.default_rng(0)
    expected = np.clip(0.38 * rng.standard_normal(10**6), -0.5, 0.5).std()  # clipped at 0 and 1
    assert abs(float(d.std()) - expected) < 0.01
    sigma = float(d.abs().median()) / 0.6745  # robust to the clipping at |d| = 0.5
    assert abs(sigma - 0.38) < 0.01
    # one pattern per image, scaled by the severity: continuous in s
    d2 = C.corrupt(grey, "gaussian_noise", 0.25) - grey
    small = d.abs() < 0.49
    torch.testing.assert_close(d2[small], 0.25 * d[small], atol=1e-6, rtol=0)
    assert not torch.equal(d[0], d[1])


def test_gaussian_blur_at_one_is_skimage_sigma_six_at_224_px():
    x = images(2, side=64)
    sigma = 6 * 64 / 224
    ref = ndimage.gaussian_filter(
        x.double().numpy(), (0, 0, sigma, sigma), mode="nearest", truncate=4
    )
    np.testing.assert_allclose(C.corrupt(x, "gaussian_blur", 1.0).numpy(), ref, atol=2e-6)
    ref_half = ndimage.gaussian_filter(
        x.double().numpy(), (0, 0, sigma / 2, sigma / 2), mode="nearest"
    )
    np.testing.assert_allclose(C.corrupt(x, "gaussian_blur", 0.5).numpy(), ref_half, atol=1e-4)


def pil_jpeg(img, quality):
    arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    back = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(back).permute(2, 0, 1)


def test_jpeg_at_each_imagenet_c_level_is_pil_at_its_quality():
    x = images(1, side=48)
    levels = C.CORRUPTIONS["jpeg"].levels
    assert levels[-1] == 1.0
    for s, q in zip(levels, (25, 18, 15, 10, 7)):
        assert torch.equal(C.corrupt(x, "jpeg", s)[0], pil_jpeg(x[0], q)), q
    assert not torch.equal(C.corrupt(x, "jpeg", 1.0), C.corrupt(x, "jpeg", levels[0]))


def test_brightness_at_one_is_skimage_hsv_value_plus_half():
    x = images(2, side=24)
    x[0, :, :4, :4] = 0  # black pixels (no hue)
    hsv = color.rgb2hsv(x.permute(0, 2, 3, 1).double().numpy(), channel_axis=-1)
    hsv[..., 2] = np.clip(hsv[..., 2] + 0.5, 0, 1)
    ref = np.clip(color.hsv2rgb(hsv, channel_axis=-1), 0, 1).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(C.corrupt(x, "brightness", 1.0).numpy(), ref, atol=1e-5)


def test_contrast_at_one_shrinks_each_channel_by_0_05_about_its_mean():
    x = images(2)
    out = C.corrupt(x, "contrast", 1.0)
    rng_in = x.amax((2, 3)) - x.amin((2, 3))
    torch.testing.assert_close(
        out.amax((2, 3)) - out.amin((2, 3)), 0.05 * rng_in, atol=1e-6, rtol=0
    )
    torch.testing.assert_close(out.mean((2, 3)), x.mean((2, 3)), atol=1e-6, rtol=0)
    torch.testing.assert_close(spread(C.corrupt(x, "contrast", 0.5)), (1 - 0.475) * spread(x))


def test_fog_at_one_is_imagenet_c_thickness_three():
    grey = torch.full((2, 3, 64, 64), 0.5)
    out = C.corrupt(grey, "fog", 1.0)
    # (x + 3 P) max / (max + 3), P a fractal normalised to [0, 1], equal in every channel
    assert math.isclose(float(out.amin()), 0.5 * 0.5 / 3.5, abs_tol=1e-6)
    assert math.isclose(float(out.amax()), 0.5, abs_tol=1e-6)
    assert torch.equal(out[:, 0], out[:, 2])
    assert not torch.equal(out[0], out[1])
    fractal = out[0, 0]  # large-scale structure: neighbours nearly equal, far pixels not
    assert float((fractal[1:] - fractal[:-1]).abs().mean()) < 0.2 * float(fractal.std())


def test_pixelate_at_one_is_four_by_four_blocks_at_128_px():
    x = images(1, side=128)
    out = C.corrupt(x, "pixelate", 1.0)
    blocks = F.avg_pool2d(x, 4).repeat_interleave(4, 2).repeat_interleave(4, 3)
    torch.testing.assert_close(out, blocks, atol=1e-6, rtol=0)
    # ImageNet-C's level 2 (factor 0.5): 2 x 2 blocks
    out2 = C.corrupt(x, "pixelate", C.CORRUPTIONS["pixelate"].levels[1])
    torch.testing.assert_close(
        out2, F.avg_pool2d(x, 2).repeat_interleave(2, 2).repeat_interleave(2, 3)
    )


def test_motion_blur_streaks_a_point_along_its_angle():
    x = torch.zeros(1, 3, 80, 80)
    x[..., 40, 40] = 1
    out = C.corrupt(x, "motion_blur", 1.0, seeds=[3])
    angle = float(C._angle_pattern(x, [3])[0])
    assert abs(math.degrees(angle)) <= 45
    torch.testing.assert_close(out.sum((2, 3)), torch.ones(1, 3))
    k = torch.arange(round(40 * 80 / 224) + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (k / (15 * 80 / 224)) ** 2)
    w /= w.sum()
    mean_len = float((w * k).sum())  # the point spreads to 40 - round(k (cos, sin))
    rows, cols = torch.meshgrid(torch.arange(80.0), torch.arange(80.0), indexing="ij")
    m = out[0, 0].double()
    assert abs(float((m * (40 - cols)).sum()) - mean_len * math.cos(angle)) < 0.5
    assert abs(float((m * (40 - rows)).sum()) - mean_len * math.sin(angle)) < 0.5


def test_bad_input_is_refused_with_a_clear_message():
    x = images(2)
    with pytest.raises(ValueError, match="gaussian_noise, .*pixelate"):
        C.corrupt(x, "snow", 0.5)
    for bad in (1.5, -0.1, float("nan"), [0.1, 0.2, 0.3]):
        with pytest.raises(ValueError, match="severity"):
            C.corrupt(x, "fog", bad)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        C.corrupt(x[0], "fog", 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        C.corrupt(x * 2, "fog", 0.5)
    with pytest.raises(ValueError, match="seeds"):
        C.corrupt(x, "fog", 0.5, seeds=[1])
    model = Threshold(spread, 0.1)
    with pytest.raises(ValueError, match="bisection"):
        C.minimal_severity(model, x, [1, 1], "jpeg", method="illinois")


def contrast_case():
    g = torch.Generator().manual_seed(1)
    a = torch.tensor([0.02, 0.045, 0.06, 0.1, 0.2, 0.4, 0.8, 1.0])[:, None, None, None]
    x = 0.5 + a * (torch.rand(8, 3, 16, 16, generator=g) - 0.5)
    t = 0.01
    model = Threshold(spread, t)
    y = torch.ones(8, dtype=torch.long)  # image 0 is flat: wrong already
    exact = (1 - t / spread(x).double()) / 0.95  # spread (1 - 0.95 s) = t
    return model, x, y, exact.numpy()


@pytest.mark.parametrize("method", ["bisection", "illinois"])
def test_minimal_severity_matches_the_closed_form_for_contrast(method):
    model, x, y, exact = contrast_case()
    tol = 0.02
    df = C.minimal_severity(model, x, y, "contrast", tol=tol, method=method)
    assert list(df.columns) == ["severity", *attacks.RESULT_COLUMNS[1:]]
    assert df.attrs["corruption"] == "contrast" and df.attrs["tol"] == tol
    assert df.attrs["max_severity"] == 1.0 and df.attrs["method"] == method
    assert df["already_wrong"].tolist() == [True] + [False] * 7 and df["severity"][0] == 0
    beyond = exact > 1
    assert beyond.any() and df["severity"][beyond].isna().all()
    assert not df["flipped"][beyond].any()
    inside = ~beyond & (exact > 0)
    found = df["severity"].to_numpy()[inside]
    assert np.all(found >= exact[inside] - 1e-6) and np.all(found <= exact[inside] + tol + 1e-6)
    idx = np.flatnonzero(inside)
    at = C.corrupt(x[idx], "contrast", torch.tensor(found, dtype=torch.float32))
    below = C.corrupt(x[idx], "contrast", torch.tensor(found - tol, dtype=torch.float32))
    assert (predict(model, at) != 1).all() and (predict(model, below) == 1).all()
    assert (df["flip_class"][idx] == 0).all()
    bound = 1 + 8 + math.ceil(math.log2((1 / 8) / tol))
    if method == "bisection":
        assert df["n_forward"].max() <= bound


@pytest.mark.parametrize("name", ["brightness", "gaussian_noise", "contrast"])
def test_minimal_severity_agrees_with_a_brute_force_scan(name):
    if name == "brightness":
        x = images(6) * torch.linspace(0.2, 0.6, 6)[:, None, None, None]
        model, y = Threshold(mean_value, 0.55), torch.zeros(6, dtype=torch.long)
    elif name == "gaussian_noise":  # grey images: |noise| grows with s in every pixel
        x = torch.full((6, 3, 12, 12), 0.5)
        model = Threshold(lambda v: (v - 0.5).abs().mean((1, 2, 3)), 0.12)
        y = torch.zeros(6, dtype=torch.long)
    else:
        model, x, y, _ = contrast_case()
    tol = 0.01
    df = C.minimal_severity(model, x, y, name, tol=tol, seed=7)
    scan = first_flips(model, x, y, name, seed=7)
    found = df["severity"].to_numpy()
    assert np.array_equal(np.isnan(found), np.isnan(scan))
    ok = ~np.isnan(scan) & (scan > 0)
    assert ok.sum() >= 3
    assert np.all(found[ok] > scan[ok] - 1e-3 - 1e-6) and np.all(found[ok] <= scan[ok] + tol + 1e-6)
    # accuracy at fixed severities, evaluated directly, agrees with the scan (monotone flips)
    acc = C.accuracy_at(model, x, y, [name], severities=(0.0, 0.3, 0.7), seed=7)
    assert list(acc.columns) == ["corruption", "severity", "accuracy", "n"]
    for s, a in zip(acc["severity"], acc["accuracy"]):
        expected = np.mean(np.isnan(scan) | (scan > s + 1e-9))
        assert math.isclose(a, expected), (s, a, expected)


def stats(x):
    grad = (x[..., :, 1:] - x[..., :, :-1]).abs().mean((1, 2, 3))
    return torch.cat([x.mean((2, 3)), x.std((2, 3)), grad[:, None]], 1)


class Standardised(nn.Module):
    """Channel means, spreads and mean gradient, standardised over the clean images."""

    def __init__(self, x):
        super().__init__()
        f = stats(x)
        self.register_buffer("mu", f.mean(0))
        self.register_buffer("sd", f.std(0) + 1e-3)

    def forward(self, x):
        return (stats(x) - self.mu) / self.sd


def stats_case():
    """Six images and a random linear model on their statistics: every corruption flips some."""
    x = images(6) * torch.linspace(0.4, 1, 6)[:, None, None, None]
    torch.manual_seed(0)
    model = nn.Sequential(Standardised(x), nn.Linear(7, 3)).eval()
    return model, x, predict(model, x)


def test_severity_table_every_found_severity_flips_its_image():
    model, x, y = stats_case()
    y[0] = (y[0] + 1) % 3
    df = C.severity_table(model, x, y, grid=4, tol=0.05, batch_size=4)
    assert list(df.columns[:3]) == ["corruption", "image", "severity"]
    assert df["corruption"].unique().tolist() == NAMES and len(df) == 6 * len(NAMES)
    assert (df["image"] == np.tile(np.arange(6), len(NAMES))).all()
    assert (df.loc[df["image"] == 0, "severity"] == 0).all()
    assert df.attrs["jpeg"]["grid"] == [0.25, 0.5, 0.75, 1.0]
    assert (df["n_forward"] <= 4 + math.ceil(math.log2(0.25 / 0.05))).all()  # clean forward shared
    flipped = df[df["flipped"] & ~df["already_wrong"]]
    assert len(flipped) >= 20 and set(flipped["corruption"]) == set(NAMES)
    for name, rows in flipped.groupby("corruption"):
        i = rows["image"].to_numpy().copy()
        s = torch.tensor(rows["severity"].to_numpy(), dtype=torch.float32)
        xs = C.corrupt(x[i], name, s, seeds=i)  # image i's own seed (seed + i)
        assert (predict(model, xs).numpy() == rows["flip_class"].to_numpy().astype(int)).all()
        assert (predict(model, xs) != y[i]).all(), name


def test_minimal_parameter_along_the_fgsm_path_is_minimal_epsilon():
    model, x, y = stats_case()
    ref = attacks.minimal_epsilon(model, x, y, max_eps=0.3, tol=1e-3, method="bisection")
    sign, clean = attacks._base.directions(model, x, y, 64)
    df = search.minimal_parameter(
        model, x, y, search._fgsm_path(x, sign), max_value=0.3, tol=1e-3, clean_logits=clean
    )
    assert ref["flipped"].sum() >= 2
    np.testing.assert_array_equal(df["epsilon"].to_numpy(), ref["epsilon"].to_numpy())
    assert df.attrs["grid"] == ref.attrs["grid"]


# ------------------------------------------------------------------ summaries (notebook 12)
def frame(rows):
    """A severity_table-like frame from (corruption, image, label, severity or None, wrong)."""
    out = []
    for corruption, image, label, severity, wrong in rows:
        flipped = wrong or severity is not None
        s = 0.0 if wrong else (np.nan if severity is None else severity)
        row = dict(corruption=corruption, image=image, severity=s, flipped=flipped)
        out.append({**row, "already_wrong": wrong, "label": label})
    return pd.DataFrame(out)


def hand_frame():
    """Class 0: one image wrong, three flipping at .2 .4 .6 (noise) and .5 .7 .9 (fog);
    class 1: noise flips one of three (.3), fog flips all three (.1 .2 .3)."""
    rows = [("gaussian_noise", 0, 0, None, True), ("fog", 0, 0, None, True)]
    for i, (a, b) in enumerate([(0.2, 0.5), (0.4, 0.7), (0.6, 0.9)], start=1):
        rows += [("gaussian_noise", i, 0, a, False), ("fog", i, 0, b, False)]
    for i, (a, b) in enumerate([(0.3, 0.1), (None, 0.2), (None, 0.3)], start=4):
        rows += [("gaussian_noise", i, 1, a, False), ("fog", i, 1, b, False)]
    return frame(rows)


def test_per_class_severity_counts_the_right_images_and_never_flipped_as_beyond_one():
    stated = {"gaussian_noise": 0.35, "fog": 0.5}
    t = C.per_class_severity(hand_frame(), ["a", "b"], stated=stated).set_index(
        ["class", "corruption"]
    )
    assert list(t.index) == [(c, k) for c in "ab" for k in ("gaussian_noise", "fog")]
    assert (t["n"] == 3).all()  # the wrong image of class a does not count
    assert t.loc[("a", "gaussian_noise"), "median"] == pytest.approx(0.4)
    assert t.loc[("a", "fog"), "median"] == pytest.approx(0.7)
    assert t.loc[("b", "fog"), "median"] == pytest.approx(0.2)
    assert np.isinf(t.loc[("b", "gaussian_noise"), "median"])  # 2 of 3 never flip
    assert np.isinf(t.loc[("b", "gaussian_noise"), "high"])
    assert t.loc[("b", "gaussian_noise"), "not_flipped"] == pytest.approx(2 / 3)
    assert (t["low"] <= t["median"]).all() and (t["median"] <= t["high"]).all()
    # withstanding the stated severity: above it or never flipped
    expected = {("a", "gaussian_noise"): 2, ("a", "fog"): 2, ("b", "gaussian_noise"): 2}
    expected[("b", "fog")] = 0
    for key, k in expected.items():
        assert t.loc[key, "withstanding"] == pytest.approx(k / 3)
        assert (t.loc[key, "withstanding_low"], t.loc[key, "withstanding_high"]) == pytest.approx(
            wilson(k, 3)
        )
    again = C.per_class_severity(hand_frame(), ["a", "b"], seed=3)
    np.testing.assert_array_equal(again["median"], t["median"])  # the seed moves intervals only


def test_severity_summary_prints_medians_intervals_and_n():
    t = C.per_class_severity(hand_frame(), ["a", "b"])
    s = C.severity_summary(t)
    assert list(s.index) == ["n", "gaussian_noise", "fog"] and list(s.columns) == ["a", "b"]
    assert s.loc["n"].tolist() == ["3", "3"]
    assert s.loc["gaussian_noise", "a"] == "0.40 [0.20, 0.60]"  # .2 .4 .6: every resample
    assert s.loc["gaussian_noise", "b"] == ">1 [0.30, >1]"  # two of three never flip


def sensitivity_table():
    inf = np.inf
    rows = [
        ("x", "noise", 0.2, 0.1, 0.3), ("x", "blur", 0.5, 0.4, 0.6), ("x", "fog", inf, 0.8, inf),
        ("y", "noise", 0.4, 0.3, 0.6), ("y", "blur", 0.3, 0.2, 0.5), ("y", "fog", 0.9, 0.7, 1.0),
        ("z", "noise", inf, 0.9, inf), ("z", "blur", inf, 1.0, inf), ("z", "fog", inf, inf, inf),
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["class", "corruption", "median", "low", "high"]).assign(n=5)


def test_most_sensitive_picks_the_lowest_median_and_says_whether_intervals_separate_it():
    m = C.most_sensitive(sensitivity_table())
    assert list(m.index) == ["x", "y", "z"]
    assert (m.loc["x", "first"], m.loc["x", "second"], m.loc["x", "apart"]) == (
        "noise",
        "blur",
        True,
    )
    assert (m.loc["y", "first"], m.loc["y", "second"], m.loc["y", "apart"]) == (
        "blur",
        "noise",
        False,
    )
    assert m.loc["y", "first_median"] == 0.3 and m.loc["y", "second_high"] == 0.6
    assert pd.isna(m.loc["z", "first"]) and not m.loc["z", "apart"] and m.loc["z", "n"] == 5


def test_image_withstanding_is_the_share_of_stated_severities_survived():
    w = C.image_withstanding(hand_frame(), {"gaussian_noise": 0.35, "fog": 0.5})
    assert list(w.index) == [1, 2, 3, 4, 5, 6]  # image 0 was wrong from the start
    # image 1: noise .2 (no), fog .5 (not above .5: no); 2: .4 yes, .7 yes; 4: .3 no, .1 no
    assert w["withstanding"].tolist() == [0.0, 1.0, 1.0, 0.0, 0.5, 0.5]
    assert w["label"].tolist() == [0, 0, 0, 1, 1, 1]
    only_fog = C.image_withstanding(hand_frame(), {"fog": 0.15})
    assert only_fog["withstanding"].tolist() == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]


def test_class_rank_correlation_by_hand():
    labels = pd.Series([0, 0, 1, 1, 2, 2])
    adv = pd.Series([0.1, 0.1, 0.2, 0.2, np.inf, np.inf])  # class medians .1 .2 inf: ranks 1 2 3
    nat = pd.Series([0.0, 0.0, 1.0, 1.0, 0.5, 0.5])  # class means 0 1 .5: ranks 1 3 2
    table, rho = C.class_rank_correlation(adv, nat, labels, ["a", "b", "c"], n_boot=200)
    assert rho.estimate == pytest.approx(0.5)  # 1 - 6 (0 + 1 + 1) / (3 (9 - 1))
    assert (rho.low, rho.high, rho.n) == (pytest.approx(0.5), pytest.approx(0.5), 3)  # no spread
    assert table["median_eps"].tolist() == [0.1, 0.2, np.inf]
    assert table["withstanding"].tolist() == [0.0, 1.0, 0.5] and table["n"].tolist() == [2, 2, 2]
    _, same = C.class_rank_correlation(adv, adv.clip(upper=9), labels, ["a", "b", "c"])
    assert same.estimate == pytest.approx(1.0)
    # images present in one series only do not count; two classes give no correlation
    table2, two = C.class_rank_correlation(adv[:4], nat, labels, ["a", "b", "c"])
    assert list(table2.index) == ["a", "b"] and np.isnan(two.estimate) and two.n == 2


def test_class_rank_correlation_interval_covers_the_resampled_values():
    rng = np.random.default_rng(1)
    labels = pd.Series(np.repeat(np.arange(4), 20))
    adv = pd.Series(rng.uniform(0, 1, 80) + labels * 0.5)
    nat = pd.Series(rng.uniform(0, 1, 80) + labels * 0.5)
    _, rho = C.class_rank_correlation(adv, nat, labels, list("abcd"), seed=2)
    assert rho.estimate == pytest.approx(1.0) and -1 <= rho.low <= rho.high <= 1
    _, again = C.class_rank_correlation(adv, nat, labels, list("abcd"), seed=2)
    assert (again.low, again.high) == (rho.low, rho.high)


def test_accuracy_curves_add_the_clean_level_and_wilson_intervals():
    model, x, y = stats_case()
    names = ["contrast", "fog"]
    curves = C.accuracy_curves(model, x, y, names, seed=3)
    assert curves["corruption"].tolist() == ["contrast"] * 6 + ["fog"] * 6
    assert curves["level"].tolist() == list(range(6)) * 2
    assert (curves.loc[curves["level"] == 0, "accuracy"] == 1.0).all()  # y is the prediction
    direct = C.accuracy_at(model, x, y, names, "imagenet_c", seed=3)
    np.testing.assert_array_equal(curves.loc[curves["level"] > 0, "accuracy"], direct["accuracy"])
    fog = curves[curves["corruption"] == "fog"]["severity"].tolist()
    assert fog == pytest.approx([0.0, *C.CORRUPTIONS["fog"].levels])
    k = np.round(curves["accuracy"] * 6).astype(int)
    low, high = wilson(k.to_numpy(), 6)
    np.testing.assert_allclose(curves["low"], low)
    np.testing.assert_allclose(curves["high"], high)


def test_strip_and_at_flip_show_what_the_search_found():
    model, x, y = stats_case()
    s = C.strip(x[2], ["fog", "jpeg"], (0, 0.5, 1), seed=9)
    assert s.shape == (6, 3, 32, 32)
    assert torch.equal(s[0], x[2]) and torch.equal(s[3], x[2])  # severity 0: the image
    assert torch.equal(s[1], C.corrupt(x[2:3], "fog", 0.5, seeds=[9])[0])
    df = C.severity_table(model, x, y, ["contrast", "gaussian_noise"], grid=4, tol=0.05, seed=5)
    for image in range(len(x)):
        imgs, rows = C.at_flip(x, df, image, seed=5)
        assert rows["corruption"].tolist() == ["contrast", "gaussian_noise"]
        pred = predict(model, imgs).numpy()
        for r, p in zip(rows.itertuples(), pred):
            if r.flipped:
                assert p == r.flip_class != y[image]
            else:  # never flipped: shown at severity 1, still right
                assert p == y[image]
