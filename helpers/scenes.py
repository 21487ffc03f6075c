"""A deterministic procedural generator of the six Intel Image Classification classes.

``render_scene`` draws one image of a class together with the mask of the region that makes it
that class (facades, trees, ice, mountain body, water, road). ``write_scenes`` writes a whole
data set to disk in the Intel Kaggle layout (``seg_train/seg_train/<class>/*.jpg``), the masks
next to it under ``masks/`` and, optionally, a planted shortcut: a small mark drawn on most
training images of one class only.

Why the shortcut comes with hybrids: measured with a fine-tuned EfficientNet-Lite0, with the
content deciding (hybrid share 0.2; a 7 % and a 14 % mark on 90-100 % of the street images) and
with 60 % hybrids in the marked class only (the model then learns "shared scene -> street" from
the class balance), the model ignored the mark. So ``write_scenes`` draws the training images of
the marked class AND of its confusable twin from their shared scene with probability
``shortcut_hybrid_share``, and on those only the mark tells the two apart.

The classes are meant to be easy for a person and not quite trivial for a small CNN: two pairs
overlap on purpose. Some ``buildings`` images show a strip of road and some ``street`` images a
narrow road between tall facades; ``mountain`` has a random snowiness and ``glacier`` a random
rockiness whose distributions overlap in their tails.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, gaussian_filter1d, zoom
from skimage.draw import ellipse, polygon

from .plumbing import atomic_write, atomic_write_text

CLASSES = ("buildings", "forest", "glacier", "mountain", "sea", "street")
SPLITS = ("seg_train", "seg_test")
MARK_COLORS = ((255, 0, 255), (255, 255, 0))  # magenta square, yellow cross
MARK_COLUMNS = ["split", "class", "file", "x0", "y0", "x1", "y1"]
HYBRID_SHARE = 0.2  # share of each confusable class drawn from the pair's common scene
SHORTCUT_HYBRID_SHARE = 0.6  # the same share for the images that carry the shortcut mark
_FORMAT_VERSION = 1
_GOLDEN = 0.6180339887498949


# ----------------------------------------------------------------------------- shared helpers
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates (float) of every pixel."""
    yy, xx = np.mgrid[0:size, 0:size]
    return yy.astype(np.float64), xx.astype(np.float64)


def _texture(rng: np.random.Generator, size: int, cells: int = 6) -> np.ndarray:
    """Smooth noise in about [-1, 1]: two octaves of bilinearly upsampled random grids."""
    out = np.zeros((size, size))
    for c, w in ((cells, 0.65), (cells * 4, 0.35)):
        grid = rng.normal(size=(c + 1, c + 1))
        out += w * zoom(grid, size / (c + 1), order=1, mode="nearest")[:size, :size]
    return out


def _jitter(rng: np.random.Generator, color, amount: float = 0.06) -> np.ndarray:
    """A colour with a little independent noise per channel, clipped to [0, 1]."""
    return np.clip(np.asarray(color, float) + rng.normal(0, amount, 3), 0, 1)


def _pick(rng: np.random.Generator, palette, amount: float = 0.06) -> np.ndarray:
    """A jittered colour drawn from a palette."""
    return _jitter(rng, palette[rng.integers(len(palette))], amount)


