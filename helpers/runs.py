"""The data and the fine-tuned model a notebook needs, from a cache keyed by its parameters.

Every notebook calls :func:`load_data` or :func:`finetuned_run` with the literals of its
``parameters`` cell: the first call builds (generates the scenes, trains the model) and
stores the result under :func:`helpers.paths.cache_dir`; later calls, from any notebook with
the same parameters, load it. An interrupted training resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from . import data, models, scenes
from .paths import cache_dir, params_key
from .train import TrainConfig, TrainHistory, fine_tune

# Examples of what the scanner must catch, planted in the generated scene folder so that
# notebook 01 shows the scan at work: (file name, what is written).
PLANTED_BAD_FILES = (".DS_Store", "corrupt.jpg", "truncated.jpg", "tiny.jpg", "greyscale.jpg")
# Part of every run's cache key: raise it when a change to models/train alters what training yields.
TRAINING_VERSION = 2
# Part of the embedded scenes' folder key: raise it when the planted files change (2: the
# greyscale file is a new scene of its own, no longer a copy of another training image).
PLANTED_VERSION = 2


@dataclass
class DataSource:
    root: Path  # folder in Intel layout
    manifest: pd.DataFrame  # one row per file found, see helpers.data.scan_images
    is_scenes: bool  # True for the embedded scenes (which have ground-truth masks)

    @property
    def classes(self) -> list[str]:
        return data.classes_of(self.manifest)


def load_data(
    *,
    data_dir: str = "",
    scenes_per_class: int = 120,
    test_scenes_per_class: int = 50,
    scene_size: int = 128,
    shortcut_class: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> DataSource:
    """Scan ``data_dir`` (Intel layout), or generate the embedded scenes when it is ``""``."""
    if data_dir:
        root = Path(data_dir).expanduser()
        manifest = data.scan_images(root, progress=progress)
        if shortcut_class:
            root = marked_copy(root, manifest, shortcut_class, seed=seed, progress=progress)
            with warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore"
                )  # the user's bad files were reported by the first scan
                manifest = data.scan_images(root, progress=progress)
        return DataSource(root, manifest, is_scenes=False)
    params = dict(
        n_train=scenes_per_class,
        n_test=test_scenes_per_class,
        size=scene_size,
        seed=seed,
        shortcut_class=shortcut_class or None,
    )
    if shortcut_class:
        params["shortcut_hybrid_share"] = scenes.SHORTCUT_HYBRID_SHARE
    root = cache_dir() / f"scenes-{params_key({**params, 'planted': PLANTED_VERSION})}"
    scenes.write_scenes(root, **params, progress=progress)
    _plant_bad_files(root, size=scene_size, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = data.scan_images(root, progress=progress)
    return DataSource(root, manifest, is_scenes=True)


NO_MASKS = (
    "Pointing game and relevance mass left out: they need a ground-truth mask of the region "
    "that makes each image its class, and only the embedded scenes have one."
)
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
    from .progress import tqdm

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
    rows, k = [], 0
    for row in tqdm(list(files.itertuples()), desc="marking a copy", disable=not progress):
        src, dst = Path(root) / row.path, tmp / row.path
        dst.parent.mkdir(parents=True, exist_ok=True)
        if row.split == "train" and row.label == shortcut_class and row.status == "ok":
            k += 1
            if (k * scenes._GOLDEN) % 1.0 < fraction:  # the scenes' low-discrepancy choice
                rgb = data.load_rgb(src)
                drawn, box = scenes.add_shortcut_mark(rgb, np.random.default_rng([seed, k]))
                fmt = "PNG" if src.suffix.lower() == ".png" else "JPEG"
                Image.fromarray(drawn).save(
                    dst, format=fmt, **({"quality": 95, "subsampling": 0} if fmt == "JPEG" else {})
                )
                split_dir = Path(row.path).parts[0]
                rows.append((split_dir, shortcut_class, dst.name, *box))
                continue
        try:
            os.symlink(src.resolve(), dst)
        except OSError:
            shutil.copy2(src, dst)
    scenes._write_marks(tmp, rows)
    (tmp / "marked.json").write_text(json.dumps(params, indent=2))
    try:
        os.replace(tmp, dest)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _plant_bad_files(root: Path, *, size: int = 128, seed: int = 0) -> None:
    """Files the scanner must report (hidden file, corrupt, truncated, tiny) and one it must
    accept and convert: ``greyscale.jpg``, a NEW scene of the first class (its own random
    stream) saved in mode L. It is a training image like the others, so it must not be a copy
    of another image: a copy would land, via the train/validation split, in both parts."""
    folder = root / "seg_train" / "seg_train" / scenes.CLASSES[0]
    if (folder / PLANTED_BAD_FILES[-1]).exists():
        return
    good = sorted(folder.glob("*.jpg"))[0].read_bytes()
    rng = np.random.default_rng(0)
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    (folder / "corrupt.jpg").write_bytes(rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    Image.new("RGB", (16, 16), (90, 140, 200)).save(folder / "tiny.jpg")
    rgb, _ = scenes.render_scene(
        scenes.CLASSES[0], np.random.default_rng([int(seed), 2**31 - 1]), int(size)
    )
    Image.fromarray(rgb).convert("L").save(folder / "greyscale.jpg")


@dataclass
class FineTunedRun:
    source: DataSource
    config: TrainConfig
    run_dir: Path
    train_set: data.ImageDataset
    test_set: data.ImageDataset
    history: TrainHistory
    model: models.ImageClassifier  # the best checkpoint (lowest validation loss), in eval mode

    @property
    def classes(self) -> list[str]:
        return list(self.test_set.classes)

    def test_masks(self) -> np.ndarray:
        """[N, H, W] bool ground-truth masks of the test images (embedded scenes only)."""
        if not self.source.is_scenes:
            raise ValueError("ground-truth masks exist only for the embedded scenes")
        size = self.config.image_size
        return np.stack(
            [scenes.load_mask(self.source.root, p, size=size) for p in self.test_set.paths]
        )


def finetuned_run(
    *,
    data_dir: str = "",
    scenes_per_class: int = 120,
    test_scenes_per_class: int = 50,
    scene_size: int = 128,
    shortcut_class: str | None = None,
    arch: str = "efficientnet_lite0",
    weights: str | None = "imagenet",
    image_size: int = 128,
    epochs: int = 10,
    batch_size: int = 32,
    learning_rate: float = 3e-4,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> FineTunedRun:
    """Load the fine-tuned model and its history for these parameters, training it if missing."""
    weights = None if weights in (None, "", "none", "None") else weights
    source = load_data(
        data_dir=data_dir,
        scenes_per_class=scenes_per_class,
        test_scenes_per_class=test_scenes_per_class,
        scene_size=scene_size,
        shortcut_class=shortcut_class,
        seed=seed,
        progress=progress,
    )
    config = TrainConfig(
        arch=arch,
        weights=weights,
        image_size=image_size,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        device=device,
    )
    key = params_key(
        {
            "data": str(source.root.resolve()),
            **config.to_dict(),
            "device": "any",
            "version": TRAINING_VERSION,
        }
    )
    run_dir = cache_dir() / "runs" / f"{arch}-{key}"
    run_dir.mkdir(parents=True, exist_ok=True)
    data.write_manifest(source.manifest, run_dir / "manifest.csv")
    classes = source.classes
    train_set = data.ImageDataset(
        source.root,
        source.manifest,
        "train",
        image_size=image_size,
        classes=classes,
        progress=progress,
    )
    test_set = data.ImageDataset(
        source.root,
        source.manifest,
        "test",
        image_size=image_size,
        classes=classes,
        progress=progress,
    )
    history = fine_tune(config, train_set, test_set, run_dir, progress=progress)
    model = models.load_model(run_dir / "best.pt", device=device)
    return FineTunedRun(source, config, run_dir, train_set, test_set, history, model)


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


def pick_examples(labels, preds, *, correct: int = 4, wrong: int = 4, seed: int = 0) -> np.ndarray:
    """Indices of ``correct`` correctly and ``wrong`` wrongly predicted images (fewer if there
    are not enough), drawn with ``seed`` from different classes where possible."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    rng = np.random.default_rng(seed)
    picked = []
    for is_right, count in ((True, correct), (False, wrong)):
        pool = rng.permutation(np.flatnonzero((labels == preds) == is_right))
        # round robin over the classes: each image's rank among the earlier picks of its class
        order = np.argsort(
            [np.sum(labels[pool[:k]] == labels[i]) for k, i in enumerate(pool)], kind="stable"
        )
        picked.extend(int(i) for i in pool[order][:count])
    return np.asarray(picked, dtype=np.int64)


