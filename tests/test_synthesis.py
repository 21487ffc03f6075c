import pytest
import torch
from torch import nn

from helpers import synthesis


def toy_model(seed=0, classes=4, size=16):
    """A tiny conv net on 16x16 images, normalising inside like the real models."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(6 * 16, classes),
    )


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
    assert model.training and all(m.training for m in model.modules())  # mode restored
    assert torch.equal(x, before)  # input untouched
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
        torch.testing.assert_close(res.original_prob, model.eval()(x).softmax(1).amax(1))
    with torch.no_grad():
        probs = model.eval()(res.x_adv).softmax(1)
    torch.testing.assert_close(res.target_prob, probs.gather(1, target[:, None])[:, 0])
    # stopped as soon as: one step fewer does not reach the target, for every image
    for i in range(len(x) - 1):
        k = int(res.steps[i])
        short = synthesis.fool(
            model, x[i : i + 1], target[i : i + 1], norm=norm, step_size=step, max_steps=k - 1
        )
        assert not short.reached[0] and predict(model, short.x_adv)[0] != target[i]
        assert short.steps[0] == k - 1
        # and the batched run froze the image there (alone it stops at step k too)
        alone = synthesis.fool(
            model, x[i : i + 1], target[i : i + 1], norm=norm, step_size=step, max_steps=k + 5
        )
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
        model[-1].weight.mul_(20)  # scores of a few units, so "much higher" is measurable
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


@pytest.mark.parametrize("param", ["pixel", "fourier"])
def test_visualize_class_raises_imagenet_scores(param):
    from helpers import models

    model = models.build_model("efficientnet_lite0")
    targets = [130, 980]  # flamingo, volcano
    kw = dict(param=param, size=64, seed=0, progress=False)
    x = synthesis.visualize_class(model, targets, steps=30, **kw)
    start = synthesis.visualize_class(model, targets, steps=0, **kw)
    score, prob = synthesis.class_scores(model, x, targets)
    score0, _ = synthesis.class_scores(model, start, targets)
    # the logit is what is ascended; at 64 px another class may still win the softmax
    assert (score > score0 + 10).all() and torch.isfinite(prob).all()


# --------------------------------------------------------------------------------------------
# confident fooling, the Fourier parametrisation
# --------------------------------------------------------------------------------------------
def test_fool_with_confidence_goes_on_until_the_target_is_that_probable():
    model, x = toy_model(), images()
    with torch.no_grad():
        model[-1].weight.mul_(20)  # so that 90 % is within reach
    target = pick_targets(model, x)
    plain = synthesis.fool(model, x, target, step_size=4 / 255, max_steps=500)
    sure = synthesis.fool(model, x, target, step_size=4 / 255, max_steps=500, confidence=0.9)
    assert sure.reached.all() and (sure.target_prob >= 0.9).all()
    assert torch.equal(predict(model, sure.x_adv), target)
    assert (sure.steps >= plain.steps).all() and (sure.linf >= plain.linf - 1e-7).all()
    assert (plain.target_prob < 0.9).any()  # the bare flip is not that confident
    with pytest.raises(ValueError, match="confidence"):
        synthesis.fool(model, x, target, confidence=1.0)


def test_fourier_image_range_grey_and_shape_check():
    zero = torch.zeros(2, 3, 16, 9, 2)
    torch.testing.assert_close(synthesis.fourier_image(zero, 16), torch.full((2, 3, 16, 16), 0.5))
    spec = synthesis.random_spectrum(3, 16, seed=0, std=5.0)  # large: saturates the sigmoid
    img = synthesis.fourier_image(spec, 16)
    assert img.shape == (3, 3, 16, 16) and 0 < img.min() and img.max() < 1 and img.std() > 0.1
    with pytest.raises(ValueError, match="spectrum"):
        synthesis.fourier_image(spec, 15)
    with pytest.raises(ValueError, match="spectrum"):
        synthesis.fourier_image(spec[:, :2], 16)


def test_random_spectrum_is_deterministic_for_a_seed():
    a = synthesis.random_spectrum(2, 8, seed=3)
    assert a.shape == (2, 3, 8, 5, 2)
    assert torch.equal(a, synthesis.random_spectrum(2, 8, seed=3))
    assert not torch.equal(a, synthesis.random_spectrum(2, 8, seed=4))
    assert a.std() == pytest.approx(0.01, rel=0.2)


def _one_coefficient(size, channel, fy, fx, value=0.5):
    spec = torch.zeros(1, 3, size, size // 2 + 1, 2)
    spec[0, channel, fy, fx, 0] = value
    return spec


def test_fourier_scaling_favours_low_frequencies_and_dc_is_flat():
    size = 32
    dc = synthesis.fourier_image(_one_coefficient(size, 0, 0, 0), size)
    assert dc.std(dim=(2, 3)).max() < 1e-6 and (dc > 0.5).all()  # a constant, brighter image

    def amplitude(img):
        return (img - 0.5).abs().amax().item()

    low = amplitude(synthesis.fourier_image(_one_coefficient(size, 0, 1, 0), size))
    high = amplitude(synthesis.fourier_image(_one_coefficient(size, 0, 8, 0), size))
    assert low == pytest.approx(8 * high, rel=0.15)  # 1/frequency: 8x the frequency, 1/8 the size


def test_first_colour_axis_is_brightness_the_others_are_colour():
    size = 16
    bright = synthesis.fourier_image(_one_coefficient(size, 0, 0, 0, 2.0), size)[0, :, 0, 0] - 0.5
    assert (bright > 0).all() and bright.max() - bright.min() < 0.1 * bright.mean()
    for axis in (1, 2):  # colour-opponent axes: some channels up, some down
        colour = (
            synthesis.fourier_image(_one_coefficient(size, axis, 0, 0, 2.0), size)[0, :, 0, 0] - 0.5
        )
        assert colour.max() > 0.005 and colour.min() < -0.005


def test_rotation_in_the_transform():
    g = torch.Generator().manual_seed(0)
    x = images(2, size=32)
    assert torch.equal(synthesis._transform(x, 0, 0.0, g, 0.0), x)
    flat = torch.full((1, 3, 32, 32), 0.7)
    torch.testing.assert_close(synthesis._transform(flat, 4, 0.2, g, 30.0), flat)
    turned = synthesis._transform(x, 0, 0.0, torch.Generator().manual_seed(0), 30.0)
    assert turned.shape == x.shape and (turned - x).abs().mean() > 0.005


def test_visualize_class_fourier_on_a_toy_model():
    model = toy_model(size=32).train()
    with torch.no_grad():
        model[-1].weight.mul_(20)
    kw = dict(param="fourier", size=32, steps=40, lr=0.3, jitter=2, rotate=10, progress=False)
    x = synthesis.visualize_class(model, [0, 3], seed=0, **kw)
    assert x.shape == (2, 3, 32, 32) and 0 < x.min() and x.max() < 1
    assert model.training and all(p.grad is None for p in model.parameters())
    start = synthesis.visualize_class(model, [0, 3], seed=0, **{**kw, "steps": 0})
    torch.testing.assert_close(
        start, synthesis.fourier_image(synthesis.random_spectrum(2, 32, seed=0), 32)
    )
    score, prob = synthesis.class_scores(model, x, [0, 3])
    score0, prob0 = synthesis.class_scores(model, start, [0, 3])
    assert (score > score0 + 3).all() and (prob > prob0).all()
    assert torch.equal(x, synthesis.visualize_class(model, [0, 3], seed=0, **kw))
    assert not torch.equal(x, synthesis.visualize_class(model, [0, 3], seed=1, **kw))


def test_visualize_class_checks_its_arguments():
    model = toy_model()
    with pytest.raises(ValueError, match="param"):
        synthesis.visualize_class(model, [0], param="cppn", size=16, steps=1, progress=False)
    with pytest.raises(ValueError, match="init"):
        synthesis.visualize_class(
            model, [0], param="fourier", init=images(1), size=16, steps=1, progress=False
        )
    with pytest.raises(ValueError, match="init"):
        synthesis.visualize_class(model, [0], init="zeros", size=16, steps=1, progress=False)


def test_fooling_table_reports_the_result_in_grey_levels():
    model, x = toy_model(), images(3)
    target = pick_targets(model, x)
    res = synthesis.fool(model, x, target, step_size=2 / 255, max_steps=500)
    names = ["toy0", "toy1", "toy2", "toy3"]
    table = synthesis.fooling_table(res, names, names=["a", "b", "c"])
    assert list(table["image"]) == ["a", "b", "c"] and len(table) == 3
    assert list(table["target"]) == [names[int(t)] for t in target]
    assert list(table["model_said"]) == [names[int(k)] for k in predict(model, x)]
    assert table["reached"].all() and list(table["steps"]) == res.steps.tolist()
    assert table["linf_255"].to_numpy() == pytest.approx(255 * res.linf.numpy(), rel=1e-5)
    assert (table["linf_255"] <= 2 * table["steps"] + 1e-3).all()  # steps of 2/255 each
    rms = (res.x_adv - x).flatten(1).pow(2).mean(1).sqrt() * 255
    assert table["rms_255"].to_numpy() == pytest.approx(rms.numpy(), rel=1e-4)
    assert (table["rms_255"] <= table["linf_255"] + 1e-6).all()
    assert table["target_prob"].to_numpy() == pytest.approx(res.target_prob.numpy())


def test_visualization_table_matches_class_scores_and_the_prediction():
    model = toy_model()
    model.class_names = ["a", "b", "c", "d"]
    x, start = images(3), images(3, seed=5)
    table = synthesis.visualization_table(model, x, [0, 1, 3], start=start)
    logit, prob = synthesis.class_scores(model, x, [0, 1, 3])
    assert list(table["class"]) == ["a", "b", "d"]
    assert table["logit"].to_numpy() == pytest.approx(logit.numpy(), rel=1e-6)
    assert table["probability"].to_numpy() == pytest.approx(prob.numpy(), rel=1e-6)
    assert table["logit_start"].to_numpy() == pytest.approx(
        synthesis.class_scores(model, start, [0, 1, 3])[0].numpy()
    )
    with torch.no_grad():
        probs = model.eval()(x).softmax(1)
    assert list(table["model_says"]) == [model.class_names[k] for k in probs.argmax(1)]
    assert table["its_probability"].to_numpy() == pytest.approx(probs.amax(1).numpy(), rel=1e-6)
    assert (table["its_probability"] >= table["probability"] - 1e-7).all()
    assert "logit_start" not in synthesis.visualization_table(model, x, 2).columns


class _Sum(nn.Module):
    """Two classes, logit_0 - logit_1 = 2 * (sum(x - 0.5) + 1e-3): on a 0.5-grey image class 0
    by a hair, so a jittered start of a few grey levels lands on either side."""

    def forward(self, x):
        s = (x - 0.5).flatten(1).sum(1) + 1e-3
        return torch.stack([s, -s], 1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fool_with_random_start_reports_the_image_itself_and_the_returned_image(norm):
    model = _Sum()
    x0 = torch.full((24, 3, 4, 4), 0.5)
    target = torch.ones(24, dtype=torch.long)
    res = synthesis.fool(
        model, x0, target, norm=norm, step_size=0.05, max_steps=0, random_start=True, seed=3
    )
    with torch.no_grad():
        clean = model(x0).softmax(1)
        returned = model(res.x_adv).softmax(1)
    assert (res.x_adv != x0).any()  # the start was jittered
    assert (returned.argmax(1) == 1).any()  # and some starts already say class 1
    assert torch.equal(res.original_pred, clean.argmax(1))  # what it said about x0
    torch.testing.assert_close(res.original_prob, clean.amax(1))
    torch.testing.assert_close(res.target_prob, returned[:, 1])  # at the returned image
    assert torch.equal(res.reached, returned.argmax(1) == 1)
