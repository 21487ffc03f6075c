import math

import numpy as np
import pytest
import scipy.fft
import torch
from torch import nn

from helpers import hashing


class TinyFeatures(nn.Module):
    """A small random CNN: images [N, 3, 32, 32] -> [N, 128] (non-negative, like pooled ReLU
    features; 128 values as NeuralHash's embedding, so any 96-bit pattern is reachable)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 128, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x):
        return self.body(x)


def _images(n, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    # smooth random images (a few blobs) rather than white noise
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(
        coarse, size=(size, size), mode="bicubic", align_corners=False
    ).clamp(0, 1)


@pytest.fixture
def tiny_hasher():
    hasher = hashing.NeuralHash(TinyFeatures(), 128, bits=96, size=32, seed=3).eval()
    return hasher.set_center(_images(16, seed=99))


# ----------------------------------------------------------------------------- the neural hash
def test_projection_matrix_fixed_for_seed_unit_rows():
    a, b = hashing.projection_matrix(96, 128, 7), hashing.projection_matrix(96, 128, 7)
    assert a.shape == (96, 128) and torch.equal(a, b)
    assert not torch.equal(a, hashing.projection_matrix(96, 128, 8))
    torch.testing.assert_close(a.norm(dim=1), torch.ones(96))
    with pytest.raises(ValueError, match="bits and dim"):
        hashing.projection_matrix(0, 128, 0)


def test_hash_is_96_bits_stable_and_batch_independent(tiny_hasher):
    x = _images(5)
    h = tiny_hasher(x)
    assert h.dtype == torch.bool and h.shape == (5, 96) and tiny_hasher.bits == 96
    assert torch.equal(h, tiny_hasher(x))
    assert torch.equal(h, torch.cat([tiny_hasher(x[i : i + 1]) for i in range(5)]))
    # the same image at another size is resized to 32 first: a 2x nearest upscale is nearly the
    # same image
    big = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    assert hashing.hamming(tiny_hasher(big), h).float().mean() < 20


def test_projections_match_hand_computation(tiny_hasher):
    x = _images(3)
    with torch.no_grad():
        e = TinyFeatures()(x) - tiny_hasher.center
        e = e / e.norm(dim=1, keepdim=True) * math.sqrt(128)
        expected = e @ hashing.projection_matrix(96, 128, 3).T
        got = tiny_hasher.projections(x)
    torch.testing.assert_close(got, expected)
    assert torch.equal(tiny_hasher(x), got > 0)


def test_center_is_mean_embedding_and_balances_bits(tiny_hasher):
    ref = _images(16, seed=99)
    with torch.no_grad():
        torch.testing.assert_close(tiny_hasher.center, TinyFeatures()(ref).mean(0))
    # non-negative features and no centring: every image points the same way, bits agree a lot
    raw = hashing.NeuralHash(TinyFeatures(), 128, bits=96, size=32, seed=3)
    x = _images(12, seed=5)
    pairs = torch.triu_indices(12, 12, 1)
    uncentred = hashing.hamming_matrix(raw(x))[pairs[0], pairs[1]].float().mean()
    centred = hashing.hamming_matrix(tiny_hasher(x))[pairs[0], pairs[1]].float().mean()
    assert centred > uncentred


def test_neural_hash_bad_input(tiny_hasher):
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        tiny_hasher(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        tiny_hasher((torch.rand(1, 3, 32, 32) * 255).byte())
    with pytest.raises(ValueError, match="features gave shape"):
        hashing.NeuralHash(TinyFeatures(), 10, size=32)(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="center must have shape"):
        hashing.NeuralHash(TinyFeatures(), 128, size=32, center=torch.zeros(5))
    with pytest.raises(ValueError, match="size must be"):
        hashing.NeuralHash(TinyFeatures(), 128, size=4)
    with pytest.raises(ValueError, match="timm network"):
        hashing.Embedding(nn.Linear(3, 3))


# ----------------------------------------------------------------------------- pHash
def test_dct_matrix_is_scipy_orthonormal_dct():
    v = np.random.default_rng(0).random((32, 5))
    np.testing.assert_allclose(
        hashing.dct_matrix(32).numpy() @ v, scipy.fft.dct(v, axis=0, norm="ortho"), atol=1e-12
    )


def test_phash_matches_hand_computation_with_scipy():
    x = torch.rand(
        3, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    ).float()
    h = hashing.phash(x)
    assert h.dtype == torch.bool and h.shape == (3, 64)
    for k in range(3):
        rgb = x[k].double().numpy()
        grey = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]  # 32 x 32 already: no resize
        coeffs = scipy.fft.dctn(grey, type=2, norm="ortho")
        low = coeffs[1:9, 1:9].ravel()  # pHash.org: DC row and column excluded
        np.testing.assert_array_equal(h[k].numpy(), low > np.median(low))
        low_dc = coeffs[:8, :8].ravel()  # imagehash: from DC on
        np.testing.assert_array_equal(
            hashing.phash(x[k : k + 1], include_dc=True)[0].numpy(), low_dc > np.median(low_dc)
        )
    assert torch.all(h.sum(1) == 32)  # the median splits 64 distinct values in half


def test_phash_resizes_to_32_and_ignores_small_changes():
    x = _images(2, size=96)
    h = hashing.phash(x)
    assert h.shape == (2, 64)
    assert hashing.hamming(hashing.phash(hashing.quantize(x)), h).max() <= 2  # 8-bit rounding
    grey = x.mean(1, keepdim=True)
    assert hashing.phash(grey).shape == (2, 64)  # one channel works too


# ----------------------------------------------------------------------------- distances
def test_hamming_and_hex():
    a = torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    b = torch.tensor([1, 1, 1, 0], dtype=torch.bool)
    assert hashing.hamming(a, b).tolist() == [2, 3]
    assert hashing.hamming(a[0], a[0]).item() == 0
    m = hashing.hamming_matrix(a)
    assert m.tolist() == [[0, 3], [3, 0]]
    assert hashing.hamming_matrix(a, b[None]).tolist() == [[2], [3]]
    assert hashing.to_hex(a) == ["b", "0"]
    assert hashing.to_hex(torch.tensor([1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]).bool()) == ["87f"]
    with pytest.raises(ValueError, match="different lengths"):
        hashing.hamming(a, torch.zeros(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        hashing.hamming(torch.tensor([0.5, 1.0]), torch.tensor([1.0, 1.0]))


# ----------------------------------------------------------------------------- collisions
def test_collision_reaches_target_hash_tiny(tiny_hasher):
    x = _images(2, seed=7)
    a, b = x[:1], x[1:]
    target = tiny_hasher(b)[0]
    start = hashing.hamming(tiny_hasher(hashing.quantize(a)), target).item()
    assert start > 10
    r = hashing.find_collision(tiny_hasher, a, target, step_size=4 / 255, max_steps=200)
    assert bool(r.reached.all()), r.distances[0, -1]
    steps = int(r.steps[0])
    assert 0 < steps < 200
    assert torch.equal(tiny_hasher(r.x_adv)[0], target)  # the hash flipped to B's
    assert (
        r.distances.shape == (1, 201) and r.distances[0, 0] == start and r.distances[0, steps] == 0
    )
    assert np.all(r.distances[0, steps:] == 0)
    assert r.margin[0] >= 0.1
    # an 8-bit image: the collision survives saving as PNG
    torch.testing.assert_close(r.x_adv, hashing.quantize(r.x_adv), rtol=0, atol=1e-6)
    torch.testing.assert_close(r.x_start, hashing.quantize(a), rtol=0, atol=1e-6)
    delta = (r.x_adv - r.x_start).flatten(1)
    torch.testing.assert_close(r.linf, delta.abs().amax(1))
    torch.testing.assert_close(r.l2, delta.norm(dim=1))
    # deterministic
    again = hashing.find_collision(tiny_hasher, a, target, step_size=4 / 255, max_steps=200)
    assert torch.equal(again.x_adv, r.x_adv) and np.array_equal(again.distances, r.distances)


def test_collision_flips_every_bit_tiny(tiny_hasher):
    a = hashing.quantize(_images(1, seed=7))
    own = tiny_hasher(a)[0]
    r = hashing.find_collision(tiny_hasher, a, ~own, step_size=4 / 255, max_steps=250)
    assert bool(r.reached[0]) and r.distances[0, 0] == 96
    assert torch.equal(tiny_hasher(r.x_adv)[0], ~own)


@pytest.mark.parametrize("optimizer", ["adam", "sign"])
def test_collision_respects_linf_bound_and_range(tiny_hasher, optimizer):
    x = _images(3, seed=11)
    target = tiny_hasher(_images(3, seed=12))
    eps = torch.tensor([1, 2.5, 4]) / 255  # 2.5/255: only whole levels, so 2
    r = hashing.find_collision(
        tiny_hasher, x, target, eps=eps, max_steps=15, optimizer=optimizer, tv_weight=0.5
    )
    levels = (r.x_adv - r.x_start).abs().flatten(1).amax(1) * 255
    assert torch.all(levels <= torch.tensor([1, 2, 4]) + 1e-4)
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    # unquantised, a plain float bound
    r = hashing.find_collision(
        tiny_hasher, x, target, eps=3 / 255, max_steps=10, quantize=False, optimizer=optimizer
    )
    assert torch.all(r.linf <= 3 / 255 + 1e-7)


def test_collision_eps_zero_is_identity(tiny_hasher):
    x = _images(2, seed=3)
    target = ~tiny_hasher(hashing.quantize(x))
    r = hashing.find_collision(tiny_hasher, x, target, eps=0, max_steps=5)
    assert torch.equal(r.x_adv, r.x_start) and not r.reached.any() and torch.all(r.linf == 0)
    assert np.all(r.distances == 96)


def test_collision_bad_input(tiny_hasher):
    x = _images(2)
    target = tiny_hasher(x)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        hashing.find_collision(tiny_hasher, x[0], target[0])
    with pytest.raises(ValueError, match="target_hash must be"):
        hashing.find_collision(tiny_hasher, x, target[:, :50])
    with pytest.raises(ValueError, match="unknown optimizer"):
        hashing.find_collision(tiny_hasher, x, target, optimizer="sgd")
    with pytest.raises(ValueError, match="eps must be"):
        hashing.find_collision(tiny_hasher, x, target, eps=-0.1)
    with pytest.raises(ValueError, match="at least 1/255"):
        hashing.find_collision(tiny_hasher, x, target, eps=0.5 / 255)
    with pytest.raises(ValueError, match="eps values for 2 images"):
        hashing.find_collision(tiny_hasher, x, target, eps=[1 / 255] * 3)
    with pytest.raises(ValueError, match="max_steps"):
        hashing.find_collision(tiny_hasher, x, target, max_steps=-1)
    with pytest.raises(ValueError, match="step_size"):
        hashing.find_collision(tiny_hasher, x, target, step_size=0)


def test_total_variation_hand_value():
    d = torch.zeros(1, 1, 2, 3)
    d[0, 0, 0, 1] = 1.0  # one pixel: 2 horizontal + 1 vertical differences of 1
    assert hashing.total_variation(d).item() == pytest.approx(2 / 4 + 1 / 3)
    assert hashing.total_variation(torch.full((2, 3, 4, 4), 0.7)).abs().max() == 0


# ----------------------------------------------------------------------------- robustness
def test_transforms_keep_shape_and_do_what_they_say():
    x = _images(2, size=40)
    for kind, value in hashing.TRANSFORMS.values():
        y = hashing.transform(x, kind, value, seed=0)
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    jpeg = hashing.transform(x, "jpeg", 90)
    torch.testing.assert_close(jpeg, hashing.quantize(jpeg), rtol=0, atol=1e-6)
    assert (jpeg - x).abs().mean() < 0.02
    noise = hashing.transform(x * 0.5 + 0.25, "noise", 8 / 255, seed=1)
    torch.testing.assert_close((noise - (x * 0.5 + 0.25)).abs(), torch.full_like(x, 8 / 255))
    torch.testing.assert_close(hashing.transform(x, "brightness", 1.0), x)
    torch.testing.assert_close(hashing.transform(x, "crop", 0.0), x)
    with pytest.raises(ValueError, match="unknown transform kind"):
        hashing.transform(x, "rotate", 10)


def test_robustness_table_rows_columns_and_reference_row(tiny_hasher):
    x = _images(4, seed=21)
    transforms = {"identity": ("brightness", 1.0), "JPEG 50": ("jpeg", 50)}
    df = hashing.robustness_table(
        {"neural": tiny_hasher, "pHash": hashing.phash}, x, transforms=transforms
    )
    assert list(df.index) == ["identity", "JPEG 50", "unrelated photos"]
    assert list(df.columns) == ["neural", "pHash"] and df.attrs["bits"] == {
        "neural": 96,
        "pHash": 64,
    }
    assert df.loc["identity"].tolist() == [0.0, 0.0]
    m = hashing.hamming_matrix(hashing.phash(x)).float()
    assert df.loc["unrelated photos", "pHash"] == pytest.approx((m.sum() / (4 * 3)).item())
    with pytest.raises(ValueError, match="at least 2 images"):
        hashing.robustness_table({"pHash": hashing.phash}, x[:1])


def test_survival_table_unchanged_row(tiny_hasher):
    x = _images(2, seed=4)
    h = tiny_hasher(x)
    df = hashing.survival_table(
        tiny_hasher, x, {"own": h, "flipped": ~h}, transforms={"brighter": ("brightness", 1.1)}
    )
    assert list(df.index) == ["unchanged", "brighter"]
    assert df.loc["unchanged"].tolist() == [0.0, 96.0]
    assert df.loc["brighter", "own"] + df.loc["brighter", "flipped"] == 96


# ----------------------------------------------------------------------------- the real model
@pytest.fixture(scope="module")
def lite0_hasher():
    return hashing.neural_hasher("efficientnet_lite0", size=128)


def test_lite0_hash_and_collision_between_real_photos(lite0_hasher):
    from helpers import photos

    x = hashing.quantize(photos.load_photos(["chelsea", "coffee"], size=128))
    h = lite0_hasher(x)
    assert h.shape == (2, 96) and lite0_hasher.dim == 1280
    assert hashing.hamming(h[0], h[1]) > 25  # unrelated photos: far apart
    r = hashing.find_collision(
        lite0_hasher, x[:1], h[1], eps=8 / 255, step_size=1 / 255, max_steps=120
    )
    assert bool(r.reached[0]) and r.linf[0] <= 8 / 255 + 1e-6
    assert torch.equal(lite0_hasher(r.x_adv)[0], h[1])
    assert hashing.hamming(hashing.phash(r.x_adv), hashing.phash(x[:1])).item() <= 4