def per_class_indices(labels, per_class: int) -> np.ndarray:
    """The first ``per_class`` indices of each class, class by class."""
    labels = np.asarray(labels)
    return np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])


def example_table(indices, labels, preds, probs, classes) -> pd.DataFrame:
    """One row per picked image: index, true class, predicted class and its confidence."""
    return pd.DataFrame(
        {
            "image": indices,
            "true": [classes[labels[i]] for i in indices],
            "predicted": [classes[preds[i]] for i in indices],
            "confidence": [float(probs[i].max()) for i in indices],
        }
    )


def cached_frame(run: FineTunedRun, name: str, params: dict, compute) -> pd.DataFrame:
    """``compute()`` (a DataFrame) stored in the run's folder under ``name`` and ``params``.

    The first call computes and writes ``<run_dir>/results/<name>-<key>.csv`` (atomically, with
    a JSON sidecar holding the column types and ``df.attrs``); later calls with the same
    ``params``, from any notebook, read it back with the same types and attrs.
    """
    import json
    import os

    folder = run.run_dir / "results"
    folder.mkdir(exist_ok=True)
    stem = f"{name}-{params_key(params)}"
    csv, meta = folder / f"{stem}.csv", folder / f"{stem}.json"
    if csv.exists() and meta.exists():
        info = json.loads(meta.read_text())
        df = pd.read_csv(csv, index_col=0 if info["indexed"] else None)
        df = df.astype(info["dtypes"])
        df.attrs = info["attrs"]
        return df
    df = compute()
    indexed = not isinstance(df.index, pd.RangeIndex)
    info = {
        "params": params,
        "indexed": indexed,
        "attrs": df.attrs,
        "dtypes": {c: str(t) for c, t in df.dtypes.items()},
    }
    for path, write in (
        (meta, lambda p: p.write_text(json.dumps(info, default=float))),
        (csv, lambda p: df.to_csv(p, index=indexed)),
    ):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        write(tmp)
        os.replace(tmp, path)
    return df


