"""Every notebook (01-12) under the paper profile, at toy scale, on a folder without masks.

What `make report PROFILE=paper DATA_DIR=<folder>` does for a new user, shrunk so that it runs in a
few minutes on 2 CPU cores:

* the data: a generated folder in the Intel Kaggle layout (``seg_train/seg_train/<class>/``,
  ``seg_test/seg_test/<class>/`` and an unlabelled ``seg_pred/seg_pred/``), JPEGs only, NO
  ground-truth masks, so every notebook takes its no-mask path (05 and 06 leave the mask scores
  out and say why, 06 plants its shortcut on a marked copy of the user's training images, 09
  takes the object region from Grad-CAM, 10 scores without localisation);
* the model: ``profiles/paper.yaml`` with ``arch`` swapped for resnet18 (the same torchvision code
  path as resnet50, a quarter of the work) at ``image_size`` 40 (not 128, so a size fixed to
  128 anywhere fails), one epoch, and the work-size parameters of each notebook (examples, LIME
  samples, PGD images, ascent steps ...) turned down with ``papermill -p``;
* variant ``imagenet``: the weights come from ``$TORCH_HOME/hub/checkpoints/<torchvision file
  name>`` in a temporary ``TORCH_HOME`` (the state dict of a randomly initialised resnet18: the
  same loading path as the real file, no download);
* variant ``random``: ``weights none`` and a learning rate of 1e-9, so the model stays random and
  some classes are never predicted (per-class statistics, example picking and notebook 10 must
  cope); it runs the notebooks whose code depends on the fine-tuned model's predictions, 02-10
  but 07, and 12 (01 only scans the folder, 07 draws every class whatever the model predicts and
  11 uses the ImageNet model alone: the same code paths as in the first variant).

Each notebook must run to the end, and papermill must not warn about a parameter it cannot
parse or that the notebook does not declare. Figures, reports and caches go to temporary
folders. Per-notebook wall times are printed (``pytest -s``) and written to
``$TRUST_AUDIT_TIMINGS`` when that is set.
Measured in `make test` on a fresh clone (2 cores, 1 thread per kernel; the machine in a slow
hour, a single-thread forward 2x its best): the streams took 168 s and 123 s before 12 joined the
second (10-52 s per notebook, 06 the longest; about 12 s is a kernel's start and imports);
several times that when other jobs share the cores. `make unit` runs this test beside the other
unit tests (they take one thread): 221 s for this test then, 224 s for all of them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SIZE = 40  # toy image side (pixels), also the model input size
TRAIN, TEST = 8, 4  # toy images per class

# Work-size parameters per notebook (papermill -p), on top of the profile and the toy model.
MODEL = {"arch": "resnet18", "image_size": SIZE, "epochs": 1, "batch_size": 16}
WORK = {
    "04": {"lime_samples": 60, "examples": 2, "lime_sample_counts": [40, 80], "shap_samples": 40},
    "05": {"examples": 2, "images_per_class": 2, "sweep_layers": 3, "photo_size": 64},
    "06": {
        "images_per_class": 1,
        "ig_steps": 4,
        "smoothgrad_samples": 3,
        "lime_samples": 40,
        "occlusion_window": 20,
        "sanity_images": 1,
        "photo_size": 64,
    },
    "07": {"imagenet_classes": ["strawberry", "lemon"], "visual_size": 48, "steps": 3, "jitter": 4},
    "08": {
        "photo_names": ["chelsea"],
        "photo_targets": ["espresso"],
        "photo_size": 64,
        "max_steps": 5,
    },
    "09": {
        "sweep_epsilons": [0, 2, 8],
        "attack_steps": 2,
        "region_images_per_class": 2,
        "reference_images": 2,
    },
    "10": {
        "attack_steps": 2,
        "region_images_per_class": 2,
        "explained_per_class": 2,
        "sanity_images": 6,
        "temperature_folds": 2,
    },
    "11": {
        "photo_size": 64,
        "hash_size": 64,
        "sweep_levels": [2, 4],
        "max_steps": 5,
        "progress": False,
    },
    "12": {  # 09's attack parameters, so that 12 reads 09's cached attacks
        "attack_steps": 2,
        "region_images_per_class": 2,
        "accuracy_images_per_class": 1,
        "example_images": 2,
    },
}
VARIANTS = {
    "imagenet": {"weights": "imagenet"},
    "random": {"weights": "none", "learning_rate": 1e-9},
}
# The random variant runs the notebooks whose code depends on what the model predicts (per-class
# statistics, example picking, attacks on the correctly classified images): 02-10 but 07, which
# draws every class whatever the model says (the same code path as the first variant), and 12,
# after 09 (whose cached attacks it reads): a model that gets few or no images of a class right
# leaves 12's per-class tables, figures and correlation with little or nothing to rest on.
RUNS_ON = {
    "imagenet": NOTEBOOKS,
    "random": [
        nb
        for nb in NOTEBOOKS
        if ("02" <= nb.name[:2] <= "10" and nb.name[:2] != "07") or nb.name[:2] == "12"
    ],
}
# The notebooks that use neither the fine-tuned model nor its cache (01 scans the folder, 11 uses
# the ImageNet model): the second stream runs the first variant's ones, so that both streams of
# the 2-core machine carry about the same work.
INDEPENDENT = ("01", "11")
PAPERMILL_WARNINGS = ("Unable to parse", "Passed unknown parameter")


def write_intel_folder(
    root: Path, *, size: int = SIZE, n_train: int = TRAIN, n_test: int = TEST
) -> Path:
    """A folder in the Kaggle layout of the Intel data with no masks: the generated scenes'
    JPEGs, plus unlabelled images in ``seg_pred/seg_pred/``."""
    from helpers import scenes

    generated = root.parent / f"{root.name}-generated"
    scenes.write_scenes(
        generated, n_train=n_train, n_test=n_test, size=size, seed=5, progress=False
    )
    for split in ("seg_train", "seg_test"):
        shutil.copytree(generated / split, root / split)
    pred = root / "seg_pred" / "seg_pred"
    pred.mkdir(parents=True)
    for i, path in enumerate(sorted((generated / "seg_test" / "seg_test").glob("*/*.jpg"))[:6]):
        shutil.copy(path, pred / f"{i}.jpg")
    shutil.rmtree(generated)
    assert not list(root.rglob("*.png")) and not (root / "masks").exists()
    return root


def write_torch_home(torch_home: Path, arch: str = "resnet18") -> Path:
    """``torch_home`` with the state dict of a randomly initialised ``arch`` saved under the file
    name torchvision's weights API looks for (the file a user copies there for ResNet50)."""
    import torch
    import torchvision.models as tvm

    enum = tvm.get_model_weights(arch).DEFAULT
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(getattr(tvm, arch)(weights=None).state_dict(), folder / os.path.basename(enum.url))
    return torch_home


