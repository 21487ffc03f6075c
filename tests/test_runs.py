"""The run cache, the example pickers, the shortcut mark and the cached fragility of a run, and
the paper profile (ResNet50 on a folder in Intel layout), at toy scale."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import attacks, data, runs, scenes, selection, shortcuts


@pytest.fixture(scope="module")
def intel_folder(tmp_path_factory):
    """A small folder in the Intel Kaggle layout (what a user of the paper profile points at)."""
    root = tmp_path_factory.mktemp("intel")
    scenes.write_scenes(root, n_train=6, n_test=2, size=48, seed=3, progress=False)
    return root


def test_load_data_on_embedded_scenes_plants_and_reports_bad_files(isolated_cache):
    source = runs.load_data(
        scenes_per_class=3, test_scenes_per_class=1, scene_size=48, progress=False
    )
    assert source.is_scenes and source.classes == list(scenes.CLASSES)
    bad = source.manifest[source.manifest.status == "bad"]
    assert sorted(Path(p).name for p in bad.path) == sorted(
        set(runs.PLANTED_BAD_FILES) - {"greyscale.jpg"}
    )
    grey = source.manifest[source.manifest.path.str.endswith("greyscale.jpg")]
    assert grey.status.item() == "ok" and grey["mode"].item() == "L"
    again = runs.load_data(
        scenes_per_class=3, test_scenes_per_class=1, scene_size=48, progress=False
    )
    assert again.root == source.root and again.manifest.equals(source.manifest)


def test_paper_profile_at_toy_scale_trains_resnet50_and_caches(intel_folder, isolated_cache):
    kw = dict(
        data_dir=str(intel_folder),
        arch="resnet50",
        weights="none",
        image_size=48,
        epochs=1,
        batch_size=8,
        progress=False,
    )
    run = runs.finetuned_run(**kw)
    assert run.model.arch == "resnet50" and run.classes == list(scenes.CLASSES)
    assert run.history.test_probs.shape == (1, 12, 6) and run.history.finished
    assert (run.run_dir / "manifest.csv").is_file() and (run.run_dir / "best.pt").is_file()
    with pytest.raises(ValueError, match="embedded scenes"):
        run.test_masks()
    mtime = (run.run_dir / "best.pt").stat().st_mtime_ns
    cached = runs.finetuned_run(**kw)
    assert (run.run_dir / "best.pt").stat().st_mtime_ns == mtime and cached.run_dir == run.run_dir


def test_marked_copy_marks_the_shortcut_class_of_a_user_folder_and_leaves_it_alone(
    intel_folder, isolated_cache
):
    """06's planted shortcut on data without masks: a marked copy in the cache, training images
    of one class only; the user's folder is not touched."""
    before = {p: p.stat().st_mtime_ns for p in intel_folder.rglob("*") if p.is_file()}
    kw = dict(data_dir=str(intel_folder), progress=False)
    clean = runs.load_data(**kw)
    marked = runs.load_data(**kw, shortcut_class="street")
    assert marked.root != clean.root and marked.root.is_relative_to(isolated_cache / "cache")
    assert not marked.is_scenes and marked.classes == clean.classes
    assert marked.manifest[["path", "split", "label", "status"]].equals(
        clean.manifest[["path", "split", "label", "status"]]
    )
    marks = scenes.shortcut_marks(marked.root)
    assert (
        set(marks["class"]) == {"street"}
        and set(marks["split"]) == {"seg_train"}
        and 4 <= len(marks) <= 6
    )
    for row in marks.itertuples():
        rel = f"{row.split}/{row.split}/street/{row.file}"
        changed = np.abs(
            data.load_rgb(marked.root / rel).astype(int)
            - data.load_rgb(intel_folder / rel).astype(int)
        )
        inside = np.zeros(changed.shape[:2], bool)
        inside[row.y0 : row.y1, row.x0 : row.x1] = True
        assert changed[inside].mean() > 40 and changed[~inside].mean() < 3
    unmarked = [p for p in clean.manifest.path if "street" not in p or "seg_test" in p]
    assert all(
        data.load_rgb(marked.root / p).tobytes() == data.load_rgb(intel_folder / p).tobytes()
        for p in unmarked
    )
    assert runs.load_data(**kw, shortcut_class="street").root == marked.root  # built once
    with pytest.raises(ValueError, match="not a class"):
        runs.load_data(**kw, shortcut_class="desert")
    assert before == {p: p.stat().st_mtime_ns for p in intel_folder.rglob("*") if p.is_file()}