def attack_subset(run: FineTunedRun, images_per_class: int):
    """The test images the adversarial notebooks attack: the first ``images_per_class`` of each
    class. Returns (indices, images, labels)."""
    x, labels = run.test_set.tensors()
    idx = per_class_indices(labels.numpy(), images_per_class)
    return idx, x[idx], labels[idx].long()


def region_masks(
    run: FineTunedRun, indices, *, object_from: str = "auto", top_fraction: float = 0.2
) -> dict:
    """``{"object": mask, "background": its complement}``, bool [N, H, W], for test ``indices``.

    ``object_from="mask"``: the scene's ground-truth mask (embedded scenes only); ``"gradcam"``:
    the top ``top_fraction`` of the Grad-CAM map of the TRUE class (the region that holds the
    model's evidence for it); ``"auto"``: the mask where there is one, else Grad-CAM.
    """
    import torch

    from . import attacks, explain

    if object_from == "auto":
        object_from = "mask" if run.source.is_scenes else "gradcam"
    idx = np.asarray(indices)
    if object_from == "mask":
        obj = torch.from_numpy(run.test_masks()[idx])
    elif object_from == "gradcam":
        x, labels = run.test_set.tensors()
        cam = explain.explain(run.model, x[idx], labels[idx].long(), method="gradcam")
        obj = attacks.top_fraction_mask(cam, top_fraction)
    else:
        raise ValueError(
            f"unknown object_from {object_from!r}; expected 'auto', 'mask' or 'gradcam'"
        )
    return {"object": obj, "background": ~obj}


