"""Causal check: the animal painted over with the water around it, or kept alone on a flat fill."""

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from whaleaudit.explain.causal import GROW, animal_only, default_picks, without_animal


def _scene(b=2, size=64, seed=0):
    """Water with a smooth gradient and ripples per image, a dark animal in a box; returns (x, mask, water)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, size)[:, None].expand(size, size)
    water = torch.stack([torch.stack([0.2 + 0.5 * y + 0.02 * torch.randn(size, size, generator=g),
                                      0.4 + 0.0 * y, 0.8 - 0.3 * y]) for _ in range(b)])
    water[1] += 0.3                                   # images differ: the fill must come from each one itself
    mask = torch.zeros(b, 1, size, size)
    mask[:, :, 24:40, 20:44] = 1
    x = water * (1 - mask) + (-2.0) * mask           # the animal: far from any water value
    return x, mask, water


def test_without_animal_leaves_the_background_alone_and_fills_the_animal_with_water():
    x, mask, water = _scene()
    out = without_animal(x, mask)
    grown = F.max_pool2d(mask, 2 * GROW + 1, 1, GROW).expand_as(x) > 0
    assert torch.equal(out[~grown], x[~grown])                       # background: bit for bit
    inside = mask.expand_as(x) > 0
    assert (out[inside] - water[inside]).abs().mean() < 0.05          # close to the surrounding water
    assert (out[inside] > -1).all()                                   # nothing of the animal is left
    assert (out[0][inside[0]] - water[0][inside[0]]).abs().mean() < 0.05  # each image from its own water


def test_grow_zero_respects_the_mask_exactly_and_soft_masks_blend():
    x, mask, _ = _scene()
    out = without_animal(x, mask, grow=0)
    assert torch.equal(out[mask.expand_as(x) == 0], x[mask.expand_as(x) == 0])
    soft = mask * 0.5
    blended = without_animal(x, soft, grow=0)
    filled = without_animal(x, mask, grow=0)
    inside = mask.expand_as(x) > 0
    assert torch.allclose(blended[inside], (0.5 * x + 0.5 * filled)[inside], atol=1e-5)


def test_animal_only_keeps_the_animal_and_flattens_the_rest():
    x, mask, _ = _scene()
    out = animal_only(x, mask, grow=0, fill=0.0)
    inside = mask.expand_as(x) > 0
    assert torch.equal(out[inside], x[inside]) and (out[~inside] == 0).all()
    grown = animal_only(x, mask)
    ring = (F.max_pool2d(mask, 2 * GROW + 1, 1, GROW).expand_as(x) > 0) & ~inside
    assert torch.equal(grown[ring], x[ring])                         # a rim of water stays with the animal


def test_animal_only_fills_each_photo_with_its_own_mean_background_colour():
    x, mask, water = _scene()
    out = animal_only(x, mask, grow=0)
    outside = (mask == 0).expand_as(x)
    for i in range(len(x)):
        mean = water[i][:, mask[i, 0] == 0].mean(dim=1)               # per channel, from this photo alone
        flat = out[i][outside[i]].view(3, -1)
        assert torch.allclose(flat, mean[:, None].expand_as(flat), atol=1e-5)
    assert not torch.allclose(out[0][outside[0]], out[1][outside[1]])   # the two photos differ in tint


def test_edge_cases_stay_finite():
    x, mask, _ = _scene(size=37)                     # odd size: the pyramid's halves do not divide it
    assert torch.isfinite(without_animal(x, mask)).all()
    everything = torch.ones_like(mask)
    assert torch.isfinite(without_animal(x, everything)).all()
    nothing = torch.zeros_like(mask)
    assert torch.equal(without_animal(x, nothing), x) and torch.equal(animal_only(x, everything), x)


def test_default_picks_are_the_top_tenths_and_the_sample_with_every_reason_named():
    """The default's picks against pandas: the photos whose score (then loss) is at or above the 0.9 quantile of
    those that have one, ties included; NaN never picked; every reason that applies, joined in order."""
    rng = np.random.default_rng(4)
    n = 500
    bg = rng.uniform(0, 1, n).round(2)              # rounded: ties at the threshold
    bg[rng.choice(n, 60, replace=False)] = np.nan   # no foreground
    loss = rng.exponential(1, n)
    loss[:20] = np.nan                              # a species the model does not know
    sample = rng.uniform(0, 1, n) < 0.1
    got = default_picks(bg, loss, sample)
    above = pd.Series(bg) >= pd.Series(bg).quantile(0.9)
    high_loss = pd.Series(loss) >= pd.Series(loss).quantile(0.9)
    for i in range(n):
        expected = [r for r, on in (("background", above[i]), ("loss", high_loss[i]), ("sample", sample[i])) if on]
        assert got[i] == ",".join(expected), i
    assert 0.1 * 440 <= above.sum() <= 0.13 * 440 and 0.1 * 480 <= high_loss.sum() <= 0.11 * 480
    assert default_picks(np.full(3, np.nan), np.full(3, np.nan), np.zeros(3, bool)).tolist() == ["", "", ""]
