"""Time the smallest-flipping-severity search over natural corruptions against its pass-count
limit and against ImageNet-C's five fixed levels.

In ONE run, on the same model and images (default: 64 correctly classified test scenes of the
fine-tuned default run, drawn with seed 0), for every corruption of
``helpers.corruptions.CORRUPTIONS`` (Hendrycks & Dietterich 2019):

(ours)  ``minimal_severity`` (grid ``--grid``, bisection to ``--tol``; the clean logits given,
        so only the search's forwards count): seconds and forwards per image;
(limit) the pass-count limit: the same forwards replayed on the bare model (chunk sizes from
        ``df.attrs``), and the bound ``grid + ceil(log2(grid spacing / tol))`` forwards per
        image; ratios ours / limit (1.0 = no overhead for corrupting and bookkeeping);
(fixed) ImageNet-C's five levels (``Corruption.levels``: the severities of its level 1-5
        parameters, only brightness's are 0.2 ... 1.0): 5 forwards per image.

It prints a table: ours' time and forwards per image, the ratios to the limit, ours' time over
the fixed levels' (what the per-image severity to ``tol`` costs over "the first failing level of
five"), and the agreement: the share of images whose found severity lies in the interval
``(level k-1, level k]`` of the first failing fixed level k (both "none" when neither flips).
Disagreements come from flips that are not monotone in severity, and from ``tol`` (ours may stop
up to tol above a level the fixed check fails at).

``--table``: time ``severity_table`` (every corruption) on ALL test images of the run, as a
notebook would call it, for the grid/tol given, and print seconds and forwards per image.

    .venv/bin/python benchmarks/natural_corruptions.py            # 64 images, grid 8, tol 0.02
    .venv/bin/python benchmarks/natural_corruptions.py --table --grid 4 --tol 0.05

Measured on this 2-core CPU, 2026-12-01 (quiet: load average 1.7-1.9; fine-tuned Lite0, 128 px,
64 correctly classified test images, grid 8, tol 0.02, batch 32)::

    one batched forward 6.1 ms/image
    corruption      ours ms/im  F/im bound F/bnd t/t_F 5lv ms/im ours/5lv flipped median s  agree
    gaussian_noise        48.7  7.34    11  0.67  0.98      34.5     1.41     84%    0.438    97%
    gaussian_blur         64.5  8.41    11  0.76  1.08      42.1     1.53     28%    0.820    97%
    motion_blur           70.4  7.94    11  0.72  1.27      40.9     1.72      9%    0.414   100%
    jpeg                  66.0  8.42    11  0.77  1.05      40.9     1.61     23%    0.969    92%
    brightness            56.5  7.91    11  0.72  0.99      36.7     1.54      9%    0.453    98%
    contrast              66.5  9.56    11  0.87  0.98      38.8     1.71     70%    0.906    86%
    fog                   62.6  8.08    11  0.73  1.02      35.4     1.77     50%    0.570    98%
    pixelate              66.3  9.19    11  0.84  1.15      39.7     1.67     64%    0.859    80%

Reading: the search makes 0.67-0.87 of its bound of forwards (an image that never flips walks
the whole grid: 8; one that flips adds at most 3 bisection steps) and runs at its pass-count
limit (t/t_F 0.98-1.27: corrupting costs at most a quarter of a forward; motion blur's 24
shifted copies the most). It costs 1.4-1.8x the five fixed levels and gives each image's
severity to 0.02 instead of "first failing level of five". The disagreements (contrast,
pixelate, jpeg) are flips that are not monotone in severity (a flip window between two grid
points or between two levels: found by one check only) and the tolerance (found 0.844 just
above contrast's level 3 at 0.842 that the fixed check fails at).

``--table``, all 300 test images (correct or not) x 8 corruptions, same session:

    grid 4, tol 0.05:  79.5 s, 4.49 forwards per image and corruption (+1 clean, shared)
    grid 8, tol 0.02: 143.6 s, 7.70 forwards per image and corruption (+1 clean, shared)

About 7.5 ms per forward-image including corrupting. Forwards per image and corruption on the
64 correct images (the only deterministic measure): grid 8/tol 0.02: 8.36, grid 4/tol 0.02:
5.25, grid 4/tol 0.05: 4.85, grid 2/tol 0.05: 3.45. Under load (average 4-7) the same runs
took 3-6 times as long.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from helpers import corruptions as C
from helpers.attacks._base import forward


def load_inputs(n: int, seed: int = 0, correct_only: bool = True):
    """The fine-tuned default run's model and ``n`` test images (correctly classified ones)."""
    from helpers import setup

    run = setup.finetuned_run(setup.RUN, set_seed=False)
    model = run.model.eval()
    x, y = run.test_set.tensors()
    y = y.long()
    if correct_only:
        ok = forward(model, x, 64).argmax(1) == y
        x, y = x[ok], y[ok]
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    idx = idx[: n if n > 0 else len(x)]
    return model, x[idx], y[idx], run.config.arch