# Bumped whenever helpers.attacks.minimum_norm_epsilon changes its answers, so that a cached
# frame of an older search is not read back.
SEARCH_VERSION = 4


def fragility(
    run: FineTunedRun,
    *,
    region_images_per_class: int = 20,
    whole_images_per_class: int = 0,
    object_from: str = "auto",
    top_fraction: float = 0.2,
    steps: int = 30,
    max_eps: float = 16 / 255,
    seed: int = 0,
    batch_size: int = 64,
) -> pd.DataFrame:
    """The smallest flipping L-inf epsilon of each test image by a minimum-norm attack
    (:func:`helpers.attacks.minimum_norm_epsilon`: foolbox's FMN with ``steps`` iterations, then
    an fp32-checked line search), for the whole image on every test image (or the first
    ``whole_images_per_class`` of each class when > 0), and confined to the object and to the
    background on the first ``region_images_per_class`` test images of each class.

    The object and background regions (:func:`region_masks`) are made of EQUAL pixel count
    per image (:func:`helpers.attacks.equal_area`: the larger one subsampled at random, seeded
    per image by ``seed`` and its test index), so a region is not more fragile merely for being
    larger; column ``pixels`` records the count. Epsilons above ``max_eps`` count as not
    flipped. Cached in the run's folder so notebooks 09 and 10 share it. Measured on the
    embedded default (300 test images whole, 20 per class in each region: 540 searches, 30 FMN
    steps each): about 170 s on a 2-core CPU.

    Returns the long frame of :func:`helpers.attacks.fragility_by_region`, one row per image
    and region (``image`` is the index in the test set): ``image``, ``region``, ``label``,
    ``epsilon``, ``flipped``, ``already_wrong``, ``pixels``, ``confidence_before``,
    ``flip_class`` and more."""
    from . import attacks

    params = dict(
        region_images_per_class=region_images_per_class,
        whole_images_per_class=whole_images_per_class,
        object_from=object_from,
        top_fraction=top_fraction,
        steps=steps,
        max_eps=max_eps,
        seed=seed,
        attack="fmn",
        equal_area=True,
        search=SEARCH_VERSION,
    )

    def compute():
        x, labels = run.test_set.tensors()
        labels = labels.long()
        kw = dict(direction="fmn", steps=steps, max_eps=max_eps, batch_size=batch_size)
        whole_idx = (
            np.arange(len(x))
            if whole_images_per_class <= 0
            else per_class_indices(labels.numpy(), whole_images_per_class)
        )
        whole = attacks.fragility_by_region(run.model, x[whole_idx], labels[whole_idx], {}, **kw)
        whole["image"] = whole_idx[whole["image"].to_numpy()]
        frames = [whole]
        if region_images_per_class > 0:
            idx, xs, ys = attack_subset(run, region_images_per_class)
            masks = region_masks(run, idx, object_from=object_from, top_fraction=top_fraction)
            obj, bg = attacks.equal_area(
                masks["object"], masks["background"], seed=seed, image_ids=idx
            )
            regions = attacks.fragility_by_region(
                run.model, xs, ys, {"whole": None, "object": obj, "background": bg}, **kw
            )
            regions["image"] = idx[regions["image"].to_numpy()]
            frames.append(regions)
        df = pd.concat(frames, ignore_index=True)
        df.attrs = {**whole.attrs, "equal_area": True}
        return df

    return cached_frame(run, "fragility", params, compute)


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
        was_training = model.training
        model.eval()
        with torch.no_grad():
            p_clean, p_marked = model(images).softmax(1), model(marked).softmax(1)
        model.train(was_training)
        rows[name] = {
            "accuracy": float((p_clean.argmax(1) == labels).float().mean()),
            "accuracy, marked": float((p_marked.argmax(1) == labels).float().mean()),
            "P(target), other classes": float(p_clean[others, target].mean()),
            "P(target), other classes, marked": float(p_marked[others, target].mean()),
        }
    return pd.DataFrame(rows).T