def papermill_args(notebook: Path, data_dir: Path, variant: str) -> list[str]:
    params = {
        "data_dir": str(data_dir),
        **MODEL,
        **VARIANTS[variant],
        **WORK.get(notebook.name[:2], {}),
    }
    args = ["-f", str(ROOT / "profiles" / "paper.yaml")]
    for name, value in params.items():
        args += ["-y", yaml.safe_dump({name: value}, default_flow_style=True).strip()]
    return args


def run_notebooks(
    data_dir: Path, work: Path, variant: str, notebooks=NOTEBOOKS, threads: int | None = None
) -> dict:
    """Run ``notebooks`` as `make report PROFILE=paper` does; return {name: (seconds, log, rc)}.
    ``threads``: OMP_NUM_THREADS of the kernels (None: the default)."""
    env = {
        **os.environ,
        "TRUST_AUDIT_CACHE": str(work / "cache"),
        "TRUST_AUDIT_FIGURES": str(work / "figures"),
        "TRUST_AUDIT_REPORTS": str(work / "reports"),
        "TORCH_HOME": str(work / "torch"),
        "TQDM_DISABLE": "1",
        "MPLBACKEND": "Agg",
        "MALLOC_MMAP_THRESHOLD_": "4294967296",
        "MALLOC_TRIM_THRESHOLD_": "4294967296",
        **({"OMP_NUM_THREADS": str(threads)} if threads else {}),
    }
    results = {}
    for notebook in notebooks:
        out = work / "out" / notebook.name
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "papermill",
            "--cwd",
            str(ROOT / "notebooks"),
            "--log-level",
            "WARNING",
            str(notebook),
            str(out),
            *papermill_args(notebook, data_dir, variant),
        ]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        log = proc.stdout + proc.stderr
        results[notebook.name] = (seconds, log, proc.returncode)
        print(
            f"{variant:8s} {notebook.name:32s} {seconds:6.1f} s  rc {proc.returncode}", flush=True
        )
    return results


def printed_text(path: Path) -> str:
    notebook = json.loads(path.read_text())
    return "".join(
        "".join(o.get("text", "")) for c in notebook["cells"] for o in c.get("outputs", [])
    )


