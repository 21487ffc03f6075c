"""The planted shortcut: a small mark drawn on images of one class, a marked copy of a data
folder, and whether a model reads the mark."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from . import data, folding, scenes
from .paths import cache_dir, params_key
from .plumbing import eval_mode

SHORTCUT_FRACTION = 0.9  # share of the shortcut class's training images that carry the mark


def marked_copy(
    root: Path,
    manifest: pd.DataFrame,
    shortcut_class: str,
    *,
    fraction: float = SHORTCUT_FRACTION,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """A copy of the data folder ``root`` in the cache in which ``fraction`` of the training
    images of ``shortcut_class`` carry the shortcut mark (:func:`helpers.scenes.add_shortcut_mark`,
    about 3 % of the image near the top-left corner); no test image is marked.

    The user's folder is only read. The marked images are written anew (same name and format);
    every other file of the manifest is a symbolic link to the original (a copy where links are
    not allowed). The boxes are listed in ``shortcut_marks.csv``, as in the generated scenes.
    Built once per folder, class, fraction and seed, then reused.
    """
    classes = data.classes_of(manifest)
    if shortcut_class not in classes:
        raise ValueError(
            f"shortcut_class {shortcut_class!r} is not a class of {root}; "
            f"expected one of {', '.join(classes)}"
        )
    files = manifest.sort_values("path")
    params = {
        "data": str(Path(root).resolve()),
        "files": len(files),
        "class": shortcut_class,
        "fraction": float(fraction),
        "seed": int(seed),
    }
    dest = cache_dir() / f"marked-{params_key(params)}"
    if (dest / "marked.json").exists():
        return dest
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rows = _fill_marked_copy(
        tmp, Path(root), files, shortcut_class, fraction=fraction, seed=seed, progress=progress
    )
    scenes._write_marks(tmp, rows)
    (tmp / "marked.json").write_text(json.dumps(params, indent=2))
    try:
        os.replace(tmp, dest)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _fill_marked_copy(
    tmp: Path,
    root: Path,
    files: pd.DataFrame,
    shortcut_class: str,
    *,
    fraction: float,
    seed: int,
    progress: bool,
) -> list[tuple]:
    """Put every file of ``files`` (manifest rows, sorted by path) under ``tmp``: the chosen
    training images of ``shortcut_class`` marked anew, every other file a link to the original;
    returns the rows of ``shortcut_marks.csv``."""
    from .progress import tqdm

    rows, k = [], 0
    for row in tqdm(list(files.itertuples()), desc="marking a copy", disable=not progress):
        src, dst = root / row.path, tmp / row.path
        dst.parent.mkdir(parents=True, exist_ok=True)
        if row.split == "train" and row.label == shortcut_class and row.status == "ok":
            k += 1
            if (k * scenes._GOLDEN) % 1.0 < fraction:  # the scenes' low-discrepancy choice
                box = _write_marked(src, dst, np.random.default_rng([seed, k]))
                split_dir = Path(row.path).parts[0]
                rows.append((split_dir, shortcut_class, dst.name, *box))
                continue
        _link_or_copy(src, dst)
    return rows


def _write_marked(src: Path, dst: Path, rng: np.random.Generator) -> tuple:
    """Write ``src`` with the shortcut mark drawn on it to ``dst``, in the same format (JPEG at
    quality 95 without chroma subsampling, or PNG); returns the mark's box."""
    rgb = data.load_rgb(src)
    drawn, box = scenes.add_shortcut_mark(rgb, rng)
    fmt = "PNG" if src.suffix.lower() == ".png" else "JPEG"
    Image.fromarray(drawn).save(
        dst, format=fmt, **({"quality": 95, "subsampling": 0} if fmt == "JPEG" else {})
    )
    return box


def _link_or_copy(src: Path, dst: Path) -> None:
    """A symbolic link ``dst`` to the original ``src``, or a copy where links are not allowed."""
    try:
        os.symlink(src.resolve(), dst)
    except OSError:
        shutil.copy2(src, dst)


def add_shortcut_marks(images, *, seed: int = 0):
    """Draw the shortcut mark (see :func:`helpers.scenes.add_shortcut_mark`) on copies of
    ``images`` ([N,3,H,W] in [0,1]); returns the marked images and the boxes [N, 4]
    (x0, y0, x1, y1)."""
    import torch

    marked, boxes = [], []
    for i, image in enumerate(images):
        rgb = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        drawn, box = scenes.add_shortcut_mark(rgb, np.random.default_rng([seed, i]))
        marked.append(torch.from_numpy(drawn).permute(2, 0, 1).float() / 255)
        boxes.append(box)
    return torch.stack(marked), np.asarray(boxes)


def shortcut_usage(
    models_by_name: dict, images, labels, target: int, *, seed: int = 0
) -> pd.DataFrame:
    """Does a model use the planted mark? Per model: accuracy on ``images`` without and with the
    mark (:func:`add_shortcut_marks`), and the mean probability of the ``target`` class (the
    shortcut class) on the images of the OTHER classes, without and with the mark."""
    import torch

    marked, _ = add_shortcut_marks(images, seed=seed)
    labels = torch.as_tensor(np.asarray(labels))
    others = labels != target
    rows = {}
    for name, model in models_by_name.items():
        model = folding.folded(model, images)
        with torch.no_grad(), eval_mode(model):
            p_clean, p_marked = model(images).softmax(1), model(marked).softmax(1)
        rows[name] = {
            "accuracy": float((p_clean.argmax(1) == labels).float().mean()),
            "accuracy, marked": float((p_marked.argmax(1) == labels).float().mean()),
            "P(target), other classes": float(p_clean[others, target].mean()),
            "P(target), other classes, marked": float(p_marked[others, target].mean()),
        }
    return pd.DataFrame(rows).T