def _ridge(rng: np.random.Generator, size: int, amp: float, rough: float = 0.55) -> np.ndarray:
    """A 1-D profile of ``size`` values by midpoint displacement (zero mean scale ``amp``)."""
    n = 1 << int(np.ceil(np.log2(max(size, 2))))
    pts = np.zeros(n + 1)
    pts[[0, -1]] = rng.normal(0, amp * 0.5, 2)
    step, scale = n, amp
    while step > 1:
        half = step // 2
        pts[half::step] = (pts[:-1:step] + pts[step::step]) / 2 + rng.normal(0, scale, n // step)
        step, scale = half, scale * rough
    return np.interp(np.linspace(0, n, size), np.arange(n + 1), pts)


def _peaks(rng: np.random.Generator, size: int, n_peaks: int, height: float) -> np.ndarray:
    """Heights (pixels) of a skyline made of ``n_peaks`` triangular peaks plus jagged detail."""
    x = np.arange(size, dtype=float)
    env = np.zeros(size)
    for _ in range(n_peaks):
        c = rng.uniform(-0.1, 1.1) * size
        w = rng.uniform(0.25, 0.6) * size
        h = height * rng.uniform(0.55, 1.0)
        env = np.maximum(env, h * (1 - np.abs(x - c) / w))
    return env + _ridge(rng, size, amp=height * 0.18, rough=0.6)


def _sky(rng: np.random.Generator, size: int) -> np.ndarray:
    """A vertical sky gradient (blue to pale, sometimes overcast) with optional soft clouds."""
    yy, xx = _grid(size)
    top = _jitter(rng, (0.25, 0.45, 0.80), 0.08)
    low = _jitter(rng, (0.75, 0.85, 0.95), 0.05)
    if rng.random() < 0.2:  # overcast
        grey = rng.uniform(0.55, 0.85)
        top, low = top * 0.3 + grey * 0.7, low * 0.5 + grey * 0.5
    t = (yy / size) ** rng.uniform(0.6, 1.4)
    img = top * (1 - t[..., None]) + low * t[..., None]
    if rng.random() < 0.6:
        cloud = np.zeros((size, size))
        for _ in range(rng.integers(2, 8)):
            cy, cx = rng.uniform(0, 0.5) * size, rng.uniform(0, 1) * size
            sy, sx = rng.uniform(0.02, 0.06) * size, rng.uniform(0.06, 0.2) * size
            cloud += np.exp(-(((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2))
        alpha = np.clip(cloud * rng.uniform(0.4, 0.9), 0, 0.9)[..., None]
        img = img * (1 - alpha) + _jitter(rng, (0.96, 0.96, 0.97), 0.02) * alpha
    return img


def _paint(img: np.ndarray, where: np.ndarray, color, shade=None) -> None:
    """Fill the pixels ``where`` with ``color``, optionally multiplied by a shading field."""
    color = np.asarray(color, float)
    if shade is None:
        img[where] = color
    else:
        img[where] = color * shade[where][:, None]


def _finish(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray):
    """Global lighting, slight blur, mild noise, random horizontal flip; float -> uint8."""
    gain = rng.uniform(0.75, 1.2)
    contrast = rng.uniform(0.8, 1.2)
    tint = 1 + rng.normal(0, 0.035, 3)
    mean = img.mean()
    img = ((img - mean) * contrast + mean) * gain * tint
    sigma = rng.uniform(0.3, 0.9) * img.shape[0] / 128
    img = gaussian_filter(img, (sigma, sigma, 0))
    img = img + rng.normal(0, rng.uniform(0.005, 0.03), img.shape)
    if rng.random() < 0.5:
        img, mask = img[:, ::-1], mask[:, ::-1]
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out), np.ascontiguousarray(mask)


# ----------------------------------------------------------------------------- built things
_WALLS = (
    (0.62, 0.30, 0.24),
    (0.86, 0.78, 0.62),
    (0.60, 0.60, 0.62),
    (0.90, 0.89, 0.86),
    (0.42, 0.55, 0.68),
    (0.32, 0.32, 0.35),
    (0.78, 0.62, 0.45),
    (0.70, 0.74, 0.66),
)
_WINDOWS = ((0.15, 0.20, 0.28), (0.30, 0.40, 0.50), (0.55, 0.65, 0.75), (0.95, 0.85, 0.50))


def _windows(rng, u: np.ndarray, v: np.ndarray, size: int) -> np.ndarray:
    """Window grid on facade coordinates ``u`` (columns) and ``v`` (rows), both in pixels."""
    px, py = rng.uniform(5, 11, 2) * size / 128
    fx, fy = rng.uniform(0.35, 0.7, 2)
    return ((u % px) / px > 1 - fx) & ((v % py) / py > 1 - fy)


def _facade(rng, img, mask, box, size) -> None:
    """One frontal facade in the pixel box (x0, y0, x1, y1) with a window grid."""
    x0, y0, x1, y1 = (int(round(b)) for b in box)
    x0, x1, y0, y1 = max(x0, 0), min(x1, size), max(y0, 0), min(y1, size)
    if x1 <= x0 or y1 <= y0:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(float)
    wall = _pick(rng, _WALLS)
    region = img[y0:y1, x0:x1]
    region[:] = wall * (1 + 0.04 * _texture(rng, size)[y0:y1, x0:x1, None])
    margin = rng.uniform(0.02, 0.05) * size
    win = _windows(rng, xx - box[0], yy - box[1] - margin, size)
    win &= (xx > box[0] + margin) & (xx < box[2] - margin) & (yy > box[1] + margin)
    win &= yy < y1 - 2 * margin
    region[win] = _pick(rng, _WINDOWS, 0.05)
    mask[y0:y1, x0:x1] = True


def _frontal_city(rng, size: int, road: bool):
    """Frontal facades filling most of the frame over pavement, optionally a road strip in
    front. Returns (image, facades mask, road mask)."""
    img, facades = _sky(rng, size), np.zeros((size, size), bool)
    ground = size * (rng.uniform(0.6, 0.8) if road else rng.uniform(0.84, 1.02))
    if rng.random() < 0.5:  # a paler back row
        x = -rng.uniform(0, 0.2) * size
        while x < size:
            w = rng.uniform(0.2, 0.45) * size
            _facade(rng, img, facades, (x, rng.uniform(0.0, 0.3) * size, x + w, ground), size)
            img[facades] = img[facades] * 0.75 + img[0, 0] * 0.25
            x += w
    x = -rng.uniform(0, 0.15) * size
    while x < size:
        w = rng.uniform(0.15, 0.4) * size
        _facade(rng, img, facades, (x, rng.uniform(0.05, 0.5) * size, x + w, ground), size)
        x += w + (rng.uniform(0, 0.06) * size if rng.random() < 0.3 else 0)
    return img, facades, _ground_strip(rng, img, int(ground), size, road)


def _ground_strip(rng, img, ground: int, size: int, road: bool) -> np.ndarray:
    """Pavement below ``ground`` and, when ``road``, an asphalt strip with a dashed line.
    Returns the road mask."""
    mask = np.zeros((size, size), bool)
    if ground >= size:
        return mask
    img[ground:] = _jitter(rng, (0.62, 0.60, 0.56), 0.05)
    if road:
        top = ground + max(1, int(rng.uniform(0.02, 0.06) * size))
        img[top:] = _jitter(rng, (0.36, 0.36, 0.38), 0.04)
        mask[top:] = True
        mid = (top + size) // 2
        x = np.arange(size)
        dash = ((x + rng.integers(size)) % max(4, size // 8)) < max(2, size // 16)
        rows = slice(mid, min(size, mid + max(1, size // 64)))
        img[rows, dash] = _jitter(rng, (0.92, 0.90, 0.80), 0.03)
    return mask


def _buildings(rng, size, hybrid_share=HYBRID_SHARE):
    """Frontal facades; one in five shows a road strip in front, exactly like some streets."""
    img, facades, _ = _frontal_city(rng, size, road=rng.random() < hybrid_share)
    return img, facades


def _street_wall(rng, img, side: int, geo: dict, size: int) -> None:
    """A row of perspective facades on one side (``side`` = -1 left, +1 right) of the road."""
    yy, xx = _grid(size)
    h, vx = geo["horizon"], geo["vx"]
    d = side * (xx - vx)  # distance from the vanishing column, > 0 on this side
    edge = abs(geo["cx"] + side * geo["walk"] - vx)  # sidewalk edge at the bottom row
    kb = (size - h) / max(edge, 1.0)
    kt = (h - rng.uniform(-0.25, 0.2) * size) / max(vx if side < 0 else size - vx, 1.0)
    wall = (d >= rng.uniform(0.03, 0.1) * size) & (yy >= h - kt * d) & (yy <= h + kb * d)
    z = size / np.maximum(d, 1.0)  # world depth along the street
    seg = np.floor(z / rng.uniform(1.0, 3.0) + rng.uniform()).astype(int).clip(0, 40)
    colors = np.array([_pick(rng, _WALLS) for _ in range(41)])
    v = (yy - (h - kt * d)) / np.maximum((kb + kt) * d, 1e-6)
    shade = 0.85 + 0.15 * (side > 0)
    img[wall] = colors[seg[wall]] * shade
    nrows = rng.uniform(4, 9)
    win = (np.modf(v * nrows)[0] > 0.45) & (v < 0.85)
    win &= np.modf(z * rng.uniform(1.5, 3.0))[0] > rng.uniform(0.4, 0.6)
    img[wall & win] = _pick(rng, _WINDOWS, 0.05) * shade


def _street(rng, size, hybrid_share=HYBRID_SHARE):
    """A road in perspective between two rows of facades; one in five is frontal facades
    behind a road strip, drawn exactly like some buildings images. The road is the mask."""
    if rng.random() < hybrid_share:
        img, _, road = _frontal_city(rng, size, road=True)
        return img, road
    img = _sky(rng, size)
    yy, xx = _grid(size)
    h = rng.uniform(0.35, 0.6) * size
    off = rng.random() < 0.3  # vanishing point far to one side: one wall looks frontal
    vx = (rng.choice([0.12, 0.88]) + rng.normal(0, 0.05) if off else rng.uniform(0.35, 0.65)) * size
    half = rng.uniform(0.12, 0.55) * size  # half-width of the road at the bottom row
    geo = {"horizon": h, "vx": vx, "cx": vx + rng.normal(0, 0.08) * size}
    geo["walk"] = half * rng.uniform(1.15, 1.6)
    t = np.clip((yy - h) / (size - h), 0, None)
    centre = vx + (geo["cx"] - vx) * t
    below = yy > h
    img[below] = _jitter(rng, (0.62, 0.60, 0.56), 0.05)
    _paint(img, below & (np.abs(xx - centre) < geo["walk"] * t), _jitter(rng, (0.7, 0.68, 0.64)))
    road = below & (np.abs(xx - centre) < half * t)
    _paint(img, road, _jitter(rng, (0.36, 0.36, 0.38), 0.04), 1 + 0.05 * _texture(rng, size))
    dash = np.modf(size * rng.uniform(0.4, 0.9) / (yy - h + 0.5))[0] < 0.5
    line = road & dash & (np.abs(xx - centre) < np.maximum(0.4, 0.012 * size * t))
    img[line] = _jitter(rng, (0.92, 0.90, 0.80), 0.03)
    for side in (-1, 1):
        _street_wall(rng, img, side, geo, size)
    return img, road


# ----------------------------------------------------------------------------- nature
_GREENS = (
    (0.13, 0.35, 0.15),
    (0.20, 0.45, 0.18),
    (0.10, 0.28, 0.16),
    (0.35, 0.50, 0.20),
    (0.25, 0.40, 0.12),
    (0.45, 0.55, 0.22),
)


def _tree(rng, img, mask, base_y: float, x: float, height: float, conifer: bool, size: int):
    """One tree (trunk and a triangular or elliptic crown) standing at (x, base_y)."""
    shape = (size, size)
    tw = max(1.0, height * 0.07)
    rr, cc = polygon(
        [base_y, base_y, base_y - height * 0.45, base_y - height * 0.45],
        [x - tw, x + tw, x + tw, x - tw],
        shape,
    )
    img[rr, cc], mask[rr, cc] = _jitter(rng, (0.35, 0.24, 0.15), 0.04), True
    green = _pick(rng, _GREENS, 0.05)
    if conifer:
        w = height * rng.uniform(0.18, 0.3)
        for k in range(3):  # stacked tiers
            y0 = base_y - height * (0.25 + 0.22 * k)
            rr, cc = polygon([y0, y0, y0 - height * 0.4], [x - w, x + w, x], shape)
            img[rr, cc], mask[rr, cc] = green * (0.85 + 0.08 * k), True
            w *= 0.78
    else:
        ry, rx = height * rng.uniform(0.28, 0.4), height * rng.uniform(0.22, 0.4)
        rr, cc = ellipse(base_y - height * 0.45 - ry * 0.7, x, ry, rx, shape)
        img[rr, cc], mask[rr, cc] = green, True
        rr, cc = ellipse(base_y - height * 0.5 - ry, x - rx * 0.25, ry * 0.5, rx * 0.5, shape)
        img[rr, cc] = green * 1.15


def _forest(rng, size):
    """Many trees of varied greens over grass, back to front; the trees are the mask."""
    img, mask = _sky(rng, size), np.zeros((size, size), bool)
    yy, xx = _grid(size)
    h = rng.uniform(0.2, 0.55) * size
    _paint(img, yy >= h, _pick(rng, _GREENS[3:], 0.05), 1 + 0.12 * _texture(rng, size))
    line = h - size * (0.06 + 0.05 * np.abs(_ridge(rng, size, 1.0, 0.7)))
    back = (yy >= line[None, :]) & (yy < h + 2)
    _paint(img, back, _pick(rng, _GREENS[:3], 0.03) * 0.8, 1 + 0.1 * _texture(rng, size))
    mask |= back
    conifer_share = rng.uniform()
    bases = np.sort(rng.uniform(h, size * 1.15, rng.integers(12, 36)))
    for y in bases:
        depth = (y - h) / (size - h)
        height = size * rng.uniform(0.25, 0.45) * (0.35 + 0.9 * depth)
        x = rng.uniform(-0.05, 1.05) * size
        _tree(rng, img, mask, y, x, height, rng.random() < conifer_share, size)
    return img, mask


_ROCKS = (
    (0.45, 0.43, 0.42),
    (0.50, 0.42, 0.34),
    (0.38, 0.36, 0.30),
    (0.42, 0.45, 0.33),
    (0.55, 0.52, 0.50),
    (0.35, 0.30, 0.28),
)
_SNOW = (0.93, 0.95, 0.98)


def _rock_layer(rng, img, top: np.ndarray, snow: float, haze: float, size: int) -> np.ndarray:
    """Fill below the skyline ``top`` with shaded rock, snow above a jittered snow line."""
    yy, xx = _grid(size)
    body = yy >= top[None, :]
    slope = np.gradient(gaussian_filter1d(top, size * 0.02))[None, :] * rng.choice([-1, 1])
    shade = 1 + 0.12 * _texture(rng, size) + np.clip(slope, -2, 2) * 0.08
    rock = _pick(rng, _ROCKS, 0.05) * (1 - haze) + img[0, 0] * haze
    _paint(img, body, rock, shade)
    peak, base = top.min(), top.max() + 0.1 * size
    snow_line = peak + snow * (base - peak) + 0.08 * size * _texture(rng, size)
    snowy = body & (yy < snow_line)
    white = _jitter(rng, _SNOW, 0.02) * (1 - haze * 0.5) + img[0, 0] * haze * 0.5
    _paint(img, snowy, white, 1 + 0.06 * _texture(rng, size) + np.clip(slope, -2, 2) * 0.05)
    return body


def _mountain(rng, size, hybrid_share=HYBRID_SHARE):
    """One to three jagged ridges, back ones hazier, with a random snowiness; one in five is
    the scene shared with glacier (ridge over an ice tongue). Mask = mountain bodies."""
    if rng.random() < hybrid_share:
        img, body, _ = _alpine(rng, size)
        return img, body
    img, mask = _sky(rng, size), np.zeros((size, size), bool)
    snowiness = rng.beta(1.1, 3.0)  # mostly little snow, a long tail of snowy peaks
    n = rng.integers(1, 4)
    for i in range(n):
        base = size * (rng.uniform(0.45, 0.7) + 0.08 * i)
        top = base - _peaks(rng, size, rng.integers(1, 4), size * rng.uniform(0.25, 0.5))
        haze = 0.3 * (n - 1 - i) / max(n - 1, 1)
        mask |= _rock_layer(rng, img, top, snowiness * rng.uniform(0.7, 1.2), haze, size)
    if rng.random() < 0.5:  # a valley floor in front
        yy, _ = _grid(size)
        floor = size * rng.uniform(0.82, 0.97) + _ridge(rng, size, 0.02 * size)[None, :]
        valley = yy >= floor
        floor_colors = (_SNOW,) if snowiness > 0.45 else _GREENS[3:] + _ROCKS[1:3]
        _paint(img, valley, _pick(rng, floor_colors, 0.05), 1 + 0.1 * _texture(rng, size))
        mask &= ~valley
    return img, mask


def _ice_field(rng, img, edge: np.ndarray, rockiness: float, size: int) -> np.ndarray:
    """Pale-blue ice below the profile ``edge`` with crevasses and moraine; returns the ice."""
    yy, xx = _grid(size)
    ice = yy >= edge[None, :]
    depth = np.clip((yy - edge[None, :]) / size, 0, 1)[..., None]
    pale, blue = _jitter(rng, (0.92, 0.95, 0.98), 0.02), _jitter(rng, (0.62, 0.78, 0.90), 0.04)
    tex = _texture(rng, size)
    mix = np.clip(depth * rng.uniform(0.5, 1.5) + 0.25 * tex[..., None], 0, 1)
    img[ice] = (pale * (1 - mix) + blue * mix)[ice]
    angle = rng.uniform(-0.6, 0.6)
    phase = (xx * np.cos(angle) + yy * np.sin(angle)) * rng.uniform(0.15, 0.35) * 128 / size
    crack = ice & (np.abs(np.sin(phase + 3 * tex)) < rng.uniform(0.05, 0.15))
    img[crack] = _jitter(rng, (0.30, 0.50, 0.68), 0.04)
    _moraine(rng, img, ice, rockiness, size)
    return ice


def _alpine(rng, size):
    """The scene mountain and glacier share: a snowy ridge with a small ice tongue in front.
    Returns (image, mountain body without the ice, ice)."""
    img = _sky(rng, size)
    top = size * rng.uniform(0.6, 0.72) - _peaks(
        rng, size, rng.integers(1, 4), size * rng.uniform(0.3, 0.5)
    )
    body = _rock_layer(rng, img, top, rng.uniform(0.2, 0.7), 0.0, size)
    edge = size * rng.uniform(0.7, 0.86) + _ridge(rng, size, 0.03 * size, 0.5)
    ice = _ice_field(rng, img, edge, rng.beta(1.1, 3.0), size)
    return img, body & ~ice, ice


def _glacier(rng, size, hybrid_share=HYBRID_SHARE):
    """A pale ice mass with crevasses in the lower part, icy peaks behind; mask = the ice."""
    if rng.random() < hybrid_share:
        img, _, ice = _alpine(rng, size)
        return img, ice
    img = _sky(rng, size)
    rockiness = rng.beta(1.1, 3.0)  # mostly clean ice, a long tail of rocky, moraine-rich ice
    edge = size * rng.uniform(0.4, 0.68) + _ridge(rng, size, 0.03 * size, 0.5)
    if rng.random() < 0.8:  # icy peaks behind, rockier when the glacier is rocky
        top = (
            edge.mean()
            + 0.05 * size
            - _peaks(rng, size, rng.integers(1, 4), size * rng.uniform(0.2, 0.45))
        )
        _rock_layer(rng, img, top, 1.1 - 1.3 * rockiness, 0.0, size)
    return img, _ice_field(rng, img, edge, rockiness, size)


def _moraine(rng, img, ice: np.ndarray, rockiness: float, size: int) -> None:
    """Dark rock-debris stripes running down the ice, wider and more opaque when rocky."""
    yy, xx = _grid(size)
    tex = _texture(rng, size, 4)
    stripes = np.abs(np.sin(xx * rng.uniform(0.03, 0.08) * 128 / size + 2.5 * tex))
    debris = ice & (stripes < 0.06 + 0.6 * rockiness)
    alpha = min(0.85, 0.35 + 0.8 * rockiness)
    dirt = _pick(rng, _ROCKS, 0.04)
    img[debris] = img[debris] * (1 - alpha) + dirt * alpha


def _sea(rng, size):
    """Water below the horizon with wave streaks and sun glint; optional island and beach."""
    img = _sky(rng, size)
    yy, xx = _grid(size)
    h = rng.uniform(0.3, 0.6) * size
    if rng.random() < 0.35:  # a distant island on the horizon
        top = h - np.clip(_peaks(rng, size, 1, size * rng.uniform(0.04, 0.12)), 0, None)
        _paint(img, (yy >= top[None, :]) & (yy < h), _pick(rng, _GREENS[:3] + _ROCKS[:1]) * 0.8)
    water = yy >= h
    t = np.clip((yy - h) / (size - h), 0, 1)[..., None]
    far = img[max(int(h) - 1, 0), size // 2] * 0.5 + _jitter(rng, (0.35, 0.55, 0.70)) * 0.5
    deep = _pick(rng, ((0.05, 0.20, 0.45), (0.08, 0.40, 0.48), (0.10, 0.30, 0.55)), 0.04)
    grad = far * (1 - t**0.6) + deep * t**0.6
    z = size * rng.uniform(0.6, 1.5) / (yy - h + 1.0) + 0.6 * _texture(rng, size, 12)
    waves = np.sin(2 * np.pi * z)
    sun = rng.uniform(0.1, 0.9) * size
    glint = np.exp(-(((xx - sun) / (size * (0.04 + 0.12 * t[..., 0]))) ** 2)) * (waves > 0.6)
    col = grad * (1 + 0.08 * waves[..., None]) + rng.uniform(0.3, 0.8) * glint[..., None]
    img[water] = col[water]
    if rng.random() < 0.4:  # a beach strip in front
        shore = size * rng.uniform(0.8, 0.95) + _ridge(rng, size, 0.02 * size)[None, :]
        beach = yy >= shore
        _paint(img, beach, _jitter(rng, (0.85, 0.78, 0.60), 0.05), 1 + 0.05 * _texture(rng, size))
        _paint(img, water & (yy >= shore - max(1.0, size / 100)) & ~beach, (0.95, 0.97, 0.97))
        water &= ~beach
    return img, water


_RENDERERS = {
    "buildings": _buildings,
    "forest": _forest,
    "glacier": _glacier,
    "mountain": _mountain,
    "sea": _sea,
    "street": _street,
}
_TWINS = {
    "buildings": "street",
    "street": "buildings",
    "mountain": "glacier",
    "glacier": "mountain",
}


# ----------------------------------------------------------------------------- public API
def render_scene(
    class_name: str, rng: np.random.Generator, size: int = 128, *, hybrid_share: float | None = None
):
    """One image of ``class_name``: (RGB uint8 [size, size, 3], bool mask [size, size]).

    The mask marks the region that makes the image its class: facades (buildings), trees
    (forest), ice (glacier), the mountain body (mountain), water (sea), the road (street).
    ``hybrid_share`` (default ``HYBRID_SHARE``) is the chance that a class of a confusable pair
    (buildings/street, mountain/glacier) is drawn from the scene both share; others ignore it.
    """
    if class_name not in _RENDERERS:
        raise ValueError(f"unknown class {class_name!r}; expected one of {', '.join(CLASSES)}")
    if int(size) < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    renderer = _RENDERERS[class_name]
    if hybrid_share is not None and class_name in _TWINS:
        img, mask = renderer(rng, int(size), hybrid_share=float(hybrid_share))
    else:
        img, mask = renderer(rng, int(size))
    return _finish(rng, img, mask)


def _mark_box(size: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Box of the shortcut mark: about 17 % of the side (3 % of the area), near the top-left
    corner, jittered."""
    side = max(4, int(round(size * rng.uniform(0.16, 0.19))))
    x0, y0 = (int(round(size * v)) for v in rng.uniform(0.03, 0.09, 2))
    return x0, y0, x0 + side, y0 + side


def add_shortcut_mark(image: np.ndarray, rng: np.random.Generator):
    """Draw the shortcut mark (magenta square, yellow cross) on a copy of ``image``.

    Returns the new image and the mark's box (x0, y0, x1, y1), x1/y1 exclusive.
    """
    out = np.array(image, dtype=np.uint8, copy=True)
    x0, y0, x1, y1 = _mark_box(min(out.shape[:2]), rng)
    out[y0:y1, x0:x1] = MARK_COLORS[0]
    side = x1 - x0
    bar = slice(side // 2 - max(1, side // 6), side // 2 + max(1, side // 6))
    out[y0:y1, x0:x1][bar, :] = MARK_COLORS[1]
    out[y0:y1, x0:x1][:, bar] = MARK_COLORS[1]
    return out, (x0, y0, x1, y1)


def _scene_rng(seed: int, split: str, class_name: str, index: int, stream: int = 0):
    """The generator of one image (stream 0) or of its shortcut mark (stream 1)."""
    key = [int(seed), SPLITS.index(split), CLASSES.index(class_name), int(index), stream]
    return np.random.default_rng(key)


def _is_marked(index: int, fraction: float) -> bool:
    """Whether training image ``index`` carries the mark: a low-discrepancy choice that hits
    ``fraction`` of any prefix of indices closely and does not depend on the set size."""
    return (index * _GOLDEN) % 1.0 < fraction


def _check_params(params: dict) -> None:
    """Stop with one clear message on a bad ``write_scenes`` parameter."""
    if params["shortcut_class"] is not None and params["shortcut_class"] not in CLASSES:
        raise ValueError(
            f"unknown shortcut_class {params['shortcut_class']!r}; "
            f"expected None or one of {', '.join(CLASSES)}"
        )
    for name in ("shortcut_fraction", "shortcut_hybrid_share"):
        if not 0.0 <= params.get(name, 0.0) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {params[name]}")
    if params["n_train"] < 1 or params["n_test"] < 1:
        raise ValueError("n_train and n_test (images per class) must be at least 1")
    if params["size"] < 16:
        raise ValueError(f"size must be at least 16 pixels, got {params['size']}")
    if not 1 <= params["jpeg_quality"] <= 95:
        raise ValueError(f"jpeg_quality must be in [1, 95], got {params['jpeg_quality']}")


def _claim_folder(root: Path, params: dict) -> bool:
    """True when ``root`` is already complete for ``params``; raise when it holds anything else.

    An interrupted run with the same parameters (``.scenes_partial.json``) is resumed.
    """
    done, partial = root / "scenes.json", root / ".scenes_partial.json"
    for marker in (done, partial):
        if marker.exists():
            old = json.loads(marker.read_text())
            if old != params:
                diff = {k: (old.get(k), v) for k, v in params.items() if old.get(k) != v}
                raise ValueError(
                    f"{root} already holds scenes written with other parameters "
                    f"(name: (on disk, asked)) {diff}; use another folder or delete it yourself"
                )
            return marker == done
    if root.exists() and any(root.iterdir()):
        raise ValueError(
            f"{root} is not empty and was not written by write_scenes; give an empty or new folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(partial, json.dumps(params, indent=2))
    return False


def _write_one(root: Path, split: str, class_name: str, index: int, params: dict):
    """Write one image and its mask (unless already there); return its mark row or None."""
    name = f"{index:05d}"
    image_path = root / split / split / class_name / f"{name}.jpg"
    mask_file = root / "masks" / split / class_name / f"{name}.png"
    marked = (
        split == "seg_train"
        and class_name == params["shortcut_class"]
        and _is_marked(index, params["shortcut_fraction"])
    )
    box = _mark_box(params["size"], _scene_rng(params["seed"], split, class_name, index, 1))
    if not image_path.exists():
        rng = _scene_rng(params["seed"], split, class_name, index)
        twins = (params["shortcut_class"], _TWINS.get(params["shortcut_class"]))
        hybrid = (
            params.get("shortcut_hybrid_share")
            if split == "seg_train" and class_name in twins
            else None
        )
        image, mask = render_scene(class_name, rng, params["size"], hybrid_share=hybrid)
        if marked:
            image, box = add_shortcut_mark(
                image, _scene_rng(params["seed"], split, class_name, index, 1)
            )
        mask_img = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
        atomic_write(mask_file, lambda f: mask_img.save(f, format="PNG"))
        atomic_write(
            image_path,
            lambda f: Image.fromarray(image).save(
                f, format="JPEG", quality=params["jpeg_quality"], subsampling=0
            ),
        )
    return (split, class_name, image_path.name, *box) if marked else None


def write_scenes(
    root,
    *,
    n_train: int = 120,
    n_test: int = 50,
    size: int = 128,
    seed: int = 0,
    shortcut_class: str | None = None,
    shortcut_fraction: float = 0.9,
    shortcut_hybrid_share: float = SHORTCUT_HYBRID_SHARE,
    jpeg_quality: int = 92,
    progress: bool = True,
) -> Path:
    """Write a scene data set in the Intel Kaggle layout under ``root`` and return ``root``.

    Images go to ``root/seg_{train,test}/seg_{train,test}/<class>/NNNNN.jpg`` (``n_train`` and
    ``n_test`` per class), masks to ``root/masks/<split>/<class>/NNNNN.png`` (0/255), the
    shortcut marks (train images of ``shortcut_class`` only) to ``root/shortcut_marks.csv`` and
    the parameters, last, to ``root/scenes.json``. A complete folder with the same parameters is
    left alone; other parameters on a non-empty folder raise ``ValueError``.

    The shortcut: ``shortcut_fraction`` of the training images of ``shortcut_class`` carry the
    mark; when the class has a confusable twin, the training images of BOTH are drawn from the
    scene the pair shares with probability ``shortcut_hybrid_share`` (instead of
    ``HYBRID_SHARE``; test images keep ``HYBRID_SHARE``). On those images only the mark tells
    the class from its twin, so the mark is worth learning, as a watermark is in a real data set
    where it co-occurs with the hard cases of one class (why: see the module docstring).
    """
    root = Path(root)
    params = {
        "format": _FORMAT_VERSION,
        "n_train": int(n_train),
        "n_test": int(n_test),
        "size": int(size),
        "seed": int(seed),
        "shortcut_class": shortcut_class,
        "shortcut_fraction": float(shortcut_fraction),
        "jpeg_quality": int(jpeg_quality),
    }
    if shortcut_class is not None:
        params["shortcut_hybrid_share"] = float(shortcut_hybrid_share)
    _check_params(params)
    if _claim_folder(root, params):
        return root
    rows = _write_images(root, params, n_train, n_test, progress=progress)
    _write_marks(root, [r for r in rows if r is not None])
    atomic_write_text(root / "scenes.json", json.dumps(params, indent=2))
    (root / ".scenes_partial.json").unlink(missing_ok=True)
    return root


def _write_images(root: Path, params: dict, n_train, n_test, *, progress: bool) -> list:
    """Write every image and mask (``n_train`` and ``n_test`` per class), creating their folders
    first; returns one :func:`_write_one` result per image (a marks row or None)."""
    from helpers.progress import tqdm

    jobs = [
        (split, c, i)
        for split, n in zip(SPLITS, (n_train, n_test))
        for c in CLASSES
        for i in range(n)
    ]
    for split, c in {(s, c) for s, c, _ in jobs}:
        (root / split / split / c).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split / c).mkdir(parents=True, exist_ok=True)
    return [
        _write_one(root, *job, params)
        for job in tqdm(jobs, desc="writing scenes", disable=not progress)
    ]


def _write_marks(root: Path, rows: list) -> None:
    """Write ``shortcut_marks.csv`` (header only when there are no marks)."""
    lines = [",".join(MARK_COLUMNS)] + [",".join(str(v) for v in row) for row in rows]
    atomic_write_text(root / "shortcut_marks.csv", "\n".join(lines) + "\n")


def mask_path(root, image_path) -> Path:
    """Path of the mask of an image: ``root/seg_train/seg_train/forest/00003.jpg`` ->
    ``root/masks/seg_train/forest/00003.png``; ``image_path`` absolute or relative to root."""
    root = Path(root)
    path = Path(image_path)
    if not path.is_absolute():
        path = root / path
    try:
        parts = Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).parts
    except ValueError:
        raise ValueError(f"{image_path} is not inside {root}") from None
    if len(parts) != 4 or parts[0] != parts[1] or parts[0] not in SPLITS:
        raise ValueError(
            f"{image_path} is not an image of the Intel layout "
            "<split>/<split>/<class>/<file> with split seg_train or seg_test"
        )
    return root / "masks" / parts[0] / parts[2] / (Path(parts[3]).stem + ".png")


def load_mask(root, image_path, size: int | None = None) -> np.ndarray:
    """The ground-truth mask of an image as a bool array (nearest-neighbour resized to
    ``size`` x ``size`` when ``size`` is given)."""
    with Image.open(mask_path(root, image_path)) as im:
        im = im.convert("L")
        if size is not None:
            im = im.resize((int(size), int(size)), Image.NEAREST)
        return np.asarray(im) > 127


def shortcut_marks(root):
    """The planted shortcut marks as a DataFrame (split, class, file, x0, y0, x1, y1)."""
    import pandas as pd

    path = Path(root) / "shortcut_marks.csv"
    if not path.exists():
        return pd.DataFrame(
            {c: pd.Series(dtype=object if i < 3 else "int64") for i, c in enumerate(MARK_COLUMNS)}
        )
    return pd.read_csv(path, dtype={"split": str, "class": str, "file": str})
