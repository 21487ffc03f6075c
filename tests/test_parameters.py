"""Every notebook's parameters cell against the shared defaults (helpers.setup) and the paper
profile, and the one setup call the notebooks make (no training here: runs is replaced)."""

import ast
import inspect
import json
from pathlib import Path

import pytest
import yaml

from helpers import runs, setup, train

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PROFILE = yaml.safe_load((ROOT / "profiles" / "paper.yaml").read_text())


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def declared(path: Path) -> dict:
    """{name: literal value} of the notebook's parameters cell, in order."""
    cell = next(c for c in cells(path) if "parameters" in c["metadata"].get("tags", []))
    values = {}
    for node in ast.parse("".join(cell["source"])).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, (path.name, node.lineno)
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def code(path: Path) -> str:
    return "\n".join("".join(c["source"]) for c in cells(path) if c["cell_type"] == "code")


PARAMS = {path.name: declared(path) for path in NOTEBOOKS}
BUILDS_RUN = [path.name for path in NOTEBOOKS if "setup.finetuned_run(globals()" in code(path)]


def same(value, default) -> bool:
    """Equal and of the same type (1 is not 1.0, 0 is not False)."""
    return type(value) is type(default) and value == default


def test_the_groups_of_shared_parameters_do_not_overlap():
    groups = (setup.RUN, setup.ATTACK, setup.NATURAL, setup.WORK)
    assert sum(map(len, groups)) == len(setup.SHARED)
    assert setup.RUN == {**setup.DATA, **setup.MODEL}


def test_the_notebooks_and_those_that_build_the_run():
    assert len(NOTEBOOKS) == 12
    assert BUILDS_RUN == [
        p.name for p in NOTEBOOKS if "02" <= p.name[:2] <= "10" or p.name[:2] == "12"
    ]


@pytest.mark.parametrize("name", list(PARAMS))
def test_every_shared_parameter_a_notebook_declares_has_the_shared_default(name):
    wrong = {
        k: (v, setup.SHARED[k])
        for k, v in PARAMS[name].items()
        if k in setup.SHARED and not same(v, setup.SHARED[k])
    }
    assert not wrong, f"{name}: (declared, helpers.setup.SHARED) {wrong}"


@pytest.mark.parametrize("name", BUILDS_RUN)
def test_every_notebook_that_builds_the_run_declares_every_run_parameter(name):
    assert set(setup.RUN) <= set(PARAMS[name]), set(setup.RUN) - set(PARAMS[name])
    assert "runs.finetuned_run(" not in code(ROOT / "notebooks" / name)  # one call: setup's


def test_notebook_01_declares_the_data_and_loads_it_through_setup():
    name = next(n for n in PARAMS if n.startswith("01"))
    assert set(setup.DATA) <= set(PARAMS[name])
    assert "setup.load_data(globals())" in code(ROOT / "notebooks" / name)


def test_09_and_10_agree_on_the_attack_parameters():
    (n09,) = [n for n in PARAMS if n.startswith("09")]
    (n10,) = [n for n in PARAMS if n.startswith("10")]
    for name in (n09, n10):
        attack = {k: PARAMS[name].get(k, "<missing>") for k in setup.ATTACK}
        assert attack == setup.ATTACK, name
    assert {k: PARAMS[n09][k] for k in setup.ATTACK} == {k: PARAMS[n10][k] for k in setup.ATTACK}


def test_10_and_12_declare_the_natural_parameters_and_12_reads_09s_attacks():
    (n09,) = [n for n in PARAMS if n.startswith("09")]
    (n12,) = [n for n in PARAMS if n.startswith("12")]
    for name in [n for n in PARAMS if n[:2] in ("10", "12")]:  # 10 reads 12's cached frame
        assert {k: PARAMS[name].get(k, "<missing>") for k in setup.NATURAL} == setup.NATURAL, name
    used = ("attack_steps", "attack_max_eps", "whole_images_per_class", "region_images_per_class")
    assert {k: PARAMS[n12][k] for k in (*used, "object_from")} == {
        k: PARAMS[n09][k] for k in (*used, "object_from")
    }


