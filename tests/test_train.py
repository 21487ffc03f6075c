from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import models
from helpers.train import TrainConfig, TrainHistory, augment_batch, fine_tune


class ColourSquares(torch.utils.data.Dataset):
    """Tiny separable data: class k is an image whose channel k is brighter."""

    classes = ["red", "green", "blue"]

    def __init__(self, n_per_class, seed, size=32):
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(3).repeat_interleave(n_per_class)
        images = 0.3 * torch.rand(len(labels), 3, size, size, generator=g)
        images[torch.arange(len(labels)), labels] += 0.6
        self.images, self.labels = images, labels
        self.paths = [f"{self.classes[int(y)]}/{i}.png" for i, y in enumerate(labels)]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i]), i


CFG = TrainConfig(
    arch="resnet18",
    weights=None,
    image_size=32,
    epochs=3,
    batch_size=8,
    learning_rate=3e-3,
    patience=5,
    device="cpu",
    val_fraction=0.25,
)


@pytest.fixture(scope="module")
def datasets():
    return ColourSquares(8, seed=0), ColourSquares(4, seed=1)


def test_history_records_every_test_image_every_epoch(tmp_path, datasets):
    train_set, test_set = datasets
    history = fine_tune(CFG, train_set, test_set, tmp_path, progress=False)
    assert history.finished and history.epochs == 3
    assert history.test_probs.shape == (3, len(test_set), 3)
    assert np.allclose(history.test_probs.sum(-1), 1, atol=1e-5)
    assert history.test_labels.tolist() == test_set.labels.tolist()
    assert history.test_paths == test_set.paths
    assert (history.epoch_seconds > 0).all() and history.val_loss.shape == (3,)
    assert history.val_loss[history.best_epoch] == history.val_loss.min()
    loaded = TrainHistory.load(tmp_path / "history.npz")
    assert (
        np.array_equal(loaded.test_probs, history.test_probs)
        and loaded.classes == ColourSquares.classes
    )
    best = models.load_model(tmp_path / "best.pt", device="cpu")
    assert best.class_names == ColourSquares.classes


def test_training_learns_the_separable_task(tmp_path, datasets):
    cfg = TrainConfig(**{**CFG.to_dict(), "epochs": 6})
    history = fine_tune(cfg, *datasets, tmp_path, progress=False)
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.test_acc[-1] >= 0.9


def test_same_seed_repeats_exactly(tmp_path, datasets):
    a = fine_tune(CFG, *datasets, tmp_path / "a", progress=False)
    b = fine_tune(CFG, *datasets, tmp_path / "b", progress=False)
    assert np.array_equal(a.test_probs, b.test_probs) and np.array_equal(a.train_loss, b.train_loss)
    other = fine_tune(
        TrainConfig(**{**CFG.to_dict(), "seed": 1}), *datasets, tmp_path / "c", progress=False
    )
    assert not np.array_equal(a.test_probs, other.test_probs)


def test_resume_after_interruption_gives_the_same_run(tmp_path, datasets):
    full = fine_tune(CFG, *datasets, tmp_path / "full", progress=False)

    def interrupt(epoch, history):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fine_tune(CFG, *datasets, tmp_path / "cut", progress=False, on_epoch_end=interrupt)
    assert TrainHistory.load(tmp_path / "cut" / "history.npz").epochs == 1
    resumed = fine_tune(CFG, *datasets, tmp_path / "cut", progress=False)
    assert resumed.epochs == 3
    assert np.array_equal(full.test_probs, resumed.test_probs)
    a = models.load_checkpoint(tmp_path / "full" / "best.pt")["state_dict"]
    b = models.load_checkpoint(tmp_path / "cut" / "best.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a finished run returns at once, without training
    calls = []
    fine_tune(
        CFG, *datasets, tmp_path / "cut", progress=False, on_epoch_end=lambda e, h: calls.append(e)
    )
    assert calls == []


def test_resume_after_a_crash_between_history_and_state(tmp_path, datasets, monkeypatch):
    """The history of epoch 2 is on disk but its state is not: the resumed run must train epoch 2
    again (from epoch 1's weights) rather than skip it, and end exactly like an unbroken run."""
    full = fine_tune(CFG, *datasets, tmp_path / "full", progress=False)
    real_save = models.save_checkpoint
    saves = []

    def crash_on_second_state(obj, path):
        if Path(path).name == "state.pt":
            saves.append(path)
        if len(saves) == 2:
            raise OSError("disk full")
        return real_save(obj, path)

    monkeypatch.setattr(models, "save_checkpoint", crash_on_second_state)
    with pytest.raises(OSError):
        fine_tune(CFG, *datasets, tmp_path / "cut", progress=False)
    monkeypatch.setattr(models, "save_checkpoint", real_save)
    assert TrainHistory.load(tmp_path / "cut" / "history.npz").epochs == 2  # one ahead of the state
    resumed = fine_tune(CFG, *datasets, tmp_path / "cut", progress=False)
    assert resumed.epochs == full.epochs
    assert np.array_equal(full.test_probs, resumed.test_probs)
    assert resumed.best_epoch == full.best_epoch


def test_a_different_config_in_the_same_folder_is_refused(tmp_path, datasets):
    fine_tune(CFG, *datasets, tmp_path, progress=False)
    with pytest.raises(ValueError, match="another config"):
        fine_tune(
            TrainConfig(**{**CFG.to_dict(), "learning_rate": 1e-4}),
            *datasets,
            tmp_path,
            progress=False,
        )


def test_early_stopping_stops_after_patience(tmp_path, datasets, monkeypatch):
    import helpers.train as train

    real = train.predict_proba
    val_losses = iter([1.0, 0.5, 0.6, 0.7, 0.4, 0.3, 0.2, 0.1])  # best at epoch 1, then worse

    def scripted_val_loss(model, dataset, *, indices=None, **kw):
        probs, loss = real(model, dataset, indices=indices, **kw)
        return probs, (next(val_losses) if indices is not None else loss)

    monkeypatch.setattr(train, "predict_proba", scripted_val_loss)
    cfg = TrainConfig(**{**CFG.to_dict(), "epochs": 8, "patience": 2})
    history = fine_tune(cfg, *datasets, tmp_path, progress=False)
    assert history.finished and history.best_epoch == 1 and history.epochs == 4
    assert models.load_checkpoint(tmp_path / "best.pt")["epoch"] == 1


@pytest.mark.parametrize(
    "bad", [{"arch": "vgg"}, {"epochs": 0}, {"val_fraction": 1.0}, {"learning_rate": -1}]
)
def test_bad_config_is_a_clear_error(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_augmentation_keeps_range_and_repeats_with_the_generator():
    x = torch.rand(6, 3, 20, 20)
    a = augment_batch(x, torch.Generator().manual_seed(3))
    b = augment_batch(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 and not torch.equal(a, x)
