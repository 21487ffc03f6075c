"""Every attribution method behind one call.

    explain(model, x, target, method="gradcam", *, batch_size=8, **hyperparameters) -> [N, H, W]
    attribute(model, x, target, method=..., **hyperparameters) -> Explanation(map, raw, extras)

``x`` is a float batch ``[N, 3, H, W]`` in [0, 1] (the model normalises it itself), ``target``
an int or ``LongTensor[N]``.

Every call: puts the model in eval mode and restores each module's mode afterwards (also on
error), removes every hook it (or captum) added, never writes into ``x``, bounds the number of
images per forward pass by ``batch_size``, and returns detached float32 maps on ``x``'s device.
Stochastic methods take ``seed`` (default 0): the same call with the same seed, batch and
``batch_size`` gives the same result; they run inside a forked torch RNG and a saved numpy RNG
state, so the caller's random streams are left untouched.

The CAM family (Grad-CAM, Grad-CAM++, Score-CAM) shares one pipeline, ``_cam``: capture the
feature maps A (and the gradients of the target score) at ``layer``, weigh each channel,
map = relu(sum_k w_k A_k) upsampled bilinearly; a variant is only its channel-weight function.

Each method is one :class:`Method` record in :data:`METHODS` (:func:`available_methods`);
:func:`settings` lists the ones the notebooks compare. The methods:

"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from helpers import folding, models
from helpers.plumbing import as_targets, check_images, eval_mode, gaussian_blur, model_device

__all__ = [
    "Explanation",
    "Method",
    "METHODS",
    "settings",
    "hyperparameters",
    "grad_methods",
    "available_methods",
    "attribute",
    "explain",
    "model_state",
    "capture_layer",
    "make_baseline",
    "superpixel_agreement",
]


@dataclass
class Explanation:
    """``map`` [N,H,W] float32; ``raw`` [N,C,H,W] (per-channel attribution) or None; ``extras``
    per-method details (IG's ``delta``, LIME's ``segments``/``score``/``intercept``/``weights``,
    Kernel SHAP's ``base_value``/``output``/``additivity_gap``, Grad-CAM's low-resolution
    ``cam`` ...); ``method`` its name."""

    map: torch.Tensor
    raw: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)
    method: str = ""


# --------------------------------------------------------------------------- context managers
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks_with_kwargs",
)


@contextlib.contextmanager
def model_state(model: nn.Module):
    """Eval mode inside; afterwards every module gets its own ``training`` flag back and every
    hook registered inside the block (by us or by captum) is removed, even on error."""
    modules = list(model.modules())
    before = [{name: set(getattr(m, name, {}) or {}) for name in _HOOK_DICTS} for m in modules]
    try:
        with eval_mode(model):
            yield model
    finally:
        for m, keys in zip(modules, before):
            for name, old in keys.items():
                hooks = getattr(m, name, None)
                if hooks:
                    for key in [k for k in hooks if k not in old]:
                        del hooks[key]


@contextlib.contextmanager
def capture_layer(model: nn.Module, layer: nn.Module, name: str = "layer"):
    """Records ``layer``'s outputs (``store["outputs"]``) and checks it runs exactly once per
    forward of ``model`` (a reused module, e.g. ResNet's shared ``relu``, is ambiguous)."""
    store = {"outputs": [], "calls": 0, "forwards": 0}

    def on_layer(_module, _inp, out):
        store["calls"] += 1
        store["outputs"].append(out)

    def on_model(_module, _inp, _out):
        store["forwards"] += 1

    handles = [layer.register_forward_hook(on_layer), model.register_forward_hook(on_model)]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
    if store["forwards"] and store["calls"] != store["forwards"]:
        raise ValueError(
            f"layer {name!r} ran {store['calls']} times in {store['forwards']} forward "
            f"passes; a CAM method needs a layer used once per pass (a reused module such as "
            f"ResNet's shared relu is ambiguous): pick its parent block or a conv"
        )
    for out in store["outputs"]:
        if not (isinstance(out, torch.Tensor) and out.dim() == 4):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"layer {name!r} gives {shape}; a CAM method needs a 4-D feature map "
                f"[N, C, h, w] (a layer between the first conv and the last)"
            )


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device):
    """Seed torch's and numpy's global generators inside, restore both afterwards."""
    if seed is None:
        yield
        return
    devices = [device.index or 0] if device.type == "cuda" else []
    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            yield
    finally:
        np.random.set_state(np_state)


@contextlib.contextmanager
def _lime_quiet():
    """lime 0.2.0.1 wraps its sampling loop in ``tqdm.auto`` unconditionally: silence it."""
    from lime import lime_image

    original = lime_image.tqdm
    lime_image.tqdm = lambda iterable, *a, **k: iterable
    try:
        yield
    finally:
        lime_image.tqdm = original


# --------------------------------------------------------------------------- small helpers
_BASELINES = ("black", "white", "blurred", "uniform")


def make_baseline(x: torch.Tensor, baseline="black") -> torch.Tensor:
    """A reference image per input: ``"black"`` (0), ``"white"`` (1), ``"blurred"``
    (:func:`helpers.plumbing.gaussian_blur`: sigma = side/20, reflect padding, the same
    baseline as quality's), ``"uniform"`` (U[0,1) noise from torch's global generator, which
    :func:`attribute` seeds), a number, or a tensor broadcastable to ``x``."""
    if isinstance(baseline, torch.Tensor):
        try:
            return baseline.to(x.device, x.dtype).expand_as(x).clone()
        except RuntimeError as err:
            raise ValueError(
                f"baseline of shape {tuple(baseline.shape)} does not broadcast to "
                f"the input {tuple(x.shape)}"
            ) from err
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if baseline == "black":
        return torch.zeros_like(x)
    if baseline == "white":
        return torch.ones_like(x)
    if baseline == "blurred":
        return gaussian_blur(x)
    if baseline == "uniform":
        return torch.rand(x.shape, device=x.device, dtype=x.dtype)
    raise ValueError(
        f"unknown baseline {baseline!r}; expected one of {', '.join(_BASELINES)}, "
        f"a number or a tensor"
    )


