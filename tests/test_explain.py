"""Tests for helpers.explain: shapes on every arch, references (captum's Grad-CAM, hand Grad-CAM /
Grad-CAM++ / Score-CAM / saliency / guided backprop), IG completeness, determinism, hooks and
modes, constant inputs, the registry and the compared settings."""

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import explain as E
from helpers import models

SIZE = 48
CAM_SUBSET = ["saliency", "gradcam", "gradcam_pp", "guided_gradcam"]


def cheap(method: str) -> dict:
    """The registry's cheap hyperparameters (the defaults run in benchmarks/explain.py)."""
    return dict(E.METHODS[method].cheap)


class TinyCNN(nn.Module):
    """conv -> relu -> conv -> GAP -> linear; ``shared_relu`` reuses one ReLU module twice (as
    torchvision's ResNet blocks do) by putting it after the second conv as well."""

    def __init__(self, shared_relu: bool = False, classes: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 5, 3, stride=2, padding=1)
        self.fc = nn.Linear(5, classes)
        self.shared_relu = shared_relu

    def features(self, x):
        a = self.conv2(self.relu(self.conv1(x)))
        return self.relu(a) if self.shared_relu else a

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


def hook_count(model: nn.Module) -> int:
    return sum(len(getattr(m, name, {}) or {}) for m in model.modules() for name in E._HOOK_DICTS)


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    return models.build_model("efficientnet_lite0", 6, weights=None).eval()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, SIZE, SIZE, generator=g)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return TinyCNN()


# --------------------------------------------------------------------------- shapes, every arch
@pytest.mark.parametrize("method", E.available_methods())
def test_every_method_on_lite0(lite, images, method):
    x0 = images.clone()
    e = E.attribute(lite, images, torch.tensor([1, 4]), method, **cheap(method))
    assert isinstance(e, E.Explanation) and e.method == method
    assert e.map.shape == (2, SIZE, SIZE) and e.map.dtype == torch.float32
    assert torch.isfinite(e.map).all() and not e.map.requires_grad
    assert e.map.abs().sum() > 0, "an all-zero map on a random model and image"
    if e.raw is not None:
        assert e.raw.shape == (2, 3, SIZE, SIZE) and torch.isfinite(e.raw).all()
    assert torch.equal(images, x0), "the input was modified"
    assert hook_count(lite) == 0
    if method == "saliency":
        assert torch.equal(E.explain(lite, images, torch.tensor([1, 4]), method), e.map)


@pytest.mark.parametrize("arch", ["resnet50", "resnet18", "mobilenet_v2"])
def test_cam_subset_on_other_archs(arch, images):
    torch.manual_seed(0)
    model = models.build_model(arch, 6, weights=None)
    for method in CAM_SUBSET:
        m = E.explain(model, images, 2, method)
        assert m.shape == (2, SIZE, SIZE) and torch.isfinite(m).all(), (arch, method)
        assert hook_count(model) == 0, (arch, method)


def test_gradcam_on_any_named_conv_layer(images):
    torch.manual_seed(0)
    model = models.build_model("resnet18", 6, weights=None)
    convs = models.conv_layer_names(model)
    for name in (convs[0], convs[len(convs) // 2], convs[-1]):
        for method in ("gradcam", "gradcam_pp"):
            e = E.attribute(model, images[:1], 0, method, layer=name)
            assert e.map.shape == (1, SIZE, SIZE) and torch.isfinite(e.map).all()
            assert e.extras["layer"] == name


# --------------------------------------------------------------------------- references
def hand_cam(model: TinyCNN, x, t, plus: bool):
    a = model.conv2(model.relu(model.conv1(x)))
    s = model.fc(a.mean(dim=(2, 3)))
    (g,) = torch.autograd.grad(s[torch.arange(len(t)), t].sum(), a)
    a = a.detach()
    if plus:  # Grad-CAM++ closed form (exponential output), loop-free but written out
        num = g**2
        den = 2 * g**2 + a.sum(dim=(2, 3), keepdim=True) * g**3
        alpha = torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)), 0.0)
        w = (alpha * g.clamp(min=0)).sum(dim=(2, 3))
    else:
        w = g.mean(dim=(2, 3))
    cam = (w[:, :, None, None] * a).sum(dim=1, keepdim=True).clamp(min=0)
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


