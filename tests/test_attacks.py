"""Attacks, minimal epsilon and masks on tiny models with known answers (closed forms,
invariants)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from helpers import attacks as A

C, H, W = 3, 6, 6
D = C * H * W


class SmallCNN(nn.Module):
    """conv-BN-ReLU-dropout-linear: has train-mode layers, so eval mode matters."""

    def __init__(self, k=3):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(C, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Flatten(),
            nn.Dropout(0.5),
            nn.Linear(4 * H * W, k),
        )

    def forward(self, x):
        return self.body(x - 0.5)


class Linear2(nn.Module):
    """logits = W (x - 0.5): the margin along a sign direction is linear in eps."""

    def __init__(self, k=2, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(D, k, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(k, D, generator=g))

    def forward(self, x):
        return self.fc((x - 0.5).flatten(1))


class Wavy(nn.Module):
    """Two classes; logit_0 - logit_1 = cos(2 pi u / P + phi) + b with u = mean(x) - 0.4.

    On constant 0.4 images the FGSM direction is +1 on every pixel, so u = eps: the prediction
    flips at eps1, flips back at eps2 and flips again at eps3 (closed forms below).
    """

    P, phi, b = 0.02, 0.2, 0.3

    def forward(self, x):
        u = x.mean(dim=(1, 2, 3)) - 0.4
        z0 = torch.cos(2 * math.pi * u / self.P + self.phi) + self.b
        return torch.stack([z0, torch.zeros_like(z0)], 1)

    @classmethod
    def roots(cls):
        a = math.acos(-cls.b)
        return [
            (a - cls.phi) * cls.P / (2 * math.pi),
            (2 * math.pi - a - cls.phi) * cls.P / (2 * math.pi),
            (2 * math.pi + a - cls.phi) * cls.P / (2 * math.pi),
        ]


@pytest.fixture
def cnn():
    return SmallCNN().eval()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(6, C, H, W, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])


def _inner(x):  # images away from the [0, 1] boundary: clipping stays inactive for eps <= 0.1
    return 0.3 + 0.4 * x


def _linf(a, b):
    return (a - b).flatten(1).abs().amax(1)


def _half_mask(n=6):
    mask = torch.zeros(n, H, W, dtype=torch.bool)
    mask[:, :, : W // 2] = True
    return mask


# ------------------------------------------------------------------ invariants of the attacks
@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_linf_attacks_stay_in_the_ball_and_in_range(cnn, batch, attack):
    x, y = batch
    kw = {"seed": 0} if attack == "pgd" else {}
    x_adv = A.ATTACKS[attack](cnn, x, y, eps=0.03, **kw)
    assert (_linf(x_adv, x) <= 0.03 + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (_linf(x_adv, x) > 0.01).all()  # it did move


def test_l2_pgd_stays_in_the_ball(cnn, batch):
    x, y = batch
    x_adv = A.pgd(cnn, x, y, eps=0.5, norm="l2", steps=5, seed=0)
    assert ((x_adv - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize(
    "kw", [{"attack": "fgsm"}, {"attack": "pgd", "norm": "linf"}, {"attack": "pgd", "norm": "l2"}]
)
def test_eps_zero_changes_nothing(cnn, batch, kw):
    x, y = batch
    kw = dict(kw)
    assert torch.equal(A.ATTACKS[kw.pop("attack")](cnn, x, y, eps=0, **kw), x)


def test_negative_eps_is_refused_with_a_clear_message(cnn, batch):
    x, y = batch
    for call in (
        lambda: A.fgsm(cnn, x, y, eps=-0.1),
        lambda: A.pgd(cnn, x, y, eps=-1e-3),
        lambda: A.epsilon_sweep(cnn, x, y, [0.0, -0.1]),
        lambda: A.minimal_epsilon(cnn, x, y, max_eps=-0.1),
    ):
        with pytest.raises(ValueError, match=">= 0"):
            call()


def test_fgsm_is_one_pgd_step_of_size_eps(cnn, batch):
    x, y = batch
    one_step = A.pgd(cnn, x, y, eps=0.02, steps=1, step_size=0.02, random_start=False)
    assert torch.equal(A.fgsm(cnn, x, y, eps=0.02), one_step)


@pytest.mark.parametrize(
    "kw",
    [
        {"attack": "fgsm"},
        {"attack": "pgd", "norm": "linf", "random_start": True, "seed": 3},
        {"attack": "pgd", "norm": "l2", "random_start": True, "seed": 3},
    ],
)
@pytest.mark.parametrize("shape", ["NHW", "N1HW"])
def test_masked_attacks_leave_the_outside_untouched(cnn, batch, kw, shape):
    x, y = batch
    mask = _half_mask()
    given = mask if shape == "NHW" else mask[:, None].float()
    kw = dict(kw)
    x_adv = A.ATTACKS[kw.pop("attack")](
        cnn, x, y, eps=0.05 if kw.get("norm") != "l2" else 0.5, mask=given, **kw
    )
    outside = ~mask[:, None].expand_as(x)
    assert torch.equal(x_adv[outside], x[outside])
    assert (x_adv[~outside] != x[~outside]).any()


def test_targeted_attack_reaches_the_target():
    model = Linear2(k=4).eval()
    x = _inner(torch.rand(8, C, H, W, generator=torch.Generator().manual_seed(2)))
    with torch.no_grad():
        pred = model(x).argmax(1)
    target = (pred + 1) % 4
    for attack in ("fgsm", "pgd"):
        x_adv = A.ATTACKS[attack](model, x, target, eps=0.1, targeted=True)
        with torch.no_grad():
            assert torch.equal(model(x_adv).argmax(1), target), attack


def test_pgd_random_start_repeats_with_a_seed(cnn, batch):
    x, y = batch
    a = A.pgd(cnn, x, y, eps=0.03, steps=2, seed=7)
    b = A.pgd(cnn, x, y, eps=0.03, steps=2, seed=7)
    c = A.pgd(cnn, x, y, eps=0.03, steps=2, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_mode_restored_no_parameter_gradients_input_untouched(batch):
    x, y = batch
    model = SmallCNN().train()
    model.body[4].eval()  # a mixed state must come back exactly
    before = [m.training for m in model.modules()]
    x0 = x.clone()
    A.pgd(model, x, y, eps=0.03, steps=2, seed=0)
    A.minimal_epsilon(model, x, y, max_eps=0.05, grid=4)
    A.epsilon_sweep(model, x, y, [0.0, 0.01])
    assert [m.training for m in model.modules()] == before
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(x, x0)


# ------------------------------------------------------------------ epsilon sweep
def test_fgsm_sweep_uses_one_backward_and_matches_fgsm(cnn, batch):
    x, y = batch
    calls = []
    handle = cnn.body[0].register_full_backward_hook(lambda *a: calls.append(1))
    try:
        df = A.epsilon_sweep(cnn, x, y, [0.0, 0.01, 0.05], batch_size=64)
    finally:
        handle.remove()
    assert len(calls) == 1
    with torch.no_grad():
        clean = (cnn(x).argmax(1) == y).sum().item() / len(y)
        at_05 = (cnn(A.fgsm(cnn, x, y, eps=0.05)).argmax(1) == y).sum().item() / len(y)
    assert df["accuracy"].tolist()[0] == clean
    assert df["accuracy"].tolist()[2] == at_05


# ------------------------------------------------------------------ minimal epsilon
@pytest.fixture
def linear_case():
    """A linear 2-class model, 24 inner images, the closed-form minimal epsilon per image."""
    model = Linear2().eval()
    x = _inner(torch.rand(24, C, H, W, generator=torch.Generator().manual_seed(3)))
    with torch.no_grad():
        logits = model(x).double()
    y = logits.argmax(1)
    y[:2] = 1 - y[:2]  # two images already misclassified
    w = model.fc.weight.detach().double()
    l1 = (w[0] - w[1]).abs().sum()
    m0 = logits.gather(1, y[:, None])[:, 0] - logits.gather(1, (1 - y)[:, None])[:, 0]
    return model, x, y, (m0 / l1).numpy()


def _pred_at(model, x, y, eps):
    d = A.fgsm_direction(model, x, y)
    with torch.no_grad():
        return model(
            (x + torch.as_tensor(eps, dtype=x.dtype).view(-1, 1, 1, 1) * d).clamp(0, 1)
        ).argmax(1)


@pytest.mark.parametrize("spacing", ["linear", "geometric"])
def test_minimal_epsilon_matches_the_closed_form(linear_case, spacing):
    model, x, y, star = linear_case
    tol, max_eps = 1e-4, float(np.median(star[2:]))  # about half the images flip
    results = {}
    for method in ("illinois", "bisection"):
        df = A.minimal_epsilon(
            model, x, y, max_eps=max_eps, tol=tol, method=method, spacing=spacing
        )
        results[method] = df
        eps, flipped = df["epsilon"].to_numpy(), df["flipped"].to_numpy()
        assert (eps[:2] == 0).all() and flipped[:2].all() and df["already_wrong"][:2].all()
        should = star[2:] <= max_eps - tol
        assert flipped[2:][should].all()
        assert not flipped[2:][star[2:] > max_eps].any()
        assert np.isnan(eps[2:][star[2:] > max_eps]).all()
        f = flipped & ~df["already_wrong"].to_numpy()
        assert np.abs(eps[f] - star[f]).max() <= tol
        # the bracket invariant: wrong at eps, right at eps - tol
        assert (_pred_at(model, x[f], y[f], eps[f]) != y[f]).all()
        assert (_pred_at(model, x[f], y[f], eps[f] - tol) == y[f]).all()
        assert (df["flip_class"][f].to_numpy() == (1 - y[f]).numpy()).all()
        assert (df["confidence_at_flip"][f] >= 0.5).all() and (df["confidence_before"] >= 0.5).all()
    e1, e2 = results["illinois"]["epsilon"], results["bisection"]["epsilon"]
    assert np.nanmax(np.abs(e1 - e2)) <= tol
    root = {
        m: r["n_forward"].sum() - r.attrs["grid_forwards_per_image"] * len(r)
        for m, r in results.items()
    }
    assert root["illinois"] < root["bisection"]


def test_the_first_flip_is_found_when_the_prediction_flips_back():
    eps1, eps2, eps3 = Wavy.roots()
    assert eps1 < 0.0125 < eps2 < eps3 < 0.1  # the grid point 0.0125 is in the first wrong stretch
    x, y = torch.full((2, C, H, W), 0.4), torch.tensor([0, 0])
    for method in ("illinois", "bisection"):
        df = A.minimal_epsilon(Wavy(), x, y, max_eps=0.1, grid=8, tol=1e-4, method=method)
        assert np.abs(df["epsilon"].to_numpy() - eps1).max() <= 1e-4, method


def test_pgd_direction_on_a_linear_model_matches_the_closed_form(linear_case):
    model, x, y, star = linear_case
    df = A.minimal_epsilon(
        model, x[:6], y[:6], max_eps=0.1, grid=4, tol=1e-3, direction="pgd", pgd_kw={"steps": 5}
    )
    ok = df["flipped"].to_numpy() & ~df["already_wrong"].to_numpy()
    assert ok.sum() >= 2
    assert np.abs(df["epsilon"].to_numpy()[ok] - star[:6][ok]).max() <= 1e-3
    assert (df["n_backward"][ok] >= 5).all()


# ------------------------------------------------------------------ masks and regions
def test_top_fraction_mask_counts_and_breaks_ties_deterministically():
    maps = torch.zeros(2, 4, 5)
    maps[0, 3, 4] = 1.0  # one clear maximum, the rest tied
    mask = A.top_fraction_mask(maps, 0.2)
    assert mask.dtype == torch.bool and mask.shape == (2, 4, 5)
    assert mask.sum(dim=(1, 2)).tolist() == [4, 4]
    assert mask[0, 3, 4] and mask[0, 0, :3].all()  # the maximum, then the earliest tied pixels
    assert mask[1, 0, :4].all()
    assert torch.equal(mask, A.top_fraction_mask(maps.numpy(), 0.2))
    assert torch.equal(A.complement(mask), ~mask)
    assert (A.complement(mask.float()) == 1 - mask.float()).all()
    with pytest.raises(ValueError):
        A.top_fraction_mask(maps, 1.5)


def test_fragility_by_region_matches_the_masked_closed_form(linear_case):
    model, x, y, star = linear_case
    obj = _half_mask(len(x))
    df = A.fragility_by_region(
        model, x, y, {"object": obj, "background": A.complement(obj)}, max_eps=0.2, tol=1e-4
    )
    assert list(dict.fromkeys(df["region"])) == ["whole", "object", "background"]
    w = model.fc.weight.detach().double()
    logits = model(x).detach().double()
    m0 = (logits.gather(1, y[:, None])[:, 0] - logits.gather(1, (1 - y)[:, None])[:, 0]).numpy()
    whole = df[df["region"] == "whole"]
    assert (
        np.allclose(whole["epsilon"].to_numpy()[2:], star[2:], atol=1e-4, equal_nan=False)
        or np.nanmax(np.abs(whole["epsilon"].to_numpy()[2:] - star[2:])) <= 1e-4
    )
    m = obj[0, None].expand(C, H, W).reshape(-1).double()
    star_obj = m0 / ((w[0] - w[1]).abs() * m).sum().item()
    sel = df[(df["region"] == "object")]
    f = sel["flipped"].to_numpy() & ~sel["already_wrong"].to_numpy()
    assert f.sum() >= 3
    assert np.abs(sel["epsilon"].to_numpy()[f] - star_obj[f]).max() <= 1e-4
    assert (sel["pixels"] == H * W // 2).all() and (whole["pixels"] == H * W).all()
    eps = sel["epsilon"].to_numpy()[f]
    assert np.allclose(sel["l2_nominal"].to_numpy()[f], eps * math.sqrt(H * W // 2 * C))
    assert np.allclose(sel["l2_norm"].to_numpy()[f], eps * math.sqrt(H * W // 2 * C), rtol=1e-5)

    table = A.per_class_fragility(df, ["a", "b"])
    assert list(table.index) == ["a", "b"]
    assert {
        "median_eps_object",
        "median_eps_background",
        "object_background_ratio",
        "share_not_flipped_whole",
    } <= set(table.columns)
    ok = df[~df["already_wrong"]]
    eps = ok.pivot(index="image", columns="region", values="epsilon").fillna(np.inf)
    lab = ok[ok["region"] == "whole"].set_index("image")["label"]
    for k, name in enumerate(["a", "b"]):  # the median of the paired per-image ratios
        e = eps[lab == k]
        r = (e["object"] / e["background"]).dropna()
        assert table.loc[name, "object_background_ratio"] == np.median(r)
        assert table.loc[name, "n_object_background"] == len(r)


@pytest.mark.parametrize("direction", ["fgsm", "pgd"])
def test_the_returned_adversarial_is_the_attack_at_the_returned_epsilon(linear_case, direction):
    model, x, y, star = linear_case
    kw = {"pgd_kw": {"steps": 5}, "tol": 1e-3} if direction == "pgd" else {"tol": 1e-4}
    df, x_adv = A.minimal_epsilon(
        model, x[:8], y[:8], max_eps=0.1, grid=4, direction=direction, return_adversarial=True, **kw
    )
    f = df["flipped"].to_numpy() & ~df["already_wrong"].to_numpy()
    assert f.sum() >= 2
    eps = df["epsilon"].to_numpy()
    assert (_linf(x_adv[f], x[:8][f]) <= torch.tensor(eps[f], dtype=x.dtype) + 1e-6).all()
    with torch.no_grad():
        assert (model(x_adv[f]).argmax(1) != y[:8][f]).all()  # flipped at the returned epsilon
    assert torch.equal(x_adv[~f], x[:8][~f])  # no flip (or already wrong): clean
    if direction == "fgsm":
        expected = (
            x[:8]
            + torch.tensor(eps, dtype=x.dtype).view(-1, 1, 1, 1)
            * A.fgsm_direction(model, x[:8], y[:8])
        ).clamp(0, 1)
        assert torch.allclose(x_adv[f], expected[f])


def test_fragility_by_region_reports_the_l2_norm_of_pgd_changes_too(linear_case):
    model, x, y, _ = linear_case
    obj = _half_mask(8)
    df = A.fragility_by_region(
        model,
        x[:8],
        y[:8],
        {"object": obj},
        max_eps=0.2,
        grid=4,
        tol=1e-3,
        direction="pgd",
        pgd_kw={"steps": 5},
    )
    f = df["flipped"].to_numpy() & ~df["already_wrong"].to_numpy()
    assert f.sum() >= 4
    l2, eps, pixels = (df[c].to_numpy()[f] for c in ("l2_norm", "epsilon", "pixels"))
    assert (l2 > 0).all() and (l2 <= eps * np.sqrt(pixels * C) + 1e-6).all()


def test_per_class_fragility_reads_a_plain_minimal_epsilon_frame(linear_case):
    model, x, y, star = linear_case
    df = A.minimal_epsilon(model, x, y, max_eps=float(np.median(star[2:])), tol=1e-4)
    table = A.per_class_fragility(df, ["a", "b"])
    ok = ~df["already_wrong"].to_numpy()
    for k in (0, 1):
        eps = df["epsilon"].to_numpy()[ok & (y.numpy() == k)]
        assert table.loc[["a", "b"][k], "median_eps_whole"] == np.median(
            np.nan_to_num(eps, nan=np.inf)
        )
    assert not any(c.startswith("median_l2") for c in table.columns)


# ------------------------------------------------------- defects (each failed before its fix)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_images_with_nan_or_inf_are_refused(cnn, batch, bad):
    x, y = batch
    x = x.clone()
    x[2, 1, 3, 3] = bad
    for call in (
        lambda: A.fgsm(cnn, x, y, eps=0.01),
        lambda: A.pgd(cnn, x, y, eps=0.01),
        lambda: A.minimal_epsilon(cnn, x, y),
        lambda: A.epsilon_sweep(cnn, x, y, [0.01]),
        lambda: A.minimum_norm_epsilon(cnn, x, y, steps=2),
    ):
        with pytest.raises(ValueError, match="NaN or inf"):
            call()


class _Flat(nn.Module):
    """Constant logits: zero gradient, so PGD never moves from its random start."""

    def forward(self, x):
        return torch.zeros(len(x), 2) + 0 * x.flatten(1)[:, :1]


def test_l2_pgd_random_start_is_uniform_in_the_ball():
    """Uniform in a d-ball: radius/eps = U^(1/d) (median 0.5^(1/d)), direction isotropic."""
    n, d = 4000, C * H * W
    x = torch.full((n, C, H, W), 0.5)
    eps = 0.3  # 0.5 +- 0.3 never clips
    x_adv = A.pgd(_Flat(), x, torch.zeros(n, dtype=torch.long), eps=eps, norm="l2", steps=1, seed=0)
    delta = (x_adv - x).flatten(1).double()
    r = delta.norm(dim=1) / eps
    assert r.max() <= 1 + 1e-6
    # the radius distribution of a uniform point: P(r <= s) = s^d (Kolmogorov-Smirnov against it)
    from scipy import stats

    assert stats.kstest(r.numpy(), lambda s: np.clip(s, 0, 1) ** d).pvalue > 1e-3
    u = delta / delta.norm(dim=1, keepdim=True)
    assert u.mean(0).norm() < 4 / math.sqrt(n)  # no preferred direction
    # confined to a mask: uniform in the ball of the free coordinates, zero outside
    mask = _half_mask(n)
    x_adv = A.pgd(
        _Flat(), x, torch.zeros(n, dtype=torch.long), eps=eps, norm="l2", steps=1, seed=0, mask=mask
    )
    delta = (x_adv - x).double()
    assert (delta[:, :, :, W // 2 :] == 0).all()
    r = delta.flatten(1).norm(dim=1) / eps
    assert stats.kstest(r.numpy(), lambda s: np.clip(s, 0, 1) ** (d // 2)).pvalue > 1e-3


# ------------------------------------------------------------------ the strong search (foolbox FMN)
def _foolbox_fmn(model, x, y, steps=100):
    import foolbox as fb

    adv = fb.attacks.LInfFMNAttack(steps=steps).run(
        fb.PyTorchModel(model.eval(), bounds=(0, 1)), x, fb.criteria.Misclassification(y)
    )
    return _linf(adv, x).double().numpy()


def test_minimum_norm_epsilon_on_a_linear_model_matches_the_closed_form(linear_case):
    """On a linear model the minimal L-inf epsilon is margin / ||w_y - w_other||_1 (images away
    from the [0, 1] border): the search lands within a few % of it, never below, and every
    reported image is misclassified by the fp32 model at the reported epsilon."""
    model, x, y, star = linear_case
    df, x_adv = A.minimum_norm_epsilon(model, x, y, steps=30, return_adversarial=True)
    eps = df["epsilon"].to_numpy()
    assert df["already_wrong"][:2].all() and (eps[:2] == 0).all()
    f = df["flipped"].to_numpy() & ~df["already_wrong"].to_numpy()
    assert f[2:].all()
    ratio = eps[f] / star[f]
    assert ratio.min() >= 1 - 1e-4 and np.median(ratio) <= 1.05, ratio
    assert np.allclose(_linf(x_adv, x).double().numpy()[f], eps[f], rtol=1e-6)
    with torch.no_grad():
        assert (model(x_adv[f]).argmax(1) != y[f]).all()
    assert (df["n_backward"][f] >= 30).all()


def test_minimum_norm_epsilon_is_close_to_foolbox_fmn_100_on_a_cnn():
    """The reference: foolbox's LInfFMNAttack with 100 steps (fp32) on a small random CNN."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 4),
    ).eval()
    x = torch.rand(16, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = model(x).argmax(1)
    ref = _foolbox_fmn(model, x, y)
    # foolbox's own step settings (the defaults are tuned for the fine-tuned scene model)
    df = A.minimum_norm_epsilon(model, x, y, steps=30, gamma=0.05, max_stepsize=1.0)
    r = df["epsilon"].to_numpy() / ref
    assert df["flipped"].all() and np.mean(r <= 1.1) >= 0.9, r
    # with the same 100 steps, the fp32 check and the line search can only shrink FMN's answer
    same = A.minimum_norm_epsilon(model, x, y, steps=100, gamma=0.05, max_stepsize=1.0)
    assert (same["epsilon"].to_numpy() <= ref * (1 + 1e-5)).all()


def test_minimum_norm_epsilon_confined_to_a_mask_changes_only_the_mask(linear_case):
    model, x, y, star = linear_case
    obj = _half_mask(len(x))
    df, x_adv = A.minimum_norm_epsilon(model, x, y, steps=30, mask=obj, return_adversarial=True)
    assert torch.equal(x_adv[:, :, :, W // 2 :], x[:, :, :, W // 2 :])
    w = model.fc.weight.detach().double()
    m = obj[0, None].expand(C, H, W).reshape(-1).double()
    logits = model(x).detach().double()
    m0 = (logits.gather(1, y[:, None])[:, 0] - logits.gather(1, (1 - y)[:, None])[:, 0]).numpy()
    star_obj = m0 / ((w[0] - w[1]).abs() * m).sum().item()
    f = df["flipped"].to_numpy() & ~df["already_wrong"].to_numpy()
    fits = star_obj < 0.2  # away from the [0, 1] border (inner images 0.3-0.7)
    assert f[2:][fits[2:]].all() and fits[2:].sum() >= 3
    r = df["epsilon"].to_numpy()[f & fits] / star_obj[f & fits]
    assert r.min() >= 1 - 1e-4 and np.median(r) <= 1.05


def test_minimum_norm_epsilon_respects_max_eps(linear_case):
    model, x, y, star = linear_case
    cap = float(np.median(star[2:]))
    df = A.minimum_norm_epsilon(model, x, y, steps=30, max_eps=cap)
    eps = df["epsilon"].to_numpy()
    assert (eps[df["flipped"].to_numpy()] <= cap).all()
    assert not df["flipped"].to_numpy()[2:][star[2:] > cap].any()


# ------------------------------------------------------------------ equal-area regions
class _EqualWeights(nn.Module):
    """Every pixel matters equally: logit_0 - logit_1 = 2 (b + u - 0.1 u^2 / b), u = sum(x - 0.5).

    (The small curvature keeps a minimum-norm attack off the exact boundary of a linear model,
    where logits tie and it would stall; it does not change which pixels matter.)"""

    def __init__(self, b=0.0, only=None):
        super().__init__()
        self.b, self.only = b, only  # only: a [H, W] mask of the pixels the model reads

    def forward(self, x):
        z = x - 0.5
        if self.only is not None:
            z = z * self.only
        u = z.flatten(1).sum(1)
        s = self.b + u - 0.1 * u * u / self.b
        return torch.stack([s, -s], 1)


def _objects(n, h, w, seed=0):
    """One random rectangle per image covering 10-50 % of it."""
    rng = np.random.default_rng(seed)
    out = torch.zeros(n, h, w, dtype=torch.bool)
    for i in range(n):
        area = rng.uniform(0.1, 0.5) * h * w
        bh = int(np.clip(round(np.sqrt(area) * rng.uniform(0.8, 1.25)), 1, h))
        bw = int(np.clip(round(area / bh), 1, w))
        r0, c0 = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
        out[i, r0 : r0 + bh, c0 : c0 + bw] = True
    return out


def test_equal_area_subsamples_the_larger_region_reproducibly():
    obj = _objects(12, 10, 10)
    o, b = A.equal_area(obj, ~obj, seed=1, image_ids=np.arange(100, 112))
    assert torch.equal(o.sum((1, 2)), b.sum((1, 2)))
    assert torch.equal(o.sum((1, 2)), torch.minimum(obj.sum((1, 2)), (~obj).sum((1, 2))))
    assert not (o & ~obj).any() and not (b & obj).any()  # inside their regions
    o2, b2 = A.equal_area(obj[3:5], ~obj[3:5], seed=1, image_ids=[103, 104])
    assert torch.equal(o2, o[3:5]) and torch.equal(b2, b[3:5])  # per-image draw


def test_a_model_reading_every_pixel_equally_prefers_no_region():
    """Equal weights on every pixel, objects of 10-50 % of the image: with regions of equal
    area the object needs the same epsilon as the background (ratio 1 per image; the class's
    interval contains 1). Without equal areas the larger background would look more fragile."""
    n, h, w = 40, 12, 12
    x = 0.4 + 0.2 * torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(2))
    model = _EqualWeights(b=4.0)
    y = torch.zeros(n, dtype=torch.long)
    obj = _objects(n, h, w)
    o, b = A.equal_area(obj, ~obj, seed=0)
    df = A.fragility_by_region(
        model,
        x,
        y,
        {"whole": None, "object": o, "background": b},
        direction="fmn",
        steps=30,
    )
    assert not df["already_wrong"].any()
    e = df.pivot(index="image", columns="region", values="epsilon")
    r = (e["object"] / e["background"]).to_numpy()
    assert np.all(np.abs(r - 1) < 0.05), r
    table = A.per_class_fragility(df, ["a", "b"])
    assert (
        table.loc["a", "object_background_ratio_ci_low"]
        <= 1
        <= table.loc["a", "object_background_ratio_ci_high"]
    )
    assert table.loc["a", "n_object_background"] == n
    # the unfair comparison (whole regions) would call the object the robust one
    raw = A.fragility_by_region(
        model,
        x,
        y,
        {"whole": None, "object": obj, "background": ~obj},
        direction="fmn",
        steps=30,
    )
    assert A.per_class_fragility(raw, ["a", "b"]).loc["a", "object_background_ratio_ci_low"] > 1


def test_a_model_reading_only_the_object_prefers_the_object():
    n, h, w = 24, 12, 12
    x = 0.4 + 0.2 * torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(4))
    obj = torch.zeros(n, h, w, dtype=torch.bool)
    obj[:, 2:8, 3:9] = True  # 25 % of the image
    model = _EqualWeights(b=1.0, only=obj[0].float())
    y = torch.zeros(n, dtype=torch.long)
    o, b = A.equal_area(obj, ~obj, seed=0)
    df = A.fragility_by_region(
        model,
        x,
        y,
        {"whole": None, "object": o, "background": b},
        direction="fmn",
        steps=30,
    )
    table = A.per_class_fragility(df, ["a", "b"])
    assert table.loc["a", "object_background_ratio_ci_high"] < 1
    assert table.loc["a", "median_eps_background"] == np.inf


def test_per_class_fragility_intervals_and_the_budget_share():
    rng = np.random.default_rng(0)
    eps = rng.uniform(0, 0.01, 60)
    df = pd.DataFrame(
        {
            "image": np.arange(60),
            "region": "whole",
            "label": np.repeat([0, 1], 30),
            "epsilon": eps,
            "flipped": True,
            "already_wrong": False,
        }
    )
    df.loc[0, "already_wrong"] = True
    table = A.per_class_fragility(df, ["a", "b"], budget=0.004)
    sel = eps[1:30]
    assert table.loc["a", "median_eps_whole"] == np.median(sel) and table.loc["a", "n_whole"] == 29
    assert (
        table.loc["a", "median_eps_whole_ci_low"]
        <= np.median(sel)
        <= table.loc["a", "median_eps_whole_ci_high"]
    )
    from helpers.stats import wilson

    k = int((sel > 0.004).sum())
    assert table.loc["a", "share_withstanding_whole"] == k / 29
    assert np.allclose(
        table.loc[
            "a", ["share_withstanding_whole_ci_low", "share_withstanding_whole_ci_high"]
        ].to_numpy(float),
        wilson(k, 29),
    )


def test_robust_accuracy_from_epsilons_counts_images_beyond_each_epsilon():
    df = pd.DataFrame(
        {
            "epsilon": [0.0, 0.001, 0.002, 0.003, np.nan],
            "flipped": [True] * 4 + [False],
            "already_wrong": [True] + [False] * 4,
            "label": 0,
        }
    )
    out = A.robust_accuracy_from_epsilons(df, [0, 0.0015, 0.0025, 0.01], max_eps=0.005)
    assert out["accuracy"].tolist()[:3] == [4 / 5, 3 / 5, 2 / 5] and np.isnan(
        out["accuracy"].iloc[3]
    )
    assert (out["low"][:3] <= out["accuracy"][:3]).all() and (
        out["high"][:3] >= out["accuracy"][:3]
    ).all()


def test_attacking_leaves_the_model_computing_exactly_as_before():
    """The minimum-norm search runs the model in channels_last; afterwards the model must give
    bit-identical outputs and input gradients (a round trip through contiguous_format changes
    some weights' strides and with them the last bits of a convolution)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    ).eval()
    # weights as a checkpoint may hold them: in another memory layout than a fresh module's
    model[0].weight.data = model[0].weight.data.contiguous(memory_format=torch.channels_last)
    x = torch.rand(4, 3, 16, 16)
    before = [p.stride() for p in model.parameters()]
    out0 = model(x)
    A.minimum_norm_epsilon(model, x, out0.argmax(1), steps=2)
    assert [p.stride() for p in model.parameters()] == before
    assert torch.equal(model(x), out0)


# ------------------------------------------------------------------ the registries
def test_epsilon_sweep_refuses_an_unknown_attack(cnn, batch):
    x, y = batch
    with pytest.raises(ValueError, match="unknown attack 'deepfool'.*fgsm, pgd"):
        A.epsilon_sweep(cnn, x, y, [0.01], attack="deepfool")


def test_epsilon_sweep_runs_the_registered_attack_not_pgd(cnn, batch, monkeypatch):
    """A new entry of ATTACKS is what the sweep runs (not PGD in its place)."""
    x, y = batch
    calls = []

    def blank(model, x, y, *, eps, **kw):  # an "attack" that greys the image out
        calls.append((eps, kw))
        return torch.full_like(x, 0.5)

    monkeypatch.setitem(A.ATTACKS, "blank", blank)
    df = A.epsilon_sweep(cnn, x, y, [0.01, 0.02], attack="blank", batch_size=4, flavour=1)
    with torch.no_grad():
        grey = int((cnn(torch.full_like(x, 0.5)).argmax(1) == y).sum())
    assert df["n_correct"].tolist() == [grey, grey]
    assert [e for e, _ in calls] == [0.01, 0.01, 0.02, 0.02]  # per epsilon, per chunk of 4
    assert all(kw == {"flavour": 1} for _, kw in calls)


def test_the_pgd_sweep_matches_pgd_per_epsilon(cnn, batch):
    x, y = batch
    df = A.epsilon_sweep(cnn, x, y, [0.02, 0.1], attack="pgd", steps=3, seed=0)
    for e, n_ok in zip(df["epsilon"], df["n_correct"]):
        x_adv = A.pgd(cnn, x, y, eps=e, steps=3, seed=0)
        with torch.no_grad():
            assert n_ok == int((cnn(x_adv).argmax(1) == y).sum())


@pytest.mark.parametrize("name", sorted(A.MINIMIZERS))
def test_every_minimizer_runs_and_returns_the_result_table(cnn, batch, name):
    """Each registered minimisation attack, on a tiny CNN: the shared columns, epsilon 0 for
    images already wrong, and a returned image within epsilon that the model gets wrong."""
    x, y = batch
    with torch.no_grad():
        pred = cnn(x).argmax(1)
    y = pred.clone()
    y[0] = (pred[0] + 1) % 3  # one image already wrong
    kw = {"fgsm": {}, "pgd": {"pgd_kw": {"steps": 3}, "max_eps": 0.5}, "fmn": {"steps": 10}}[name]
    df, x_adv = A.minimizer(name)(cnn, x, y, return_adversarial=True, batch_size=4, **kw)
    assert tuple(df.columns) == A.RESULT_COLUMNS
    assert df["already_wrong"].tolist() == [True] + [False] * 5
    assert df.loc[0, "epsilon"] == 0 and torch.equal(x_adv[0], x[0])
    assert df["flipped"].sum() >= 4
    flipped = df["flipped"].to_numpy() & ~df["already_wrong"].to_numpy()
    eps = torch.as_tensor(df["epsilon"].to_numpy()[flipped], dtype=x.dtype)
    assert (_linf(x_adv[flipped], x[flipped]) <= eps + 1e-6).all()
    with torch.no_grad():
        wrong = cnn(x_adv[flipped]).argmax(1) != y[flipped]
    assert wrong.all()
    assert (x_adv >= 0).all() and (x_adv <= 1).all()


def test_an_unknown_minimizer_is_refused(cnn, batch):
    x, y = batch
    with pytest.raises(ValueError, match="unknown minimisation attack 'deepfool'.*fmn"):
        A.minimizer("deepfool")
    with pytest.raises(ValueError, match="deepfool"):
        A.fragility_by_region(cnn, x, y, {}, direction="deepfool")


def test_fragility_by_region_dispatches_through_the_registry(cnn, batch, monkeypatch):
    """A minimum-norm attack is one function: registered, fragility_by_region runs it."""
    x, y = batch
    seen = []

    def constant(model, x, y, *, mask=None, batch_size=64, return_adversarial=False, **kw):
        seen.append(int(mask.sum()))
        with torch.no_grad():
            clean = model(x)
        n = len(x)
        df = A.result_frame(
            epsilon=np.full(n, 0.5),
            labels=y,
            clean_logits=clean,
            flip_class=np.zeros(n, dtype=np.int64),
            confidence_at_flip=np.full(n, 0.9),
            n_forward=np.ones(n, dtype=np.int64),
            n_backward=np.zeros(n, dtype=np.int64),
            attrs={"method": "constant", **kw},
        )
        return (df, x.clone()) if return_adversarial else df

    monkeypatch.setitem(A.MINIMIZERS, "constant", constant)
    out = A.fragility_by_region(cnn, x, y, {"left": _half_mask()}, direction="constant", probes=3)
    assert seen == [6 * H * W, 6 * H * W // 2]
    assert (out["epsilon"] == 0.5).all() and out.attrs == {"method": "constant", "probes": 3}
    assert out.groupby("region")["pixels"].first().to_dict() == {"left": H * W // 2, "whole": H * W}


def test_synthesis_fool_is_the_targeted_iterative_attack(cnn, batch):
    from helpers import synthesis

    x, _ = batch
    a = synthesis.fool(cnn, x, 2, max_steps=30, step_size=0.01)
    b = A.iterative_targeted(cnn, x, 2, max_steps=30, step_size=0.01)
    assert isinstance(a, synthesis.FoolingResult) and synthesis.FoolingResult is A.FoolingResult
    for field in vars(a):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert a.reached.any()
