"""Read and validate folders of labelled images (Intel Image Classification layout and kin).

Accepted layouts under a data folder ``root`` (other top-level folders such as ``seg_pred/`` or
``masks/`` are ignored)::

    root/seg_train/seg_train/<class>/*.jpg   root/seg_test/seg_test/<class>/*.jpg   (Kaggle)
    root/seg_train/<class>/*.jpg             root/seg_test/<class>/*.jpg
    root/train/<class>/*.jpg                 root/test/<class>/*.jpg
                                             (+ optional root/val|valid|validation/<class>/)

``scan_images`` decodes every file once and returns a manifest (one row per file, bad files
included with a reason); ``ImageDataset`` serves the usable rows of one split as float tensors
in [0, 1]. Nothing here ever renames, moves, rewrites or deletes a file in the data folder.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from helpers.plumbing import atomic_write_text
from helpers.progress import tqdm

__all__ = [
    "DataError",
    "DataWarning",
    "IMAGE_EXTENSIONS",
    "MANIFEST_COLUMNS",
    "find_splits",
    "scan_images",
    "write_manifest",
    "read_manifest",
    "classes_of",
    "load_rgb",
    "ImageDataset",
    "split_train_val",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
MANIFEST_COLUMNS = ["path", "split", "label", "width", "height", "mode", "status", "reason"]

# PIL modes that convert to RGB without guessing a value range. 16-bit and float modes
# (I, I;16, F ...) and exotic colour spaces are reported as "unsupported mode".
SUPPORTED_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}
)

# Split-folder names recognised at the top of the data folder, per split.
_SPLIT_NAMES = {
    "train": ("seg_train", "train"),
    "val": ("seg_val", "val", "valid", "validation"),
    "test": ("seg_test", "test"),
}
_SPLIT_ORDER = ("train", "val", "test")
_IGNORED_CLASS_DIRS = {"__MACOSX"}

_LAYOUTS_TEXT = (
    "expected one of these layouts:\n"
    "  <root>/seg_train/seg_train/<class>/*.jpg and <root>/seg_test/seg_test/<class>/*.jpg "
    "(Kaggle Intel Image Classification)\n"
    "  <root>/seg_train/<class>/*.jpg and <root>/seg_test/<class>/*.jpg\n"
    "  <root>/train/<class>/*.jpg and <root>/test/<class>/*.jpg "
    "(optional third split: val/, valid/ or validation/)"
)


class DataError(ValueError):
    """A data folder, manifest or parameter is not what the loader expects."""


class DataWarning(UserWarning):
    """Something in the data is suspicious but usable (e.g. a test class with no image)."""


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------
def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def find_splits(root) -> dict[str, Path]:
    """Map ``"train"``, ``"test"`` (and ``"val"`` when present) to the folders holding classes.

    Split folder names are matched case-insensitively. A Kaggle-style doubled folder
    (``seg_train/seg_train``) is followed. Raises :class:`DataError` when ``root`` is missing
    or the layout is not one of the accepted ones (the message lists what was found).
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder not found: {root}; {_LAYOUTS_TEXT}")
    if not root.is_dir():
        raise DataError(f"data folder is not a folder: {root}; {_LAYOUTS_TEXT}")
    seen = _visible_dirs(root)
    by_lower: dict[str, list[Path]] = {}
    for p in seen:
        by_lower.setdefault(p.name.lower(), []).append(p)

    splits: dict[str, Path] = {}
    for split in _SPLIT_ORDER:
        matches = [p for name in _SPLIT_NAMES[split] for p in by_lower.get(name, [])]
        if len(matches) > 1:
            raise DataError(
                f"ambiguous data folder {root}: several folders look like the {split} split: "
                f"{', '.join(p.name + '/' for p in matches)}; keep only one; {_LAYOUTS_TEXT}"
            )
        if matches:
            folder = matches[0]
            inner = [p for p in _visible_dirs(folder) if p.name.lower() == folder.name.lower()]
            splits[split] = inner[0] if inner else folder

    missing = [s for s in ("train", "test") if s not in splits]
    if missing:
        found = ", ".join(p.name + "/" for p in seen) or "no folders"
        raise DataError(
            f"no recognisable layout in {root}: missing the {' and '.join(missing)} split "
            f"folder(s); found: {found}; {_LAYOUTS_TEXT}"
        )
    return splits


def _class_dirs(split: str, folder: Path) -> dict[str, Path]:
    dirs = {p.name: p for p in _visible_dirs(folder) if p.name not in _IGNORED_CLASS_DIRS}
    if not dirs:
        raise DataError(
            f"no class folders in the {split} split folder {folder}: expected one folder per "
            f"class (e.g. {folder}/forest/*.jpg); {_LAYOUTS_TEXT}"
        )
    stray = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if stray:
        shown = ", ".join(stray[:5]) + (" ..." if len(stray) > 5 else "")
        warnings.warn(
            f"ignored {len(stray)} file(s) directly in the {split} split folder {folder} "
            f"(not inside a class folder): {shown}",
            DataWarning,
            stacklevel=3,
        )
    return dirs