@pytest.mark.parametrize("method", ["gradcam", "gradcam_pp"])
def test_cam_equals_hand_computation(tiny, method):
    x = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0, 1, 2])
    ours = E.explain(tiny, x, t, method, layer="conv2")
    ref = hand_cam(tiny, x, t, plus=method == "gradcam_pp")
    assert ref.abs().sum() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_gradcam_pp_differs_from_gradcam_where_it_should(tiny):
    # a hand-checked special case: one channel, constant gradient c and activation sum s gives
    # alpha = 1 / (2 + s c) per position; the formula above is exercised, not a copy of gradcam
    x = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(4))
    a = E.explain(tiny, x, 0, "gradcam", layer="conv2")
    b = E.explain(tiny, x, 0, "gradcam_pp", layer="conv2")
    assert not torch.allclose(a / (a.amax() + 1e-12), b / (b.amax() + 1e-12), atol=1e-3)


def test_gradcam_equals_captum_layer_gradcam(lite, images):
    from captum.attr import LayerGradCam

    t = torch.tensor([1, 4])
    layer = models.get_layer(lite, models.cam_layer_name(lite))
    for relu in (True, False):
        ref = LayerGradCam(lite, layer).attribute(images, target=t, relu_attributions=relu)
        ref_map = F.interpolate(ref, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        e = E.attribute(lite, images, t, "gradcam", relu=relu)
        assert ref.abs().sum() > 0
        # ours runs the BatchNorm-folded copy (helpers.folding): float rounding of ~1e-7
        torch.testing.assert_close(e.extras["cam"], ref[:, 0].detach(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(e.map, ref_map[:, 0].detach(), rtol=1e-4, atol=1e-6)
    assert hook_count(lite) == 0


def hand_scorecam(model: TinyCNN, x, t):
    """Score-CAM written out per image and channel (Wang et al. 2020): w_k = p_t(x * H_k) -
    p_t(black), H_k = channel k upsampled bilinearly and min-max scaled (constant: 0)."""
    with torch.no_grad():
        a = model.conv2(model.relu(model.conv1(x)))
        p_black = torch.softmax(model(torch.zeros(1, *x.shape[1:])), dim=1)[0]
        w = torch.zeros(a.shape[:2])
        for i in range(len(x)):
            for k in range(a.shape[1]):
                h = F.interpolate(
                    a[i : i + 1, k : k + 1], x.shape[-2:], mode="bilinear", align_corners=False
                )
                lo, hi = h.min(), h.max()
                h = (h - lo) / (hi - lo) if hi > lo else torch.zeros_like(h)
                p = torch.softmax(model(x[i : i + 1] * h), dim=1)[0]
                w[i, k] = p[t[i]] - p_black[t[i]]
        cam = (w[:, :, None, None] * a).sum(dim=1, keepdim=True).clamp(min=0)
        up = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return w, up[:, 0]


def test_scorecam_equals_hand_computation(tiny):
    with torch.no_grad():  # channel 3 of conv2 constant over the image: weight 0, no forward
        tiny.conv2.weight[3] = 0
        tiny.conv2.bias[3] = 0.7
    x = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(13))
    t = torch.tensor([0, 1, 2])
    e = E.attribute(tiny, x, t, "scorecam", layer="conv2", batch_size=4)
    w, ref = hand_scorecam(tiny, x, t)
    assert (w[:, 3] == 0).all() and (w.abs() > 1e-6).sum() == 12, w
    assert (w < 0).any() and (w > 0).any(), "the baseline subtraction gives weights of both signs"
    assert ref.abs().sum() > 0
    torch.testing.assert_close(e.extras["weights"], w, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(e.map, ref, rtol=1e-4, atol=1e-6)
    assert e.extras["layer"] == "conv2" and e.extras["cam"].shape == (3, 10, 10)


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("backward called")


class _NoGradientCNN(TinyCNN):
    def forward(self, x):
        return self.fc(_NoBackward.apply(self.features(x)).mean(dim=(2, 3)))


def test_scorecam_needs_no_gradient_and_is_deterministic():
    torch.manual_seed(0)
    model = _NoGradientCNN()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(14))
    with pytest.raises(RuntimeError, match="backward called"):
        E.explain(model, x, 1, "gradcam", layer="conv2")
    a = E.attribute(model, x, 1, "scorecam", layer="conv2", batch_size=1)
    b = E.attribute(model, x, 1, "scorecam", layer="conv2", batch_size=1)
    c = E.attribute(model, x, 1, "scorecam", layer="conv2", batch_size=64)
    assert torch.equal(a.map, b.map) and a.map.abs().sum() > 0
    torch.testing.assert_close(a.map, c.map, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(a.extras["weights"], c.extras["weights"], rtol=1e-4, atol=1e-7)
    signed = E.attribute(model, x, 1, "scorecam", layer="conv2", batch_size=1, relu=False)
    assert (signed.extras["cam"] < 0).any()
    assert torch.equal(signed.extras["cam"].clamp(min=0), a.extras["cam"])
    assert hook_count(model) == 0


def test_saliency_equals_autograd(tiny):
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([2, 0])
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(tiny(xg)[torch.arange(2), t].sum(), xg)
    e = E.attribute(tiny, x, t, "saliency")
    torch.testing.assert_close(e.map, g.abs().amax(dim=1))
    torch.testing.assert_close(e.raw, g)


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0)


def test_guided_backprop_equals_hand_rule_with_a_reused_relu():
    torch.manual_seed(0)
    model = TinyCNN(shared_relu=True)  # the same ReLU module runs twice per forward
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    xg = x.clone().requires_grad_(True)
    a = _GuidedReLU.apply(model.conv2(_GuidedReLU.apply(model.conv1(xg))))
    out = model.fc(a.mean(dim=(2, 3)))
    (g,) = torch.autograd.grad(out[:, 1].sum(), xg)
    e = E.attribute(model, x, 1, "guided_backprop")
    torch.testing.assert_close(e.raw, g)
    torch.testing.assert_close(e.map, g.abs().amax(dim=1))
    assert hook_count(model) == 0


# --------------------------------------------------------------------------- IG completeness
@pytest.mark.parametrize("baseline", ["black", "white", "blurred", "uniform"])
def test_integrated_gradients_completeness(baseline):
    torch.manual_seed(0)
    model = TinyCNN().double()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    t = torch.tensor([0, 2])
    e = E.attribute(
        model, x, t, "integrated_gradients", baseline=baseline, n_steps=300, batch_size=64
    )
    delta = e.extras["delta"]
    assert delta.shape == (2,)
    with torch.no_grad():
        with E._seeded(0, x.device):  # the "uniform" baseline is seeded: rebuild it
            b = E.make_baseline(x, baseline)
        gap = model(x)[torch.arange(2), t] - model(b)[torch.arange(2), t]
    assert (gap.abs() > 1e-4).all(), gap
    # delta is what it says: sum(attr) - (F(x) - F(baseline))
    torch.testing.assert_close(delta, e.raw.double().sum(dim=(1, 2, 3)) - gap, atol=1e-4, rtol=0)
    assert (delta.abs() <= 0.02 * gap.abs()).all(), (delta, gap)


def test_integrated_gradients_completeness_real_arch(lite, images):
    x = images[:1, :, :32, :32]
    e = E.attribute(lite, x, 4, "integrated_gradients", n_steps=32, baseline="blurred")
    with torch.no_grad():
        gap = (lite(x)[0, 4] - lite(E.make_baseline(x, "blurred"))[0, 4]).abs()
    assert (e.extras["delta"].abs() <= 0.1 * gap + 1e-3).all(), (e.extras["delta"], gap)


# --------------------------------------------------------------------------- determinism
def test_lime_seeded_runs_are_identical_and_seeds_differ(tiny):
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(8))
    a = E.attribute(tiny, x, 1, "lime", num_samples=40, seed=3)
    b = E.attribute(tiny, x, 1, "lime", num_samples=40, seed=3)
    c = E.attribute(tiny, x, 1, "lime", num_samples=40, seed=4)
    assert torch.equal(a.map, b.map) and a.extras["weights"] == b.extras["weights"]
    assert torch.equal(a.extras["segments"], b.extras["segments"])
    assert not torch.equal(a.map, c.map)
    # the map paints each superpixel's weight on its pixels
    seg, w = a.extras["segments"][0], a.extras["weights"][0]
    assert set(w) == set(seg.unique().tolist())
    for s, v in w.items():
        assert torch.allclose(a.map[0][seg == s], torch.tensor(v, dtype=torch.float32))
    assert a.extras["score"].shape == (2,) and a.extras["intercept"].shape == (2,)


@pytest.mark.parametrize("segmentation", ["slic", "felzenszwalb"])
def test_lime_segmentations(tiny, segmentation):
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    e = E.attribute(tiny, x, 0, "lime", num_samples=20, segmentation=segmentation)
    seg = e.extras["segments"][0]
    assert seg.min() == 0 and seg.max() + 1 == len(seg.unique()) >= 2


@pytest.mark.parametrize("nt", ["smoothgrad", "smoothgrad_sq", "vargrad", "gradient_shap"])
def test_noise_methods_repeat_with_a_seed(tiny, nt):
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(10))
    state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    a = E.explain(tiny, x, 1, nt, n_samples=6, seed=1)
    b = E.explain(tiny, x, 1, nt, n_samples=6, seed=1)
    c = E.explain(tiny, x, 1, nt, n_samples=6, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state), "the caller's torch RNG moved"
    assert np.array_equal(np.random.get_state()[1], np_state), "the caller's numpy RNG moved"


