"""Synthetic whale photos whose answers are known: the demo's dataset, with a shortcut planted on purpose.

Every image is drawn from nothing (numpy and OpenCV, no download): open water with waves, sometimes a sky
band, sun glare, ice floes, a boat, foam, and one animal whose species shows in the animal itself (fin shape,
body colour and patches), at any scale from a distant fin to a body that fills the frame. The true animal mask
is saved for every image, so an audit's foreground estimate and background-attention score can be checked
against the truth.

Planted shortcuts (``shortcut=True``): belugas are photographed mostly with pack ice in the distance (and
from afar, so the animal is small and the ice large, apart from the animal), and most humpback photos carry a
photographer's watermark in the bottom-right corner. The ice is as white as a beluga, so colour alone does not
tell the two apart, and a distant beluga is a few pixels. Other species swim in open water, rarely
among ice, and a watermark is rare. A model trained on this data can reach high accuracy by looking at the ice
or the watermark instead of the animal: that is what the audit is for.

Layout written by :func:`make_dataset`::

    images/<14-hex-id>.jpg   the photos
    masks/<14-hex-id>.png    true animal mask, 0/255, same size as the photo
    labels.csv               image,species,individual_id   (the Happywhale layout)
    truth.csv                what was drawn: background, sky, glare, foam, logo, shortcut, animal area and box
    synth.json               the parameters; written last, so its presence means the folder is complete
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..files import write_json

SYNTH_VERSION = 3
SPECIES = ["killer_whale", "bottlenose_dolphin", "humpback_whale", "beluga"]
#: species -> the cue planted in most of its photos
SHORTCUTS = {"beluga": "ice", "humpback_whale": "logo"}
SHORTCUT_SHARE = 0.9    # share of a shortcut species' photos that carry its cue
RARE_ICE_SHARE = 0.05   # share of the other species' photos taken among ice
RARE_LOGO_SHARE = 0.03  # share of the other species' photos with a watermark
BOAT_SHARE = 0.15       # share of open-water photos with a boat in view
PHOTOS_PER_INDIVIDUAL = 8
#: body length as a share of the photo's width, drawn log-uniform; belugas among ice are photographed from afar
#: (elsewhere, and in the control set without planted cues, they are as large as the other species)
LENGTHS = (0.35, 1.2)
LENGTHS_AMONG_ICE = {"beluga": (0.15, 0.5)}
#: in an ice scene the pack ice fills the far part of the water (this share of it, from the horizon) and the
#: animal surfaces in the open water nearer the camera (its waterline below ICE_NEAR of the water)
ICE_FAR, ICE_NEAR = 0.45, 0.72
LOGO = "(c)PIX"

_WATER = np.array([[0.10, 0.22, 0.40], [0.07, 0.14, 0.28], [0.33, 0.38, 0.44],
                   [0.14, 0.33, 0.38], [0.20, 0.38, 0.60], [0.24, 0.30, 0.36]], np.float32)
_HULLS = np.array([[0.92, 0.92, 0.90], [0.75, 0.12, 0.10], [0.95, 0.45, 0.10],
                   [0.10, 0.16, 0.35], [0.45, 0.47, 0.50]], np.float32)


@dataclass(frozen=True)
class Drawn:
    """One synthetic photo and what was drawn in it."""

    rgb: np.ndarray     # uint8 HxWx3
    mask: np.ndarray    # bool HxW, the animal's visible pixels
    background: str     # "water", "ice" or "boat"
    sky: bool
    glare: bool
    foam: bool
    logo: bool


# ---------------------------------------------------------------- scene


def _smooth_noise(rng, size: int, cells: int) -> np.ndarray:
    """Noise with features about size/cells pixels wide, roughly in -1..1."""
    coarse = rng.standard_normal((cells, cells), dtype=np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_LINEAR)


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel rows and columns scaled to 0..1 (y, x), shared by every photo of this size."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return y, x


@lru_cache(maxsize=4)
def _grain(size: int) -> np.ndarray:
    """A fixed tile of sensor noise, twice the photo's size: photos take a random window of it
    (drawing fresh Gaussian noise for every pixel would cost more than the rest of the photo)."""
    return np.random.default_rng(12345).standard_normal((2 * size, 2 * size, 3), dtype=np.float32)


def _water(rng, s: int, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """Water seen at a slant: waves crowd towards the horizon. Returns (rgb float32, wave height -1..1)."""
    y, x = _grid(s)
    depth = np.clip(y - horizon, 0, None) + 0.08          # near 0 at the horizon, about 1 at the bottom
    rows = np.log(depth) * rng.uniform(6, 12)               # wave crests bunch up with distance
    warp = _smooth_noise(rng, s, 4) * rng.uniform(1.0, 2.5)
    waves = (np.sin(rows * 2 * np.pi / 2.0 + x * rng.uniform(-4, 4) + warp)
             + 0.5 * np.sin(rows * 2 * np.pi * 1.7 + x * rng.uniform(8, 20) + 1.7 * warp)
             + 0.35 * _smooth_noise(rng, s, 24)) / 1.6
    base = _WATER[rng.integers(len(_WATER))] * rng.uniform(0.8, 1.2, 3).astype(np.float32)
    distance_haze = np.exp(-3 * depth)[..., None] * 0.25     # water pales towards the horizon
    rgb = base * (1 + 0.22 * waves[..., None]) + distance_haze
    return rgb, waves


def _sky(rng, rgb: np.ndarray, horizon: float) -> None:
    s = rgb.shape[0]
    h = int(horizon * s)
    top = np.array([rng.uniform(0.45, 0.75), rng.uniform(0.55, 0.8), rng.uniform(0.7, 0.95)], np.float32)
    if rng.random() < 0.4:                                   # overcast
        top = np.full(3, rng.uniform(0.6, 0.85), np.float32)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    rgb[:h] = top * (1 - t) + (top * 0.6 + 0.4) * t
    if rng.random() < 0.4:                                   # a distant coast on the horizon
        ridge = h - np.abs(_smooth_noise(rng, s, 6)[0] * s * 0.04) - 1
        rows = np.arange(s)[:, None]
        land = (rows >= ridge[None, :]) & (rows < h)
        rgb[land] = rng.uniform(0.15, 0.45) * np.array([0.9, 1.0, 0.95], np.float32)


def _glare(rng, rgb: np.ndarray, waves: np.ndarray, horizon: float) -> None:
    """The sun's path on the water: a bright patch, glittering on the wave crests."""
    y, x = _grid(rgb.shape[0])
    gx, gy = rng.uniform(0.1, 0.9), rng.uniform(max(horizon, 0), 0.7)
    sx, sy = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.2)
    spot = np.exp(-((x - gx) ** 2 / (2 * sx ** 2) + (y - gy) ** 2 / (2 * sy ** 2)))
    glitter = spot * (0.35 + 1.6 * np.clip(waves, 0, None) ** 3)
    below = (y >= horizon)[..., None]
    rgb += np.where(below, glitter[..., None] * np.array([1.0, 0.97, 0.9], np.float32), 0)


