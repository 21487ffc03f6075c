import pytest
import torch

from helpers import models, photos


def test_photos_load_as_unit_range_squares():
    x = photos.load_photos(size=96)
    assert x.shape == (len(photos.PHOTOS), 3, 96, 96) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and x.std() > 0.1
    with pytest.raises(ValueError, match="chelsea"):
        photos.load_photos(["nope"])


def test_imagenet_model_names_the_real_photos():
    model = models.build_model("efficientnet_lite0").eval()
    with torch.no_grad():
        top5 = model(photos.load_photos(["chelsea", "coffee"])).topk(5).indices
    assert set(top5[0].tolist()) & set(range(281, 286))  # a domestic cat
    assert 967 in top5[1].tolist()  # espresso
