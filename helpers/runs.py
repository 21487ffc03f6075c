"""The run cache: the data and the fine-tuned model a notebook needs, and the frames computed
from them, from a cache keyed by their parameters.

Every notebook calls :func:`load_data` or :func:`finetuned_run` with the literals of its
``parameters`` cell: the first call builds (generates the scenes, trains the model) and
stores the result under :func:`helpers.paths.cache_dir`; later calls, from any notebook with
the same parameters, load it. An interrupted training resumes where it stopped.
:func:`cached_frame` stores any table computed from a run in the run's folder.

What used to live here as well moved to the concern it belongs to (the old names still work,
with a DeprecationWarning): the example pickers to :mod:`helpers.selection`, the shortcut mark
to :mod:`helpers.shortcuts`, region masks and the fragility computation to
:mod:`helpers.attacks`.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from . import data, models, scenes
from .paths import cache_dir, params_key
from .plumbing import atomic_write_text
from .shortcuts import marked_copy
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
    run_dir = _run_dir(source, config)
    run_dir.mkdir(parents=True, exist_ok=True)
    data.write_manifest(source.manifest, run_dir / "manifest.csv")
    train_set = _image_dataset(source, "train", image_size, progress)
    test_set = _image_dataset(source, "test", image_size, progress)
    history = fine_tune(config, train_set, test_set, run_dir, progress=progress)
    model = models.load_model(run_dir / "best.pt", device=device)
    return FineTunedRun(source, config, run_dir, train_set, test_set, history, model)


def _run_dir(source: DataSource, config: TrainConfig) -> Path:
    """The cache folder of a run: keyed by the data folder, the training config (any device) and
    :data:`TRAINING_VERSION`."""
    key = params_key(
        {
            "data": str(source.root.resolve()),
            **config.to_dict(),
            "device": "any",
            "version": TRAINING_VERSION,
        }
    )
    return cache_dir() / "runs" / f"{config.arch}-{key}"


def _image_dataset(source: DataSource, split: str, image_size: int, progress: bool):
    """The ``split`` (``"train"`` or ``"test"``) images of ``source`` at ``image_size``."""
    return data.ImageDataset(
        source.root,
        source.manifest,
        split,
        image_size=image_size,
        classes=source.classes,
        progress=progress,
    )


def cached_frame(run: FineTunedRun, name: str, params: dict, compute) -> pd.DataFrame:
    """``compute()`` (a DataFrame) stored in the run's folder under ``name`` and ``params``.

    The first call computes and writes ``<run_dir>/results/<name>-<key>.csv`` (atomically, with
    a JSON sidecar holding the column types and ``df.attrs``); later calls with the same
    ``params``, from any notebook, read it back with the same types and attrs.
    """
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
    atomic_write_text(meta, json.dumps(info, default=float))
    atomic_write_text(csv, df.to_csv(index=indexed))
    return df


# Names that moved out of this module: name -> the module that holds it now.
_MOVED = {
    "pick_examples": "helpers.selection",
    "per_class_indices": "helpers.selection",
    "example_table": "helpers.selection",
    "attack_subset": "helpers.selection",
    "add_shortcut_marks": "helpers.shortcuts",
    "shortcut_usage": "helpers.shortcuts",
    "SHORTCUT_FRACTION": "helpers.shortcuts",
    "region_masks": "helpers.attacks",
    "fragility": "helpers.attacks",
    "SEARCH_VERSION": "helpers.attacks",
}


def __getattr__(name: str):
    """The moved names, from their new module (imported when first asked for)."""
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    warnings.warn(
        f"helpers.runs.{name} moved to {_MOVED[name]}.{name}", DeprecationWarning, stacklevel=2
    )
    return getattr(importlib.import_module(_MOVED[name]), name)