def _leaf(x: torch.Tensor) -> torch.Tensor:
    """A fresh leaf that requires grad (captum warns when it has to set that itself)."""
    return x.detach().clone().requires_grad_(True)


@contextlib.contextmanager
def _no_relu_hook_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        yield


def _max_abs(a: torch.Tensor) -> torch.Tensor:
    return a.abs().amax(dim=1)


def _channel_sum(a: torch.Tensor) -> torch.Tensor:
    return a.sum(dim=1)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _layer(model: nn.Module, layer: str | None) -> tuple[str, nn.Module]:
    if layer is None:
        if getattr(model, "arch", None) is None:
            raise ValueError(
                "this model has no .arch, so pass layer=<name> (see models.conv_layer_names(model))"
            )
        layer = models.cam_layer_name(model)
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name (str), got {type(layer).__name__}")
    return layer, models.get_layer(model, layer)


def _upsample(cam: torch.Tensor, size) -> torch.Tensor:
    """Bilinear, ``align_corners=False`` (as captum's ``LayerAttribution.interpolate``)."""
    return F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------- gradient methods
# A "gradient base" is a captum attribution with the same signature as the input: SmoothGrad,
# SmoothGrad^2 and VarGrad can wrap any of them through NoiseTunnel.
def _grad_base(name: str, model, x, *, batch_size, n_steps=50, baseline="black"):
    """(captum object, kwargs for its ``attribute``, reduction to a map)."""
    from captum.attr import GuidedBackprop, IntegratedGradients, Saliency

    if name == "saliency":
        return Saliency(model), {"abs": False}, _max_abs
    if name == "guided_backprop":
        return GuidedBackprop(model), {}, _max_abs
    if name == "integrated_gradients":
        kw = {
            "baselines": make_baseline(x, baseline),
            "n_steps": _positive_int("n_steps", n_steps),
            "internal_batch_size": batch_size,
        }
        return IntegratedGradients(model), kw, _channel_sum
    raise ValueError(
        f"unknown base {name!r}; SmoothGrad can wrap {', '.join(sorted(grad_methods))}"
    )


_BASE_PARAMS = {
    "saliency": set(),
    "guided_backprop": set(),
    "integrated_gradients": {"n_steps", "baseline"},
}
grad_methods = frozenset(_BASE_PARAMS)


def _saliency(model, x, t, *, batch_size):
    """Simonyan et al. 2014: max over channels of |d logit_t / d x|; raw = signed gradient."""
    attr, kw, reduce = _grad_base("saliency", model, x, batch_size=batch_size)
    g = attr.attribute(_leaf(x), target=t, **kw)
    return reduce(g), g, {}


def _guided_backprop(model, x, t, *, batch_size):
    """Springenberg et al. 2015 through captum's ``GuidedBackprop`` (ReLU and ReLU6 modules)."""
    attr, kw, reduce = _grad_base("guided_backprop", model, x, batch_size=batch_size)
    with _no_relu_hook_warning():
        g = attr.attribute(_leaf(x), target=t, **kw)
    return reduce(g), g, {}


def _integrated_gradients(model, x, t, *, batch_size, n_steps=50, baseline="black", seed=0):
    """Sundararajan et al. 2017. ``extras["delta"]`` = sum(attr) - (F(x) - F(baseline)) on the
    target logit, per image (the completeness gap). ``seed`` only matters for ``"uniform"``."""
    attr, kw, reduce = _grad_base(
        "integrated_gradients", model, x, batch_size=batch_size, n_steps=n_steps, baseline=baseline
    )
    a, delta = attr.attribute(x, target=t, return_convergence_delta=True, **kw)
    return reduce(a), a, {"delta": delta.detach()}


