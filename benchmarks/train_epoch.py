"""Time one fine-tuning epoch against its pass-count limit.

An epoch of ``fine_tune`` costs, at the least, one forward+backward+optimizer step per training
batch plus one forward per validation and test image. This script times those passes bare (same
model, same batch size, same data, in this run) and the real epoch, and prints the ratio
(1.0 = no overhead from augmentation, logging, checkpointing and data handling).

    .venv/bin/python benchmarks/train_epoch.py [--arch efficientnet_lite0] [--image-size 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from helpers import data, models, runs
from helpers.data import split_train_val
from helpers.train import TrainConfig, fine_tune


def bare_passes(cfg: TrainConfig, train_set, test_set) -> float:
    """Seconds for the minimum work of one epoch: F+B+step per train batch, F per eval image."""
    torch.manual_seed(0)
    model = models.build_model(cfg.arch, len(train_set.classes), cfg.weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    train_idx, val_idx = split_train_val(
        len(train_set),
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        labels=np.asarray(train_set.labels),
    )
    images, labels = train_set.tensors()
    start = time.perf_counter()
    model.train()
    for i in range(0, len(train_idx), cfg.batch_size):
        idx = train_idx[i : i + cfg.batch_size]
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        for x in (images[val_idx], test_set.tensors()[0]):
            for chunk in x.split(64):
                model(chunk)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args()
    source = runs.load_data(progress=False)
    classes = source.classes
    train_set = data.ImageDataset(
        source.root,
        source.manifest,
        "train",
        image_size=args.image_size,
        classes=classes,
        progress=False,
    )
    test_set = data.ImageDataset(
        source.root,
        source.manifest,
        "test",
        image_size=args.image_size,
        classes=classes,
        progress=False,
    )
    cfg = TrainConfig(arch=args.arch, image_size=args.image_size, epochs=1, device="cpu")
    bare_passes(cfg, train_set, test_set)  # warm-up
    limit = bare_passes(cfg, train_set, test_set)
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        fine_tune(cfg, train_set, test_set, run_dir, progress=False)
        ours = time.perf_counter() - start
    print(
        f"{args.arch} at {args.image_size} px, "
        f"{len(train_set)} train + {len(test_set)} test images, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"bare passes of one epoch: {limit:6.2f} s")
    print(
        f"fine_tune, one epoch:     {ours:6.2f} s   "
        f"ratio to the pass-count limit: {ours / limit:.2f}"
    )


if __name__ == "__main__":
    main()