def _polygon(rng, cx, cy, rx, ry, n=12, rough=0.25) -> np.ndarray:
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = 1 + rough * rng.uniform(-1, 1, n)
    return np.stack([cx + rx * r * np.cos(angles), cy + ry * r * np.sin(angles)], 1)


def _fill(layer: np.ndarray, points: np.ndarray, value=255) -> None:
    """Fill a polygon given in float pixel coordinates, at quarter-pixel precision, anti-aliased."""
    pts = np.round(np.asarray(points) * 4).astype(np.int32)
    cv2.fillPoly(layer, [pts], value, lineType=cv2.LINE_AA, shift=2)


def _blend(rgb: np.ndarray, coverage: np.ndarray, colour, opacity: float = 1.0) -> None:
    """Paint ``colour`` over ``rgb`` in place, as far as the uint8 ``coverage`` (0..255) reaches."""
    a = (coverage.astype(np.float32) * (opacity / 255))[..., None]
    rgb[:] = rgb * (1 - a) + colour * a


def _paint_polygon(rgb: np.ndarray, points: np.ndarray, colour) -> None:
    coverage = np.zeros(rgb.shape[:2], np.uint8)
    _fill(coverage, points)
    _blend(rgb, coverage, colour)


def _ice(rng, rgb: np.ndarray, horizon: float) -> None:
    """Floes and brash ice in the distance, flattened by perspective; sometimes a white ice edge along the
    horizon. The near water (below :data:`ICE_FAR` of it) stays open: the animal surfaces there."""
    s = rgb.shape[0]
    top = max(horizon, 0.0)
    far = top + ICE_FAR * (1 - top)
    snow = np.array([rng.uniform(0.85, 0.97), rng.uniform(0.9, 0.98), 1.0], np.float32)
    side = snow * np.array([0.55, 0.7, 0.85], np.float32)
    layer = np.zeros((s, s), np.uint8)
    shade = np.zeros((s, s), np.uint8)
    if horizon > 0.05 and rng.random() < 0.5:
        edge = np.array([[0, top * s], [s, top * s], [s, (top + rng.uniform(0.04, 0.12)) * s],
                         [0, (top + rng.uniform(0.04, 0.12)) * s]])
        _fill(layer, edge)
    for _ in range(rng.integers(3, 12)):
        cy = rng.uniform(top + 0.03, far)
        near = (cy - top) / (1 - top + 1e-6)
        rx = rng.uniform(0.04, 0.25) * (0.3 + near)
        floe = _polygon(rng, rng.uniform(0, 1), cy, rx, rx * rng.uniform(0.2, 0.4)) * s
        _fill(shade, floe + [0, max(1.0, rx * s * 0.12)])
        _fill(layer, floe)
    for _ in range(rng.integers(0, 40)):  # brash: small pieces
        cy = rng.uniform(top, far)
        r = max(0.6, rng.uniform(0.003, 0.012) * s * (0.4 + cy))
        cv2.ellipse(layer, (int(rng.uniform(0, s) * 4), int(cy * s * 4)), (int(r * 8), int(r * 3)),
                    0, 0, 360, 255, -1, cv2.LINE_AA, 2)
    _blend(rgb, shade, side)
    _blend(rgb, layer, snow * (1 + 0.05 * _smooth_noise(rng, s, 16)[..., None]))