@pytest.mark.parametrize("base", sorted(E.grad_methods))
def test_smoothgrad_with_zero_noise_is_its_base(tiny, base):
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(11))
    kw = {"n_steps": 10} if base == "integrated_gradients" else {}
    sg = E.attribute(tiny, x, 1, "smoothgrad", base=base, noise_level=0.0, n_samples=5, **kw)
    ref = E.attribute(tiny, x, 1, base, **kw)
    torch.testing.assert_close(sg.map, ref.map, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(sg.raw, ref.raw, rtol=1e-5, atol=1e-7)
    vg = E.explain(tiny, x, 1, "vargrad", base=base, noise_level=0.0, n_samples=5, **kw)
    assert vg.abs().max() < 1e-10


def test_batch_size_does_not_change_deterministic_methods(tiny):
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(12))
    for method, kw in [
        ("integrated_gradients", {"n_steps": 12}),
        ("occlusion", {"window": 4}),
        ("gradcam", {"layer": "conv2"}),
        ("saliency", {}),
    ]:
        a = E.explain(tiny, x, 1, method, batch_size=2, **kw)
        b = E.explain(tiny, x, 1, method, batch_size=64, **kw)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=method)


# --------------------------------------------------------------------------- hooks and modes
@pytest.mark.parametrize("method", ["gradcam", "guided_backprop", "gradcam_pp"])
def test_hooks_released_and_no_slowdown(method):
    torch.manual_seed(0)
    model, fresh = TinyCNN(shared_relu=True), TinyCNN(shared_relu=True)
    x = torch.rand(1, 3, 16, 16)
    kw = {} if method == "guided_backprop" else {"layer": "conv2"}

    def timed(m):
        start = time.perf_counter()
        E.explain(m, x, 0, method, **kw)
        return time.perf_counter() - start

    first = [timed(model) for _ in range(20)]
    for _ in range(180):
        E.explain(model, x, 0, method, **kw)
    assert hook_count(model) == 0
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks
        assert not m._backward_pre_hooks
    # A growth check, not a timing assertion: hooks piling up would make each call on the used
    # model slower. The last 20 calls alternate with calls on a fresh model and the fastest of
    # each are compared, so the other jobs on a busy machine slow both sides alike.
    last, ref = [], []
    for _ in range(20):
        last.append(timed(model))
        ref.append(timed(fresh))
    assert min(last) < 3 * min(ref) + 1e-3, (min(first), min(last), min(ref))