def test_add_shortcut_marks_changes_only_the_box():
    import torch

    images = torch.rand(3, 3, 64, 64)
    marked, boxes = shortcuts.add_shortcut_marks(images, seed=1)
    assert marked.shape == images.shape and boxes.shape == (3, 4)
    for image, mark, (x0, y0, x1, y1) in zip(images, marked, boxes):
        outside = torch.ones(64, 64, dtype=torch.bool)
        outside[y0:y1, x0:x1] = False
        assert torch.allclose(mark[:, outside], image[:, outside], atol=1 / 255)
        assert (mark[:, ~outside] - image[:, ~outside]).abs().mean() > 0.1


def test_pick_examples_spreads_over_classes():
    labels = np.repeat(np.arange(3), 10)
    preds = labels.copy()
    preds[[0, 1, 2, 12]] = 2  # three wrong in class 0, one in class 1
    idx = selection.pick_examples(labels, preds, correct=3, wrong=2, seed=0)
    right, wrong = idx[:3], idx[3:]
    assert (labels[right] == preds[right]).all() and sorted(labels[right]) == [0, 1, 2]
    assert (labels[wrong] != preds[wrong]).all() and sorted(labels[wrong]) == [0, 1]
    assert np.array_equal(idx, selection.pick_examples(labels, preds, correct=3, wrong=2, seed=0))
    assert len(selection.pick_examples(labels, preds, correct=3, wrong=9)) == 3 + 4


def test_cached_frame_computes_once_and_round_trips_types_and_attrs(tmp_path):
    from types import SimpleNamespace

    import pandas as pd

    run = SimpleNamespace(run_dir=tmp_path)
    calls = []

    def compute():
        calls.append(1)
        df = pd.DataFrame(
            {
                "eps": [0.1, np.nan],
                "flipped": [True, False],
                "label": [3, 1],
                "flip_class": pd.array([2, pd.NA], dtype="Int64"),
                "region": ["whole", "object"],
            }
        )
        df.attrs["max_eps"] = 0.25
        return df

    first = runs.cached_frame(run, "fragility", {"n": 2}, compute)
    second = runs.cached_frame(run, "fragility", {"n": 2}, compute)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first, second)
    assert second.attrs == {"max_eps": 0.25}
    runs.cached_frame(run, "fragility", {"n": 3}, compute)  # other parameters: computed again
    assert len(calls) == 2


def test_shortcut_usage_sees_a_model_that_reads_the_mark():
    import torch
    from torch import nn

    class MarkReader(nn.Module):
        """Class 1 when the top-left corner is magenta (the mark), else class 0."""

        def forward(self, x):
            corner = x[:, :, 2:10, 2:10].mean(dim=(2, 3))
            magenta = corner[:, 0] + corner[:, 2] - corner[:, 1]
            return torch.stack([torch.zeros_like(magenta), 10 * (magenta - 0.45)], 1)

    images = torch.full((4, 3, 48, 48), 0.2)
    table = shortcuts.shortcut_usage(
        {"reader": MarkReader(), "blind": nn.Sequential(nn.Flatten(), nn.Linear(3 * 48 * 48, 2))},
        images,
        [0, 0, 0, 1],
        target=1,
    )
    reader = table.loc["reader"]
    assert reader["accuracy"] == 0.75 and reader["accuracy, marked"] == 0.25
    assert (
        reader["P(target), other classes"] < 0.2 < 0.8 < reader["P(target), other classes, marked"]
    )


