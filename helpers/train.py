"""Fine-tuning that logs every test image's prediction every epoch, and can resume.

One run lives in one folder: ``state.pt`` (everything needed to resume after an
interruption, rewritten atomically after each epoch), ``best.pt`` (the model with the lowest
validation loss, see :func:`helpers.models.load_model`) and ``history.npz`` (see
:class:`TrainHistory`). Randomness (shuffling, augmentation, dropout) is drawn from generators
seeded by ``(seed, epoch)``, so a run repeats exactly on the same machine, resumed or not.
The test images are only recorded, never used to choose anything.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from helpers.progress import tqdm

from . import folding, models
from .plumbing import atomic_write, eval_mode


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (call once at the top of a notebook)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "efficientnet_lite0"
    weights: str | None = "imagenet"
    image_size: int = 128
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 3e-4
    backbone_lr_factor: float = 0.3  # the pretrained body learns this much slower than the new head
    weight_decay: float = 1e-4
    val_fraction: float = 0.15
    patience: int = 3  # stop after this many epochs without a lower validation loss
    seed: int = 0
    augment: bool = True
    device: str = "auto"

    def __post_init__(self):
        if self.arch not in models.ARCHS:
            raise ValueError(
                f"unknown arch {self.arch!r}; expected one of {', '.join(models.ARCHS)}"
            )
        for name in ("image_size", "epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainHistory:
    """Per-epoch curves, and every test image's probabilities at every epoch."""

    classes: list[str]
    test_paths: list[str]
    test_labels: np.ndarray  # [N] int
    train_loss: np.ndarray  # [E]
    train_acc: np.ndarray  # [E]
    val_loss: np.ndarray  # [E]
    val_acc: np.ndarray  # [E]
    test_probs: np.ndarray  # [E, N, C] float32
    epoch_seconds: np.ndarray  # [E] wall time of training + evaluation
    best_epoch: int = -1  # index of the epoch whose weights are in best.pt
    finished: bool = False

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    @property
    def test_preds(self) -> np.ndarray:
        """[E, N] predicted class index per epoch and test image."""
        return self.test_probs.argmax(-1)

    @property
    def test_acc(self) -> np.ndarray:
        """[E] test accuracy per epoch (recorded, never used for model selection)."""
        return (self.test_preds == self.test_labels[None]).mean(1)

    def save(self, path: str | Path) -> Path:
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)}
        path = Path(path)
        return atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str | Path) -> "TrainHistory":
        with np.load(path, allow_pickle=False) as z:
            kw = {name: z[name] for name in z.files}
        kw["classes"] = [str(c) for c in kw["classes"]]
        kw["test_paths"] = [str(p) for p in kw["test_paths"]]
        kw["best_epoch"] = int(kw["best_epoch"])
        kw["finished"] = bool(kw["finished"])
        return cls(**kw)

    @classmethod
    def empty(cls, classes, test_paths, test_labels) -> "TrainHistory":
        n, c = len(test_paths), len(classes)
        return cls(
            list(classes),
            list(test_paths),
            np.asarray(test_labels, dtype=np.int64),
            *(np.zeros(0) for _ in range(4)),
            np.zeros((0, n, c), np.float32),
            np.zeros(0),
        )

    def truncate(self, epochs: int) -> None:
        """Keep the first ``epochs`` epochs (used when resuming from an earlier state)."""
        for name in (
            "train_loss",
            "train_acc",
            "val_loss",
            "val_acc",
            "test_probs",
            "epoch_seconds",
        ):
            setattr(self, name, getattr(self, name)[:epochs])

    def append(self, *, train_loss, train_acc, val_loss, val_acc, test_probs, seconds) -> None:
        self.train_loss = np.append(self.train_loss, train_loss)
        self.train_acc = np.append(self.train_acc, train_acc)
        self.val_loss = np.append(self.val_loss, val_loss)
        self.val_acc = np.append(self.val_acc, val_acc)
        self.test_probs = np.concatenate([self.test_probs, test_probs[None].astype(np.float32)])
        self.epoch_seconds = np.append(self.epoch_seconds, seconds)


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flip, random crop of 80-100 % of the side resized back, +-10 % contrast, +-5 %
    brightness."""
    n, _, h, w = x.shape
    out = torch.empty_like(x)
    for i in range(n):
        side = torch.empty(1).uniform_(0.8, 1.0, generator=generator).item()
        ch, cw = max(1, round(h * side)), max(1, round(w * side))
        top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
        crop = x[i : i + 1, :, top : top + ch, left : left + cw]
        out[i] = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0]
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    gain = 1 + 0.2 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)
    bias = 0.1 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * gain + mean + bias).clamp(0, 1)


def _batches(dataset, indices, batch_size):
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        images = torch.stack([dataset[int(i)][0] for i in chunk])
        labels = torch.as_tensor([int(dataset.labels[int(i)]) for i in chunk])
        yield images, labels


@torch.no_grad()
def predict_proba(
    model: torch.nn.Module,
    dataset,
    *,
    indices=None,
    batch_size: int = 64,
    device: str | torch.device = "auto",
) -> tuple[np.ndarray, float]:
    """Softmax probabilities [N, C] on ``dataset`` (or its ``indices``) and the mean loss."""
    device = models.pick_device(device)
    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    probs, loss_sum = [], 0.0
    with eval_mode(model):
        for images, labels in _batches(dataset, indices, batch_size):
            images = images.to(device)
            # same function, BatchNorm folded into the convolutions
            logits = folding.folded(model, images)(images)
            loss_sum += F.cross_entropy(logits, labels.to(device), reduction="sum").item()
            probs.append(logits.softmax(1).cpu().numpy())
    return np.concatenate(probs), loss_sum / max(1, len(indices))


def _optimizer(model: models.ImageClassifier, cfg: TrainConfig) -> torch.optim.Optimizer:
    head = {id(p) for p in _head_parameters(model)}
    body = [p for p in model.parameters() if id(p) not in head]
    return torch.optim.AdamW(
        [
            {"params": body, "lr": cfg.learning_rate * cfg.backbone_lr_factor},
            {"params": [p for p in model.parameters() if id(p) in head], "lr": cfg.learning_rate},
        ],
        weight_decay=cfg.weight_decay,
    )


def _head_parameters(model: models.ImageClassifier):
    net = model.net
    head = (
        net.fc if hasattr(net, "fc") else (net.classifier if hasattr(net, "classifier") else None)
    )
    return list(head.parameters())


@dataclass
class _Run:
    """What a fine-tuning run carries from one epoch to the next."""

    cfg: TrainConfig
    device: torch.device
    model: models.ImageClassifier
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_idx: np.ndarray  # indices into the training set that are trained on
    val_idx: np.ndarray  # the held-out part, used to keep the best model and stop early
    history: TrainHistory
    best_val: float = float("inf")
    bad_epochs: int = 0  # epochs since the validation loss last went down


def fine_tune(
    cfg: TrainConfig,
    train_set,
    test_set,
    run_dir: str | Path,
    *,
    progress: bool = True,
    on_epoch_end=None,
) -> TrainHistory:
    """Fine-tune ``cfg.arch`` on ``train_set`` (a validation part is held out), log ``test_set``.

    ``train_set``/``test_set`` are :class:`helpers.data.ImageDataset` (or anything with
    ``__getitem__ -> (image, label, index)``, ``labels``, ``classes`` and ``paths``). Resumes
    from ``run_dir/state.pt`` when a run with the same config stopped there; returns at once
    when it had finished. ``on_epoch_end(epoch, history)`` is called after each saved epoch.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = _start_run(cfg, train_set, test_set)
    if (run_dir / "state.pt").exists():
        _resume(run, run_dir)
        if run.history.finished:
            return run.history
    epochs = tqdm(
        range(run.history.epochs, cfg.epochs),
        desc="epochs",
        disable=not progress,
        initial=run.history.epochs,
        total=cfg.epochs,
    )
    for epoch in epochs:
        val_loss, val_acc = _run_epoch(run, train_set, test_set, epoch, progress=progress)
        _end_epoch(run, run_dir, epoch, val_loss)
        epochs.set_postfix(val_loss=f"{val_loss:.3f}", val_acc=f"{val_acc:.3f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, run.history)
        if run.history.finished:
            break
    return run.history


def _start_run(cfg: TrainConfig, train_set, test_set) -> _Run:
    """The model (its new head seeded by ``cfg.seed``), optimiser, schedule, the train/validation
    split and an empty history: the state before the first epoch."""
    from .data import split_train_val

    if list(train_set.classes) != list(test_set.classes):
        raise ValueError(
            f"train classes {train_set.classes} differ from test classes {test_set.classes}"
        )
    device = models.pick_device(cfg.device)
    torch.manual_seed(cfg.seed)  # the new head's initial weights
    model = models.build_model(
        cfg.arch, len(train_set.classes), cfg.weights, class_names=list(train_set.classes)
    ).to(device)
    optimizer = _optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    train_idx, val_idx = split_train_val(
        len(train_set),
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        labels=np.asarray(train_set.labels),
    )
    history = TrainHistory.empty(train_set.classes, test_set.paths, np.asarray(test_set.labels))
    return _Run(cfg, device, model, optimizer, scheduler, train_idx, val_idx, history)


def _resume(run: _Run, run_dir: Path) -> None:
    """Load ``run_dir/state.pt`` and ``history.npz`` into ``run`` (the config must match)."""
    state = models.load_checkpoint(run_dir / "state.pt")
    if json.loads(state["config"]) != run.cfg.to_dict():
        raise ValueError(f"{run_dir} holds a run with another config: {state['config']}")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    history = run.history = TrainHistory.load(run_dir / "history.npz")
    run.best_val, run.bad_epochs = state["best_val"], state["bad_epochs"]
    # The history is written before the state: after a crash between the two it holds one
    # epoch more than the weights have seen. Resume from the state's epoch, not the history's.
    done = int(state.get("epochs_done", history.epochs))
    if history.epochs > done:
        history.truncate(done)
        history.best_epoch = int(state.get("best_epoch", history.best_epoch))
        history.finished = False


def _run_epoch(run: _Run, train_set, test_set, epoch: int, *, progress: bool):
    """Train one epoch (shuffling, augmentation and dropout seeded by ``(seed, epoch)``), then
    evaluate and append the epoch to the history; returns the validation loss and accuracy."""
    cfg = run.cfg
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout
    order = run.train_idx[torch.randperm(len(run.train_idx), generator=generator).numpy()]
    loss_sum, correct = _train_steps(run, train_set, order, generator, epoch, progress=progress)
    run.scheduler.step()
    val_probs, val_loss = predict_proba(
        run.model, train_set, indices=run.val_idx, device=run.device
    )
    val_acc = float((val_probs.argmax(1) == np.asarray(train_set.labels)[run.val_idx]).mean())
    test_probs, _ = predict_proba(run.model, test_set, device=run.device)
    run.history.append(
        train_loss=loss_sum / len(order),
        train_acc=correct / len(order),
        val_loss=val_loss,
        val_acc=val_acc,
        test_probs=test_probs,
        seconds=time.perf_counter() - start,
    )
    return val_loss, val_acc


def _train_steps(run: _Run, train_set, order, generator, epoch: int, *, progress: bool):
    """One optimiser step per batch of ``order``; returns the summed loss and the number of
    correctly classified training images."""
    cfg, model, optimizer = run.cfg, run.model, run.optimizer
    model.train()
    loss_sum, correct = 0.0, 0
    steps = tqdm(
        _batches(train_set, order, cfg.batch_size),
        total=-(-len(order) // cfg.batch_size),
        desc=f"epoch {epoch + 1}",
        leave=False,
        disable=not progress,
    )
    for images, labels in steps:
        if cfg.augment:
            images = augment_batch(images, generator)
        images, labels = images.to(run.device), labels.to(run.device)
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
    return loss_sum, correct


def _end_epoch(run: _Run, run_dir: Path, epoch: int, val_loss: float) -> None:
    """Keep the model if its validation loss is the lowest yet, decide whether the run is
    finished (last epoch or ``patience`` epochs without improvement), then write the history
    and, last, the state to resume from."""
    cfg, history = run.cfg, run.history
    if val_loss < run.best_val:
        run.best_val, run.bad_epochs, history.best_epoch = val_loss, 0, epoch
        models.save_model(run.model, run_dir / "best.pt", epoch=epoch, val_loss=val_loss)
    else:
        run.bad_epochs += 1
    history.finished = epoch + 1 == cfg.epochs or run.bad_epochs >= cfg.patience
    history.save(run_dir / "history.npz")
    models.save_checkpoint(
        {
            "config": json.dumps(cfg.to_dict()),
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "best_val": run.best_val,
            "bad_epochs": run.bad_epochs,
            "epochs_done": epoch + 1,
            "best_epoch": history.best_epoch,
        },
        run_dir / "state.pt",
    )