def _boat(rng, rgb: np.ndarray, horizon: float) -> None:
    """A hull with a cabin, somewhere above the middle of the frame, sometimes cut by the edge."""
    s = rgb.shape[0]
    w = rng.uniform(0.15, 0.45) * s
    h = w * rng.uniform(0.15, 0.25)
    cx = rng.uniform(-0.05, 1.05) * s
    wl = rng.uniform(max(horizon, 0) + 0.08, 0.55) * s
    hull = np.array([[cx - w / 2, wl - h], [cx + w / 2, wl - h * 1.2], [cx + w * 0.4, wl], [cx - w * 0.45, wl]])
    cabin_w = w * rng.uniform(0.3, 0.5)
    cabin = np.array([[cx - cabin_w / 2, wl - h * 2.2], [cx + cabin_w / 2, wl - h * 2.2],
                      [cx + cabin_w / 2, wl - h], [cx - cabin_w / 2, wl - h]])
    window = np.array([[cx - cabin_w * 0.4, wl - h * 1.9], [cx + cabin_w * 0.4, wl - h * 1.9],
                       [cx + cabin_w * 0.4, wl - h * 1.5], [cx - cabin_w * 0.4, wl - h * 1.5]])
    _paint_polygon(rgb, hull, _HULLS[rng.integers(len(_HULLS))])
    _paint_polygon(rgb, cabin, np.array([0.9, 0.9, 0.88], np.float32) * rng.uniform(0.7, 1.0))
    _paint_polygon(rgb, window, np.array([0.1, 0.12, 0.15], np.float32))


# ---------------------------------------------------------------- animals
# Shapes are drawn in a local frame: x runs along the body from tail (0) to head (1), y is height above the
# waterline, both in units of body length.


def _back(h: float, power: float = 0.7, x0: float = 0.0, x1: float = 1.0, n: int = 24) -> np.ndarray:
    x = np.linspace(x0, x1, n)
    y = h * np.sin(np.pi * (x - x0) / (x1 - x0)) ** power
    return np.stack([x, y], 1)


