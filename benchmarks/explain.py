"""Time every attribution method against its pass-count limit.

Almost every method costs a known number of forward (F) or forward+backward (F+B) passes of the
batch: Grad-CAM 1 x (F+B), integrated gradients n_steps x (F+B), SmoothGrad n_samples x (F+B),
occlusion (number of windows) x F, LIME ceil(num_samples / batch) x F per image ... This script
times F and F+B of the batch (median of a few, re-measured just before each method, because the
machine's load drifts) and each method, and prints ``ours / limit`` (1.0 = at the limit).
The "peer" rows call captum or lime directly with their defaults (``internal_batch_size=None``,
``nt_samples_batch_size=None``, ``perturbations_per_eval=1``, lime's ``batch_size=10``,
``num_samples=1000``) against the same kind of limit, on ``--peer-batch`` images (captum's
defaults run every integration step / noisy copy in ONE forward: 400 images of 128 px for IG
on a batch of 8 would need several GB), so the reader sees what batching buys.

LIME runs with ``--lime-samples`` (default 256, not the method's 500) to keep the run to a few
minutes on 2 cores. Its limit counts only the model's forwards; the segmentation (quickshift,
~0.1 s per 128 px image) and lime's own per-sample numpy work are fixed costs on top, so its
ratio falls as the sample count grows.

Score-CAM costs one forward per image and CAM-layer channel that varies over the image (up to
1280 per image on Lite0; about 200 with the ImageNet weights on these random images), counted
in batches. With ``--weights none`` nearly every channel varies and Score-CAM alone takes
minutes: leave it out with ``--methods``.

    .venv/bin/python benchmarks/explain.py [--arch efficientnet_lite0] [--size 128] [--batch 8]
        [--methods gradcam,lime,...] [--weights imagenet|none] [--no-peers]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from helpers import explain as E
from helpers import models


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Passes:
    """Times one F and one F+B of a batch (the gradient taken w.r.t. the input, as captum does)."""

    def __init__(self, model, x, t, repeats=3):
        self.model, self.x, self.t, self.repeats = model, x, t, repeats

    def forward(self):
        with torch.no_grad():
            self.model(self.x)

    def forward_backward(self):
        xg = self.x.clone().requires_grad_(True)
        out = self.model(xg)
        torch.autograd.grad(out.gather(1, self.t.view(-1, 1)).sum(), xg)

    def measure(self):
        return median_time(self.forward, self.repeats), median_time(
            self.forward_backward, self.repeats
        )


def varying_channels(model, x) -> int:
    """(image, channel) pairs of the CAM layer that vary over the image: Score-CAM's forwards."""
    layer = models.get_layer(model, models.cam_layer_name(model))
    with E.capture_layer(model, layer) as store, torch.no_grad():
        model(x)
    acts = store["outputs"][0].flatten(2)
    return int((acts.amax(dim=2) > acts.amin(dim=2)).sum())


