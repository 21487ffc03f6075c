"""Real photographs that ship with scikit-image, for running the ImageNet model on real pictures."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# name in skimage.data -> what the picture shows (ImageNet classes a correct model names)
PHOTOS = {
    "chelsea": "a tabby cat",
    "coffee": "a cup of espresso",
    "astronaut": "an astronaut (Eileen Collins)",
    "rocket": "a rocket on its launch pad",
}


def load_photos(names=tuple(PHOTOS), *, size: int = 224) -> torch.Tensor:
    """The named photos as [N, 3, size, size] floats in [0, 1]: centre square crop, then resize."""
    from skimage import data as skdata

    unknown = [n for n in names if n not in PHOTOS]
    if unknown:
        raise ValueError(f"unknown photo(s) {unknown}; expected some of {list(PHOTOS)}")
    images = []
    for name in names:
        rgb = np.asarray(getattr(skdata, name)())[..., :3]
        h, w = rgb.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = (
            torch.from_numpy(rgb[top : top + side, left : left + side].copy())
            .permute(2, 0, 1)
            .float()
            / 255
        )
        images.append(
            F.interpolate(
                square[None],
                size=(size, size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )[0]
        )
    return torch.stack(images).clamp(0, 1)