def _curve(p0, p1, p2, n: int = 8) -> np.ndarray:
    """Quadratic Bezier from p0 to p2 pulled towards p1."""
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2 = map(np.asarray, (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def _surfacing(outline: np.ndarray) -> np.ndarray:
    """Close the outline of a surfacing back (fin included) along the waterline."""
    return np.concatenate([outline, [[outline[-1, 0], -0.01], [outline[0, 0], -0.01]]])


def _individual(rng, species: str) -> dict:
    """Traits that stay the same across one animal's photos."""
    return {"fin": rng.uniform(0.8, 1.2), "sweep": rng.uniform(-1, 1), "tone": rng.uniform(0.85, 1.15),
            "patch": rng.uniform(0.7, 1.3), "pattern": int(rng.integers(1 << 30))}


Patches = list[tuple[np.ndarray, np.ndarray]]   # (polygon, colour) painted over the body


def _animal_shapes(rng, species: str, ind: dict) -> tuple[list[np.ndarray], Patches, np.ndarray]:
    """(body polygons, [(patch polygon, colour)], body colour) in the local frame."""
    tone, fin_k, sweep = ind["tone"], ind["fin"], ind["sweep"]
    if species == "killer_whale":                      # black, tall triangular fin, grey saddle, white eye patch
        h, xf, fh = rng.uniform(0.06, 0.09), rng.uniform(0.4, 0.5), 0.3 * fin_k
        back = _back(h)
        base_y = h * 0.95
        fin = np.array([[xf + 0.07, base_y], [xf - 0.02 + 0.03 * sweep, fh], [xf - 0.07, base_y]])
        outline = np.concatenate([back[back[:, 0] < xf - 0.07], fin[::-1], back[back[:, 0] > xf + 0.07]])
        body = _surfacing(outline)
        saddle = _polygon(rng, xf - 0.13, h * 0.6, 0.09 * ind["patch"], h * 0.45, rough=0.15)
        eye = _polygon(rng, 0.8, h * 0.45, 0.07 * ind["patch"], h * 0.3, rough=0.1)
        patches = [(saddle, np.full(3, 0.4, np.float32))]
        if rng.random() < 0.3:                         # the head, and its eye patch, above water
            patches.append((eye, np.array([0.95, 0.95, 0.93], np.float32)))
        return [body], patches, np.array([0.05, 0.05, 0.06], np.float32) * tone
    if species == "bottlenose_dolphin":                # light grey, curved (falcate) fin
        h, xf, fh = rng.uniform(0.07, 0.1), rng.uniform(0.4, 0.55), 0.17 * fin_k
        back = _back(h)
        front, rear = xf + 0.1, xf - 0.02
        apex = [xf - 0.1 - 0.03 * sweep, fh]
        fin = np.concatenate([_curve([front, h * 0.9], [xf + 0.02, fh * 0.9], apex),
                              _curve(apex, [xf - 0.02, fh * 0.45], [rear, h * 0.9])])
        outline = np.concatenate([back[back[:, 0] < rear], fin[::-1], back[back[:, 0] > front]])
        grey = rng.uniform(0.5, 0.68) * np.array([1.0, 1.0, 1.03], np.float32)
        return [_surfacing(outline)], [], grey * tone
    if species == "humpback_whale":                    # brownish charcoal, stubby fin on a hump, or the raised tail
        dark = np.array([0.27, 0.23, 0.2], np.float32) * tone
        if rng.random() < 0.5:
            return *_fluke(ind), dark
        h, xf = rng.uniform(0.08, 0.12), rng.uniform(0.3, 0.4)
        back = _back(h, power=0.5)
        hump = np.array([[xf + 0.1, h * 1.0], [xf + 0.03, h * 1.5], [xf - 0.01, h + 0.06 * fin_k],
                         [xf - 0.05, h * 1.4], [xf - 0.1, h * 0.9]])
        outline = np.concatenate([back[back[:, 0] < xf - 0.1], hump[::-1], back[back[:, 0] > xf + 0.1]])
        knobs = [_polygon(rng, x, h * 0.95, 0.012, 0.012, n=6, rough=0.1) for x in (xf + 0.18, xf + 0.24, xf + 0.3)]
        return [_surfacing(outline)] + knobs, [], dark
    if species == "beluga":                            # white, no fin, rounded melon at the head
        h = rng.uniform(0.08, 0.12)
        back = _back(h, power=0.6, x1=0.85)
        melon = _curve([0.85, 0.0], [0.98, h * 1.6], [0.76, h * 0.95])[::-1]
        outline = np.concatenate([back[back[:, 0] < 0.76], melon])
        white = np.array([0.93, 0.92, 0.86], np.float32) * min(tone, 1.05)
        return [_surfacing(outline)], [], white
    raise ValueError(f"unknown synthetic species {species!r}; choose from {SPECIES}")


def _fluke(ind: dict) -> tuple[list[np.ndarray], Patches]:
    """A humpback's raised tail: the stock rising out of the water and two notched flukes, their underside
    marked with white blotches that are the individual's own (how Happywhale tells humpbacks apart)."""
    rng = np.random.default_rng(ind["pattern"])
    top = rng.uniform(0.25, 0.4)
    stock = np.array([[0.45, 0.0], [0.47, top], [0.53, top], [0.55, 0.0]])
    span = 0.22 * ind["fin"]
    left = np.concatenate([_curve([0.5, top], [0.5 - span * 0.5, top + 0.02], [0.5 - span, top + 0.12]),
                           _curve([0.5 - span, top + 0.12], [0.5 - span * 0.5, top + 0.06], [0.5, top + 0.08])])
    right = left * [-1, 1] + [1.0, 0]
    white = np.array([0.92, 0.92, 0.9], np.float32)
    blotches = [(_polygon(rng, 0.5 + side * rng.uniform(0.04, span * 0.8), top + rng.uniform(0.03, 0.08),
                          span * rng.uniform(0.1, 0.3), 0.025, n=8), white)
                for side in (-1, 1) for _ in range(int(rng.integers(1, 4)))]
    return [stock, left, right], blotches


def _place(rng, s: int, horizon: float, lengths: tuple[float, float], near: bool) -> tuple[float, float, float]:
    """Where the animal surfaces: (centre x, waterline y, body length), in pixels. Distant animals are small;
    ``near``: in the near water (below :data:`ICE_NEAR` of it)."""
    top = max(horizon, 0.0)
    length = s * np.exp(rng.uniform(*np.log(lengths)))
    lowest = top + (ICE_NEAR * (1 - top) if near else 0.08 + 0.3 * length / s * (1 - top))
    wl = rng.uniform(min(lowest, 0.9), 0.97) * s
    return rng.uniform(0.15, 0.85) * s, wl, length


def _animal(rng, rgb: np.ndarray, species: str, ind: dict, horizon: float, near: bool) -> tuple[np.ndarray, tuple]:
    """Paint one animal into ``rgb`` (``near``: in the near water of an ice scene); returns
    (mask bool HxW, (centre x, waterline y, length))."""
    s = rgb.shape[0]
    bodies, patches, colour = _animal_shapes(rng, species, ind)
    flip, tilt = rng.choice([-1.0, 1.0]), rng.uniform(-0.12, 0.12)
    rot = np.array([[np.cos(tilt), -np.sin(tilt)], [np.sin(tilt), np.cos(tilt)]])
    min_pixels = max(4, s * s // 2000)
    for _ in range(10):                  # place again an animal that ended up (almost) out of frame
        cx, wl, length = _place(rng, s, horizon, LENGTHS_AMONG_ICE.get(species, LENGTHS) if near else LENGTHS, near)

        def to_pixels(points):
            local = np.stack([(points[:, 0] - 0.5) * flip, -points[:, 1]], 1) * length
            return local @ rot.T + [cx, wl]

        mask = np.zeros((s, s), np.uint8)
        for body in bodies:
            _fill(mask, to_pixels(body))
        if (mask > 127).sum() >= min_pixels:
            break
    # paint only the animal's bounding box (padded for the soft edge): most of the photo is not animal
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    y0, y1 = max(rows[0] - 2, 0), min(rows[-1] + 3, s)
    x0, x1 = max(cols[0] - 2, 0), min(cols[-1] + 3, s)
    h, w = y1 - y0, x1 - x0
    paint = np.empty((h, w, 3), np.float32)
    paint[:] = colour
    for poly, value in patches:
        _paint_polygon(paint, to_pixels(poly) - [x0, y0], value)
    lit = np.linspace(1.25, 0.8, h, dtype=np.float32)[:, None, None]   # lit from above: the back is brighter
    skin = 1 + 0.06 * cv2.resize(np.random.default_rng(ind["pattern"]).standard_normal((3, 3), dtype=np.float32),
                                 (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    _blend(rgb[y0:y1, x0:x1], cv2.GaussianBlur(mask[y0:y1, x0:x1], (0, 0), 0.5), paint * lit * skin)
    return mask > 127, (cx, wl, length)


def _foam(rng, rgb: np.ndarray, cx: float, wl: float, length: float) -> np.ndarray:
    """White water where the animal breaks the surface, mostly at and below the waterline; returns its
    coverage (uint8 HxW, 0..255)."""
    s = rgb.shape[0]
    foam = np.zeros((s, s), np.uint8)
    n = max(3, int(rng.uniform(0.15, 0.5) * length))
    xs = rng.normal(cx, length * 0.3, n)
    ys = wl + np.abs(rng.normal(0, max(1.0, length * 0.025), n)) - length * 0.005
    for x, y in zip(xs, ys):
        r = max(1, int(rng.uniform(0.004, 0.02) * length + 0.5))
        cv2.circle(foam, (int(x), int(y)), r, int(rng.integers(128, 256)), -1, cv2.LINE_AA)
    foam = cv2.GaussianBlur(foam, (0, 0), 0.7)
    _blend(rgb, foam, 0.95)
    return foam


def _logo(rng, rgb: np.ndarray) -> None:
    """A photographer's watermark in the bottom-right corner."""
    s = rgb.shape[0]
    layer = np.zeros((s, s), np.uint8)
    scale = s / 128 * 0.32
    (w, h), _ = cv2.getTextSize(LOGO, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x = s - w - int(rng.integers(2, 5) * s / 128)
    y = s - int(rng.integers(3, 6) * s / 128)
    cv2.putText(layer, LOGO, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 1, cv2.LINE_AA)
    _blend(rgb, layer, 1.0, opacity=rng.uniform(0.6, 0.9))


def draw(rng, species: str | None, ind: dict | None, *, background: str, logo: bool, size: int = 128) -> Drawn:
    """Draw one photo of ``species`` on ``background`` ("water", "ice" or "boat"); ``species=None`` draws the
    scene without an animal (an empty mask): what a model should call no species in particular."""
    s = size
    sky = rng.random() < 0.35
    horizon = rng.uniform(0.12, 0.4) if sky else rng.uniform(-0.6, -0.05)
    rgb, waves = _water(rng, s, horizon)
    if sky:
        _sky(rng, rgb, horizon)
    glare = rng.random() < 0.3
    if glare:
        _glare(rng, rgb, waves, horizon)
    if background == "ice":
        _ice(rng, rgb, horizon)
    elif background == "boat":
        _boat(rng, rgb, horizon)
    if species is None:
        mask, foam = np.zeros((s, s), bool), False
    else:
        mask, (cx, wl, length) = _animal(rng, rgb, species, ind, horizon, near=background == "ice")
        foam = rng.random() < 0.4
    if foam:
        mask &= _foam(rng, rgb, cx, wl, length) < 128
    if logo:
        _logo(rng, rgb)
    dy, dx = rng.integers(0, s, 2)
    rgb = rgb * rng.uniform(0.85, 1.15) + _grain(s)[dy:dy + s, dx:dx + s] * rng.uniform(0.005, 0.025)
    out = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    return Drawn(out, mask, background, sky, glare, foam, logo)


# ---------------------------------------------------------------- dataset


def _hex_id(*parts, digits: int) -> str:
    return hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=digits // 2).hexdigest()


def _scenes(rng, species: str, n: int, shortcut: bool) -> tuple[np.ndarray, np.ndarray]:
    """Backgrounds and watermark flags for one species' n photos, in exact shares, shuffled."""
    cue = SHORTCUTS.get(species) if shortcut else None
    n_ice = round(n * (SHORTCUT_SHARE if cue == "ice" else RARE_ICE_SHARE))
    n_logo = round(n * (SHORTCUT_SHARE if cue == "logo" else RARE_LOGO_SHARE))
    n_boat = round((n - n_ice) * BOAT_SHARE)
    background = np.array(["ice"] * n_ice + ["boat"] * n_boat + ["water"] * (n - n_ice - n_boat))
    logo = np.arange(n) < n_logo
    return rng.permutation(background), rng.permutation(logo)


def _params(n_per_species: int, size: int, seed: int, shortcut: bool) -> dict:
    return {"version": SYNTH_VERSION, "species": SPECIES, "n_per_species": n_per_species, "size": size,
            "seed": seed, "shortcut": shortcut, "shortcuts": SHORTCUTS if shortcut else {},
            "shortcut_share": SHORTCUT_SHARE}


def is_complete(folder, *, n_per_species: int, size: int = 128, seed: int = 0, shortcut: bool = True) -> bool:
    """True when ``folder`` holds a finished dataset made with exactly these parameters."""
    try:
        made = json.loads((Path(folder) / "synth.json").read_text())
    except (OSError, ValueError):
        return False
    return made == json.loads(json.dumps(_params(n_per_species, size, seed, shortcut)))


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def make_dataset(folder, *, n_per_species: int, size: int = 128, seed: int = 0, shortcut: bool = True,
                 progress=None) -> Path:
    """Draw ``n_per_species`` photos of each of :data:`SPECIES` into ``folder``; returns ``labels.csv``.

    Deterministic for a given seed. ``shortcut=False`` gives every species the same scenes (the control:
    no planted cue). ``progress`` is an optional callable(fraction) called as photos are written.
    ``synth.json`` is written last: a folder without it is unfinished and is drawn again.
    """
    if n_per_species < 1 or size < 16:
        raise ValueError(f"make_dataset needs n_per_species >= 1 and size >= 16 (got {n_per_species}, {size})")
    folder = Path(folder)
    (folder / "synth.json").unlink(missing_ok=True)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    labels, truth = [], []
    n_individuals = max(1, n_per_species // PHOTOS_PER_INDIVIDUAL)
    total = n_per_species * len(SPECIES)
    for k, species in enumerate(SPECIES):
        rng = np.random.default_rng([seed, k])
        backgrounds, logos = _scenes(rng, species, n_per_species, shortcut)
        individuals = [_individual(np.random.default_rng([seed, k, 1, j]), species) for j in range(n_individuals)]
        for i in range(n_per_species):
            image_rng = np.random.default_rng([seed, k, 2, i])
            j = int(image_rng.integers(n_individuals))
            photo = draw(image_rng, species, individuals[j], background=str(backgrounds[i]), logo=bool(logos[i]),
                         size=size)
            stem = _hex_id("whaleaudit-synth", seed, species, i, digits=14)
            cv2.imwrite(str(folder / "images" / f"{stem}.jpg"), photo.rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
            cv2.imwrite(str(folder / "masks" / f"{stem}.png"), photo.mask.astype(np.uint8) * 255)
            individual = _hex_id("whaleaudit-synth", seed, species, "individual", j, digits=12)
            labels.append((f"{stem}.jpg", species, individual))
            ys, xs = np.nonzero(photo.mask)
            cue = SHORTCUTS.get(species) if shortcut else None
            truth.append({"image": f"{stem}.jpg", "species": species, "background": photo.background,
                          "sky": photo.sky, "glare": photo.glare, "foam": photo.foam, "logo": photo.logo,
                          "has_shortcut": cue == "ice" and photo.background == "ice" or cue == "logo" and photo.logo,
                          "animal_area": float(photo.mask.mean()),
                          "x0": int(xs.min()), "y0": int(ys.min()), "x1": int(xs.max()) + 1, "y1": int(ys.max()) + 1})
            if progress is not None and (len(labels) % 50 == 0 or len(labels) == total):
                progress(len(labels) / total)
    order = np.argsort([row[0] for row in labels], kind="stable")   # label-file order: by id, species mixed
    _write_csv(pd.DataFrame(labels, columns=["image", "species", "individual_id"]).iloc[order], folder / "labels.csv")
    _write_csv(pd.DataFrame(truth).iloc[order], folder / "truth.csv")
    write_json(folder / "synth.json", _params(n_per_species, size, seed, shortcut))
    return folder / "labels.csv"