def test_the_natural_defaults_are_those_of_helpers_corruptions():
    from helpers import corruptions

    assert setup.NATURAL["corruption_names"] == list(corruptions.CORRUPTIONS)
    assert setup.NATURAL["stated_level"] == corruptions.STATED_LEVEL
    signature = inspect.signature(corruptions.natural_fragility).parameters
    assert setup.NATURAL["severity_grid"] == signature["grid"].default
    assert setup.NATURAL["severity_tol"] == signature["tol"].default
    assert setup.NATURAL["natural_images_per_class"] == signature["images_per_class"].default


@pytest.mark.parametrize("key", list(PROFILE))
def test_every_profile_key_is_a_shared_parameter_of_the_right_type_in_every_notebook(key):
    assert key in setup.SHARED, f"profiles/paper.yaml sets {key}, not a shared parameter"
    default = setup.SHARED[key]
    assert type(PROFILE[key]) is type(default), (key, PROFILE[key], default)
    missing = [name for name in BUILDS_RUN if key not in PARAMS[name]]
    assert not missing, f"{key} not declared in {missing}"
    for name, params in PARAMS.items():  # 01 and 11 take the profile too (papermill -f)
        assert key in params, (name, key)


def test_the_shared_run_defaults_are_runs_and_train_defaults():
    """A notebook cell, runs.finetuned_run() and TrainConfig() describe the same run."""
    for function in (runs.finetuned_run, runs.load_data):
        signature = inspect.signature(function).parameters
        for k, v in setup.RUN.items():
            if k in signature:
                assert signature[k].default == v, (function.__name__, k)
    config = train.TrainConfig()
    for k in setup.MODEL:
        assert getattr(config, k) == setup.MODEL[k], k


@pytest.fixture
def calls(monkeypatch):
    """runs.finetuned_run, runs.load_data and train.set_seed recorded, in order, not run."""
    made = []
    monkeypatch.setattr(runs, "finetuned_run", lambda **kw: made.append(("run", kw)) or "run")
    monkeypatch.setattr(runs, "load_data", lambda **kw: made.append(("data", kw)) or "data")
    monkeypatch.setattr(train, "set_seed", lambda seed: made.append(("seed", seed)))
    return made


def notebook_globals(name: str) -> dict:
    """What a notebook's globals hold after its parameters cell, plus some unrelated names."""
    return {**PARAMS[name], "np": object(), "x_test": [1, 2], "__name__": "__main__"}


def test_finetuned_run_seeds_then_passes_exactly_the_run_parameters(calls):
    params = {**notebook_globals(BUILDS_RUN[0]), "epochs": 3, "seed": 7}
    assert setup.finetuned_run(params) == "run"
    assert calls == [("seed", 7), ("run", {**setup.RUN, "epochs": 3, "seed": 7})]


def test_the_shortcut_run_of_06_overrides_and_does_not_reseed(calls):
    (name,) = [n for n in PARAMS if n.startswith("06")]
    params = {**notebook_globals(name), "epochs": 10}
    shortcut = params["shortcut_class"]
    epochs = min(params["epochs"], params["shortcut_epochs"])
    rate = params["shortcut_learning_rate"]
    setup.finetuned_run(
        params, set_seed=False, shortcut_class=shortcut, epochs=epochs, learning_rate=rate
    )
    expected = {**setup.RUN, "shortcut_class": shortcut, "epochs": epochs, "learning_rate": rate}
    assert calls == [("run", expected)]
    calls.clear()
    setup.finetuned_run(params)  # the clean run: shortcut_class of the cell is not passed
    assert calls == [("seed", 0), ("run", setup.RUN)]


def test_load_data_seeds_then_passes_the_data_parameters(calls):
    (name,) = [n for n in PARAMS if n.startswith("01")]
    assert setup.load_data(notebook_globals(name)) == "data"
    assert calls == [("seed", 0), ("data", setup.DATA)]


def test_a_missing_or_unknown_parameter_stops_with_a_clear_message(calls):
    params = dict(setup.RUN)
    del params["scene_size"]
    with pytest.raises(KeyError, match="must declare scene_size"):
        setup.finetuned_run(params)
    with pytest.raises(TypeError, match="not a run parameter: lime_samples"):
        setup.finetuned_run(setup.RUN, lime_samples=10)
    assert calls == []
