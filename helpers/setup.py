"""The parameters several notebooks share, defined once, and the one call that sets a notebook up.

Each notebook's ``parameters`` cell still lists every parameter it takes as a literal with a
comment (papermill reads them there, ``papermill -p`` and ``profiles/paper.yaml`` override them
there, and a reader sees them there). The defaults of the parameters that several notebooks share
are the mappings below; ``tests/test_parameters.py`` checks every notebook's cell against them
and ``profiles/paper.yaml`` against the notebooks.

The setup cell of a notebook that audits the fine-tuned model is one call::

    run = setup.finetuned_run(globals())

which seeds (:func:`helpers.train.set_seed`) and returns :func:`helpers.runs.finetuned_run` of
the notebook's run parameters, read by name from the mapping it is given (the notebook's
globals: the values of its parameters cell after papermill's overrides).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import runs, train

# The data: the embedded scenes, or a folder in Intel layout (``data_dir``).
DATA: dict[str, Any] = {
    "data_dir": "",  # folder in Intel layout; empty: the embedded scenes
    "scenes_per_class": 120,  # embedded scenes: training images per class
    "test_scenes_per_class": 50,  # embedded scenes: test images per class
    "scene_size": 128,  # embedded scenes: side in pixels
    "seed": 0,  # one seed for data generation, splits, training and what each notebook draws
}
# The model and its fine-tuning (what profiles/paper.yaml switches to ResNet50 on Intel).
MODEL: dict[str, Any] = {
    "arch": "efficientnet_lite0",
    "weights": "imagenet",
    "image_size": 128,
    "epochs": 10,
    "batch_size": 32,
    "learning_rate": 0.0003,
}
# Every argument the notebooks give helpers.runs.finetuned_run, in the order of its signature.
RUN: dict[str, Any] = {**DATA, **MODEL}
# The minimum-norm attacks of 09, which 10 repeats (from the same cache) for its report.
ATTACK: dict[str, Any] = {
    "attack_steps": 30,  # foolbox FMN steps per image and region
    "attack_max_eps": 0.0627,  # largest epsilon that counts as a flip (16/255)
    "whole_images_per_class": 0,  # images per class attacked on the whole image; 0: all
    "region_images_per_class": 20,  # images per class attacked in the object and background
    "object_from": "auto",  # object region: "mask", "gradcam" or "auto"
    "budget_grey_levels": 1.0,  # the stated robustness budget (/255)
}
# The natural corruptions of 12, which 10 repeats (from the same cache) for its report:
# helpers.corruptions.natural_fragility(run, names=corruption_names, images_per_class=
# natural_images_per_class, grid=severity_grid, tol=severity_tol) and the stated severities
# helpers.corruptions.stated_severities(stated_level, corruption_names).
NATURAL: dict[str, Any] = {
    "corruption_names": [
        "gaussian_noise",
        "gaussian_blur",
        "motion_blur",
        "jpeg",
        "brightness",
        "contrast",
        "fog",
        "pixelate",
    ],  # ImageNet-C corruptions searched (helpers.corruptions.CORRUPTIONS)
    "natural_images_per_class": 0,  # test images per class searched; 0: all of them
    "severity_grid": 4,  # grid points of the severity search in (0, 1] before bisection
    "severity_tol": 0.05,  # the bisection stops when the bracket is this narrow
    "stated_level": 3,  # the stated severity: ImageNet-C's level 1-5 (3: the middle one)
}
# Work sizes that mean the same in every notebook that has them.
WORK: dict[str, Any] = {
    "photo_size": 224,  # side of the scikit-image photos (the ImageNet model's training size)
    "examples": 4,  # correct and wrong test images shown, each
}
# Every shared parameter with its default: a notebook that declares one declares this value.
SHARED: dict[str, Any] = {**RUN, **ATTACK, **NATURAL, **WORK}


# Run parameters the notebooks do not declare for the run they audit, only for another one.
RUN_OVERRIDES = ("shortcut_class",)


def _pick(params: Mapping[str, Any], names, overrides: dict[str, Any]) -> dict[str, Any]:
    """``params[name]`` for each of ``names``, with ``overrides`` on top."""
    unknown = sorted(set(overrides) - {*names, *RUN_OVERRIDES})
    if unknown:
        raise TypeError(f"not a run parameter: {', '.join(unknown)} (expected some of {names})")
    missing = [n for n in names if n not in params and n not in overrides]
    if missing:
        raise KeyError(
            f"the notebook's parameters cell must declare {', '.join(missing)} "
            "(defaults in helpers.setup.SHARED)"
        )
    return {**{n: params[n] for n in names if n not in overrides}, **overrides}


def finetuned_run(
    params: Mapping[str, Any], *, set_seed: bool = True, **overrides: Any
) -> runs.FineTunedRun:
    """``set_seed(seed)``, then the fine-tuned run of the run parameters in ``params``.

    ``params``: the notebook's parameters by name (``globals()`` in a notebook); only the names of
    :data:`RUN` are read, and each must be there. ``overrides``: run parameters that differ from
    ``params`` (06's shortcut model: ``shortcut_class=...``, ``epochs=...``). ``set_seed=False``
    for a second run in the same notebook: the notebook seeds once, at its top.
    """
    kwargs = _pick(params, list(RUN), overrides)
    if set_seed:
        train.set_seed(kwargs["seed"])
    return runs.finetuned_run(**kwargs)


def load_data(params: Mapping[str, Any]) -> runs.DataSource:
    """``set_seed(seed)``, then the data of the data parameters in ``params`` (notebook 01)."""
    kwargs = _pick(params, list(DATA), {})
    train.set_seed(kwargs["seed"])
    return runs.load_data(**kwargs)