def test_modes_restored_per_module_also_on_error():
    torch.manual_seed(0)
    model = models.build_model("resnet18", 6, weights=None)
    x = torch.rand(2, 3, 32, 32)
    bn = model.net.bn1
    stats = bn.running_mean.clone()
    model.train()
    E.explain(model, x, 0, "gradcam")
    assert all(m.training for m in model.modules())
    assert torch.equal(bn.running_mean, stats), "ran in train mode (BN statistics moved)"
    model.eval()
    E.explain(model, x, 0, "guided_backprop")
    assert not any(m.training for m in model.modules())
    model.train()
    model.net.layer1.eval()  # a mixed state comes back as it was
    with pytest.raises(ValueError, match="ran 2 times|ran .* times"):
        E.explain(model, x, 0, "gradcam", layer="net.layer1.0.relu")  # reused relu: an error
    assert model.training and not model.net.layer1.training and model.net.layer2.training
    assert not any(m.training for m in model.net.layer1.modules())
    assert hook_count(model) == 0


class _Exploding(TinyCNN):
    def forward(self, x):
        self.features(x)  # hooks on conv2 and the relu have fired by now
        raise RuntimeError("boom")


@pytest.mark.parametrize(
    "method",
    [
        "gradcam",
        "gradcam_pp",
        "scorecam",
        "guided_backprop",
        "guided_gradcam",
        "smoothgrad",
        "occlusion",
        "lime",
    ],
)
def test_hooks_and_modes_restored_when_the_model_raises(method):
    model = _Exploding(shared_relu=True).train()
    kw = {"layer": "conv2"} if "cam" in method else {}
    with pytest.raises(RuntimeError, match="boom"):
        E.explain(model, torch.rand(1, 3, 16, 16), 0, method, **kw)
    assert hook_count(model) == 0 and all(m.training for m in model.modules())