def _noise_tunnel(nt_type: str) -> Callable:
    def method(
        model,
        x,
        t,
        *,
        batch_size,
        base="saliency",
        noise_level=0.15,
        n_samples=25,
        seed=0,
        **base_kw,
    ):
        from captum.attr import NoiseTunnel

        if base not in grad_methods:
            raise ValueError(
                f"unknown base {base!r}; {nt_type} can wrap {', '.join(sorted(grad_methods))}"
            )
        unknown = set(base_kw) - _BASE_PARAMS[base]
        if unknown:
            raise TypeError(
                f"{nt_type} with base={base!r} got unexpected hyperparameter(s) "
                f"{sorted(unknown)}; the base accepts {sorted(_BASE_PARAMS[base]) or 'none'}"
            )
        if not isinstance(noise_level, (int, float)) or noise_level < 0:
            raise ValueError(f"noise_level must be a number >= 0, got {noise_level!r}")
        n_samples = _positive_int("n_samples", n_samples)
        inner, kw, reduce = _grad_base(base, model, x, batch_size=batch_size, **base_kw)
        # images are in [0, 1], so sigma = noise_level * (x_max - x_min) = noise_level
        with _no_relu_hook_warning():
            a = NoiseTunnel(inner).attribute(
                x,
                nt_type=nt_type,
                nt_samples=n_samples,
                stdevs=float(noise_level),
                nt_samples_batch_size=max(1, batch_size // x.shape[0]),
                target=t,
                **kw,
            )
        return reduce(a), a, {"base": base}

    method.__name__ = nt_type
    method.__doc__ = (
        f"Captum ``NoiseTunnel(nt_type={nt_type!r})`` over a gradient ``base`` "
        f"({', '.join(sorted(grad_methods))}): ``n_samples`` noisy copies with "
        f"sigma = noise_level (a fraction of the [0, 1] range; Smilkov et al. 2017 "
        f"use 0.15), averaged signed (raw), then the base's reduction."
    )
    return method


def _gradient_shap(
    model,
    x,
    t,
    *,
    batch_size,
    baselines=("black", "white", "blurred"),
    n_samples=25,
    stdevs=0.0,
    seed=0,
):
    """Captum ``GradientShap`` with a baseline distribution per image (default black, white and
    the image blurred). Captum evaluates all ``n_samples`` at once, so the samples go in groups
    of ``batch_size`` (one image at a time) and the groups are averaged, weighted by size."""
    from captum.attr import GradientShap

    n_samples = _positive_int("n_samples", n_samples)
    if isinstance(baselines, (str, torch.Tensor)) and not (
        isinstance(baselines, torch.Tensor) and baselines.dim() == 4
    ):
        baselines = (baselines,)
    if not isinstance(stdevs, (int, float)) or stdevs < 0:
        raise ValueError(f"stdevs must be a number >= 0, got {stdevs!r}")
    n_groups = math.ceil(n_samples / batch_size)
    sizes = [n_samples // n_groups + (i < n_samples % n_groups) for i in range(n_groups)]
    shap = GradientShap(model)
    out = []
    for i in range(x.shape[0]):
        xi = x[i : i + 1]
        if isinstance(baselines, torch.Tensor):  # a distribution [R, C, H, W] given as is
            dist = baselines.to(x.device, x.dtype)
        else:
            dist = torch.cat([make_baseline(xi, b) for b in baselines])
        total = torch.zeros_like(xi)
        for k in sizes:
            total += (
                k
                * shap.attribute(
                    xi, baselines=dist, n_samples=k, stdevs=float(stdevs), target=t[i : i + 1]
                ).detach()
            )
        out.append(total / n_samples)
    a = torch.cat(out)
    return _channel_sum(a), a, {}


def _occlusion(model, x, t, *, batch_size, window=None, stride=None, baseline=0.0):
    """Zeiler & Fergus 2014 through captum ``Occlusion``: a ``window`` x ``window`` patch (all
    channels; default side/8) slides by ``stride`` (default window/2) and is replaced by
    ``baseline`` (a number, ``"blurred"`` or any :func:`make_baseline` choice); attribution =
    drop of the target logit, averaged over the windows covering a pixel. Windows per forward:
    ``perturbations_per_eval = batch_size // N`` so each forward sees ~``batch_size`` images."""
    from captum.attr import Occlusion

    side = min(x.shape[-2:])
    window = _positive_int("window", window if window is not None else max(2, round(side / 8)))
    stride = _positive_int("stride", stride if stride is not None else max(1, window // 2))
    if window > side:
        raise ValueError(f"window {window} is larger than the image side {side}")
    c = x.shape[1]
    base = make_baseline(x, baseline)
    a = Occlusion(model).attribute(
        x,
        sliding_window_shapes=(c, window, window),
        strides=(c, stride, stride),
        baselines=base,
        target=t,
        perturbations_per_eval=max(1, batch_size // x.shape[0]),
    )
    n_windows = math.prod(math.ceil((s - window) / stride) + 1 for s in x.shape[-2:])
    return _channel_sum(a), None, {"window": window, "stride": stride, "n_windows": n_windows}


# --------------------------------------------------------------------------- CAM family
# A CAM variant is a channel-weight function
#     weights(model, x, t, acts, grads, *, batch_size) -> w [N, K]
# of the layer's feature maps ``acts`` [N, K, h, w] and the gradients ``grads`` of the target
# score with respect to them (None for a method whose record has needs_grad=False: it runs
# without autograd). ``_cam`` does the rest, the same for every variant.
def _cam(model, x, t, weights: Callable, *, batch_size, layer, relu):
    """capture A (and dS_t/dA) at ``layer`` -> w = weights(...) -> sum_k w_k A_k -> relu ->
    bilinear upsampling to the input size. extras: ``cam`` (the map at the layer's resolution),
    ``weights`` [N, K], ``layer``."""
    name, module = _layer(model, layer)
    xg = _leaf(x)  # keeps A in the graph for a frozen model
    with capture_layer(model, module, name) as store:
        scores = model(xg)
    acts = store["outputs"][0]
    grads = None
    if torch.is_grad_enabled():
        (grads,) = torch.autograd.grad(scores.gather(1, t.view(-1, 1)).sum(), acts)
    acts = acts.detach()
    w = weights(model, x, t, acts, grads, batch_size=batch_size)
    cam = (w[:, :, None, None] * acts).sum(dim=1, keepdim=True)
    if relu:
        cam = F.relu(cam)
    extras = {"cam": cam[:, 0], "weights": w, "layer": name}
    return _upsample(cam, x.shape[-2:])[:, 0], None, extras


def _cam_method(weights: Callable) -> Callable:
    """The attribution method of a CAM variant: ``layer`` (a name; default
    ``models.cam_layer_name(model)``) and ``relu`` (False keeps the signed map)."""

    def method(model, x, t, *, batch_size, layer=None, relu=True):
        return _cam(model, x, t, weights, batch_size=batch_size, layer=layer, relu=bool(relu))

    method.__name__ = weights.__name__.removesuffix("_weights")
    method.__doc__ = f"{weights.__doc__}\n\n{_cam.__doc__}\n\n{_cam_method.__doc__}"
    return method


def _gradcam_weights(model, x, t, acts, grads, *, batch_size):
    """Grad-CAM (Selvaraju et al. 2017): w_k = mean over positions of dS/dA_k, S the target's
    pre-softmax score (as captum's ``LayerGradCam``)."""
    return grads.mean(dim=(2, 3))


def _gradcam_pp_weights(model, x, t, acts, grads, *, batch_size):
    """Grad-CAM++ (Chattopadhyay et al. 2018), by the paper's closed form.

    Assumption (the paper's): the output explained is Y^c = exp(S^c), S^c the pre-softmax class
    score, so with g = dS^c/dA
        alpha_kij = g^2 / (2 g^2 + sum_ab A_kab g^3)        (0 where the denominator is 0)
        w_k       = sum_ij alpha_kij relu(g_kij)
    dY/dA = exp(S^c) g; the positive factor exp(S^c) is one constant per image and is dropped
    (as in pytorch-grad-cam), so the map is the paper's up to a positive scale per image."""
    g2, g3 = grads.pow(2), grads.pow(3)
    denom = 2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g3
    alpha = torch.where(
        denom != 0,
        g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
        torch.zeros_like(denom),
    )
    return (alpha * F.relu(grads)).sum(dim=(2, 3))


def _scorecam_weights(model, x, t, acts, grads, *, batch_size):
    """Score-CAM (Wang et al. 2020), no gradients: w_k = p_t(x * H_k) - p_t(black), where H_k
    is channel k upsampled bilinearly to the input size and min-max scaled to [0, 1] per image,
    and p_t the softmax probability of the target (the paper's "channel-wise increase of
    confidence" against a black baseline; pytorch-grad-cam instead softmaxes the target logits
    over the channels). A channel constant over the image has H_k = 0, i.e. the baseline itself,
    and weight 0 without a forward pass.

    Cost: one forward per image and varying channel, ``batch_size`` masked images per pass: up
    to K forwards per image, K = 1280 on Lite0's CAM layer (2048 on ResNet50's), against
    Grad-CAM's one forward+backward: on 2 CPU cores about 7 s per 128 px image when every
    channel varies, several hundred times Grad-CAM; use a GPU or a few images. Deterministic:
    no randomness, so no seed."""
    n, k = acts.shape[:2]
    flat = acts.flatten(2)
    # flat indices image * k + channel of the channels that vary over their image
    varying = (flat.amax(dim=2) > flat.amin(dim=2)).flatten().nonzero()[:, 0]
    w = torch.zeros(n * k, device=acts.device, dtype=acts.dtype)
    with torch.no_grad():
        black = torch.softmax(model(torch.zeros_like(x[:1])), dim=1)[0]
        for pairs in varying.split(batch_size):
            image, channel = pairs // k, pairs % k
            masks = _upsample(acts[image, channel][:, None], x.shape[-2:])
            low = masks.amin(dim=(2, 3), keepdim=True)
            span = masks.amax(dim=(2, 3), keepdim=True) - low
            masks = (masks - low) / torch.where(span > 0, span, torch.ones_like(span))
            p = torch.softmax(model(x[image] * masks), dim=1)
            w[pairs] = p.gather(1, t[image].view(-1, 1))[:, 0] - black[t[image]]
    return w.view(n, k)


def _guided_gradcam(model, x, t, *, batch_size, layer=None):
    """Captum ``GuidedGradCam`` (guided backprop x upsampled Grad-CAM on ``layer``, bilinear);
    map = max over channels of |.|, raw = per channel."""
    from captum.attr import GuidedGradCam

    name, module = _layer(model, layer)
    with capture_layer(model, module, name), _no_relu_hook_warning():
        a = GuidedGradCam(model, module).attribute(_leaf(x), target=t, interpolate_mode="bilinear")
    return _max_abs(a), a, {"layer": name}


# --------------------------------------------------------------------------- LIME
_SEGMENTATIONS = ("quickshift", "slic", "felzenszwalb")


def _segmenter(segmentation: str, side: int, seed: int, params: dict | None):
    """lime's ``SegmentationAlgorithm`` with parameters for 64-150 px images (about 20-60
    superpixels), relabelled to 0..n-1 as lime's sampler assumes."""
    from lime.wrappers.scikit_image import SegmentationAlgorithm

    if segmentation not in _SEGMENTATIONS:
        raise ValueError(
            f"unknown segmentation {segmentation!r}; expected one of {', '.join(_SEGMENTATIONS)}"
        )
    if segmentation == "quickshift":
        ks = max(1.0, side / 40)
        defaults = {"kernel_size": ks, "max_dist": 6 * ks, "ratio": 0.5, "rng": seed}
    elif segmentation == "slic":
        defaults = {"n_segments": 50, "compactness": 10, "sigma": 1, "start_label": 0}
    else:
        defaults = {"scale": side, "sigma": 0.5, "min_size": max(10, side * side // 200)}
    algo = SegmentationAlgorithm(segmentation, **{**defaults, **(params or {})})

    def segment(image):
        return np.unique(algo(image), return_inverse=True)[1].reshape(image.shape[:2])

    return segment


def _lime(
    model,
    x,
    t,
    *,
    batch_size,
    num_samples=500,
    segmentation="quickshift",
    seed=0,
    hide_color=None,
    kernel_width=0.25,
    segmentation_params=None,
):
    """Ribeiro et al. 2016 through ``lime_image.LimeImageExplainer(random_state=seed)``, one
    image at a time; ``classifier_fn`` runs the model on lime's batches of ``batch_size``
    (numpy HWC in [0, 1] in, softmax probabilities out). map = each superpixel's weight for the
    target painted on its pixels (signed). extras: ``segments`` [N,H,W], ``score`` (surrogate
    R^2), ``intercept``, ``weights`` (one {superpixel: weight} dict per image)."""

    num_samples = _positive_int("num_samples", num_samples)
    if x.shape[1] != 3:
        raise ValueError(f"lime needs RGB images, got {x.shape[1]} channels")
    device = x.device
    classifier_fn = _lime_classifier(model, x.dtype, device)
    lime_kw = dict(
        seed=seed,
        kernel_width=kernel_width,
        hide_color=hide_color,
        num_samples=num_samples,
        batch_size=batch_size,
        segmentation_fn=_segmenter(segmentation, min(x.shape[-2:]), seed, segmentation_params),
    )
    maps, segs, scores, intercepts, weights = [], [], [], [], []
    with _lime_quiet():
        for i in range(x.shape[0]):
            label = int(t[i])
            e = _lime_explanation(x[i], label, classifier_fn, **lime_kw)
            w = dict(e.local_exp[label])
            maps.append(torch.from_numpy(_paint_superpixels(e.segments, w)))
            segs.append(torch.from_numpy(e.segments.astype(np.int64)))
            scores.append(float(e.score))
            intercepts.append(float(e.intercept[label]))
            weights.append({int(s): float(v) for s, v in w.items()})
    extras = {
        "segments": torch.stack(segs).to(device),
        "score": torch.tensor(scores, device=device),
        "intercept": torch.tensor(intercepts, device=device),
        "weights": weights,
    }
    return torch.stack(maps).to(device), None, extras


def _lime_classifier(model, dtype, device):
    """lime's ``classifier_fn``: numpy HWC batches in [0, 1] in, softmax probabilities out."""

    def classifier_fn(images: np.ndarray) -> np.ndarray:
        # NCHW-contiguous like every other method's input (a permuted view is channels_last)
        xb = torch.from_numpy(images).to(device, dtype).permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():
            return torch.softmax(model(xb), dim=1).double().cpu().numpy()

    return classifier_fn


def _lime_explanation(image, label, classifier_fn, *, seed, kernel_width, **explain_kw):
    """lime's explanation of ``label`` for one image ([3,H,W] tensor); ``explain_kw`` go to
    ``LimeImageExplainer.explain_instance``."""
    from lime import lime_image

    image = _lime_image(image)
    explainer = lime_image.LimeImageExplainer(kernel_width=kernel_width, random_state=seed)
    return explainer.explain_instance(
        image, classifier_fn, labels=(label,), top_labels=None, **explain_kw
    )


def _paint_superpixels(segments: np.ndarray, weights: dict) -> np.ndarray:
    """Each pixel gets the weight of its superpixel (0 for superpixels without one)."""
    table = np.zeros(int(segments.max()) + 1)
    for s, v in weights.items():
        table[s] = v
    return table[segments]


def _lime_image(image: torch.Tensor) -> np.ndarray:
    """One [3,H,W] image as lime sees it (and segments it): numpy HWC float64 in [0, 1]."""
    return image.detach().permute(1, 2, 0).double().cpu().numpy()


# --------------------------------------------------------------------------- Kernel SHAP
def _kernel_shap(
    model,
    x,
    t,
    *,
    batch_size,
    num_samples=500,
    segmentation="quickshift",
    seed=0,
    baseline="mean",
    segmentation_params=None,
):
    """Kernel SHAP (Lundberg & Lee 2017, "A Unified Approach to Interpreting Model
    Predictions") through captum's ``KernelShap``, with LIME's superpixels as the players: the
    same ``segmentation``, ``seed`` and ``segmentation_params`` give the same ``segments`` as
    ``lime``. The value of a coalition is the softmax probability of the target (what LIME's
    ``classifier_fn`` returns) with the other superpixels hidden; a hidden superpixel shows
    ``baseline``: ``"mean"`` (default) its own mean colour, as ``lime_image`` hides superpixels
    (``hide_color=None``), so LIME and Kernel SHAP perturb an image alike and differ only in
    which coalitions they draw and how they weigh them; or any :func:`make_baseline` choice.

    captum draws ``num_samples`` coalitions from torch's generator (all shown, all hidden, then
    sizes k with p(k) ~ (M-1)/(k(M-k)), uniform within a size: the Shapley kernel), runs them
    ``batch_size`` per forward pass and fits a least-squares linear model, the two end
    coalitions weighted 1e6. Its coefficients estimate the Shapley values phi (probability
    units). captum does not impose sum(phi) = output - base_value exactly (the ends are only
    weighted heavily, so the fit misses them by about samples / 1e6 times its residuals):
    ``additivity_gap`` says how far; measured on notebook 04's 128 px scenes, under 1e-5 with
    200 samples and under 3e-5 with 1000.

    map = phi of each superpixel painted on its pixels (signed). extras, one entry per image:
    ``segments`` [N,H,W], ``weights`` ({superpixel: phi}), ``score`` (R^2 of the linear fit on
    the sampled coalitions, the two ends left out), ``base_value`` (probability with every
    superpixel hidden), ``output`` (probability of the image), ``additivity_gap``
    (sum(phi) + base_value - output)."""
    num_samples = _positive_int("num_samples", num_samples)
    if x.shape[1] != 3:
        raise ValueError(f"kernel_shap needs RGB images, got {x.shape[1]} channels")
    segment = _segmenter(segmentation, min(x.shape[-2:]), seed, segmentation_params)

    def probabilities(batch):
        return torch.softmax(model(batch), dim=1)

    rows = []
    for i in range(x.shape[0]):
        segments = torch.from_numpy(segment(_lime_image(x[i]))).to(x.device)
        hidden = _hidden_image(x[i : i + 1], segments, baseline)
        rows.append(
            _superpixel_shapley(
                probabilities, x[i : i + 1], hidden, segments, int(t[i]), num_samples, batch_size
            )
        )
        rows[-1]["segments"] = segments
    return _shapley_explanation(rows, x.device)


def _hidden_image(image: torch.Tensor, segments: torch.Tensor, baseline) -> torch.Tensor:
    """What ``image`` ([1,C,H,W]) shows where a superpixel is hidden: ``"mean"``, each
    superpixel of ``segments`` ([H,W], labels 0..M-1) in its own mean colour (``lime_image``'s
    ``hide_color=None``), else ``make_baseline(image, baseline)``."""
    if not (isinstance(baseline, str) and baseline == "mean"):
        if isinstance(baseline, str) and baseline not in _BASELINES:
            raise ValueError(
                f"unknown baseline {baseline!r}; expected mean, {', '.join(_BASELINES)}, "
                f"a number or a tensor"
            )
        return make_baseline(image, baseline)
    flat = segments.flatten()
    n = int(flat.max()) + 1
    pixels = image[0].flatten(1).double()
    sums = torch.zeros(pixels.shape[0], n, dtype=torch.float64, device=image.device)
    sums.index_add_(1, flat, pixels)
    means = sums / torch.bincount(flat, minlength=n)
    return means[:, segments].unsqueeze(0).to(image.dtype)


def _superpixel_shapley(forward, image, hidden, segments, target, num_samples, batch_size):
    """Kernel SHAP values of the superpixels ``segments`` ([H,W], labels 0..M-1) of ``image``
    ([1,C,H,W]) for ``forward(batch)[:, target]``, a hidden superpixel showing ``hidden``'s
    pixels: captum's ``KernelShap`` with ``num_samples`` coalitions, ``batch_size`` per pass.
    A dict: ``phi`` [M] float64, ``base_value``, ``output``, ``score`` (see
    :func:`_kernel_shap`). One superpixel is the whole game: phi = output - base_value; a game
    whose sampled values are all equal gets phi = 0 exactly (every superpixel a null player)."""
    from captum.attr import KernelShap

    ends = forward(torch.cat([image, hidden]))[:, target].double()
    out = {"output": float(ends[0]), "base_value": float(ends[1]), "score": 1.0}
    n = int(segments.max()) + 1
    if n == 1:  # captum's coalition sizes 1..M-1 do not exist
        return {**out, "phi": torch.tensor([out["output"] - out["base_value"]]).double()}
    shap = KernelShap(forward)
    surrogate, record = shap.interpretable_model, {}
    fit = surrogate.fit

    def recording_fit(train_data, **kw):  # keeps the coalitions for the fit score
        record["data"] = train_data.dataset.tensors
        return fit(train_data, **kw)

    surrogate.fit = recording_fit
    phi = shap.attribute(
        image,
        baselines=hidden,
        target=target,
        feature_mask=segments[None, None],
        n_samples=num_samples,
        perturbations_per_eval=batch_size,
        return_input_shape=False,
    )
    coalitions, values, weights = record["data"]
    if values.min() == values.max():  # no superpixel changes anything: all null players, phi = 0
        return {**out, "phi": torch.zeros(n, dtype=torch.float64)}  # (not the fit's round-off)
    phi = phi.detach().double().flatten().cpu()
    out["score"] = _fit_score(coalitions, values, weights, phi, float(surrogate.bias()))
    return {**out, "phi": phi}


def _fit_score(coalitions, values, weights, phi, bias) -> float:
    """R^2 of the linear model ``bias + coalitions @ phi`` on the sampled coalitions (those of
    weight 1: the two heavily weighted ends left out); 1.0 when none remain."""
    from sklearn.metrics import r2_score

    keep = (weights <= 1).cpu()
    if keep.sum() < 2:
        return 1.0
    predicted = bias + coalitions.cpu()[keep].double() @ phi
    return float(r2_score(values.cpu()[keep].double().numpy(), predicted.numpy()))


def _shapley_explanation(rows: list[dict], device):
    """(map, None, extras) of :func:`_kernel_shap` from one dict per image."""
    weights = [{s: float(v) for s, v in enumerate(r["phi"].tolist())} for r in rows]
    maps = [
        torch.from_numpy(_paint_superpixels(r["segments"].cpu().numpy(), w))
        for r, w in zip(rows, weights)
    ]
    for r in rows:  # in float64, before the float32 storage rounds the terms
        r["additivity_gap"] = float(r["phi"].sum()) + r["base_value"] - r["output"]
    keys = ("score", "base_value", "output", "additivity_gap")
    extras = {
        "segments": torch.stack([r["segments"].long() for r in rows]).to(device),
        "weights": weights,
        **{k: torch.tensor([r[k] for r in rows], device=device) for k in keys},
    }
    return torch.stack(maps).to(device), None, extras


def superpixel_agreement(lime: Explanation, shap: Explanation, *, top: int = 5):
    """How far LIME and Kernel SHAP agree, per image, as a ``pandas.DataFrame``: ``superpixels``
    (M); ``spearman``, the rank correlation of the two weight vectors over the M superpixels (a
    superpixel without a weight counts 0); ``top5_shared`` (for ``top=5``), how many of the
    ``top`` superpixels that speak most for the class (positive weight, the green ones of
    :func:`helpers.plots.lime_panel`) both methods name; Kernel SHAP's ``output`` (probability of
    the image) and ``base_value`` (every superpixel hidden); ``lime_sum``, the sum of LIME's
    weights, which nothing ties to output - base_value; and ``additivity_gap`` =
    |sum(phi) + base_value - output|, which Kernel SHAP keeps near 0 (probability units).

    ``shap`` (method ``kernel_shap``) must explain the first images of ``lime`` (``lime`` may
    hold more) on the same superpixels: the same images, segmentation and seed. Different
    ``segments`` raise a ValueError, since their weights would name different regions."""
    import pandas as pd

    n = len(shap.extras["weights"])
    if len(lime.extras["weights"]) < n:
        raise ValueError(f"lime explains {len(lime.extras['weights'])} images, shap {n}")
    if not torch.equal(lime.extras["segments"][:n].cpu(), shap.extras["segments"].cpu()):
        raise ValueError("lime and shap were not computed on the same superpixels")
    rows = []
    for i in range(n):
        row = _agreement(lime.extras["weights"][i], shap.extras["weights"][i], top)
        row["output"] = float(shap.extras["output"][i])
        row["base_value"] = float(shap.extras["base_value"][i])
        row["lime_sum"] = float(sum(lime.extras["weights"][i].values()))
        row["additivity_gap"] = abs(float(shap.extras["additivity_gap"][i]))
        rows.append(row)
    return pd.DataFrame(rows)


def _agreement(a: dict, b: dict, top: int) -> dict:
    """Rank correlation and shared top superpixels of two {superpixel: weight} dicts (``b``
    names every superpixel; one missing from ``a`` counts 0)."""
    from scipy.stats import spearmanr

    keys = sorted(b)
    wa, wb = [a.get(k, 0.0) for k in keys], [b[k] for k in keys]

    def best(w):
        return {k for k, v in sorted(zip(keys, w), key=lambda kv: -kv[1])[:top] if v > 0}

    return {
        "superpixels": len(keys),
        "spearman": float(spearmanr(wa, wb).statistic),
        f"top{top}_shared": len(best(wa) & best(wb)),
    }


# --------------------------------------------------------------------------- registry and API
@dataclass(frozen=True)
class Method:
    """One attribution method: everything the package knows about it, in one place.

    ``function(model, x, t, *, batch_size, **hyperparameters) -> (map, raw, extras)`` does the
    work on one batch (:func:`attribute` checks the inputs and loops over batches);
    ``label`` names it in tables and figures; ``implementation`` and ``reduction`` (how the
    [N,H,W] map comes from ``raw``) fill the table in this module's docstring; ``needs_grad``
    runs it with autograd on (else under ``torch.no_grad``); ``cheap`` holds hyperparameters
    that make it fast enough for unit tests and warm-ups; ``compare`` puts it in
    :func:`settings`, once per dict of fixed hyperparameters in ``variants``."""

    name: str
    function: Callable
    label: str
    implementation: str
    reduction: str
    needs_grad: bool = True
    cheap: dict = field(default_factory=dict)
    compare: bool = False
    variants: tuple[dict, ...] = ({},)


_CAM_MAP = "relu(sum_k w_k A_k), bilinear"
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "saliency",
            _saliency,
            "saliency",
            "captum ``Saliency`` (signed gradient)",
            "max over channels of |g|",
            compare=True,
        ),
        Method(
            "integrated_gradients",
            _integrated_gradients,
            "IG",
            "captum ``IntegratedGradients``",
            "sum over channels",
            cheap={"n_steps": 8},
            compare=True,
            variants=({"baseline": "black"}, {"baseline": "blurred"}),
        ),
        Method(
            "smoothgrad",
            _noise_tunnel("smoothgrad"),
            "SmoothGrad",
            "captum ``NoiseTunnel`` over a ``base``",
            "the base's reduction",
            cheap={"n_samples": 4},
            compare=True,
        ),
        Method(
            "smoothgrad_sq",
            _noise_tunnel("smoothgrad_sq"),
            "SmoothGrad-squared",
            "captum ``NoiseTunnel`` (``smoothgrad_sq``)",
            "the base's reduction",
            cheap={"n_samples": 4},
        ),
        Method(
            "vargrad",
            _noise_tunnel("vargrad"),
            "VarGrad",
            "captum ``NoiseTunnel`` (``vargrad``)",
            "the base's reduction",
            cheap={"n_samples": 4},
        ),
        Method(
            "gradient_shap",
            _gradient_shap,
            "GradientSHAP",
            "captum ``GradientShap``",
            "sum over channels",
            cheap={"n_samples": 4},
            compare=True,
        ),
        Method(
            "occlusion",
            _occlusion,
            "occlusion",
            "captum ``Occlusion``",
            "sum over channels",
            needs_grad=False,
            cheap={"window": 16, "stride": 16},
            compare=True,
        ),
        Method(
            "gradcam",
            _cam_method(_gradcam_weights),
            "Grad-CAM",
            "CAM pipeline (Selvaraju et al. 2017)",
            _CAM_MAP,
            compare=True,
        ),
        Method(
            "gradcam_pp",
            _cam_method(_gradcam_pp_weights),
            "Grad-CAM++",
            "CAM pipeline (Chattopadhyay et al. 2018)",
            _CAM_MAP,
            compare=True,
        ),
        Method(
            "scorecam",
            _cam_method(_scorecam_weights),
            "Score-CAM",
            "CAM pipeline (Wang et al. 2020), no gradient",
            _CAM_MAP,
            needs_grad=False,
            cheap={"batch_size": 64},
        ),
        Method(
            "guided_backprop",
            _guided_backprop,
            "Guided Backprop",
            "captum ``GuidedBackprop``",
            "max over channels of |.|",
            compare=True,
        ),
        Method(
            "guided_gradcam",
            _guided_gradcam,
            "Guided Grad-CAM",
            "captum ``GuidedGradCam``",
            "max over channels of |.|",
            compare=True,
        ),
        Method(
            "lime",
            _lime,
            "LIME",
            "``lime.lime_image.LimeImageExplainer``",
            "superpixel weights, signed",
            needs_grad=False,
            cheap={"num_samples": 30},
            compare=True,
        ),
        Method(
            "kernel_shap",
            _kernel_shap,
            "Kernel SHAP",
            "captum ``KernelShap`` over LIME's superpixels",
            "Shapley value per superpixel, signed",
            needs_grad=False,
            cheap={"num_samples": 30},
            compare=False,  # notebook 04 shows it beside LIME; 06's comparison leaves it out
        ),
    )
}


def _method_table() -> str:
    """The registry as the reStructuredText table at the end of this module's docstring."""
    rows = [("name", "implementation", "map (from ``raw``)")]
    rows += [(f"``{m.name}``", m.implementation, m.reduction) for m in METHODS.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    rule = "  ".join("=" * w for w in widths)
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([rule, lines[0], rule, *lines[1:], rule]) + "\n"


if __doc__:  # None under python -OO
    __doc__ += _method_table()


def available_methods() -> list[str]:
    """The method names :func:`explain` accepts."""
    return list(METHODS)


def hyperparameters(method: str) -> dict:
    """The keyword-only hyperparameters of ``method`` and their defaults."""
    fn = _method(method).function
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name != "batch_size"
    }


def settings(*, batch_size: int = 32, **shared) -> dict[str, dict]:
    """The methods the notebooks compare (``compare=True`` in :data:`METHODS`, in its order) as
    ``{label: keyword arguments of explain}``, the set that ``quality.compare_methods``,
    ``quality.sanity_check`` and ``quality.shortcut_table`` score.

    Each setting gets ``batch_size`` and those of the ``shared`` hyperparameters its method
    accepts (:func:`hyperparameters`), e.g. ``settings(n_steps=50, n_samples=25, window=None,
    num_samples=500, seed=0)``: ``n_samples`` goes to SmoothGrad and GradientSHAP alike,
    ``window=None`` is occlusion's default (an eighth of the image side). A method with several
    ``variants`` gets one setting each, labelled ``"label (values)"``, e.g. ``"IG (black)"``."""
    compared = [m for m in METHODS.values() if m.compare]
    unused = set(shared) - {p for m in compared for p in hyperparameters(m.name)}
    if unused:
        raise TypeError(f"no compared method takes the hyperparameter(s) {sorted(unused)}")
    out = {}
    for m in compared:
        accepted = {k: v for k, v in shared.items() if k in hyperparameters(m.name)}
        for variant in m.variants:
            label = m.label
            if len(m.variants) > 1:
                label += f" ({', '.join(str(v) for v in variant.values())})"
            out[label] = {"method": m.name, **variant, **accepted, "batch_size": batch_size}
    return out


def _method(method: str) -> Method:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    return METHODS[method]


def _check_kwargs(method: str, fn: Callable, kw: dict) -> None:
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return  # noise tunnels check against their base
    allowed = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n != "batch_size"]
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise TypeError(
            f"{method} got unexpected hyperparameter(s) {unknown}; it accepts {allowed or 'none'}"
        )


def _float_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _merge(parts: list[dict]) -> dict:
    out = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        if isinstance(values[0], torch.Tensor) and values[0].dim() > 0:
            out[key] = torch.cat(values)
        elif isinstance(values[0], list):
            out[key] = [v for vs in values for v in vs]
        else:
            out[key] = values[0]
    return out


def attribute(
    model: nn.Module, x: torch.Tensor, target, method: str = "gradcam", *, batch_size: int = 8, **kw
) -> Explanation:
    """Attribution of ``target`` for each image of ``x`` ([N,C,H,W] in [0,1]) by ``method``.

    ``batch_size`` bounds the images per forward pass (inputs, noisy copies, occluded copies,
    integration steps or lime samples alike). Hyperparameters are keyword-only; see
    :func:`hyperparameters` and each method's docstring (``METHODS[name].function.__doc__``).
    """
    record = _method(method)
    fn = record.function
    _check_kwargs(method, fn, kw)
    batch_size = _positive_int("batch_size", batch_size)
    check_images(x)
    if x.numel() and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
        raise ValueError("x must hold pixel values in [0, 1] (the model normalises them)")
    model = folding.folded(model, x)  # same function, BatchNorm folded into the convolutions
    device = model_device(model)
    xs = x.detach().to(device=device, dtype=_float_dtype(model)).clone()
    n_classes = len(getattr(model, "class_names", ()) or ()) or None
    t = as_targets(target, x.shape[0], device, num_classes=n_classes)
    seed = kw.get("seed", 0) if "seed" in inspect.signature(fn).parameters else None
    maps, raws, extras = [], [], []
    grad = torch.enable_grad() if record.needs_grad else torch.no_grad()
    with model_state(model), _seeded(seed, device), grad:
        for start in range(0, x.shape[0], batch_size):
            m, r, e = fn(
                model,
                xs[start : start + batch_size],
                t[start : start + batch_size],
                batch_size=batch_size,
                **kw,
            )
            maps.append(m.detach().float())
            raws.append(None if r is None else r.detach().float())
            extras.append(e)
    if not maps:
        raise ValueError("x holds no images")
    raw = None if raws[0] is None else torch.cat(raws).to(x.device)
    ex = {
        k: (v.to(x.device) if isinstance(v, torch.Tensor) else v) for k, v in _merge(extras).items()
    }
    return Explanation(map=torch.cat(maps).to(x.device), raw=raw, extras=ex, method=method)


def explain(
    model: nn.Module, x: torch.Tensor, target, method: str = "gradcam", *, batch_size: int = 8, **kw
) -> torch.Tensor:
    """``attribute(model, x, target, method, batch_size=..., **kw).map``: a float32 [N,H,W]."""
    return attribute(model, x, target, method, batch_size=batch_size, **kw).map