@pytest.fixture(scope="module")
def variant_results(tmp_path_factory):
    """Two streams of notebooks side by side, one thread per notebook kernel: most of a toy
    notebook's time is the kernel's start and imports (one core each), so two streams on the
    2-core machine take little more than the longer one. Stream 1: the first variant's
    notebooks that use the fine-tuned model, in order; stream 2: the random variant's, then
    the first variant's :data:`INDEPENDENT` ones."""
    base = tmp_path_factory.mktemp("paper")
    data_dir = write_intel_folder(base / "intel")

    for variant in VARIANTS:
        write_torch_home(base / variant / "torch")

    def stream(jobs):
        return {
            (variant, name): result
            for variant, notebooks in jobs
            for name, result in run_notebooks(
                data_dir, base / variant, variant, notebooks, threads=1
            ).items()
        }

    first = [nb for nb in RUNS_ON["imagenet"] if nb.name[:2] not in INDEPENDENT]
    independent = [nb for nb in RUNS_ON["imagenet"] if nb.name[:2] in INDEPENDENT]
    streams = [[("imagenet", first)], [("random", RUNS_ON["random"]), ("imagenet", independent)]]
    with ThreadPoolExecutor(max_workers=len(streams)) as pool:
        done = [f.result() for f in [pool.submit(stream, jobs) for jobs in streams]]
    results = {v: {} for v in VARIANTS}
    for part in done:
        for (variant, name), result in part.items():
            results[variant][name] = result
    return base, data_dir, results


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_notebook_runs_under_the_paper_profile_without_masks(
    variant_results, variant, monkeypatch
):
    base, data_dir, all_results = variant_results
    work, results = base / variant, all_results[variant]
    timings = os.environ.get("TRUST_AUDIT_TIMINGS")
    if timings:
        with open(timings, "a") as f:
            for name, (seconds, _, rc) in results.items():
                f.write(f"{variant}\t{name}\t{seconds:.1f}\t{rc}\n")
    failed = {name: log[-3000:] for name, (_, log, rc) in results.items() if rc != 0}
    assert not failed, "notebooks failed:\n" + "\n\n".join(
        f"== {n}\n{log}" for n, log in failed.items()
    )
    warned = {
        name: [w for w in PAPERMILL_WARNINGS if w in log] for name, (_, log, _) in results.items()
    }
    assert not any(warned.values()), f"papermill warnings: {warned}"
    out = work / "out"
    assert "test accuracy" in printed_text(out / "02_finetune.ipynb")
    from helpers import runs

    for name in ("05_gradcam.ipynb", "06_saliency.ipynb"):
        assert runs.NO_MASKS in printed_text(out / name)  # said once, no crash
    assert "shortcut model" in printed_text(out / "06_saliency.ipynb")  # the planted shortcut ran
    assert len(list((work / "cache").glob("marked-*/shortcut_marks.csv"))) == 1
    assert (work / "reports" / "trust_report.html").is_file()
    if "07_class_visualization.ipynb" in results:
        assert (work / "figures" / "07_scene_classes.png").is_file()
    runs_made = sorted(p.name for p in (work / "cache" / "runs").iterdir())
    assert len(runs_made) == 2 and all(
        name.startswith("resnet18-") for name in runs_made
    )  # clean and shortcut
    if variant == "random":
        from helpers.train import predict_proba

        monkeypatch.setenv("TRUST_AUDIT_CACHE", str(work / "cache"))
        run = runs.finetuned_run(
            data_dir=str(data_dir), **MODEL, **VARIANTS[variant], progress=False
        )

        predicted = set(predict_proba(run.model, run.test_set)[0].argmax(1).tolist())
        assert len(predicted) < len(run.classes), (
            "the random model should leave some class unpredicted"
        )


def test_every_parameters_cell_parses_and_declares_the_profile():
    """papermill --help-notebook lists every parameter of every notebook, data_dir included,
    and every key of profiles/paper.yaml (else papermill warns "Passed unknown parameter")."""
    import ast

    import nbformat
    from papermill.inspection import _infer_parameters

    profile = yaml.safe_load((ROOT / "profiles" / "paper.yaml").read_text())
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        declared = [t.id for node in ast.parse(cell.source).body for t in node.targets]
        inferred = [p.name for p in _infer_parameters(nb)]
        assert inferred == declared, path.name
        assert {"data_dir", *profile} <= set(declared), path.name
        for name in WORK.get(path.name[:2], {}):
            assert name in declared, (path.name, name)


if __name__ == "__main__":  # python tests/test_paper_profile.py [variant] [NN ...]: timings by hand
    import tempfile

    variant = sys.argv[1] if len(sys.argv) > 1 else "imagenet"
    picked = [nb for nb in RUNS_ON[variant] if len(sys.argv) <= 2 or nb.name[:2] in sys.argv[2:]]
    sys.path.insert(0, str(ROOT))
    base = Path(os.environ.get("TOY_BASE") or tempfile.mkdtemp())
    data = base / "intel"
    if not data.exists():
        write_intel_folder(data)
    if not (base / variant / "torch").exists():
        write_torch_home(base / variant / "torch")
    res = run_notebooks(data, base / variant, variant, picked)
    for name, (_s, log, rc) in res.items():
        if rc:
            print(f"== {name}\n{log[-2500:]}")
    print("total", round(sum(s for s, _, _ in res.values()), 1), "s; work folder", base)