# --------------------------------------------------------------------------- no NaN
@pytest.mark.parametrize("value", [0.0, 0.5])
def test_constant_images_give_finite_maps(lite, value):
    x = torch.full((1, 3, 32, 32), value)
    for method in E.available_methods():
        e = E.attribute(lite, x, 1, method, **cheap(method))
        assert torch.isfinite(e.map).all(), method
        for v in e.extras.values():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                assert torch.isfinite(v).all(), method


def test_zero_gradient_model_gives_finite_zero_maps(tiny):
    with torch.no_grad():
        for p in tiny.parameters():
            p.zero_()
    x = torch.rand(2, 3, 16, 16)
    for method in E.available_methods():
        kw = cheap(method)
        if "layer" in E.hyperparameters(method):
            kw["layer"] = "conv2"
        if method == "occlusion":
            kw = {"window": 8}
        m = E.explain(tiny, x, 0, method, **kw)
        # lime's ridge fit on constant probabilities leaves ~1e-31 of round-off
        assert torch.isfinite(m).all() and m.abs().max() <= (1e-12 if method == "lime" else 0), (
            method
        )


# --------------------------------------------------------------------------- errors
def test_clear_errors(tiny, lite, images):
    x = images[:1]
    with pytest.raises(ValueError, match="unknown method 'gradcamm'.*gradcam_pp.*lime"):
        E.explain(lite, x, 0, "gradcamm")
    with pytest.raises(ValueError, match="no layer 'net.layer9'"):
        E.explain(lite, x, 0, "gradcam", layer="net.layer9")
    with pytest.raises(ValueError, match="4-D feature map"):
        E.explain(lite, x, 0, "gradcam_pp", layer="net.classifier")
    with pytest.raises(ValueError, match="pass layer="):
        E.explain(tiny, x, 0, "gradcam")
    with pytest.raises(TypeError, match="unexpected hyperparameter.*n_step"):
        E.explain(lite, x, 0, "integrated_gradients", n_step=3)
    with pytest.raises(TypeError, match="unexpected hyperparameter"):
        E.explain(lite, x, 0, "smoothgrad", n_steps=3)  # saliency has no n_steps
    with pytest.raises(ValueError, match="unknown base"):
        E.explain(lite, x, 0, "smoothgrad", base="lime")
    with pytest.raises(ValueError, match="unknown baseline"):
        E.explain(lite, x, 0, "integrated_gradients", baseline="grey")
    with pytest.raises(ValueError, match="unknown segmentation"):
        E.explain(lite, x, 0, "lime", segmentation="watershed")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        E.explain(lite, x * 255, 0, "saliency")
    with pytest.raises(ValueError, match="target"):
        E.explain(lite, images, torch.tensor([0, 1, 2]), "saliency")
    with pytest.raises(ValueError, match="out of range"):
        E.explain(lite, x, 6, "saliency")
    with pytest.raises(ValueError, match="positive integer"):
        E.explain(lite, x, 0, "saliency", batch_size=0)
    assert hook_count(lite) == 0 and hook_count(tiny) == 0