def ours(args, n_images: int, pairs: int) -> dict:
    """method -> (kwargs, passes as (count, 'F' | 'F+B')); ``pairs``: see varying_channels."""
    side, b = args.size, args.batch
    window = max(2, round(side / 8))
    stride = max(1, window // 2)
    n_windows = (math.ceil((side - window) / stride) + 1) ** 2
    per_image = math.ceil(args.lime_samples / b)
    return {
        "saliency": ({}, (1, "F+B")),
        "integrated_gradients": ({"n_steps": 50}, (50, "F+B")),
        "smoothgrad": ({"n_samples": 25}, (25, "F+B")),
        "smoothgrad_sq": ({"n_samples": 25}, (25, "F+B")),
        "vargrad": ({"n_samples": 25}, (25, "F+B")),
        "gradient_shap": ({"n_samples": 25}, (25, "F+B")),
        "occlusion": ({}, (n_windows, "F")),
        "gradcam": ({}, (1, "F+B")),
        "gradcam_pp": ({}, (1, "F+B")),
        "scorecam": ({}, (1 + math.ceil(pairs / b), "F")),  # + one F of a black image
        "guided_backprop": ({}, (1, "F+B")),
        "guided_gradcam": ({}, (2, "F+B")),  # captum runs Grad-CAM and guided backprop apart
        "lime": ({"num_samples": args.lime_samples}, (per_image * n_images, "F")),
    }


def peers(model, x, t, args):
    """name -> (callable, passes) calling captum / lime directly with their defaults."""
    from captum.attr import GradientShap, IntegratedGradients, NoiseTunnel, Occlusion, Saliency

    side = args.size
    window = max(2, round(side / 8))
    stride = max(1, window // 2)
    n_windows = (math.ceil((side - window) / stride) + 1) ** 2
    dist = torch.stack([torch.zeros_like(x[0]), torch.ones_like(x[0])])

    def lime_default():
        from lime import lime_image

        def fn(images):
            xb = torch.from_numpy(images).float().permute(0, 3, 1, 2).contiguous()
            with torch.no_grad():
                return torch.softmax(model(xb), 1).numpy()

        with E._lime_quiet():
            for i in range(len(x)):
                lime_image.LimeImageExplainer(random_state=0).explain_instance(
                    x[i].permute(1, 2, 0).double().numpy(), fn, num_samples=args.lime_peer_samples
                )

    return {
        "integrated_gradients": (
            lambda: IntegratedGradients(model).attribute(x, target=t),
            (50, "F+B"),
        ),
        "smoothgrad": (
            lambda: NoiseTunnel(Saliency(model)).attribute(
                x, nt_type="smoothgrad", nt_samples=25, stdevs=0.15, target=t
            ),
            (25, "F+B"),
        ),
        "gradient_shap": (
            lambda: GradientShap(model).attribute(x, baselines=dist, target=t),
            (5, "F+B"),
        ),  # captum's default n_samples=5
        "occlusion": (
            lambda: Occlusion(model).attribute(
                x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride), target=t
            ),
            (n_windows, "F"),
        ),
        "lime": (lime_default, (math.ceil(args.lime_peer_samples / args.batch) * len(x), "F")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="efficientnet_lite0", choices=models.ARCHS)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--methods",
        default=",".join(E.available_methods()),
        help="comma-separated subset of " + ", ".join(E.available_methods()),
    )
    parser.add_argument("--weights", default="imagenet", help="'imagenet' or 'none'")
    parser.add_argument(
        "--lime-samples",
        type=int,
        default=256,
        help="LIME samples per image (the method's default is 500)",
    )
    parser.add_argument("--lime-peer-samples", type=int, default=1000)
    parser.add_argument("--peer-batch", type=int, default=2)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="timings of F and F+B per method")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(E.available_methods()))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; expected {', '.join(E.available_methods())}")

    torch.manual_seed(0)
    weights = None if args.weights == "none" else args.weights
    model = models.build_model(args.arch, 6, weights=weights).eval()
    x = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    t = torch.arange(args.batch) % 6
    full = Passes(model, x, t, args.repeats)
    full.measure()  # warm-up (allocator, oneDNN kernels)
    print(
        f"{args.arch} ({args.weights}), batch {args.batch} x {args.size} px, "
        f"torch threads {torch.get_num_threads()}; times are medians on a SHARED, noisy machine"
    )

    rows = []
    plan = ours(args, args.batch, varying_channels(model, x))
    for method in methods:
        kw, (count, kind) = plan[method]
        # imports and captum's code paths, on a 32 px crop with the registry's cheap settings
        E.explain(model, x[:1, :, :32, :32], t[:1], method, **E.METHODS[method].cheap)
        before = full.measure()
        repeats = 3 if count * before[kind == "F+B"] < 5 else 1
        took = median_time(lambda m=method, kw=kw: E.explain(model, x, t, m, **kw), repeats)
        after = full.measure()  # the load drifts: average the two measurements
        unit = (before[kind == "F+B"] + after[kind == "F+B"]) / 2
        rows.append((method, f"{count} x {kind}", count * unit, took))

    peer_rows = []
    if not args.no_peers:
        xp, tp = x[: args.peer_batch], t[: args.peer_batch]
        small = Passes(model, xp, tp, args.repeats)
        for name, (fn, (count, kind)) in peers(model, xp, tp, args).items():
            if name not in methods and not (name == "smoothgrad" and "smoothgrad" in methods):
                continue
            # lime's samples go through the model in batches: its unit is F of a full batch
            timer = full if name == "lime" else small
            before = timer.measure()
            took = median_time(fn, 1)
            after = timer.measure()
            unit = (before[kind == "F+B"] + after[kind == "F+B"]) / 2
            peer_rows.append(
                (
                    f"{name} [captum/lime defaults, {len(xp)} img]",
                    f"{count} x {kind}",
                    count * unit,
                    took,
                )
            )

    print(f"{'method':<48} {'passes':>12} {'limit s':>9} {'ours s':>9} {'ratio':>7}")
    for name, passes, limit, took in rows + peer_rows:
        print(f"{name:<48} {passes:>12} {limit:9.3f} {took:9.3f} {took / limit:7.2f}")
    worst = max(rows, key=lambda r: r[3] / r[2])
    print(f"worst ratio: {worst[0]} {worst[3] / worst[2]:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