def _check_same_classes(class_dirs: dict[str, dict[str, Path]], splits: dict[str, Path]):
    all_classes = sorted(set().union(*(set(d) for d in class_dirs.values())))
    problems = []
    for name in all_classes:
        have = [s for s in class_dirs if name in class_dirs[s]]
        lack = [s for s in class_dirs if name not in class_dirs[s]]
        if lack:
            problems.append(
                f"class folder '{name}' is in {', '.join(have)} but missing from "
                f"{', '.join(f'{s} ({splits[s]})' for s in lack)}"
            )
    if problems:
        listing = "; ".join(f"{s}: {sorted(d)}" for s, d in class_dirs.items())
        raise DataError(
            "every split must have the same class folders: "
            + "; ".join(problems)
            + f". Classes found per split: {listing}"
        )


# --------------------------------------------------------------------------------------------
# Scanning
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _strict_truncation():
    """Make truncated files raise even if someone enabled PIL's LOAD_TRUNCATED_IMAGES."""
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def _short(exc: BaseException, limit: int = 80) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _inspect(path: Path, rel_parts: tuple[str, ...], min_side: int) -> dict:
    """One manifest row's measurements for ``path`` (reads the file, never writes it)."""
    row = {"width": 0, "height": 0, "mode": "", "status": "bad", "reason": ""}
    name = path.name
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        row["reason"] = f"not an image ({path.suffix if path.suffix else name})"
        return row
    if any(part.startswith(".") for part in rel_parts):
        row["reason"] = f"hidden file ({'/'.join(rel_parts)})"
        return row
    try:
        size = path.stat().st_size
    except OSError as exc:
        row["reason"] = f"unreadable: {_short(exc)}"
        return row
    if size == 0:
        row["reason"] = "empty file"
        return row
    try:
        with Image.open(path) as im:
            row["width"], row["height"] = im.size
            row["mode"] = im.mode
            try:
                im.load()
            except (OSError, EOFError, SyntaxError) as exc:
                msg = str(exc).lower()
                truncated = isinstance(exc, EOFError) or "truncat" in msg or "incomplete" in msg
                row["reason"] = "truncated" if truncated else f"corrupt: {_short(exc)}"
                return row
            row["width"], row["height"] = im.size
            row["mode"] = im.mode
    except UnidentifiedImageError:
        row["reason"] = "corrupt: cannot identify image"
        return row
    except Image.DecompressionBombError as exc:
        row["reason"] = f"too large: {_short(exc)}"
        return row
    except PermissionError as exc:
        row["reason"] = f"unreadable: {_short(exc)}"
        return row
    except Exception as exc:  # PIL raises many types on malformed data; report and go on
        row["reason"] = f"corrupt: {_short(exc)}"
        return row
    if row["mode"] not in SUPPORTED_MODES:
        row["reason"] = f"unsupported mode ({row['mode']})"
        return row
    w, h = row["width"], row["height"]
    if min(w, h) < min_side:
        row["reason"] = f"too small ({w}x{h} < {min_side})"
        return row
    row["status"] = "ok"
    return row


def _list_files(class_dir: Path) -> list[tuple[Path, tuple[str, ...]]]:
    """Every file below a class folder, with its path parts relative to that folder."""
    out = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames.sort()
        base = Path(dirpath)
        rel_dir = base.relative_to(class_dir).parts
        for fname in sorted(filenames):
            out.append((base / fname, rel_dir + (fname,)))
    return out


def _reason_summary(rows: pd.DataFrame) -> str:
    if rows.empty:
        return "no files"
    counts = rows["reason"].value_counts()
    parts = [f"{n} {reason}" for reason, n in counts.items()]
    return f"{len(rows)} file(s): " + ", ".join(parts)


