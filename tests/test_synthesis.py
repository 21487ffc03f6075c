import pytest
import torch
from torch import nn

from helpers import synthesis


def toy_model(seed=0, classes=4, size=16):
    """A tiny conv net on 16x16 images, normalising inside like the real models."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Dropout(0.1),
                         nn.Linear(6 * 16, classes))


def images(n=6, size=16, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def predict(model, x):
    with torch.no_grad():
        return model.eval()(x).argmax(1)


def pick_targets(model, x):
    """Targets that differ from the prediction, except the last image (already its target)."""
    pred = predict(model, x)
    target = (pred + 1) % 4
    target[-1] = pred[-1]
    return target


@pytest.mark.parametrize("norm,step", [("linf", 4 / 255), ("l2", 0.3)])
def test_fool_reaches_every_target_and_stops_at_once(norm, step):
    model, x = toy_model(), images()
    target = pick_targets(model, x)
    model.train()
    before = x.clone()
    res = synthesis.fool(model, x, target, norm=norm, step_size=step, max_steps=500)
    assert model.training and all(m.training for m in model.modules())   # mode restored
    assert torch.equal(x, before)                                        # input untouched
    assert res.reached.all() and torch.equal(predict(model, res.x_adv), target)
    assert 0 <= res.x_adv.min() and res.x_adv.max() <= 1
    delta = (res.x_adv - x).flatten(1)
    torch.testing.assert_close(res.linf, delta.abs().amax(1))
    torch.testing.assert_close(res.l2, delta.norm(dim=1))
    # the image already predicted as its target: no step, no change
    assert res.steps[-1] == 0 and torch.equal(res.x_adv[-1], x[-1]) and res.l2[-1] == 0
    assert (res.steps[:-1] > 0).all()
    assert torch.equal(res.original_pred, predict(model, x))
    with torch.no_grad():
        probs = model.eval()(res.x_adv).softmax(1)
    torch.testing.assert_close(res.target_prob, probs.gather(1, target[:, None])[:, 0])
    # stopped as soon as: one step fewer does not reach the target, for every image
    for i in range(len(x) - 1):
        k = int(res.steps[i])
        short = synthesis.fool(model, x[i:i + 1], target[i:i + 1], norm=norm, step_size=step,
                               max_steps=k - 1)
        assert not short.reached[0] and predict(model, short.x_adv)[0] != target[i]
        assert short.steps[0] == k - 1
        # and the batched run froze the image there (alone it stops at step k too)
        alone = synthesis.fool(model, x[i:i + 1], target[i:i + 1], norm=norm, step_size=step,
                               max_steps=k + 5)
        assert alone.steps[0] == k
        torch.testing.assert_close(alone.x_adv[0], res.x_adv[i], atol=1e-5, rtol=0)


def test_fool_step_sizes_bound_the_change():
    model, x = toy_model(), images()
    target = pick_targets(model, x)
    res = synthesis.fool(model, x, target, norm="linf", step_size=4 / 255, max_steps=500)
    assert (res.linf <= res.steps.float() * 4 / 255 + 1e-6).all()
    res = synthesis.fool(model, x, target, norm="l2", step_size=0.1, max_steps=500)
    assert (res.l2 <= res.steps.float() * 0.1 + 1e-5).all()


def test_fool_gives_up_after_max_steps_and_checks_arguments():
    model, x = toy_model(), images()
    target = pick_targets(model, x)
    res = synthesis.fool(model, x, target, step_size=1e-6, max_steps=3)
    assert not res.reached[:-1].any() and (res.steps[:-1] == 3).all()
    assert res.reached[-1]
    with pytest.raises(ValueError, match="norm"):
        synthesis.fool(model, x, target, norm="l1")
    with pytest.raises(ValueError, match="targets"):
        synthesis.fool(model, x, [1, 2])


def test_magnified_difference():
    x = images(2)
    flat = synthesis.magnified_difference(x, x.clone())
    assert torch.isfinite(flat).all() and torch.equal(flat, torch.full_like(x, 0.5))
    x_adv = x.clone()
    x_adv[0, 1, 3, 4] += 0.01
    x_adv[1, 0, 2, 2] -= 0.002
    x_adv[1, 2, 5, 5] += 0.001
    vis = synthesis.magnified_difference(x, x_adv)
    assert vis[0, 1, 3, 4] == pytest.approx(1.0) and vis[1, 0, 2, 2] == pytest.approx(0.0)
    assert vis[1, 2, 5, 5] == pytest.approx(0.75) and 0 <= vis.min() and vis.max() <= 1
    fixed = synthesis.magnified_difference(x, x_adv, gain=10.0)
    assert fixed[0, 1, 3, 4] == pytest.approx(0.6)


def test_visualize_class_on_a_toy_model():
    model = toy_model(size=32).train()
    with torch.no_grad():
        model[-1].weight.mul_(20)   # scores of a few units, so "much higher" is measurable
    kw = dict(size=32, steps=15, jitter=2, progress=False)
    x = synthesis.visualize_class(model, [0, 3], seed=0, **kw)
    assert x.shape == (2, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert model.training
    start = synthesis.visualize_class(model, [0, 3], seed=0, **{**kw, "steps": 0})
    score, prob = synthesis.class_scores(model, x, [0, 3])
    score0, prob0 = synthesis.class_scores(model, start, [0, 3])
    assert (score > score0 + 3).all() and (prob > prob0).all()
    assert torch.equal(x, synthesis.visualize_class(model, [0, 3], seed=0, **kw))
    assert not torch.equal(x, synthesis.visualize_class(model, [0, 3], seed=1, **kw))


def test_blur_keeps_a_constant_image_and_smooths_noise():
    flat = torch.full((1, 3, 16, 16), 0.3)
    torch.testing.assert_close(synthesis._gaussian_blur(flat, 1.0), flat)
    noise = images(1)
    assert synthesis._gaussian_blur(noise, 1.0).std() < 0.5 * noise.std()


def test_visualize_class_raises_imagenet_scores():
    from helpers import models

    model = models.build_model("efficientnet_lite0")
    targets = [130, 980]   # flamingo, volcano
    x = synthesis.visualize_class(model, targets, size=64, steps=30, seed=0, progress=False)
    start = synthesis.visualize_class(model, targets, size=64, steps=0, seed=0, progress=False)
    score, prob = synthesis.class_scores(model, x, targets)
    score0, _ = synthesis.class_scores(model, start, targets)
    # the logit is what is ascended; at 64 px another class may still win the softmax
    assert (score > score0 + 10).all() and torch.isfinite(prob).all()
