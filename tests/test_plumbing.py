import os

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from helpers import plumbing as P


# --------------------------------------------------------------------------- eval mode
def mixed_model() -> nn.Sequential:
    """Training mode overall, but a frozen BatchNorm and a dropout block left in eval mode."""
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Sequential(nn.Dropout(0.5), nn.Flatten()),
        nn.LazyLinear(2),
    ).train()
    model[1].eval()
    model[3][0].eval()
    return model


def modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def old_pattern(model):
    """What quality, runs and train did before: ``model.train(was)`` on the root only."""
    import contextlib

    @contextlib.contextmanager
    def cm():
        was = model.training
        model.eval()
        try:
            yield model
        finally:
            model.train(was)

    return cm()


def test_eval_mode_restores_each_modules_own_mode():
    model = mixed_model()
    before = modes(model)
    assert len(set(before)) == 2  # really mixed
    with P.eval_mode(model) as m:
        assert m is model and not any(modes(model))
    assert modes(model) == before
    # the test discriminates: the old pattern puts the frozen BatchNorm back into training
    with old_pattern(model):
        pass
    assert modes(model) != before


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_eval_mode_restores_modes_when_the_body_raises(error):
    model = mixed_model()
    before = modes(model)
    with pytest.raises(error):
        with P.eval_mode(model):
            raise error("boom")
    assert modes(model) == before


def test_helpers_that_run_a_model_restore_mixed_modes():
    from helpers import explain, quality, train

    class Images(torch.utils.data.Dataset):
        labels = [0, 1]

        def __getitem__(self, i):
            return torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(i)), i

        def __len__(self):
            return 2

    model = mixed_model()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    model(x)  # materialise the lazy layer
    before = modes(model)
    quality.deletion_curve(model, x, 1, torch.rand(2, 8, 8), steps=2)
    assert modes(model) == before
    train.predict_proba(model, Images(), device="cpu")
    assert modes(model) == before
    explain.explain(model, x, 1, "saliency")
    assert modes(model) == before


# --------------------------------------------------------------------------- device
def test_model_device_first_parameter_then_buffer_then_cpu():
    assert P.model_device(nn.Linear(2, 2, device="meta")) == torch.device("meta")
    buffers_only = nn.BatchNorm1d(3, affine=False).to("meta")
    assert not list(buffers_only.parameters())
    assert P.model_device(buffers_only) == torch.device("meta")
    assert P.model_device(nn.Identity()) == torch.device("cpu")


# --------------------------------------------------------------------------- labels
@pytest.mark.parametrize(
    "y",
    [
        [0, 2, 1],
        (0, 2, 1),
        np.array([0, 2, 1], dtype=np.int32),
        np.array([0.0, 2.0, 1.0]),
        torch.tensor([0, 2, 1], dtype=torch.uint8),
        torch.tensor([0.0, 2.0, 1.0]),
    ],
)
def test_as_labels_accepts_every_container(y):
    t = P.as_labels(y, 3, "cpu", num_classes=3)
    assert t.dtype == torch.long and t.is_contiguous()
    assert t.tolist() == [0, 2, 1]


def test_as_labels_broadcasts_a_single_value():
    for y in (2, np.int64(2), torch.tensor(2), [2], np.array([2])):
        assert P.as_labels(y, 4).tolist() == [2, 2, 2, 2]
    out = P.as_labels(torch.tensor(1), 3)
    out[0] = 0  # a real tensor of its own, not a stride-0 view
    assert out.tolist() == [0, 1, 1]
    assert P.as_labels(3, 0).shape == (0,)
    assert P.as_labels([], 0).shape == (0,) and P.as_labels([]).dtype == torch.long
    assert P.as_labels([4, 0, 4, 1]).tolist() == [4, 0, 4, 1]  # n=None: any length
    assert P.as_labels(5).tolist() == [5]


def test_as_labels_moves_to_the_device():
    assert P.as_labels(torch.tensor([1, 0]), 2, torch.device("meta")).device.type == "meta"
    assert P.as_labels(np.array([1, 0]), 2, "meta").device.type == "meta"
    assert P.as_labels([1, 0], 2).device.type == "cpu"


@pytest.mark.parametrize(
    "y, n, num_classes, match",
    [
        ([0, 1, 2], 4, None, r"got 3 labels for 4 images; expected one per image"),
        ([[0, 1], [1, 0]], 4, None, r"labels must be \[N\] class indices .*shape \(2, 2\)"),
        (np.array([0.5, 1.0]), 2, None, "integer"),
        (np.array([np.nan, 1.0]), 2, None, "integer"),
        (torch.tensor([True, False]), 2, None, "integer class indices, got dtype torch.bool"),
        (np.array([True, False]), 2, None, "integer class indices"),
        (["cat", "dog"], 2, None, "integer class indices"),
        ([0, -1], 2, None, r"out of range: expected class indices, got values in \[-1, 0\]"),
        ([0, 3], 2, 3, r"out of range: expected class indices in \[0, 3\), got .*\[0, 3\]"),
    ],
)
def test_as_labels_errors_say_what_was_expected(y, n, num_classes, match):
    with pytest.raises(ValueError, match=match):
        P.as_labels(y, n, num_classes=num_classes)


def test_as_targets_is_the_same_converter_named_target():
    assert P.as_targets(1, 2).tolist() == [1, 1]
    with pytest.raises(ValueError, match="got 2 target for 3 images"):
        P.as_targets([0, 1], 3)
    with pytest.raises(ValueError, match=r"target out of range.*\[0, 6\)"):
        P.as_targets(6, 1, num_classes=6)