def forward_ms(model, x, batch_size, repeats=3) -> float:
    """Milliseconds per image of one batched forward (best of ``repeats``)."""
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            model(x[:batch_size])
            times.append(time.perf_counter() - t)
    return min(times) / min(batch_size, len(x)) * 1e3


def replay(model, x, sizes) -> float:
    """Seconds of bare forwards of the given chunk sizes (the search's own forwards)."""
    t = time.perf_counter()
    with torch.no_grad():
        for size in sizes:
            model(x[:size])
    return time.perf_counter() - t


def fixed_levels(model, x, y, c, batch_size, seed=0):
    """ImageNet-C's five levels: per image the first failing level (1-5, 0: none) and seconds."""
    seeds = torch.arange(len(x)) + seed
    first = np.zeros(len(x), dtype=int)
    t = time.perf_counter()
    with torch.no_grad():
        for idx in torch.arange(len(x)).split(batch_size):
            xb = x[idx]
            pattern = C._pattern(c, xb, seeds[idx])
            for k, s in enumerate(c.levels, start=1):
                xs = C._apply(c, xb, C._severities(s, len(xb), xb), pattern)
                wrong = (model(xs).argmax(1) != y[idx]).numpy()
                sel = idx.numpy()[wrong & (first[idx.numpy()] == 0)]
                first[sel] = k
    return first, time.perf_counter() - t


def interval(severity: np.ndarray, levels) -> np.ndarray:
    """The level k whose interval (level k-1, level k] holds each severity (0: NaN)."""
    k = np.searchsorted(np.asarray(levels), severity, side="left") + 1
    return np.where(np.isnan(severity), 0, k)


def compare(model, x, y, args) -> None:
    clean = forward(model, x, args.batch_size)
    bound = args.grid + math.ceil(math.log2((1 / args.grid) / args.tol))
    n = len(x)
    print(
        f"{'corruption':15s} {'ours ms/im':>10s} {'F/im':>5s} {'bound':>5s} {'F/bnd':>5s} "
        f"{'t/t_F':>5s} {'5lv ms/im':>9s} {'ours/5lv':>8s} {'flipped':>7s} {'median s':>8s} "
        f"{'agree':>6s}"
    )
    for name, c in C.CORRUPTIONS.items():
        t = time.perf_counter()
        df = C.minimal_severity(
            model, x, y, name, grid=args.grid, tol=args.tol, batch_size=args.batch_size,
            clean_logits=clean,
        )  # fmt: skip
        t_ours = time.perf_counter() - t
        t_bare = replay(model, x, df.attrs["forward_batch_sizes"])
        first, t_fixed = fixed_levels(model, x, y, c, args.batch_size)
        agree = np.mean(interval(df["severity"].to_numpy(), c.levels) == first)
        fpi = df["n_forward"].mean()
        print(
            f"{name:15s} {t_ours / n * 1e3:10.1f} {fpi:5.2f} {bound:5d} {fpi / bound:5.2f} "
            f"{t_ours / t_bare:5.2f} {t_fixed / n * 1e3:9.1f} {t_ours / t_fixed:8.2f} "
            f"{df['flipped'].mean():7.0%} {df['severity'].median():8.3f} {agree:6.0%}"
        )


def table(model, x, y, args) -> None:
    t = time.perf_counter()
    df = C.severity_table(model, x, y, grid=args.grid, tol=args.tol, batch_size=args.batch_size)
    total = time.perf_counter() - t
    per = df.groupby("corruption", sort=False)["n_forward"].mean()
    print(
        f"severity_table on {len(x)} images x {len(per)} corruptions, grid {args.grid}, "
        f"tol {args.tol}: {total:.1f} s ({total / len(x) / len(per) * 1e3:.1f} ms per image "
        f"and corruption), forwards per image and corruption {per.mean():.2f} "
        f"(+1 clean forward per image, shared)"
    )
    print("  " + ", ".join(f"{k} {v:.2f}" for k, v in per.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="images (0: all)")
    parser.add_argument("--grid", type=int, default=8)
    parser.add_argument("--tol", type=float, default=0.02)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--table", action="store_true", help="time severity_table on all images")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, x, y, arch = load_inputs(0 if args.table else args.n, correct_only=not args.table)
    with torch.no_grad():
        model(x[: args.batch_size])  # warm-up
    print(
        f"fine-tuned {arch}, {len(x)} test images {tuple(x.shape[1:])}, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads; one batched forward "
        f"{forward_ms(model, x, args.batch_size):.1f} ms/image; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    if args.table:
        table(model, x, y, args)
    else:
        compare(model, x, y, args)
    print("timings from one run on a shared machine: noisy; compare the ratios only")


if __name__ == "__main__":
    main()
