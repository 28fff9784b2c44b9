"""The background-attention score's bars, measured on data this script makes, printed as a PASS/FAIL table.

Steps (everything lands in bench/out/score; data and the model are cached there and reused when present):

1. Draws two synthetic sets with :mod:`whaleaudit.demo.synth` (true animal masks, planted shortcuts: belugas
   mostly with pack ice in the distance, humpbacks mostly with a watermark): ``train`` for a model, ``test`` to measure.
2. Foreground: :func:`auto_foreground` on every test photo against the true mask (IoU, time per photo
   next to decoding the same JPEG in this process), and how well the score from it ranks like the score
   from the true mask on maps built from the true masks with a cue elsewhere (no model needed).
3. Fairness: maps built from the true masks (a model that looks only at the animal) must not be scored by
   the animal's size; the plain share is, for contrast.
4. Trains a narrow resnet18 (exact-CAM head, random weights) on the shortcut set, and another on a set without
   planted cues, each with empty scenes that teach it that water alone is no species (see :func:`empty_scenes`),
   once, and reads their maps on the test set: the photos whose prediction rests on a planted cue
   (:func:`rests_on_cue`) must top the ranking; the score from the automatic foreground must rank like the score
   from the true mask; the causal check must agree.
5. Resolution: the 4x4 map at 128 px against 8x8 maps (the body run at 256 px; the same body sampled twice as
   densely; Grad-CAM at layer3), each scored with its own measured spread (:func:`whaleaudit.explain.cam.spread`).
6. Real photos: the automatic foreground on 100 of the Happywhale photos, as contact sheets to inspect,
   and the tally of a by-eye review of them when one was written for the current method.

    .venv/bin/python bench/score.py            # all of it (about 10-20 minutes on 2 cores, most of it training)
    .venv/bin/python bench/score.py --figure   # also redraw docs/score_examples.png
    .venv/bin/python bench/score.py --no-model # only the foreground, fairness and real-photo parts (no training)
    .venv/bin/python bench/score.py --smoke    # every step on a few photos and one epoch: shows the bench runs
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import time
from pathlib import Path

import _util
from _util import DATA, ROOT

OUT = _util.OUT / "score"
REAL = DATA / "happywhale128"
_util.quiet_caches(OUT)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from torch import nn  # noqa: E402

from whaleaudit.data.images import load_rgb, load_rgb_resized  # noqa: E402
from whaleaudit.demo import synth  # noqa: E402
from whaleaudit.explain.cam import predict_with_maps, spread  # noqa: E402
from whaleaudit.explain.causal import EDITS, edit_probabilities  # noqa: E402
from whaleaudit.explain.foreground import MASK_SIZE, METHOD, auto_foreground  # noqa: E402
from whaleaudit.explain.score import attention_scores, cell_coverage  # noqa: E402

TRAIN = dict(n_per_species=100, size=128, seed=101)   # the cue-only set, see cue_only_set
CONTROL = dict(n_per_species=100, size=128, seed=303, shortcut=False)   # no planted cue: only the animal tells
TEST = dict(n_per_species=100, size=128, seed=202, shortcut=True)
RECIPE = dict(epochs=20, lr=3e-3, bs=64, size=128, seed=0)
EMPTY = dict(n=100, seed=404)   # empty scenes added to each model's training, see empty_scenes
MODEL_VERSION = 3               # bump when the recipe changes: cached models are retrained (so are they when
                                # synth.SYNTH_VERSION changes what is drawn)
#: --smoke: a few photos per set and one epoch, in a folder of its own (wiped first), so a smoke run never
#: leaves its tiny sets and models where a full run would reuse them.
SMOKE = dict(n_per_species=6, epochs=1, empty=8, real=4)
BARS = []   # (bar, value, rule, passed)


def bar(name: str, value: float, rule: str, passed: bool) -> None:
    BARS.append((name, value, rule, passed))


def spearman(a, b) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[ok], b[ok]).statistic)


# ---------------------------------------------------------------- data


def dataset(name: str, params: dict) -> tuple[Path, pd.DataFrame, np.ndarray]:
    """(folder, truth table in label order, true masks bool [N, MASK_SIZE, MASK_SIZE]); drawn once."""
    folder = OUT / name
    if not synth.is_complete(folder, **params):
        t = time.perf_counter()
        synth.make_dataset(folder, **params)
        print(f"drew {name}: {params['n_per_species'] * len(synth.SPECIES)} photos in {time.perf_counter() - t:.0f} s")
    truth = pd.read_csv(folder / "truth.csv")
    masks = np.stack([cv2.resize((cv2.imread(str(folder / "masks" / (Path(i).stem + ".png")), 0) > 127).astype(np.float32),
                                 (MASK_SIZE, MASK_SIZE), interpolation=cv2.INTER_AREA) > 0.5 for i in truth["image"]])
    return folder, truth, masks


# ---------------------------------------------------------------- foreground


def foreground(folder: Path, truth: pd.DataFrame, masks: np.ndarray) -> np.ndarray:
    paths = [folder / "images" / i for i in truth["image"]]
    photos = [load_rgb(p) for p in paths]
    auto_foreground(photos[0])
    t = time.process_time()
    for p in paths:
        load_rgb(p)
    decode = (time.process_time() - t) / len(paths)
    t = time.process_time()
    auto = np.stack([auto_foreground(rgb) for rgb in photos])
    per_photo = (time.process_time() - t) / len(paths)
    iou = (auto & masks).sum((1, 2)) / np.maximum((auto | masks).sum((1, 2)), 1)
    truth["iou"] = iou
    print(f"\nautomatic foreground on {len(paths)} synthetic photos: {per_photo * 1e3:.2f} ms CPU per photo, "
          f"{per_photo / decode:.1f}x the JPEG decode of the same photo ({decode * 1e3:.2f} ms); "
          f"{(~auto.any((1, 2))).mean():.1%} found nothing")
    print("  median IoU by species:", truth.groupby("species")["iou"].median().round(2).to_dict())
    print("  median IoU by scene:  ", truth.groupby("background")["iou"].median().round(2).to_dict(),
          "| glare", round(truth[truth.glare]["iou"].median(), 2), "| foam", round(truth[truth.foam]["iou"].median(), 2))
    bar("auto foreground: median IoU with the true mask", np.median(iou), ">= 0.70", np.median(iou) >= 0.7)
    print(f"  share of photos with IoU >= 0.5: {(iou >= 0.5).mean():.1%}; the wrong object or none (IoU < 0.3), "
          f"which is what moves an image's score: {(iou < 0.3).mean():.1%}")
    return auto


def ranking_without_model(masks: np.ndarray, auto: np.ndarray) -> None:
    """Does the score from the automatic foreground rank images like the score from the true mask, for maps
    whose evidence is split between the animal and a cue elsewhere? A model-free stand-in for the bar that
    :func:`shortcut_and_agreement` measures on a trained model's maps.

    Each map gives a random share ``w`` (uniform 0..1) of its evidence to one cell at least two cells from the
    animal (a cue such as ice or a watermark) and the rest to the animal, cell by cell in proportion to its
    coverage, spilled half a cell as a network spreads it.
    """
    rng = np.random.default_rng(0)
    maps = []
    for cover in cell_coverage(masks, (4, 4)).astype(np.float32):
        animal = cv2.GaussianBlur(cover, (0, 0), 0.5, borderType=cv2.BORDER_CONSTANT)
        away = cv2.GaussianBlur(cover, (0, 0), 1.0, borderType=cv2.BORDER_CONSTANT) < 0.02 * cover.max()
        cells = np.argwhere(away if away.any() else cover < cover.max())
        cue = np.zeros_like(cover)
        cue[tuple(cells[rng.integers(len(cells))])] = 1.0
        w = rng.uniform()
        maps.append((1 - w) * animal / animal.sum() + w * cue)
    maps = np.stack(maps)
    true = attention_scores(maps, masks, masks.any((1, 2)))["bg_score"]
    est = attention_scores(maps, auto, auto.any((1, 2)))["bg_score"]
    rho = spearman(est, true)
    print(f"  bg_score from the automatic foreground against the true mask's, on maps built from the true masks "
          f"with a cue elsewhere (no model): Spearman {rho:.3f}")
    bar("auto foreground ranks like true mask, no model: Spearman", rho, "(reported)", True)


def fairness(cases: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, float]]) -> None:
    """Does the score grow with the animal's size when the evidence lies only on the animal?

    ``cases``: (name, maps [N, h, w], masks, animal area, the maps' spread in cells). Each definition's Spearman
    correlation with area.
    """
    print("\nfairness to size: Spearman(score, animal area) where the evidence lies on the animal "
          "(median score in brackets)")
    names = list(definitions(cases[0][1][:1], cases[0][2][:1]))
    print(f"  {'maps':46s}" + "".join(f"{n:>20s}" for n in names) + "   library bg_score")
    for name, cams, masks, area, cells in cases:
        ok = masks.any((1, 2))
        d = definitions(cams[ok], masks[ok])
        lib = attention_scores(cams[ok], masks[ok], np.ones(ok.sum(), bool), cells)["bg_score"]
        columns = "".join(f"{spearman(v, area[ok]):+12.2f} ({np.nanmedian(v):.2f})" for v in d.values())
        print(f"  {name:46s}{columns}   {spearman(lib, area[ok]):+.2f} ({np.nanmedian(lib):.2f})")
        if name.endswith("sharp"):
            bar("maps from the true masks: largest bg_score, any size", np.nanmax(lib), "<= 0.05", np.nanmax(lib) <= 0.05)
        if name.startswith("control"):
            rho = spearman(lib, area[ok])
            bar("animal-only model: |Spearman(bg_score, area)|", abs(rho), "< 0.20", abs(rho) < 0.2)
            rho = spearman(d["plain share"], area[ok])
            bar("  ... while |Spearman(bg_share, area)|", abs(rho), ">= 0.50 (share is unfair)", abs(rho) >= 0.5)
        if name.startswith("layer3"):
            rho = spearman(lib, area[ok])
            bar("--cam-layer layer3: animal-only model: |Spearman|", abs(rho), "< 0.20", abs(rho) < 0.2)


def constructed_maps(masks: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Maps of a model that looks only at the animal: evidence per cell in proportion to the animal in it,
    sharp, and spilled into neighbouring cells as a real network's receptive field spreads it."""
    sharp = cell_coverage(masks, (4, 4)).astype(np.float32)
    spill = np.stack([cv2.GaussianBlur(m, (0, 0), 0.5, borderType=cv2.BORDER_CONSTANT) for m in sharp])
    return [("from true masks, sharp", sharp), ("from true masks, spilled (sigma 0.5 cell)", spill)]


# ---------------------------------------------------------------- model and maps


class Block(nn.Module):
    """resnet's BasicBlock: two 3x3 convolutions and a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))) + self.skip(x))


def narrow_resnet18(n_classes: int, width: int = 16) -> nn.Sequential:
    """resnet18's layout (stem, four stages of two blocks, stride 32: a 4x4 map at 128 px) at a quarter of its
    width, with the product's exact-CAM head (avg-pool -> Dropout -> Linear), laid out as Sequential(body, head)
    like fastai's: small enough to train from scratch in minutes on two CPU cores."""
    w = width
    stem = nn.Sequential(nn.Conv2d(3, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
    stages = [nn.Sequential(Block(a, b, 1 if a == b else 2), Block(b, b, 1))
              for a, b in ((w, w), (w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w))]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(8 * w, n_classes))
    return nn.Sequential(nn.Sequential(stem, *stages), head)


def cue_only_set(name: str, n_per_species: int, size: int, seed: int) -> tuple[Path, pd.DataFrame]:
    """A training set in which the planted cue is the only way to tell the two shortcut species apart.

    Photos labelled beluga are taken with ice (90%), photos labelled humpback carry the watermark (90%), and
    the animal in either is a beluga or a humpback at random; killer whales and dolphins are drawn as
    themselves (see :func:`scene`). A network trained on the demo's own data learns the animal as well as the
    cue; a model trained on this set has to use the cue, so the bars test whether the score and the causal
    check catch a shortcut the model is known to use.
    """
    def photos():
        confusable = sorted(synth.SHORTCUTS)
        for k, label in enumerate(synth.SPECIES):
            rng = np.random.default_rng([seed, k])
            for i in range(n_per_species):
                cue = synth.SHORTCUTS.get(label)
                animal = str(rng.choice(confusable)) if cue else label
                background, logo = scene(rng, cue)
                yield f"{label}_{i:04d}.jpg", label, synth.draw(rng, animal, synth._individual(rng, animal),
                                                                 background=background, logo=logo, size=size)

    return drawn_set(name, photos)


def empty_scenes(n: int, seed: int) -> tuple[Path, pd.DataFrame]:
    """``n`` scenes without an animal, with the backgrounds of the species that carry no cue (:func:`scene`);
    species "" (no species in particular).

    A classifier has no answer for "nothing here" but one of its species. Trained without these, the cue-only
    model called empty water "bottlenose dolphin" (probability 0.96 on a flat grey photo), so every dolphin photo
    rested on water, shortcut or not: real background use, which the score rightly ranks high (shortcut AUC
    0.76 with dolphins counted among the photos without a shortcut), but not the planted shortcut the bars are
    about. Shown with a uniform target, the model learns that water alone is no species; the planted cues still
    carry theirs, since they never appear in these scenes more often than with the other species.
    """
    def photos():
        for i in range(n):
            rng = np.random.default_rng([seed, i])
            background, logo = scene(rng, None)
            yield f"empty_{i:04d}.jpg", "", synth.draw(rng, None, None, background=background, logo=logo,
                                                        size=TRAIN["size"])

    return drawn_set("empty", photos)


def scene(rng, cue: str | None) -> tuple[str, bool]:
    """(background, watermark) of one bench photo: its planted ``cue`` 90% of the time; else, as in the demo,
    ice 5%, a watermark 3%, boats 15%."""
    ice = rng.random() < (0.9 if cue == "ice" else 0.05)
    logo = rng.random() < (0.9 if cue == "logo" else 0.03)
    return ("ice" if ice else "boat" if rng.random() < 0.15 else "water"), logo


def drawn_set(name: str, photos) -> tuple[Path, pd.DataFrame]:
    """(folder, frame of image and species) of the set ``photos()`` draws as (image, species, synth.Drawn); drawn
    into ``OUT/name`` once per :data:`synth.SYNTH_VERSION`, then read back."""
    folder = OUT / f"{name}-synth{synth.SYNTH_VERSION}"
    if (folder / "labels.csv").exists():
        return folder, pd.read_csv(folder / "labels.csv", keep_default_na=False)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for image, label, photo in photos():
        cv2.imwrite(str(folder / "images" / image), photo.rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
        rows.append((image, label))
    frame = pd.DataFrame(rows, columns=["image", "species"])
    frame.to_csv(folder / "labels.csv", index=False)
    return folder, frame


def model(name: str, make):
    """:func:`narrow_resnet18`, random init, trained on the photos ``make()`` returns (folder, frame with image and
    species) and :func:`empty_scenes` (target: every species alike) with a plain torch loop (any torch device);
    trained once, then cached as ``model/<name>-v<MODEL_VERSION>-synth<SYNTH_VERSION>.pt``. Returns (model in
    eval mode, sidecar-like dict)."""
    classes = sorted(synth.SPECIES)
    sidecar = {"classes": classes, "normalize": None}
    net = narrow_resnet18(len(classes))
    path = OUT / "model" / f"{name}-v{MODEL_VERSION}-synth{synth.SYNTH_VERSION}.pt"
    if path.exists():
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval(), sidecar
    parts = [make(), empty_scenes(**EMPTY)]
    x = torch.cat([batch(folder, frame, RECIPE["size"], sidecar) for folder, frame in parts])
    index = pd.concat([frame["species"] for _, frame in parts]).map({c: i for i, c in enumerate(classes)})
    y = torch.full((len(index), len(classes)), 1 / len(classes))     # soft targets: empty scenes stay uniform
    known = index.notna().to_numpy()
    y[known] = torch.nn.functional.one_hot(torch.from_numpy(index[known].to_numpy(dtype=np.int64).copy()), len(classes)).float()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(RECIPE["seed"])
    net = net.to(device).train()
    steps = RECIPE["epochs"] * ((len(x) + RECIPE["bs"] - 1) // RECIPE["bs"])
    opt = torch.optim.AdamW(net.parameters(), lr=RECIPE["lr"], weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=RECIPE["lr"], total_steps=steps)
    t = time.perf_counter()
    for epoch in range(RECIPE["epochs"]):
        order = torch.randperm(len(x))
        for i in range(0, len(x), RECIPE["bs"]):
            idx = order[i:i + RECIPE["bs"]]
            xb, yb = x[idx].to(device), y[idx].to(device)
            flip = torch.rand(len(xb), device=device) < 0.5        # mirror half the batch
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            loss = torch.nn.functional.cross_entropy(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.cpu().state_dict(), path)
    print(f"\ntrained the {name} model ({len(x)} photos, {(~known).sum()} of them empty scenes, {RECIPE['epochs']} epochs) on {device.type} "
          f"in {time.perf_counter() - t:.0f} s")
    return net.eval(), sidecar


def batch(folder: Path, truth: pd.DataFrame, size: int, sidecar: dict) -> torch.Tensor:
    x = torch.from_numpy(np.stack([load_rgb_resized(folder / "images" / i, size) for i in truth["image"]]))
    x = x.permute(0, 3, 1, 2).float() / 255
    if sidecar["normalize"]:
        x = (x - torch.tensor(sidecar["normalize"]["mean"])[:, None, None]) / torch.tensor(sidecar["normalize"]["std"])[:, None, None]
    return x


def maps_layer4(net, x):
    return predict_with_maps(net, x)


def maps_layer3(net, x):
    """Grad-CAM at the output of the third stage (layer3: 8x8 at 128 px), raw like the product's other maps."""
    return predict_with_maps(net, x, layer="layer3")


def run(net, x, how, bs=50):
    logits, maps = [], []
    for i in range(0, len(x), bs):
        lo, ma = how(net, x[i:i + bs])
        logits.append(lo)
        maps.append(ma)
    return torch.cat(logits), torch.cat(maps).numpy()


def probs_edited(net, x, masks, pred, bs=50):
    """Predicted-class probability with the animal painted over, with only the animal left, and of the flat
    photo."""
    out = {name: [] for name in EDITS}
    m = torch.nn.functional.interpolate(torch.from_numpy(masks).float()[:, None], size=x.shape[-2:], mode="nearest")
    with torch.inference_mode():
        for i in range(0, len(x), bs):
            xs, ms, p = x[i:i + bs], m[i:i + bs], pred[i:i + bs]
            for name, q in zip(EDITS, edit_probabilities(net, xs, ms, p)):
                out[name].append(q)
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def definitions(cams: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """The candidate fair scores side by side (the library implements one; see the module docstring of score.py).

    ``best cell``: 1 - on / max(c), the share against the best a map of this resolution could reach.
    ``ideal map``: 1 - on / (sum c^2 / sum c), against the map of a model that looks only at the animal
    (evidence in proportion to the animal in each cell), clipped to 0..1. Both with the sharp coverage ``c``;
    the library's ``bg_score`` is the ideal-map form on the coverage of the mask softened by one cell.
    """
    c = cell_coverage(masks, cams.shape[1:]).reshape(len(cams), -1)
    p = np.maximum(cams.reshape(len(cams), -1), 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        on = (p * c).sum(1) / p.sum(1)
        return {"plain share": 1 - on, "best cell": 1 - on / c.max(1),
                "ideal map": np.clip(1 - on / ((c * c).sum(1) / c.sum(1)), 0, 1)}


def scores_for(maps, pred, label, masks, cells):
    rows = np.arange(len(maps))
    has = masks.any((1, 2))
    return (attention_scores(maps[rows, pred], masks, has, cells),
            attention_scores(maps[rows, label], masks, has, cells))


def measured_spread(net, x, layer="layer4") -> float:
    """The maps' spread measured as the precompute measures it, on 32 photos (here the first 32 test photos,
    whose ids mix the species)."""
    return spread(net, x[:32], layer)


def rests_on_cue(truth: pd.DataFrame, pred: np.ndarray, classes: list[str]) -> np.ndarray:
    """Photos whose prediction a planted cue explains: the photo carries a cue (ice, the watermark) and the model
    predicts the species that cue was planted with. The truth the shortcut bars rank against.

    Why not the label's own cue (``truth.has_shortcut``): the score and the causal check explain the predicted
    class. A dolphin among ice that the model calls beluga rests on the ice, and an analyst wants it at the top;
    a watermarked humpback that the model calls killer whale does not rest on the watermark, and its
    killer-whale map rightly shows none. The label-based truth counts both the wrong way round; its AUCs are
    printed too.
    """
    cue = pd.Series(np.asarray(classes)[pred]).map(synth.SHORTCUTS).to_numpy()
    return ((cue == "ice") & (truth["background"] == "ice").to_numpy()) | ((cue == "logo") & truth["logo"].to_numpy())


def near_corner(masks: np.ndarray, cells: int = 4) -> np.ndarray:
    """Distance, in cells of a ``cells x cells`` map, from the centre of each animal to the centre of the
    bottom-right cell, where the watermark is drawn: closer than about 1.5 cells, a 4 x 4 map whose evidence
    spreads a cell cannot tell the two apart."""
    yy, xx = np.mgrid[0:masks.shape[1], 0:masks.shape[2]] + 0.5
    area = np.maximum(masks.sum((1, 2)), 1)
    cy = (masks * yy).sum((1, 2)) / area * cells / masks.shape[1]
    cx = (masks * xx).sum((1, 2)) / area * cells / masks.shape[2]
    return np.hypot(cells - 0.5 - cy, cells - 0.5 - cx)


def auc(truth: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score`` for ``truth`` over the images that have a score; NaN where those are all of one kind
    (a smoke run's few photos)."""
    ok = np.isfinite(score)
    return float(roc_auc_score(truth[ok], score[ok])) if len(set(truth[ok])) == 2 else float("nan")


def shortcut_and_agreement(net, sidecar, folder, truth, masks, auto):
    classes = sidecar["classes"]
    label = truth["species"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    x = batch(folder, truth, 128, sidecar)
    t = time.perf_counter()
    logits, maps = run(net, x, maps_layer4)
    pred = logits.argmax(1).numpy()
    cells = measured_spread(net, x)
    on_true, _ = scores_for(maps, pred, label, masks, cells)
    on_auto, _ = scores_for(maps, pred, label, auto, cells)
    cut = rests_on_cue(truth, pred, classes)
    own = truth["has_shortcut"].to_numpy()
    print(f"\ntest photos: {len(truth)}, accuracy {(pred == label).mean():.1%}; carrying their own species' planted "
          f"cue {own.sum()}; predicted as the species of a cue they carry {cut.sum()} "
          f"({', '.join(f'{k}: {v}' for k, v in truth[cut].groupby('species').size().items())}, by label); "
          f"the maps' measured spread {cells:.2f} cells")
    rho = spearman(on_auto["bg_score"], on_true["bg_score"])
    bar("score with auto foreground ranks like true mask: Spearman", rho, ">= 0.85", rho >= 0.85)
    value = auc(cut, on_true["bg_score"])
    bar("photos resting on a cue top the bg_score ranking: AUC (true masks)", value, ">= 0.90", value >= 0.9)
    bar("  ... the same with the automatic foreground: AUC", auc(cut, on_auto["bg_score"]), "(reported)", True)
    bar("  ... by the label's own cue (true masks): AUC", auc(own, on_true["bg_score"]), "(reported)", True)
    on_logo = cut & (pd.Series(np.asarray(classes)[pred]).map(synth.SHORTCUTS) == "logo").to_numpy()
    beside = on_logo & (near_corner(masks) < 1.5)
    print(f"of the {on_logo.sum()} photos resting on the watermark, {beside.sum()} have the animal within 1.5 cells "
          f"of the watermark's cell (median bg_score {np.nanmedian(on_true['bg_score'][beside]):.2f}, the others "
          f"{np.nanmedian(on_true['bg_score'][on_logo & ~beside]):.2f})")
    bar("  ... without those beside the watermark: AUC", auc(cut[~beside], on_true["bg_score"][~beside]),
        "(reported)", True)
    probs = probs_edited(net, x, masks, torch.from_numpy(pred))
    without = probs["prob_without_animal"]
    print(f"causal check (true masks): predicted-class probability with the animal painted over: "
          f"shortcut photos median {np.median(without[cut]):.2f}, others {np.median(without[~cut]):.2f}; "
          f"animal alone: {np.median(probs['prob_animal_only'][cut]):.2f} vs {np.median(probs['prob_animal_only'][~cut]):.2f}")
    groups = truth.assign(rests_on_cue=cut, p=without, s=on_true["bg_score"]).groupby(
        ["species", "has_shortcut", "rests_on_cue"])
    for (species, carries, rests), g in groups:
        print(f"  {species:20s} own cue={carries!s:5s} prediction rests on a cue={rests!s:5s} n={len(g):3d}  "
              f"median bg_score {g.s.median():.2f}  prob without animal {g.p.median():.2f}")
    value = auc(cut, without)
    bar("causal check agrees: AUC of prob without the animal", value, ">= 0.90", value >= 0.9)
    bar("  ... by the label's own cue: AUC", auc(own, without), "(reported)", True)
    lift = without - probs["prob_flat_photo"]
    print(f"the same against a reference, the photo reduced to its mean colour (the model's default for "
          f"empty water): prob without the animal minus prob of the flat photo, shortcut photos median "
          f"{np.median(lift[cut]):.2f}, others {np.median(lift[~cut]):.2f}")
    bar("  ... lift over the flat photo: AUC", auc(cut, lift), "(reported)", True)
    seconds = time.perf_counter() - t
    return dict(x=x, label=label, pred=pred, maps=maps, on_true=on_true, on_auto=on_auto, probs=probs, seconds=seconds,
                spread=cells)


def resolution(net, sidecar, folder, truth, masks, auto, base):
    """4x4 at 128 px against 8x8 maps: the body at 256 px, the body sampled twice as densely, Grad-CAM at layer3.
    Each is scored with its own measured spread."""
    area = truth["animal_area"].to_numpy()
    dense = denser(net)
    variants = {"4x4: layer4 at 128 px": (net, base["x"], "layer4"),
                "8x8: layer4 at 256 px": (net, batch(folder, truth, 256, sidecar), "layer4"),
                "8x8: layer4 sampled densely": (dense, base["x"], "layer4"),
                "8x8: Grad-CAM layer3, 128 px": (net, base["x"], "layer3")}
    print("\nresolution (test set; AUC against rests_on_cue; 'clean' = correctly classified photos without a "
          "planted cue of their species; spread: measured, in the map's cells; rho~causal: Spearman of the score "
          "and prob_without_animal where the prediction is the 4x4 model's):")
    print(f"  {'map':30s} {'acc':>5s} {'spread':>6s} {'AUC true':>8s} {'AUC auto':>8s} {'rho auto~true':>13s} "
          f"{'rho~causal':>10s} {'clean: score':>12s} {'point':>6s} {'rho(score,area)':>15s} {'s/img':>7s}")
    for name, (model, x, layer) in variants.items():
        t = time.perf_counter()
        logits, maps = run(model, x, maps_layer3 if layer == "layer3" else maps_layer4)
        seconds = (time.perf_counter() - t) / len(x)
        pred = base["pred"] if model is dense else logits.argmax(1).numpy()   # the same model's answers
        cells = measured_spread(model, x, layer)
        on_true, _ = scores_for(maps, pred, base["label"], masks, cells)
        on_auto, _ = scores_for(maps, pred, base["label"], auto, cells)
        cut = rests_on_cue(truth, pred, sidecar["classes"])
        clean = ~cut & (pred == base["label"])
        same = pred == base["pred"]
        agree = spearman(on_true["bg_score"][same], base["probs"]["prob_without_animal"][same])
        if layer == "layer3":
            value = auc(cut, on_true["bg_score"])
            bar("--cam-layer layer3: photos resting on a cue on top: AUC", value, ">= 0.90", value >= 0.9)
        print(f"  {name:30s} {(pred == base['label']).mean():5.1%} {cells:6.2f} {auc(cut, on_true['bg_score']):8.3f} "
              f"{auc(cut, on_auto['bg_score']):8.3f} "
              f"{spearman(on_auto['bg_score'], on_true['bg_score']):13.2f} {agree:10.2f} "
              f"{np.nanmedian(on_true['bg_score'][clean]):12.2f} "
              f"{np.nanmean(on_true['peak_on_animal'][clean]):6.2f} {spearman(on_true['bg_score'][clean], area[clean]):15.2f} "
              f"{seconds * 1e3:5.1f}ms")


def denser(net: nn.Sequential) -> nn.Sequential:
    """The same network with its last stage run at stride 1 and dilated by 2 ("a trous"): an 8x8 map at 128 px
    whose every other cell equals the 4x4 map's; the cells between sample the same features half a cell over.
    Its cells are twice as fine, but each reaches as far into the photo as before. Its mean is not the logit, so
    its maps are read for the classes the model itself predicts."""
    dense = copy.deepcopy(net)
    strided = False
    for conv in (m for m in dense[0][-1].modules() if isinstance(m, nn.Conv2d)):
        if conv.stride == (2, 2):
            conv.stride, strided = (1, 1), True
        elif strided and conv.kernel_size == (3, 3):
            conv.dilation, conv.padding = (2, 2), (2, 2)
    return dense.eval()


# ---------------------------------------------------------------- real photos and the README figure


def real_photos(n: int = 100) -> None:
    if not (REAL / "labels.csv").exists():
        print(f"\nreal photos: not found at {REAL}, skipped")
        return
    names = pd.read_csv(REAL / "labels.csv").sample(n, random_state=7)["image"].tolist()
    tiles, areas = [], []
    for k, name in enumerate(names):
        rgb = load_rgb(REAL / "images" / name)
        mask = cv2.resize(auto_foreground(rgb).astype(np.uint8), rgb.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        areas.append(mask.mean())
        tile = rgb.copy()
        tile[mask > 0] = (0.55 * tile[mask > 0] + 0.45 * np.array([255, 60, 0])).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(tile, contours, -1, (255, 230, 0), 1)
        side = np.concatenate([rgb, tile], 0)
        cv2.putText(side, str(k), (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1)
        tiles.append(side)
    for sheet in range(0, n, 20):
        part = tiles[sheet:sheet + 20]
        rows = [np.concatenate(part[i:i + 10], 1) for i in range(0, len(part), 10)]
        cv2.imwrite(str(OUT / f"real_foreground_{sheet // 20}.png"), np.concatenate(rows, 0)[..., ::-1])
    areas = np.array(areas)
    print(f"\nreal photos: automatic foreground ({METHOD}) on {n} Happywhale photos (contact sheets: "
          f"{OUT}/real_foreground_*.png, photo above, estimate below, numbered); found nothing on "
          f"{(areas == 0).mean():.0%}, median area {np.median(areas):.1%}, over a third of the frame on "
          f"{(areas > 1 / 3).mean():.0%}")
    pd.DataFrame({"k": range(n), "image": names, "area": areas}).to_csv(OUT / "real_foreground.csv", index=False)
    review_tally(names)


def review_tally(names: list[str]) -> None:
    """Tally of the by-eye review of the contact sheets, when one was made of these photos with this method:
    ``bench/real_foreground_review.csv`` (columns k, image, method, area, verdict, failure kind). Verdicts:
    ``right``, the mask covers most of the animal and little else; ``partly``, it lies on the animal but misses
    much of it or takes in splash or water beside it; ``wrong``, it lies mostly off the animal or is empty."""
    path = ROOT / "bench" / "real_foreground_review.csv"
    review = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["image", "method"])
    if "method" not in review or list(review["image"]) != names or set(review["method"]) != {METHOD}:
        print(f"  no by-eye review of these sheets with {METHOD}: look at them and write {path.name} to tally it")
        return
    print("  by eye:", review["verdict"].value_counts().to_dict(), "| failure kinds:",
          review["failure"].dropna().value_counts().to_dict())


def figure(folder, truth, masks, auto, base) -> None:
    """docs/score_examples.png: three test photos, low, medium and high background attention."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = base["on_auto"]["bg_score"]
    correct = (base["pred"] == base["label"]) & np.isfinite(s) & auto.any((1, 2))
    order = np.flatnonzero(correct)[np.argsort(s[correct])]
    picks = [order[int(q * (len(order) - 1))] for q in (0.1, 0.5, 0.97)]
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 3.0), dpi=100)
    for ax, i in zip(axes, picks):
        rgb = load_rgb(folder / "images" / truth["image"].iloc[i])
        cam = base["maps"][i, base["pred"][i]].clip(min=0)
        heat = cv2.resize(cam / max(cam.max(), 1e-6), rgb.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        ax.imshow(rgb)
        ax.imshow(heat, cmap="inferno", alpha=0.45, vmin=0, vmax=1)
        ax.contour(cv2.resize(auto[i].astype(np.uint8), rgb.shape[1::-1], interpolation=cv2.INTER_NEAREST),
                   levels=[0.5], colors="cyan", linewidths=1)
        ax.set_title(f"{truth['species'].iloc[i].replace('_', ' ')}\nbg_score {s[i]:.2f}   bg_share "
                     f"{base['on_auto']['bg_share'][i]:.2f}\nP(species | animal painted over) "
                     f"{base['probs']['prob_without_animal'][i]:.2f}", fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    path = ROOT / "docs" / "score_examples.png"
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"\nwrote {path} ({path.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--figure", action="store_true", help="redraw docs/score_examples.png")
    parser.add_argument("--real", type=int, default=100, help="real photos to put on contact sheets (0: none)")
    parser.add_argument("--no-model", action="store_true", help="only the bars that need no trained model")
    parser.add_argument("--smoke", action="store_true", help="every step on a few photos, one epoch (numbers mean "
                        "nothing; its own folder, wiped first)")
    args = parser.parse_args()
    if args.smoke:
        smoke(args)
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    print(f"{os.cpu_count()} cores, load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    folder, truth, masks = dataset("test", TEST)
    area = truth["animal_area"].to_numpy()
    auto = foreground(folder, truth, masks)
    ranking_without_model(masks, auto)
    cases = [(name, cams, masks, area, 1.0) for name, cams in constructed_maps(masks)]   # no model to measure
    if args.no_model:
        fairness(cases)
    else:
        net, sidecar = model("shortcut", lambda: cue_only_set("shortcut", **TRAIN))
        control, _ = model("control", lambda: dataset("control", CONTROL)[:2])
        base = shortcut_and_agreement(net, sidecar, folder, truth, masks, auto)
        logits, maps = run(control, base["x"], maps_layer4)
        pred = logits.argmax(1).numpy()
        right = pred == base["label"]
        print(f"control model on the test photos: accuracy {right.mean():.1%}")
        cases.append(("control model (no planted cue), correct photos", maps[right, pred[right]], masks[right],
                      area[right], measured_spread(control, base["x"])))
        clean = (base["pred"] == base["label"]) & ~truth["has_shortcut"].to_numpy()
        cases.append(("shortcut model, correct photos without the cue", base["maps"][clean, base["pred"][clean]],
                      masks[clean], area[clean], base["spread"]))
        logits, maps = run(control, base["x"], maps_layer3)
        pred = logits.argmax(1).numpy()
        right = pred == base["label"]
        cases.append(("layer3 maps: control model, correct photos", maps[right, pred[right]], masks[right],
                      area[right], measured_spread(control, base["x"], "layer3")))
        fairness(cases)
        resolution(net, sidecar, folder, truth, masks, auto, base)
        if args.figure:
            figure(folder, truth, masks, auto, base)
    if args.real:
        real_photos(args.real)
    print()
    print(_util.table(["bar", "value", "rule", "result"],
                      [[name, f"{value:.3f}", rule, "PASS" if passed else "FAIL"] for name, value, rule, passed in BARS]))


def smoke(args) -> None:
    """Shrinks every set, the training and the real-photo sheet to :data:`SMOKE` and moves the work folder."""
    global OUT
    OUT = OUT.with_name("score-smoke")
    shutil.rmtree(OUT, ignore_errors=True)
    for params in (TRAIN, CONTROL, TEST):
        params["n_per_species"] = SMOKE["n_per_species"]
    RECIPE["epochs"], EMPTY["n"], args.real = SMOKE["epochs"], SMOKE["empty"], min(args.real, SMOKE["real"])
    print("smoke run: a few photos and one epoch; the bars below say nothing about the score")


if __name__ == "__main__":
    main()
