import pickle

import numpy as np
import pytest
import torch
from skimage import data as skdata

from helpers import models


def _photo(name, size=224):
    image = torch.tensor(getattr(skdata, name)()).permute(2, 0, 1)[None].float() / 255
    return torch.nn.functional.interpolate(
        image, size=(size, size), mode="bilinear", antialias=True
    )


@pytest.fixture(scope="module")
def lite0():
    return models.build_model("efficientnet_lite0").eval()


@pytest.mark.parametrize("photo, accepted", [("chelsea", range(281, 286)), ("coffee", [967])])
def test_shipped_efficientnet_lite0_weights_recognise_real_photos(lite0, photo, accepted):
    with torch.no_grad():
        top = lite0(_photo(photo)).argmax(1).item()
    assert top in accepted, f"{photo} classified as {lite0.class_names[top]}"


def test_normalisation_is_the_first_layer(lite0):
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = lite0.net((x - 0.5) / 0.5)
        assert torch.allclose(lite0(x), expected, atol=1e-6)


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "mobilenet_v2"])
def test_activations_are_hookable_relus_and_not_inplace(arch):
    model = models.build_model(arch, 6, weights=None)
    assert not [m for m in model.modules() if getattr(m, "inplace", False) is True]
    assert not [m for m in model.modules() if type(m) is torch.nn.ReLU6]
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    assert len(relus) > 10
    x = torch.linspace(-3, 9, 13)
    assert torch.equal(relus[0](x), torch.nn.functional.relu6(x))


def test_unknown_arch_and_missing_weights_file_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="expected one of"):
        models.build_model("vgg99", 6)
    with pytest.raises(models.WeightsNotFoundError, match="nothing.pth"):
        models.build_model("resnet18", 6, weights=tmp_path / "nothing.pth")


def test_missing_torchvision_weights_name_the_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(models.WeightsNotFoundError) as err:
        models.build_model("resnet50", 6, weights="imagenet")
    message = str(err.value)
    assert "resnet50-11ad3fa6.pth" in message and str(tmp_path / "hub" / "checkpoints") in message


def test_torchvision_loading_path_reads_the_cache_file(tmp_path, monkeypatch):
    """A state dict placed where torchvision's cache expects ResNet50 is what gets loaded."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(123)
    reference = torchvision.models.resnet50()
    with torch.no_grad():
        reference.conv1.weight.fill_(0.125)
    target = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    model = models.build_model("resnet50", 6, weights="imagenet")
    assert torch.equal(model.net.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.net.layer4[2].conv3.weight, reference.layer4[2].conv3.weight)
    assert model.net.fc.out_features == 6


@pytest.mark.parametrize("arch", models.ARCHS)
def test_every_arch_builds_and_its_cam_layer_is_a_feature_map(arch):
    model = models.build_model(arch, 6, weights=None).eval()
    seen = {}
    layer = models.get_layer(model, models.cam_layer_name(arch))
    handle = layer.register_forward_hook(lambda m, i, o: seen.update(shape=o.shape))
    with torch.no_grad():
        out = model(torch.rand(2, 3, 96, 96))
    handle.remove()
    assert out.shape == (2, 6)
    assert len(seen["shape"]) == 4 and seen["shape"][2] >= 2
    names = models.conv_layer_names(model)
    assert names[0].startswith("net.") and len(names) > 10


def test_get_layer_unknown_name_lists_convolutions():
    model = models.build_model("resnet18", 3, weights=None)
    with pytest.raises(ValueError, match="net.conv1"):
        models.get_layer(model, "net.nope")


def test_save_and_load_model_round_trip(tmp_path):
    torch.manual_seed(0)
    model = models.build_model("resnet18", 3, weights=None, class_names=["a", "b", "c"]).eval()
    path = models.save_model(model, tmp_path / "m.pt", epoch=4)
    loaded = models.load_model(path, device="cpu")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.class_names == ["a", "b", "c"] and not loaded.training
    assert models.load_checkpoint(path)["epoch"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = models.save_checkpoint({"x": torch.ones(3)}, tmp_path / "ck.pt")

    def broken_save(obj, f):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        models.save_checkpoint({"x": torch.zeros(3)}, path)
    assert torch.equal(models.load_checkpoint(path)["x"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_checkpoints_load_with_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"payload": Evil()}, path)
    # weights_only refuses the pickled callable
    with pytest.raises(pickle.UnpicklingError):
        models.load_checkpoint(path)


def test_pick_device():
    assert models.pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert models.pick_device("auto").type == expected


def test_imagenet_categories():
    cats = models.imagenet_categories()
    assert len(cats) == 1000 and cats[967] == "espresso"
    assert np.unique(cats).size > 990
