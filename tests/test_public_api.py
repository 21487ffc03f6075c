"""The names users' notebooks call keep working after the package's redesign (issue: one seam
per family): importable from where they always were, with the same meaning, checked on a tiny
model against an independent computation where there is one."""

from __future__ import annotations

import torch
from torch import nn

from helpers import attacks, explain, models, photos


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()  # fmt: skip


def test_attack_names_have_their_meaning():
    model, x = tiny_model(), torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1])
    # fgsm = clip(x + eps * sign(grad of the cross-entropy)), computed here by hand
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(xg), y, reduction="sum"), xg)
    torch.testing.assert_close(
        attacks.fgsm(model, x, y, eps=0.03), (x + 0.03 * g.sign()).clamp(0, 1)
    )
    torch.testing.assert_close(attacks.fgsm_direction(model, x, y), g.sign())
    adv = attacks.pgd(model, x, y, eps=0.03, steps=3, random_start=False)
    assert (adv - x).abs().max() <= 0.03 + 1e-6
    df = attacks.minimal_epsilon(model, x, y, max_eps=0.5)
    assert {"epsilon", "flipped", "already_wrong", "flip_class"} <= set(df.columns)


def test_explanation_and_model_names_have_their_meaning():
    model = models.build_model("efficientnet_lite0", num_classes=3, weights=None)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    e = explain.attribute(model, x, 1, "saliency")
    m = explain.explain(model, x, 1, method="saliency")
    assert torch.equal(e.map, m)
    name = models.cam_layer_name(model)
    assert isinstance(models.get_layer(model, name), nn.Module)
    pictures = photos.load_photos(size=32)
    assert pictures.ndim == 4 and pictures.shape[1:] == (3, 32, 32)