def test_planted_greyscale_file_is_no_copy_of_another_image(isolated_cache):
    """The planted greyscale.jpg is trained on: it must be a scene of its own, not a copy of
    another image (which the train/validation split could put on both sides)."""
    source = runs.load_data(
        scenes_per_class=4, test_scenes_per_class=1, scene_size=48, progress=False
    )
    ok = source.manifest[source.manifest.status == "ok"]
    grey_path = ok.path[ok.path.str.endswith("greyscale.jpg")].item()
    grey = data.load_rgb(source.root / grey_path).astype(float)[..., 0]
    for path in ok.path:
        if path == grey_path:
            continue
        rgb = data.load_rgb(source.root / path).astype(float)
        luma = rgb @ np.array([0.299, 0.587, 0.114])
        assert np.abs(luma - grey).mean() > 5, f"greyscale.jpg is a copy of {path}"


def test_fragility_attacks_every_test_image_and_equal_areas_per_class(tmp_path):
    """attacks.fragility on a stand-in run: whole image on every test image, object and background
    on the first k of each class with equal pixel counts, cached and read back the same."""
    from types import SimpleNamespace

    import torch
    from torch import nn

    torch.manual_seed(0)
    n, size = 18, 8
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(n) % 3
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        masks[i, : 2 + i % 4, :] = True  # objects of 2-5 rows: 25-62 %
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, 3)).eval()
    run = SimpleNamespace(
        model=model,
        run_dir=tmp_path,
        source=SimpleNamespace(is_scenes=True),
        test_set=SimpleNamespace(tensors=lambda: (x, labels)),
        test_masks=lambda: masks,
    )
    df = attacks.fragility(run, region_images_per_class=2, steps=10)
    whole = df[df.region == "whole"]
    assert sorted(whole.image) == list(range(n))
    reg = df[df.region != "whole"]
    assert sorted(set(reg.image)) == sorted(selection.per_class_indices(labels.numpy(), 2))
    px = reg.pivot(index="image", columns="region", values="pixels")
    expected = np.minimum(masks.sum((1, 2)), size * size - masks.sum((1, 2)))[px.index]
    assert (px["object"] == px["background"]).all() and (px["object"].to_numpy() == expected).all()
    assert {
        "image",
        "label",
        "region",
        "epsilon",
        "flipped",
        "already_wrong",
        "pixels",
        "confidence_before",
        "flip_class",
    } <= set(df.columns)
    again = attacks.fragility(run, region_images_per_class=2, steps=10)
    pd.testing.assert_frame_equal(
        again.reset_index(drop=True), df.reset_index(drop=True), check_dtype=False
    )


@pytest.mark.parametrize(
    "name, home",
    [
        ("pick_examples", selection),
        ("per_class_indices", selection),
        ("example_table", selection),
        ("attack_subset", selection),
        ("add_shortcut_marks", shortcuts),
        ("shortcut_usage", shortcuts),
        ("fragility", attacks),
        ("region_masks", attacks),
        ("SEARCH_VERSION", attacks),
    ],
)
def test_moved_names_still_work_from_runs_with_a_warning(name, home):
    with pytest.warns(DeprecationWarning, match=f"moved to {home.__name__}"):
        assert getattr(runs, name) is getattr(home, name)
    with pytest.raises(AttributeError):
        runs.no_such_name  # noqa: B018


def test_runs_holds_the_cache_and_imports_no_attack_or_explanation():
    """runs is the top layer of the cache: it must not import attacks or explain (data flows
    down: a fragility computation uses the cache, the cache does not call it)."""
    import subprocess
    import sys

    code = (
        "import sys, helpers.runs; print(sorted(m for m in sys.modules "
        "if m.startswith(('helpers.attacks', 'helpers.explain'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