def scan_images(root, *, min_side: int = 32, progress: bool = True) -> pd.DataFrame:
    """Decode every file under the class folders of ``root`` and return the manifest.

    Columns: ``path`` (relative to root, POSIX), ``split``, ``label``, ``width``, ``height``,
    ``mode`` (as found), ``status`` ("ok"/"bad") and ``reason`` ("" when ok). Rows are sorted
    by split, label, path. Raises :class:`DataError` when the layout is wrong, a class folder
    is missing from a split, or a train class has no usable image; warns
    (:class:`DataWarning`) when a test/val class has none. Only reads the folder.
    """
    if isinstance(min_side, bool) or not isinstance(min_side, (int, np.integer)) or min_side < 1:
        raise DataError(f"min_side must be a positive integer, got {min_side!r}")
    root = Path(root)
    splits = find_splits(root)
    class_dirs = {split: _class_dirs(split, folder) for split, folder in splits.items()}
    _check_same_classes(class_dirs, splits)

    jobs = []
    for split, classes in class_dirs.items():
        for label, cdir in classes.items():
            for path, rel_parts in _list_files(cdir):
                jobs.append((split, label, path, rel_parts))

    rows = []
    with _strict_truncation():
        for split, label, path, rel_parts in tqdm(
            jobs, desc="scanning images", unit="file", disable=not progress
        ):
            row = _inspect(path, rel_parts, int(min_side))
            rel = path.relative_to(root).as_posix()
            rows.append({"path": rel, "split": split, "label": label, **row})

    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    manifest = manifest.astype({"width": "int64", "height": "int64"})
    manifest = manifest.sort_values(["split", "label", "path"], kind="mergesort")
    manifest = manifest.reset_index(drop=True)
    manifest.attrs["root"] = str(root.resolve())

    for split, classes in class_dirs.items():
        for label, cdir in classes.items():
            sel = manifest[(manifest["split"] == split) & (manifest["label"] == label)]
            if (sel["status"] == "ok").any():
                continue
            msg = (
                f"class '{label}' has no usable image in the {split} split ({cdir}): "
                f"{_reason_summary(sel)}"
            )
            if split == "train":
                raise DataError(msg + "; every class needs at least one valid training image")
            warnings.warn(msg, DataWarning, stacklevel=2)
    return manifest


# --------------------------------------------------------------------------------------------
# Manifest files
# --------------------------------------------------------------------------------------------
def _check_manifest(manifest) -> None:
    if not isinstance(manifest, pd.DataFrame):
        raise DataError(f"expected a manifest DataFrame from scan_images, got {type(manifest)}")
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise DataError(
            f"manifest is missing column(s) {missing}; expected {MANIFEST_COLUMNS}, "
            f"found {list(manifest.columns)}"
        )


def write_manifest(manifest: pd.DataFrame, path) -> Path:
    """Write the manifest as CSV atomically (temporary file in the same folder, then rename).

    Refuses to write inside the scanned data folder (known from ``manifest.attrs["root"]``),
    so the user's folder is never modified. Returns the path written.
    """
    _check_manifest(manifest)
    path = Path(path)
    root = manifest.attrs.get("root")
    if root:
        target = path.resolve()
        if target == Path(root) or Path(root) in target.parents:
            raise DataError(
                f"refusing to write the manifest inside the data folder {root}: choose a path "
                f"outside it (e.g. in the project's cache folder), got {path}"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(
        path, manifest[MANIFEST_COLUMNS].to_csv(index=False, lineterminator="\n")
    )


def read_manifest(path) -> pd.DataFrame:
    """Read a manifest written by :func:`write_manifest` back with the same dtypes."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest file not found: {path}")
    df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    _check_manifest(df)
    df = df[MANIFEST_COLUMNS].astype({"width": "int64", "height": "int64"})
    return df


def classes_of(manifest: pd.DataFrame) -> list[str]:
    """Sorted class names (class folder names) present in the manifest."""
    _check_manifest(manifest)
    return sorted(str(c) for c in manifest["label"].unique())


def class_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Usable images per class (rows) and split (columns, train first)."""
    _check_manifest(manifest)
    ok = manifest[manifest["status"] == "ok"]
    counts = pd.crosstab(ok["label"], ok["split"]).reindex(classes_of(manifest), fill_value=0)
    order = [s for s in ("train", "val", "test") if s in counts.columns]
    counts = counts[order + [c for c in counts.columns if c not in order]]
    counts.index.name, counts.columns.name = "class", None
    return counts


def sample_per_class(
    manifest: pd.DataFrame, *, split: str = "train", per_class: int = 6, seed: int = 0
) -> pd.DataFrame:
    """``per_class`` usable images of each class of ``split``, drawn with ``seed``, class by
    class."""
    _check_manifest(manifest)
    ok = manifest[(manifest["status"] == "ok") & (manifest["split"] == split)]
    picks = [
        ok[ok["label"] == c]
        .sample(n=min(per_class, int((ok["label"] == c).sum())), random_state=seed)
        .sort_values("path")
        for c in classes_of(manifest)
    ]
    return pd.concat(picks)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode not in SUPPORTED_MODES:
        raise DataError(f"unsupported image mode {im.mode!r}; supported: {sorted(SUPPORTED_MODES)}")
    has_alpha = im.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
        im.mode in ("P", "L", "RGB", "1") and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def load_rgb(path, size: int | None = None) -> np.ndarray:
    """Load one image as uint8 ``H x W x 3`` RGB; resize to ``size x size`` (bilinear) if given.

    Greyscale, CMYK, palette and alpha images are converted; transparent areas are
    composited onto white. EXIF orientation is not applied (like torchvision's loaders).
    """
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1
    ):
        raise DataError(f"size must be a positive integer or None, got {size!r}")
    path = Path(path)
    try:
        with _strict_truncation(), Image.open(path) as im:
            im.load()
            rgb = _to_rgb(im)
    except DataError as exc:
        raise DataError(f"cannot load {path}: {exc}") from None
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except Exception as exc:
        raise DataError(f"cannot load {path} as an image: {_short(exc, 200)}") from exc
    if size is not None:
        rgb = rgb.resize((int(size), int(size)), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8).copy()


