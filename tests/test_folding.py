"""BatchNorm folding (helpers.folding): the copy computes the original's function and gradients,
keeps its layer names, follows changes to the weights, and refuses what it cannot fold."""

import copy
import warnings

import pytest
import torch
from torch import nn

from helpers import folding, models


def _random_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (a fresh net has mean 0, var 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.rand(c, generator=g) - 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def lite0():
    return _random_norms(models.build_model("efficientnet_lite0", num_classes=6, weights=None))


@pytest.fixture(scope="module")
def images():
    return torch.rand(4, 3, 96, 96, generator=torch.Generator().manual_seed(1))


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "resnet18", "mobilenet_v2"])
def test_the_folded_copy_has_no_batchnorm_and_the_same_outputs(arch, images):
    model = _random_norms(models.build_model(arch, num_classes=6, weights=None))
    fast = folding.folded(model, images)
    assert fast is not model
    assert _count(model, nn.BatchNorm2d) > 0 and _count(fast, nn.BatchNorm2d) == 0
    with torch.no_grad():
        want, got = model(images), fast(images)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_input_gradients_agree(lite0, images, dtype):
    """What explanations and attacks use: d(target logit)/d(input). Exact in float64; in float32
    the copy's ~1e-6 rounding differences can move a ReLU6 input across its kink, which
    switches that unit's gradient: measured 0.3-1.5 % (relative L2) on random images."""
    model = copy.deepcopy(lite0).to(dtype)
    x0 = images.to(dtype)
    fast = folding.folded(model, x0)
    grads = []
    for m in (model, fast):
        x = x0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(m(x)[:, 2].sum(), x)
        grads.append(g)
    error = ((grads[0] - grads[1]).norm() / grads[0].norm()).item()
    assert error < (1e-9 if dtype == torch.float64 else 0.03)


def test_the_grad_cam_layer_keeps_its_name_and_feature_map(lite0, images):
    fast = folding.folded(lite0, images)
    name = models.cam_layer_name(lite0)
    maps = []
    for m in (lite0, fast):
        handle = models.get_layer(m, name).register_forward_hook(lambda _m, _i, o: maps.append(o))
        with torch.no_grad():
            m(images)
        handle.remove()
    assert maps[0].shape == maps[1].shape
    assert (maps[0] - maps[1]).abs().max().item() < 1e-4 * maps[0].abs().max().item()


def test_the_original_is_left_as_it_was(images):
    model = _random_norms(models.build_model("resnet18", num_classes=6, weights=None)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folding.folded(model, images)
    assert model.training and all(p.requires_grad for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_cached_until_a_weight_changes(lite0, images):
    fast = folding.folded(lite0, images)
    assert folding.folded(lite0, images) is fast
    assert folding.folded(fast, images) is fast  # folding the copy again changes nothing
    changed = _random_norms(models.build_model("efficientnet_lite0", num_classes=6, weights=None))
    first = folding.folded(changed, images)
    with torch.no_grad():
        changed.net.conv_stem.weight.mul_(1.5)  # in place, as an optimiser step does
    second = folding.folded(changed, images)
    assert second is not first
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(second(x), changed(x), atol=1e-4)
        assert not torch.allclose(first(x), changed(x), atol=1e-3)
    changed.load_state_dict(lite0.state_dict())  # loading new weights refolds too
    with torch.no_grad():
        assert torch.allclose(folding.folded(changed, x)(x), lite0(x), atol=1e-4)


class _NormFirst(nn.Module):
    """Registers a conv then a BatchNorm, but runs the BatchNorm first: folding would be wrong."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.conv(self.bn(x)).mean((2, 3)))


def test_a_model_it_cannot_fold_is_used_as_it_is(images):
    model = _random_norms(_NormFirst())
    with pytest.warns(UserWarning, match="unfolded model"):
        assert folding.folded(model, images) is model


def test_a_model_without_batchnorm_or_with_hooks_is_used_as_it_is(lite0, images):
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert folding.folded(plain, images) is plain
    handle = lite0.net.bn1.register_forward_hook(lambda *a: None)
    try:
        assert folding.folded(lite0, images) is lite0  # a caller watches the original's layers
    finally:
        handle.remove()