def test_registry():
    assert list(E.METHODS) == E.available_methods()
    assert set(E.METHODS) == {
        "saliency",
        "integrated_gradients",
        "smoothgrad",
        "smoothgrad_sq",
        "vargrad",
        "gradient_shap",
        "occlusion",
        "gradcam",
        "gradcam_pp",
        "scorecam",
        "guided_backprop",
        "guided_gradcam",
        "lime",
        "kernel_shap",
    }
    assert all(name == m.name for name, m in E.METHODS.items())
    assert {m.name for m in E.METHODS.values() if not m.needs_grad} == {
        "occlusion",
        "lime",
        "scorecam",
        "kernel_shap",
    }
    for m in E.METHODS.values():
        assert set(m.cheap) <= set(E.hyperparameters(m.name)) | {"batch_size"}, m.name
        assert f"``{m.name}``" in E.__doc__, "the docstring table misses a method"
        assert m.function.__doc__, m.name
    assert E.grad_methods <= set(E.METHODS)
    assert E.hyperparameters("integrated_gradients")["n_steps"] == 50
    assert E.hyperparameters("smoothgrad")["noise_level"] == 0.15
    assert E.hyperparameters("scorecam") == {"layer": None, "relu": True}


def test_settings_are_the_compared_methods_with_their_hyperparameters():
    settings = E.settings(n_steps=7, n_samples=5, num_samples=11, window=9, seed=3, batch_size=4)
    expected = {
        "saliency": dict(method="saliency"),
        "IG (black)": dict(method="integrated_gradients", baseline="black", n_steps=7, seed=3),
        "IG (blurred)": dict(method="integrated_gradients", baseline="blurred", n_steps=7, seed=3),
        "SmoothGrad": dict(method="smoothgrad", n_samples=5, seed=3),
        "GradientSHAP": dict(method="gradient_shap", n_samples=5, seed=3),
        "occlusion": dict(method="occlusion", window=9),
        "Grad-CAM": dict(method="gradcam"),
        "Grad-CAM++": dict(method="gradcam_pp"),
        "Guided Backprop": dict(method="guided_backprop"),
        "Guided Grad-CAM": dict(method="guided_gradcam"),
        "LIME": dict(method="lime", num_samples=11, seed=3),
    }
    assert list(settings) == list(expected)
    assert settings == {label: {**kw, "batch_size": 4} for label, kw in expected.items()}
    assert E.settings()["occlusion"] == {"method": "occlusion", "batch_size": 32}
    with pytest.raises(TypeError, match="n_step"):
        E.settings(n_step=7)