class ImageDataset(torch.utils.data.Dataset):
    """The usable (status "ok") images of one split, as float tensors in [0, 1].

    ``dataset[i]`` is ``(image [3, S, S] float32, label int, i)``. With ``preload=True`` every
    image is decoded once into one uint8 tensor ``[N, 3, S, S]`` (``.images``).
    """

    def __init__(
        self,
        root,
        manifest: pd.DataFrame,
        split: str,
        *,
        image_size: int,
        classes: list[str] | None = None,
        preload: bool = True,
        progress: bool = True,
    ):
        _check_manifest(manifest)
        if (
            isinstance(image_size, bool)
            or not isinstance(image_size, (int, np.integer))
            or (image_size < 1)
        ):
            raise DataError(f"image_size must be a positive integer, got {image_size!r}")
        present = sorted(manifest["split"].unique())
        if split not in present:
            raise DataError(f"split {split!r} is not in the manifest; splits found: {present}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"data folder not found: {self.root}")
        self.split = split
        self.image_size = int(image_size)
        self.classes = list(classes) if classes is not None else classes_of(manifest)
        if len(set(self.classes)) != len(self.classes):
            raise DataError(f"classes must be unique, got {self.classes}")
        rows = manifest[(manifest["split"] == split) & (manifest["status"] == "ok")]
        unknown = sorted(set(rows["label"]) - set(self.classes))
        if unknown:
            raise DataError(
                f"labels {unknown} in the {split} split are not among classes {self.classes}"
            )
        index = {c: k for k, c in enumerate(self.classes)}
        self.paths: list[str] = [str(p) for p in rows["path"]]
        self.labels = torch.tensor([index[c] for c in rows["label"]], dtype=torch.long)
        self.images: torch.Tensor | None = None
        if preload:
            bar = tqdm(self.paths, desc=f"loading {split}", unit="img", disable=not progress)
            self.images = self._read_all(bar)

    def _read_chw(self, rel: str) -> np.ndarray:
        return load_rgb(self.root / rel, self.image_size).transpose(2, 0, 1)

    def _read(self, rel: str) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self._read_chw(rel)))

    def _read_all(self, paths) -> torch.Tensor:
        # fill a numpy array (no per-image torch ops: torch's small parallel copies stall
        # badly when the few CPU cores are busy), then hand it to torch without a copy
        s = self.image_size
        out = np.empty((len(self.paths), 3, s, s), dtype=np.uint8)
        for k, rel in enumerate(paths):
            out[k] = self._read_chw(rel)
        return torch.from_numpy(out)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        n = len(self.paths)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} images")
        k = i % n
        raw = self.images[k] if self.images is not None else self._read(self.paths[k])
        return raw.float().div_(255.0), int(self.labels[k]), i

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split at once: float images ``[N, 3, S, S]`` in [0, 1] and labels."""
        if self.images is not None:
            raw = self.images
        else:
            raw = self._read_all(self.paths)
        return raw.float().div_(255.0), self.labels.clone()

    def __repr__(self) -> str:
        return (
            f"ImageDataset(split={self.split!r}, n={len(self)}, classes={self.classes}, "
            f"image_size={self.image_size}, preloaded={self.images is not None})"
        )


# --------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------
def split_train_val(
    n: int, *, val_fraction: float, seed: int, labels=None
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split of ``range(n)`` into sorted (train_idx, val_idx) int64 arrays.

    With ``labels`` the split is stratified: each class gives ``round(count * val_fraction)``
    items to validation, but always keeps at least one in training.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise DataError(f"n must be a non-negative integer, got {n!r}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    rng = np.random.default_rng(seed)
    if labels is None:
        n_val = int(round(n * float(val_fraction)))
        val = rng.permutation(n)[:n_val]
    else:
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) != n:
            raise DataError(f"labels must be 1-D with n={n} entries, got shape {labels.shape}")
        parts = []
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            k = min(int(round(len(idx) * float(val_fraction))), len(idx) - 1)
            parts.append(rng.permutation(idx)[:k])
        val = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    val = np.sort(val.astype(np.int64))
    mask = np.ones(n, dtype=bool)
    mask[val] = False
    train = np.flatnonzero(mask).astype(np.int64)
    return train, val
