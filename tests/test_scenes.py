"""Tests of the procedural scene generator (helpers.scenes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import scenes
from helpers.scenes import (
    CLASSES,
    MARK_COLORS,
    add_shortcut_mark,
    load_mask,
    mask_path,
    render_scene,
    shortcut_marks,
    write_scenes,
)

SIZE = 48
TINY = dict(n_train=3, n_test=2, size=32, progress=False)


def _render(class_name, seed=0, index=0, size=SIZE):
    return render_scene(class_name, np.random.default_rng([seed, 0, index]), size)


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(root.glob(pattern))


# ----------------------------------------------------------------------------- render_scene
@pytest.mark.parametrize("class_name", CLASSES)
def test_render_shapes_dtypes_and_mask_cover(class_name):
    covers = []
    for index in range(6):
        image, mask = _render(class_name, index=index)
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        assert mask.shape == (SIZE, SIZE) and mask.dtype == bool
        covers.append(mask.mean())
    # the class region is never empty nor the whole frame, and on average a real share of it
    assert 0.005 < min(covers) and max(covers) < 0.97, covers
    assert 0.08 < np.mean(covers) < 0.9, covers


@pytest.mark.parametrize("class_name", CLASSES)
def test_render_is_deterministic(class_name):
    a_img, a_mask = _render(class_name, seed=3)
    b_img, b_mask = _render(class_name, seed=3)
    assert a_img.tobytes() == b_img.tobytes() and np.array_equal(a_mask, b_mask)
    c_img, _ = _render(class_name, seed=4)
    assert not np.array_equal(a_img, c_img)


def test_render_uses_full_colour_range_not_flat():
    image, _ = _render("forest")
    assert image.std() > 10  # a picture, not a flat colour
    assert image.min() < 80 and image.max() > 150


def test_finishing_keeps_mask_aligned_with_image():
    # lighting, blur, noise and the random flip must move image and mask together
    image = np.zeros((32, 32, 3))
    image[:, :10, 0] = 1.0  # a red band on the left
    mask = np.zeros((32, 32), bool)
    mask[:, :10] = True
    flips = 0
    for seed in range(12):
        out, out_mask = scenes._finish(np.random.default_rng(seed), image.copy(), mask.copy())
        red = out[..., 0].astype(float) > 100
        assert (red == out_mask)[:, 2:-2].mean() > 0.95, seed
        flips += int(out_mask[:, -1].all())
    assert 0 < flips < 12  # both orientations occur


def test_unknown_class_lists_valid_ones():
    with pytest.raises(ValueError, match="buildings.*street"):
        render_scene("desert", np.random.default_rng(0))


def test_classes_constant_order():
    assert CLASSES == ("buildings", "forest", "glacier", "mountain", "sea", "street")


def test_mask_follows_the_class_region():
    # water is blue-ish, trees green-ish, ice bright: the mask picks the class's colours
    img, mask = _render("sea", index=1, size=64)
    water = img[mask].astype(float).mean(0)
    assert water[2] > water[0]
    img, mask = _render("forest", index=1, size=64)
    trees = img[mask].astype(float).mean(0)
    assert trees[1] > trees[2]
    img, mask = _render("glacier", index=2, size=64)
    assert img[mask].mean() > img[~mask].mean() - 40


def test_classes_are_separable_by_simple_colour_features():
    feats = {
        c: np.array([_render(c, index=i)[0].reshape(-1, 3).mean(0) for i in range(8)])
        for c in CLASSES
    }
    means = np.array([f.mean(0) for f in feats.values()])
    # class mean colours differ: not one palette for all
    assert np.ptp(means, axis=0).max() > 20
    # nearest-class-mean on mean colour beats chance (1/6) clearly on fresh images
    hits = 0
    for ci, c in enumerate(CLASSES):
        for i in range(8, 14):
            f = _render(c, index=i)[0].reshape(-1, 3).mean(0)
            hits += int(np.argmin(((means - f) ** 2).sum(1)) == ci)
    assert hits / (6 * 6) > 0.35


def test_classes_vary_within_class():
    images = np.array([_render("street", index=i)[0] for i in range(6)]).astype(float)
    assert images.std(axis=0).mean() > 15


# ----------------------------------------------------------------------------- shortcut mark
def test_add_shortcut_mark_box_and_colours():
    image = np.zeros((100, 100, 3), np.uint8)
    out, (x0, y0, x1, y1) = add_shortcut_mark(image, np.random.default_rng(0))
    assert image.sum() == 0  # the input is not changed
    assert 0 <= x0 < x1 <= 100 and 0 <= y0 < y1 <= 100
    assert 16 <= x1 - x0 <= 19 and y1 - y0 == x1 - x0  # about 17 % of the side
    assert x0 < 20 and y0 < 20  # near a corner
    box = out[y0:y1, x0:x1].reshape(-1, 3)
    colours = {tuple(c) for c in box}
    assert colours == set(MARK_COLORS)
    outside = out.copy()
    outside[y0:y1, x0:x1] = 0
    assert outside.sum() == 0


def test_add_shortcut_mark_positions_jitter():
    image = np.zeros((128, 128, 3), np.uint8)
    boxes = {add_shortcut_mark(image, np.random.default_rng(i))[1] for i in range(10)}
    assert len(boxes) > 3


# ----------------------------------------------------------------------------- write_scenes
def test_write_scenes_layout_counts_and_masks(tmp_path):
    root = write_scenes(tmp_path / "data", **TINY)
    assert root == tmp_path / "data"
    for split, n in (("seg_train", 3), ("seg_test", 2)):
        assert sorted(p.name for p in (root / split / split).iterdir()) == sorted(CLASSES)
        for c in CLASSES:
            images = _files(root / split / split / c, "*")
            assert [p.name for p in images] == [f"{i:05d}.jpg" for i in range(n)]
            for p in images:
                with Image.open(p) as im:
                    assert im.format == "JPEG" and im.size == (32, 32) and im.mode == "RGB"
                m = mask_path(root, p)
                assert m == root / "masks" / split / c / p.with_suffix(".png").name
                with Image.open(m) as im:
                    assert im.mode == "L" and im.size == (32, 32)
                    assert set(np.unique(np.asarray(im))) <= {0, 255}
    # nothing but images inside the Intel folders, no leftovers anywhere
    assert not [
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix not in (".jpg", ".png", ".csv", ".json")
    ]
    assert not _files(root / "seg_train", "**/*.png")
    params = json.loads((root / "scenes.json").read_text())
    assert params["n_train"] == 3 and params["size"] == 32
    assert not (root / ".scenes_partial.json").exists()
    assert shortcut_marks(root).empty


def test_written_images_match_render_scene(tmp_path):
    root = write_scenes(tmp_path, **TINY, seed=5)
    rng = scenes._scene_rng(5, "seg_test", "sea", 1)
    image, mask = render_scene("sea", rng, 32)
    assert np.array_equal(load_mask(root, "seg_test/seg_test/sea/00001.jpg"), mask)
    with Image.open(root / "seg_test/seg_test/sea/00001.jpg") as im:
        written = np.asarray(im).astype(float)
    assert np.abs(written - image).mean() < 6  # only JPEG loss


def test_output_does_not_depend_on_n_train(tmp_path):
    a = write_scenes(tmp_path / "a", **{**TINY, "n_train": 2})
    b = write_scenes(tmp_path / "b", **TINY)
    for rel in ("seg_train/seg_train/glacier/00001.jpg", "seg_test/seg_test/street/00001.jpg"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()


def test_splits_and_classes_get_their_own_images(tmp_path):
    root = write_scenes(tmp_path, **TINY)
    train = (root / "seg_train/seg_train/forest/00000.jpg").read_bytes()
    assert train != (root / "seg_test/seg_test/forest/00000.jpg").read_bytes()
    assert train != (root / "seg_train/seg_train/forest/00001.jpg").read_bytes()
    masks = [load_mask(root, f"seg_train/seg_train/{c}/00000.jpg") for c in CLASSES]
    assert len({m.tobytes() for m in masks}) == len(CLASSES)


def test_seed_changes_output(tmp_path):
    a = write_scenes(tmp_path / "a", **TINY, seed=0)
    b = write_scenes(tmp_path / "b", **TINY, seed=1)
    rel = "seg_train/seg_train/forest/00000.jpg"
    assert (a / rel).read_bytes() != (b / rel).read_bytes()


def test_write_scenes_is_idempotent(tmp_path):
    root = write_scenes(tmp_path, **TINY)
    files = [p for p in root.rglob("*") if p.is_file()]
    stamps = {p: p.stat().st_mtime_ns for p in files}
    for p in files:  # push mtimes into the past so a rewrite would show
        os.utime(p, ns=(stamps[p] - 10**10, stamps[p] - 10**10))
    before = {p: p.stat().st_mtime_ns for p in files}
    write_scenes(root, **TINY)
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert sorted(p for p in root.rglob("*") if p.is_file()) == sorted(files)


def test_other_parameters_raise_and_keep_files(tmp_path):
    root = write_scenes(tmp_path, **TINY)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    with pytest.raises(ValueError, match="other parameters.*seed"):
        write_scenes(root, **TINY, seed=1)
    with pytest.raises(ValueError, match="shortcut_class"):
        write_scenes(root, **TINY, shortcut_class="sea")
    assert sorted(p for p in root.rglob("*") if p.is_file()) == files


def test_foreign_non_empty_folder_raises(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        write_scenes(tmp_path, **TINY)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_interrupted_run_resumes(tmp_path):
    root = write_scenes(tmp_path / "full", **TINY)
    part = tmp_path / "part"
    write_scenes(part, **TINY)
    (part / "scenes.json").unlink()  # as if stopped before the end ...
    (part / "seg_test/seg_test/sea/00001.jpg").unlink()  # ... with one image missing
    (part / ".scenes_partial.json").write_text((root / "scenes.json").read_text())
    write_scenes(part, **TINY)
    rel = "seg_test/seg_test/sea/00001.jpg"
    assert (part / rel).read_bytes() == (root / rel).read_bytes()
    assert (part / "scenes.json").exists()


@pytest.mark.parametrize(
    "bad",
    [
        dict(shortcut_class="desert"),
        dict(shortcut_fraction=1.5),
        dict(n_train=0),
        dict(size=8),
        dict(jpeg_quality=0),
    ],
)
def test_bad_parameters_raise(tmp_path, bad):
    with pytest.raises(ValueError):
        write_scenes(tmp_path / "x", **{**TINY, **bad})
    assert not (tmp_path / "x").exists()


def test_shortcut_marks_only_on_train_images_of_the_class(tmp_path):
    params = {**TINY, "n_train": 10, "size": 64}
    root = write_scenes(tmp_path / "m", **params, shortcut_class="forest", shortcut_fraction=0.6)
    plain = write_scenes(tmp_path / "p", **params)
    marks = shortcut_marks(root)
    assert list(marks.columns) == ["split", "class", "file", "x0", "y0", "x1", "y1"]
    assert set(marks["split"]) == {"seg_train"} and set(marks["class"]) == {"forest"}
    assert 4 <= len(marks) <= 8  # about 60 % of 10
    marked = set(marks["file"])
    for p in root.rglob("*.jpg"):
        rel = p.relative_to(root)
        same = p.read_bytes() == (plain / rel).read_bytes()
        is_marked = rel.parts[0] == "seg_train" and rel.parts[2] == "forest" and p.name in marked
        assert same != is_marked, rel  # only the listed images differ from the unmarked set
    for row in marks.itertuples():
        with Image.open(root / "seg_train/seg_train/forest" / row.file) as im:
            box = np.asarray(im)[row.y0 : row.y1, row.x0 : row.x1].astype(float)
        drawn, _ = add_shortcut_mark(
            np.zeros((64, 64, 3), np.uint8),
            scenes._scene_rng(0, "seg_train", "forest", int(row.file[:5]), 1),
        )
        expected = drawn[drawn.sum(-1) > 0].reshape(-1, 3).mean(0)  # the mark's mean colour
        assert box[..., 0].mean() > 200  # magenta and yellow are both full red
        assert np.abs(box.reshape(-1, 3).mean(0) - expected).max() < 30
        # each pixel is near magenta or near yellow (a mark, not the scene behind it)
        dist = np.min([np.abs(box - np.array(c)).max(-1) for c in MARK_COLORS], axis=0)
        assert np.mean(dist < 90) > 0.8


def test_shortcut_fraction_one_marks_all(tmp_path):
    root = write_scenes(tmp_path, **TINY, shortcut_class="sea", shortcut_fraction=1.0)
    assert sorted(shortcut_marks(root)["file"]) == [f"{i:05d}.jpg" for i in range(3)]


def test_shortcut_marks_empty_frame_without_file(tmp_path):
    frame = shortcut_marks(tmp_path)
    assert frame.empty and list(frame.columns) == scenes.MARK_COLUMNS


# ----------------------------------------------------------------------------- masks
def test_mask_path_mapping(tmp_path):
    expected = tmp_path / "masks" / "seg_train" / "forest" / "00003.png"
    assert mask_path(tmp_path, "seg_train/seg_train/forest/00003.jpg") == expected
    assert mask_path(tmp_path, tmp_path / "seg_train/seg_train/forest/00003.jpg") == expected
    assert (
        mask_path(tmp_path, Path("seg_test/seg_test/sea/00010.jpg"))
        == tmp_path / "masks" / "seg_test" / "sea" / "00010.png"
    )
    with pytest.raises(ValueError):
        mask_path(tmp_path, "forest/00003.jpg")
    with pytest.raises(ValueError):
        mask_path(tmp_path / "a", tmp_path / "b" / "seg_train/seg_train/forest/00003.jpg")


def test_load_mask_resizes_with_nearest(tmp_path):
    root = write_scenes(tmp_path, **TINY)
    rel = "seg_train/seg_train/street/00002.jpg"
    full = load_mask(root, rel)
    assert full.dtype == bool and full.shape == (32, 32) and 0 < full.mean() < 1
    small = load_mask(root, rel, size=16)
    assert small.shape == (16, 16) and small.dtype == bool
    assert np.array_equal(small, full[::2, ::2]) or abs(small.mean() - full.mean()) < 0.1
    big = load_mask(root, root / rel, size=64)
    assert big.shape == (64, 64) and np.array_equal(big[::2, ::2], full)


def test_hybrid_share_switches_twins_to_the_shared_scene_and_leaves_other_classes_alone():
    for name in scenes.CLASSES:
        default, _ = scenes.render_scene(name, np.random.default_rng(5), 48)
        explicit, _ = scenes.render_scene(
            name, np.random.default_rng(5), 48, hybrid_share=scenes.HYBRID_SHARE
        )
        assert np.array_equal(default, explicit)
        never, _ = scenes.render_scene(name, np.random.default_rng(5), 48, hybrid_share=0.0)
        always, _ = scenes.render_scene(name, np.random.default_rng(5), 48, hybrid_share=1.0)
        assert np.array_equal(never, always) == (name in ("forest", "sea"))


def test_shortcut_hybrid_share_is_recorded_only_for_a_shortcut_set(tmp_path):
    import json

    scenes.write_scenes(tmp_path / "plain", n_train=1, n_test=1, size=32, progress=False)
    assert "shortcut_hybrid_share" not in json.loads(
        (tmp_path / "plain" / "scenes.json").read_text()
    )
    scenes.write_scenes(
        tmp_path / "marked",
        n_train=2,
        n_test=1,
        size=32,
        shortcut_class="street",
        shortcut_hybrid_share=1.0,
        progress=False,
    )
    assert (
        json.loads((tmp_path / "marked" / "scenes.json").read_text())["shortcut_hybrid_share"]
        == 1.0
    )
    with pytest.raises(ValueError, match="shortcut_hybrid_share"):
        scenes.write_scenes(
            tmp_path / "bad",
            n_train=1,
            n_test=1,
            size=32,
            shortcut_class="street",
            shortcut_hybrid_share=1.5,
            progress=False,
        )
