"""Tests for helpers.data: layouts, the manifest of good and bad files, loading, splitting.

Every fixture image is generated in tmp_path at test time; no binary file is committed.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageFile

from helpers import data
from helpers.data import (
    DataError,
    DataWarning,
    ImageDataset,
    classes_of,
    find_splits,
    load_rgb,
    read_manifest,
    scan_images,
    split_train_val,
    write_manifest,
)

W, H = 48, 40  # fixture images are not square, so resizing is visible


# --------------------------------------------------------------------------------------------
# Fixture builders
# --------------------------------------------------------------------------------------------
def _noise(seed: int, w: int = W, h: int = H) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _jpeg(seed: int, w: int = W, h: int = H) -> bytes:
    return _encode(Image.fromarray(_noise(seed, w, h)), "JPEG", quality=95)


def _rgba_png() -> bytes:
    """Left half fully transparent (black under it), right half opaque red."""
    arr = np.zeros((H, W, 4), dtype=np.uint8)
    arr[:, W // 2 :] = (255, 0, 0, 255)
    return _encode(Image.fromarray(arr, "RGBA"), "PNG")


def _palette_png() -> bytes:
    """Palette image: index 0 (black) is transparent on the left, index 1 (blue) on the right."""
    idx = np.zeros((H, W), dtype=np.uint8)
    idx[:, W // 2 :] = 1
    im = Image.fromarray(idx, "P")
    im.putpalette([0, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    return _encode(im, "PNG", transparency=0)


def _files() -> dict[str, tuple[bytes, str, str, str]]:
    """Relative path (under a split's class folders) -> (bytes, status, reason, mode)."""
    jpg = _jpeg(1)
    grey = _encode(Image.fromarray(_noise(2)[:, :, 0], "L"), "JPEG")
    cmyk = _encode(Image.new("CMYK", (W, H), (0, 255, 255, 0)), "JPEG")  # red in CMYK
    return {
        "forest/a.jpg": (jpg, "ok", "", "RGB"),
        "forest/b.JPG": (_jpeg(3), "ok", "", "RGB"),
        "forest/c.jpeg": (_jpeg(4), "ok", "", "RGB"),
        "forest/d.png": (_encode(Image.fromarray(_noise(5)), "PNG"), "ok", "", "RGB"),
        "forest/grey.jpg": (grey, "ok", "", "L"),
        "forest/corrupt.jpg": (
            np.random.default_rng(6).integers(0, 256, 500, dtype=np.uint8).tobytes(),
            "bad",
            "corrupt: cannot identify image",
            "",
        ),
        "forest/truncated.jpg": (_jpeg(7)[: len(_jpeg(7)) // 2], "bad", "truncated", "RGB"),
        "forest/.DS_Store": (
            b"\x00\x00\x00\x01Bud1" + b"\x00" * 50,
            "bad",
            "not an image (.DS_Store)",
            "",
        ),
        "sea/e.jpg": (_jpeg(8), "ok", "", "RGB"),
        "sea/cmyk.jpg": (cmyk, "ok", "", "CMYK"),
        "sea/pal.png": (_palette_png(), "ok", "", "P"),
        "sea/empty.jpg": (b"", "bad", "empty file", ""),
        "sea/notes.txt": (b"taken on holiday\n", "bad", "not an image (.txt)", ""),
        "street/f.jpg": (_jpeg(9), "ok", "", "RGB"),
        "street/rgba.png": (_rgba_png(), "ok", "", "RGBA"),
        "street/tiny.jpg": (_jpeg(10, 8, 8), "bad", "too small (8x8 < 32)", "RGB"),
        "street/anim.gif": (
            _encode(Image.new("P", (W, H)), "GIF"),
            "bad",
            "not an image (.gif)",
            "",
        ),
        "street/._f.jpg": (jpg, "bad", "hidden file (._f.jpg)", ""),
    }


TEST_FILES = {
    "forest/t1.jpg": _jpeg(20),
    "sea/t2.jpg": _jpeg(21),
    "street/t3.png": _encode(Image.fromarray(_noise(22)), "PNG"),
}

LAYOUTS = {
    "kaggle": {"train": "seg_train/seg_train", "test": "seg_test/seg_test"},
    "one_level": {"train": "seg_train", "test": "seg_test"},
    "plain": {"train": "train", "test": "test"},
}


def _write(path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)


def make_tree(root, layout: str = "kaggle", *, extra: bool = True) -> dict[str, tuple]:
    """Build a data folder; return expected {relative path: (status, reason, mode, split)}."""
    dirs = LAYOUTS[layout]
    expected = {}
    # written in reverse order so the manifest order cannot come from creation order
    for rel, (payload, status, reason, mode) in reversed(list(_files().items())):
        path = f"{dirs['train']}/{rel}"
        _write(root / path, payload)
        expected[path] = (status, reason, mode, "train")
    for rel, payload in reversed(list(TEST_FILES.items())):
        path = f"{dirs['test']}/{rel}"
        _write(root / path, payload)
        expected[path] = ("ok", "", "RGB", "test")
    if extra:  # folders the loader must ignore
        _write(root / "seg_pred" / "seg_pred" / "p1.jpg", _jpeg(30))
        _write(root / "masks" / "forest" / "a.png", _encode(Image.new("L", (W, H)), "PNG"))
        _write(root / "README.txt", b"Intel scenes\n")
    return expected


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "intel"
    expected = make_tree(root)
    return root, expected


@pytest.fixture
def manifest(tree):
    root, _ = tree
    return scan_images(root, progress=False)


def snapshot(root) -> dict:
    """Every path under root with type, size, mtime and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if os.path.isdir(p):
                out[rel] = ("dir", st.st_mtime_ns, st.st_mode)
            else:
                with open(p, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
                out[rel] = ("file", st.st_size, st.st_mtime_ns, st.st_mode, digest)
    return out


# --------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_find_splits_accepts_the_three_layouts(tmp_path, layout):
    root = tmp_path / "d"
    make_tree(root, layout)
    splits = find_splits(root)
    assert set(splits) == {"train", "test"}
    for split, rel in LAYOUTS[layout].items():
        assert splits[split] == root / rel
    m = scan_images(root, progress=False)
    assert classes_of(m) == ["forest", "sea", "street"]
    assert set(m["split"]) == {"train", "test"}
    assert not m["path"].str.contains("seg_pred|masks|README").any()


@pytest.mark.parametrize("val_name", ["val", "valid", "validation"])
def test_plain_layout_with_val_split(tmp_path, val_name):
    root = tmp_path / "d"
    make_tree(root, "plain")
    for rel, payload in TEST_FILES.items():
        _write(root / val_name / rel, payload)
    splits = find_splits(root)
    assert splits == {"train": root / "train", "val": root / val_name, "test": root / "test"}
    m = scan_images(root, progress=False)
    val = m[m["split"] == "val"]
    assert len(val) == 3 and (val["status"] == "ok").all()
    assert val["path"].str.startswith(f"{val_name}/").all()


def test_missing_root_raises(tmp_path):
    with pytest.raises(DataError, match="not found") as err:
        find_splits(tmp_path / "nowhere")
    assert "seg_train/seg_train/<class>" in str(err.value)
    with pytest.raises(DataError):
        scan_images(tmp_path / "nowhere", progress=False)


def test_root_that_is_a_file_raises(tmp_path):
    f = tmp_path / "file.zip"
    f.write_bytes(b"PK")
    with pytest.raises(DataError, match="not a folder"):
        find_splits(f)


def test_unknown_layout_lists_what_was_found(tmp_path):
    root = tmp_path / "d"
    for name in ("images", "labels"):
        _write(root / name / "forest" / "a.jpg", _jpeg(1))
    with pytest.raises(DataError) as err:
        find_splits(root)
    msg = str(err.value)
    assert "images/" in msg and "labels/" in msg  # what was found
    assert "seg_train/seg_train/<class>" in msg and "train/<class>" in msg  # what is accepted


def test_train_without_test_is_not_a_layout(tmp_path):
    root = tmp_path / "d"
    _write(root / "seg_train" / "seg_train" / "forest" / "a.jpg", _jpeg(1))
    with pytest.raises(DataError, match="test"):
        find_splits(root)


def test_ambiguous_split_folders_raise(tmp_path):
    root = tmp_path / "d"
    make_tree(root, "plain", extra=False)
    _write(root / "seg_train" / "forest" / "a.jpg", _jpeg(1))
    with pytest.raises(DataError, match="seg_train/.*train/|train/.*seg_train/"):
        find_splits(root)


def test_class_missing_from_test_names_class_and_split(tmp_path):
    root = tmp_path / "d"
    make_tree(root)
    sea = root / "seg_test" / "seg_test" / "sea"
    for f in sea.iterdir():
        f.unlink()
    sea.rmdir()
    with pytest.raises(DataError) as err:
        scan_images(root, progress=False)
    msg = str(err.value)
    assert "'sea'" in msg and "missing from test" in msg


def test_class_missing_from_train_names_class_and_split(tmp_path):
    root = tmp_path / "d"
    make_tree(root)
    _write(root / "seg_test" / "seg_test" / "desert" / "x.jpg", _jpeg(1))
    with pytest.raises(DataError, match="'desert'.*missing from train"):
        scan_images(root, progress=False)


def test_empty_train_class_raises(tmp_path):
    root = tmp_path / "d"
    make_tree(root)
    _write(root / "seg_test" / "seg_test" / "glacier" / "g.jpg", _jpeg(11))
    _write(root / "seg_train" / "seg_train" / "glacier" / "broken.jpg", b"not a jpeg at all")
    _write(root / "seg_train" / "seg_train" / "glacier" / "readme.txt", b"x")
    with pytest.raises(DataError) as err:
        scan_images(root, progress=False)
    msg = str(err.value)
    assert "'glacier'" in msg and "train" in msg and "no usable image" in msg
    assert "corrupt: cannot identify image" in msg  # says why


def test_class_folder_with_no_files_in_train_raises(tmp_path):
    root = tmp_path / "d"
    make_tree(root)
    (root / "seg_train" / "seg_train" / "glacier").mkdir()
    _write(root / "seg_test" / "seg_test" / "glacier" / "g.jpg", _jpeg(11))
    with pytest.raises(DataError, match="'glacier'.*no usable image"):
        scan_images(root, progress=False)


def test_empty_test_class_warns(tmp_path):
    root = tmp_path / "d"
    make_tree(root)
    t = root / "seg_test" / "seg_test" / "sea" / "t2.jpg"
    t.write_bytes(b"")
    with pytest.warns(DataWarning, match="'sea'.*test"):
        m = scan_images(root, progress=False)
    row = m[m["path"] == "seg_test/seg_test/sea/t2.jpg"].iloc[0]
    assert (row["status"], row["reason"]) == ("bad", "empty file")


def test_good_tree_scans_without_warnings(tree):
    root, _ = tree
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scan_images(root, progress=False)


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------
def test_manifest_rows_status_reason_and_mode(tree, manifest):
    root, expected = tree
    assert list(manifest.columns) == data.MANIFEST_COLUMNS
    assert set(manifest["path"]) == set(expected)
    assert len(manifest) == len(expected)
    for _, row in manifest.iterrows():
        status, reason, mode, split = expected[row["path"]]
        got = (row["status"], row["reason"], row["mode"], row["split"])
        assert got == (status, reason, mode, split), row["path"]
        assert row["label"] == row["path"].split("/")[-2]
        if status == "ok":
            assert (row["width"], row["height"]) == (W, H), row["path"]
    tiny = manifest[manifest["path"].str.endswith("tiny.jpg")].iloc[0]
    assert (tiny["width"], tiny["height"]) == (8, 8)


def test_manifest_paths_are_relative_posix(manifest):
    for p in manifest["path"]:
        assert not p.startswith("/") and "\\" not in p
    assert manifest["path"].str.startswith(("seg_train/seg_train/", "seg_test/seg_test/")).all()


def test_manifest_order_is_sorted_and_deterministic(tree, manifest):
    root, _ = tree
    again = scan_images(root, progress=False)
    pd.testing.assert_frame_equal(manifest, again)
    resorted = manifest.sort_values(["split", "label", "path"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(manifest, resorted)
    assert list(manifest.index) == list(range(len(manifest)))


def test_min_side_is_respected(tree):
    root, _ = tree
    m = scan_images(root, min_side=8, progress=False)
    assert m.loc[m["path"].str.endswith("tiny.jpg"), "status"].item() == "ok"
    # every 48x40 image is now too small, so no train class is usable: the error says why
    with pytest.raises(DataError, match=r"'forest'.*5 too small \(48x40 < 41\)"):
        scan_images(root, min_side=41, progress=False)
    with pytest.raises(DataError, match="min_side"):
        scan_images(root, min_side=0, progress=False)


def test_truncated_detected_even_if_pil_allows_truncation(tree, monkeypatch):
    root, _ = tree
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    m = scan_images(root, progress=False)
    row = m[m["path"].str.endswith("truncated.jpg")].iloc[0]
    assert row["reason"] == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_scan_does_not_enable_truncated_loading(tree):
    root, _ = tree
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    scan_images(root, progress=False)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png_is_reported(tmp_path):
    root = tmp_path / "d"
    make_tree(root)
    png = _encode(Image.fromarray(_noise(40)), "PNG")
    _write(root / "seg_train" / "seg_train" / "sea" / "half.png", png[: len(png) // 2])
    m = scan_images(root, progress=False)
    assert m.loc[m["path"].str.endswith("half.png"), "reason"].item() == "truncated"


def test_unsupported_mode_is_bad(tmp_path):
    root = tmp_path / "d"
    make_tree(root)
    im16 = Image.fromarray(np.full((H, W), 1000, dtype=np.uint16))
    _write(root / "seg_train" / "seg_train" / "sea" / "deep.png", _encode(im16, "PNG"))
    m = scan_images(root, progress=False)
    row = m[m["path"].str.endswith("deep.png")].iloc[0]
    assert row["status"] == "bad" and row["reason"].startswith("unsupported mode (I")


def test_scan_and_load_leave_the_users_folder_untouched(tree):
    root, _ = tree
    before = snapshot(root)
    time.sleep(0.01)
    m = scan_images(root, progress=False)
    for rel in m.loc[m["status"] == "ok", "path"]:
        load_rgb(root / rel, 16)
    ds = ImageDataset(root, m, "train", image_size=16, progress=False)
    ds.tensors()
    ImageDataset(root, m, "test", image_size=16, preload=False)[0]
    after = snapshot(root)
    assert sorted(after) == sorted(before)  # no file added or removed
    assert after == before  # same bytes, sizes, mtimes, permissions


# --------------------------------------------------------------------------------------------
# write_manifest / classes_of
# --------------------------------------------------------------------------------------------
def test_write_manifest_round_trip(tree, manifest, tmp_path):
    root, _ = tree
    before = snapshot(root)
    out = tmp_path / "cache" / "manifest.csv"
    assert write_manifest(manifest, out) == out
    back = read_manifest(out)
    pd.testing.assert_frame_equal(back, manifest)
    # plain pandas reads it too
    plain = pd.read_csv(out, keep_default_na=False)
    assert list(plain.columns) == data.MANIFEST_COLUMNS and len(plain) == len(manifest)
    # overwriting works and leaves no temporary file behind
    write_manifest(manifest.iloc[:3], out)
    assert len(read_manifest(out)) == 3
    assert sorted(p.name for p in out.parent.iterdir()) == ["manifest.csv"]
    assert snapshot(root) == before  # nothing written next to the images


def test_stray_files_in_a_split_folder_warn(tmp_path):
    root = tmp_path / "d"
    make_tree(root)
    _write(root / "seg_train" / "seg_train" / "loose.jpg", _jpeg(1))
    with pytest.warns(DataWarning, match="loose.jpg"):
        m = scan_images(root, progress=False)
    assert not m["path"].str.endswith("loose.jpg").any()


def test_write_manifest_refuses_the_data_folder(tree, manifest):
    root, _ = tree
    before = snapshot(root)
    with pytest.raises(DataError, match="inside the data folder"):
        write_manifest(manifest, root / "manifest.csv")
    assert snapshot(root) == before


def test_write_manifest_failure_leaves_no_temp(manifest, tmp_path, monkeypatch):
    out = tmp_path / "out" / "m.csv"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(data.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_manifest(manifest, out)
    assert list(out.parent.iterdir()) == []


def test_bad_manifest_input_raises():
    with pytest.raises(DataError, match="missing column"):
        classes_of(pd.DataFrame({"path": ["a.jpg"]}))


def test_classes_of(manifest):
    assert classes_of(manifest) == ["forest", "sea", "street"]


# --------------------------------------------------------------------------------------------
# load_rgb
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "forest/a.jpg",
        "forest/b.JPG",
        "forest/c.jpeg",
        "forest/d.png",
        "forest/grey.jpg",
        "sea/cmyk.jpg",
        "sea/pal.png",
        "street/rgba.png",
    ],
)
def test_load_rgb_converts_every_ok_mode(tree, name):
    root, _ = tree
    path = root / "seg_train" / "seg_train" / name
    arr = load_rgb(path)
    assert arr.dtype == np.uint8 and arr.shape == (H, W, 3)
    small = load_rgb(path, 24)
    assert small.dtype == np.uint8 and small.shape == (24, 24, 3)


def test_load_rgb_values(tree):
    root, _ = tree
    base = root / "seg_train" / "seg_train"
    # PNG is lossless: exact pixels
    np.testing.assert_array_equal(load_rgb(base / "forest" / "d.png"), _noise(5))
    grey = load_rgb(base / "forest" / "grey.jpg").astype(int)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    cmyk = load_rgb(base / "sea" / "cmyk.jpg").astype(int)  # CMYK (0,255,255,0) is red
    assert cmyk[..., 0].mean() > 200 and cmyk[..., 1].mean() < 50 and cmyk[..., 2].mean() < 50


def test_load_rgb_transparent_area_becomes_white(tree):
    root, _ = tree
    base = root / "seg_train" / "seg_train"
    rgba = load_rgb(base / "street" / "rgba.png")
    assert (rgba[:, : W // 2] == 255).all()
    assert (rgba[:, W // 2 :] == (255, 0, 0)).all()
    pal = load_rgb(base / "sea" / "pal.png")
    assert (pal[:, : W // 2] == 255).all()
    assert (pal[:, W // 2 :] == (0, 0, 255)).all()


def test_load_rgb_resize_is_pil_bilinear(tree):
    root, _ = tree
    arr = load_rgb(root / "seg_train" / "seg_train" / "forest" / "d.png", 20)
    ref = np.asarray(Image.fromarray(_noise(5)).resize((20, 20), Image.BILINEAR))
    np.testing.assert_array_equal(arr, ref)


def test_load_rgb_errors(tree, tmp_path):
    root, _ = tree
    base = root / "seg_train" / "seg_train"
    with pytest.raises(DataError, match="not found"):
        load_rgb(tmp_path / "missing.jpg")
    with pytest.raises(DataError, match="corrupt.jpg"):
        load_rgb(base / "forest" / "corrupt.jpg")
    with pytest.raises(DataError, match="truncated"):
        load_rgb(base / "forest" / "truncated.jpg")
    with pytest.raises(DataError, match="size"):
        load_rgb(base / "forest" / "a.jpg", 0)


# --------------------------------------------------------------------------------------------
# ImageDataset
# --------------------------------------------------------------------------------------------
def test_image_dataset_train(tree, manifest):
    root, expected = tree
    ds = ImageDataset(root, manifest, "train", image_size=32, progress=False)
    ok = sorted(p for p, e in expected.items() if e[3] == "train" and e[0] == "ok")
    assert sorted(ds.paths) == ok and len(ds) == len(ok) == 10
    assert ds.classes == ["forest", "sea", "street"]
    assert ds.labels.dtype == torch.long
    want = [ds.classes.index(p.split("/")[-2]) for p in ds.paths]
    assert ds.labels.tolist() == want
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (10, 3, 32, 32)
    for i in range(len(ds)):
        x, y, j = ds[i]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert isinstance(y, int) and y == want[i] and j == i
        ref = load_rgb(root / ds.paths[i], 32)
        np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), ref / 255.0, atol=1e-6)
    xs, ys = ds.tensors()
    assert xs.shape == (10, 3, 32, 32) and xs.dtype == torch.float32
    assert 0.0 <= xs.min() and xs.max() <= 1.0 and xs.max() > 0.5
    assert torch.equal(ys, ds.labels)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_image_dataset_preload_false_matches(tree, manifest):
    root, _ = tree
    a = ImageDataset(root, manifest, "test", image_size=20, progress=False)
    b = ImageDataset(root, manifest, "test", image_size=20, preload=False)
    assert b.images is None and a.paths == b.paths
    xa, ya = a.tensors()
    xb, yb = b.tensors()
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(a[1][0], b[1][0])


def test_image_dataset_in_a_dataloader(tree, manifest):
    root, _ = tree
    ds = ImageDataset(root, manifest, "train", image_size=16, progress=False)
    x, y, i = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 3, 16, 16) and y.tolist() == ds.labels[:4].tolist()
    assert i.tolist() == [0, 1, 2, 3]


def test_image_dataset_explicit_classes_and_errors(tree, manifest):
    root, _ = tree
    ds = ImageDataset(
        root, manifest, "test", image_size=8, classes=["street", "sea", "forest"], progress=False
    )
    assert [ds.classes[k] for k in ds.labels] == [p.split("/")[-2] for p in ds.paths]
    assert ds.labels.tolist() == [2, 1, 0]
    with pytest.raises(DataError, match="not among classes"):
        ImageDataset(root, manifest, "test", image_size=8, classes=["forest"])
    with pytest.raises(DataError, match="'val'.*splits found"):
        ImageDataset(root, manifest, "val", image_size=8)
    with pytest.raises(DataError, match="image_size"):
        ImageDataset(root, manifest, "test", image_size=0)


# --------------------------------------------------------------------------------------------
# split_train_val
# --------------------------------------------------------------------------------------------
def test_split_train_val_stratified_disjoint_deterministic():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    np.random.default_rng(0).shuffle(labels)
    tr, va = split_train_val(100, val_fraction=0.2, seed=3, labels=labels)
    assert tr.dtype == np.int64 and va.dtype == np.int64
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)  # sorted, unique
    assert not set(tr) & set(va)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(100))
    assert np.bincount(labels[va]).tolist() == [10, 6, 4]  # exactly stratified
    tr2, va2 = split_train_val(100, val_fraction=0.2, seed=3, labels=labels)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    _, va3 = split_train_val(100, val_fraction=0.2, seed=4, labels=labels)
    assert not np.array_equal(va, va3)
    # also works with a LongTensor of labels, like ImageDataset.labels
    _, va4 = split_train_val(100, val_fraction=0.2, seed=3, labels=torch.as_tensor(labels))
    assert np.array_equal(va, va4)


def test_split_train_val_keeps_every_class_in_train():
    labels = np.array([0, 0, 0, 0, 1])
    tr, va = split_train_val(5, val_fraction=0.5, seed=0, labels=labels)
    assert 4 in tr and set(labels[tr]) == {0, 1}


def test_split_train_val_without_labels_and_errors():
    tr, va = split_train_val(10, val_fraction=0.3, seed=1)
    assert len(va) == 3 and len(tr) == 7 and not set(tr) & set(va)
    assert np.array_equal(va, split_train_val(10, val_fraction=0.3, seed=1)[1])
    tr, va = split_train_val(10, val_fraction=0.0, seed=1)
    assert len(va) == 0 and tr.tolist() == list(range(10))
    with pytest.raises(DataError, match="val_fraction"):
        split_train_val(10, val_fraction=1.0, seed=1)
    with pytest.raises(DataError, match="labels"):
        split_train_val(10, val_fraction=0.2, seed=1, labels=[0, 1])


def _tiny_manifest():
    rows = []
    for split, n in (("train", 5), ("test", 2)):
        for label in ("b", "a"):
            for i in range(n):
                rows.append(
                    dict(
                        path=f"{split}/{label}/{i}.jpg",
                        split=split,
                        label=label,
                        width=64,
                        height=64,
                        mode="RGB",
                        status="ok",
                        reason="",
                    )
                )
    rows.append(
        dict(
            path="train/a/x.txt",
            split="train",
            label="a",
            width=0,
            height=0,
            mode="",
            status="bad",
            reason="not an image (.txt)",
        )
    )
    return pd.DataFrame(rows)


def test_class_counts_count_only_usable_images():
    counts = data.class_counts(_tiny_manifest())
    assert list(counts.index) == ["a", "b"] and list(counts.columns) == ["train", "test"]
    assert counts.loc["a", "train"] == 5 and counts.loc["b", "test"] == 2


def test_sample_per_class_is_seeded_and_grouped_by_class():
    m = _tiny_manifest()
    a = data.sample_per_class(m, split="train", per_class=3, seed=1)
    b = data.sample_per_class(m, split="train", per_class=3, seed=1)
    assert a.equals(b) and list(a["label"]) == ["a"] * 3 + ["b"] * 3
    assert (a["status"] == "ok").all() and (a["split"] == "train").all()
    assert len(data.sample_per_class(m, split="test", per_class=9)) == 4