# --------------------------------------------------------------------------- images
def test_check_images():
    P.check_images(torch.rand(2, 3, 4, 4))
    P.check_images(torch.rand(0, 3, 4, 4))
    with pytest.raises(ValueError, match=r"x must be a float tensor \[N, C, H, W\].*\(3, 4, 4\)"):
        P.check_images(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match=r"torch.uint8"):
        P.check_images(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="got ndarray"):
        P.check_images(np.zeros((1, 3, 4, 4)))
    x = torch.rand(4, 3, 4, 4)
    x[2, 1, 0, 0] = float("nan")
    x[3, 0, 1, 1] = float("inf")
    with pytest.raises(
        ValueError, match=r"2 of 4 images hold NaN or inf values \(first: image 2\)"
    ):
        P.check_images(x)
    P.check_images(torch.rand(1, 1, 4, 4), channels=(3, 1))
    with pytest.raises(ValueError, match=r"imgs must be a float tensor \[N, 3, H, W\] or \[N, 1"):
        P.check_images(torch.rand(1, 2, 4, 4), "imgs", channels=(3, 1))


# --------------------------------------------------------------------------- blur
@pytest.mark.parametrize("sigma", [0.4, 0.7, 1.5, 2.6, None])
def test_gaussian_blur_matches_scipy_mirror(sigma):
    x = torch.rand(2, 3, 40, 33, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    s = 33 / 20 if sigma is None else sigma
    ref = gaussian_filter(x.numpy(), sigma=(0, 0, s, s), mode="mirror", truncate=3.0)
    np.testing.assert_allclose(P.gaussian_blur(x, sigma).numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("sigma", [0.8, 1.6, 3.0])
def test_gaussian_blur_matches_torchvision(sigma):
    from torchvision.transforms.functional import gaussian_blur

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    k = 2 * int(3 * sigma + 0.5) + 1
    ref = gaussian_blur(x, kernel_size=[k, k], sigma=[sigma, sigma])
    torch.testing.assert_close(P.gaussian_blur(x, sigma), ref, atol=1e-6, rtol=0)


def test_gaussian_blur_edge_cases():
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    same = P.gaussian_blur(x, 0)
    assert torch.equal(same, x) and same is not x
    flat = torch.full((1, 3, 12, 9), 0.3)
    torch.testing.assert_close(P.gaussian_blur(flat, 2.0), flat)
    # a large sigma on a small image: the radius is capped, the sum is kept
    big = P.gaussian_blur(x, 50.0)
    assert big.shape == x.shape and torch.isfinite(big).all()
    assert P.gaussian_blur(torch.rand(1, 1, 1, 6), 1.0).shape == (1, 1, 1, 6)
    xg = x.clone().requires_grad_(True)
    P.gaussian_blur(xg).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def test_explain_and_quality_blurred_baselines_are_one():
    from helpers import explain, quality

    for shape in [(2, 3, 32, 32), (1, 3, 150, 120)]:
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(4))
        expected = P.gaussian_blur(x)
        assert torch.equal(explain.make_baseline(x, "blurred"), expected)
        assert torch.equal(quality.make_baseline(x, "blurred"), expected)
        # and it is really blurred: sigma = side / 20
        s = min(shape[-2:]) / 20
        ref = gaussian_filter(x.numpy(), sigma=(0, 0, s, s), mode="mirror", truncate=3.0)
        np.testing.assert_allclose(expected.numpy(), ref, atol=1e-5)


# --------------------------------------------------------------------------- atomic writes
def test_atomic_write_writes_and_replaces(tmp_path):
    path = tmp_path / "a.bin"
    assert P.atomic_write_bytes(path, b"first") == path
    P.atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    P.atomic_write_text(tmp_path / "t.txt", "grüße\nline\n")
    assert (tmp_path / "t.txt").read_bytes() == "grüße\nline\n".encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "t.txt"]
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("error", [OSError, KeyboardInterrupt])
def test_a_writer_that_fails_mid_write_leaves_no_trace(tmp_path, error):
    path = tmp_path / "ck.pt"
    P.atomic_write_bytes(path, b"old complete file")

    def half_then_fail(f):
        f.write(b"half a fi")
        raise error("disk full")

    with pytest.raises(error):
        P.atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old complete file"
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]
    with pytest.raises(TypeError):
        P.atomic_write_bytes(tmp_path / "new.bin", "not bytes")  # raises inside the write
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_failing_fsync_or_rename_leaves_no_temporary_file(tmp_path, monkeypatch, step):
    path = tmp_path / "fig.png"
    P.atomic_write_bytes(path, b"old")

    def fail(*args):
        raise OSError(f"{step} failed")

    monkeypatch.setattr(os, step, fail)
    with pytest.raises(OSError, match=f"{step} failed"):
        P.atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_a_target_that_cannot_be_replaced_leaves_no_temporary_file(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(OSError):
        P.atomic_write_bytes(tmp_path / "folder", b"data")  # a folder is in the way
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]
    with pytest.raises(FileNotFoundError):
        P.atomic_write_text(tmp_path / "missing" / "x.txt", "data")
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_folder_leaves_nothing(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "keep.txt").write_text("old")
    locked.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            P.atomic_write_text(locked / "keep.txt", "new")
        assert (locked / "keep.txt").read_text() == "old"
        assert [p.name for p in locked.iterdir()] == ["keep.txt"]
    finally:
        locked.chmod(0o755)
