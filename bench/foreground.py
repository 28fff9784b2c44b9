"""The automatic foreground on real photos, against hand-drawn boxes: the bars of issue 20, and the re-fit of
the shipped model.

On the 240 photos of ../shared/data/happywhale128 that have hand boxes (``boxes.csv``, see ``BOXES.md``):

- the learned estimate (:func:`whaleaudit.explain.foreground.auto_foreground`), **cross-validated**: five folds
  by photo (fixed seed); each fold's model, both stages (the second learns from first-stage maps of inner
  folds, :func:`whaleaudit.explain.foreground.fit_model`), is fitted on the other four folds' photos (and the drawn photos below) and
  measured on its own, so no figure comes from a photo the model learned from;
- beside it the classical estimate, border-colour rarity (:func:`colour_rarity_foreground`), which learns nothing.

Figures per photo, on the ``MASK_SIZE`` masks the audit stores, against the boxes rasterised like a ``--boxes``
audit (:func:`boxes_to_mask`): precision (share of the mask inside the boxes), recall (share of the boxes the
mask covers; a fin fills about half its box, so a perfect mask stays well below 1), box IoU (the tight box
around the mask against the tight box around the boxes), none found; medians over photos. Time per photo is
CPU time in this process on one thread, the JPEG decode excluded.

A black frame: the boxed photos again inside the frame the shared photos most often have, measured with
the frame cropped first (as the estimate does) and left in; and how many shared photos have one.

The model also learns from drawn photos (:mod:`whaleaudit.demo.synth`, seed 404, true masks), so that it holds
on the demo's photos too; the last lines measure it on other drawn photos (seed 202, the test set of
bench/score.py) against their true masks.

    .venv/bin/python bench/foreground.py          # the bars (several minutes: 25 fits)
    .venv/bin/python bench/foreground.py --fit    # also re-fit the shipped model on all 240 photos and write it
    .venv/bin/python bench/foreground.py --smoke  # a few photos, two folds, a short fit: shows the bench runs
    .venv/bin/python bench/foreground.py --model models/hw.pth   # also the score-agreement bars (3 audits)

With ``--model`` (a resnet18 trained by ``python -m whaleaudit train`` on the 3,000 shared photos) the boxed
photos are audited three times, with the hand boxes, the learned foreground (cross-validated masks) and the
classical one, and the bars of issue 20 on the score are printed: Spearman of ``bg_score`` and of
``prob_without_animal`` against the audit with the boxes, at least 0.85.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")   # one core, as the bars are stated

import _util
import cv2
import numpy as np
from _util import DATA

from whaleaudit.demo import synth
from whaleaudit.explain import foreground as fg

REAL = DATA / "happywhale128"
OUT = _util.OUT / "foreground"
FOLDS, SEED = 5, 0
DRAWN_TRAIN = {"n_per_species": 40, "size": 128, "seed": 404, "shortcut": True}
DRAWN_TEST = {"n_per_species": 100, "size": 128, "seed": 202, "shortcut": True}
SMOKE = {"photos": 16, "folds": 2, "drawn": 3, "epochs": 2}
FRAME = (0, 3, 0, 5)   # the black frame most framed shared photos have (bench: photos with a frame found)


def rgb_of(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path))
    if bgr is None:
        sys.exit(f"{path}: cannot be read as an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def boxed_photos(limit: int | None) -> tuple[list[str], list[np.ndarray], list[list]]:
    boxes, fractions = fg.read_boxes(REAL / "boxes.csv")
    assert not fractions, "boxes.csv is in pixels"
    names = sorted(boxes)[:limit] if limit else sorted(boxes)
    return names, [rgb_of(REAL / "images" / n) for n in names], [boxes[n] for n in names]


def species_of(names: list[str]) -> list[str]:
    import pandas as pd

    labels = pd.read_csv(REAL / "labels.csv").set_index("image")["species"]
    return [str(labels.get(n, "unknown")) for n in names]


def drawn(params: dict, limit: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Drawn photos and their true masks at MASK_SIZE (drawn once into bench/out/foreground)."""
    folder = OUT / f"drawn-{params['seed']}-{params['n_per_species']}"
    if not synth.is_complete(folder, **params):
        synth.make_dataset(folder, **params)
    import pandas as pd

    truth = pd.read_csv(folder / "truth.csv")
    names = list(truth["image"])[:limit] if limit else list(truth["image"])
    photos = [rgb_of(folder / "images" / n) for n in names]
    masks = np.stack([cv2.resize((cv2.imread(str(folder / "masks" / (Path(n).stem + ".png")), 0) > 127)
                                 .astype(np.float32), (fg.MASK_SIZE, fg.MASK_SIZE), interpolation=cv2.INTER_AREA) > 0.5
                      for n in names])
    return photos, masks


def tight(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    return None if len(ys) == 0 else (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)


def box_iou(a, b) -> float:
    if a is None or b is None:
        return 0.0
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda t: (t[2] - t[0]) * (t[3] - t[1])
    return inter / (area(a) + area(b) - inter)


def against_boxes(masks: list[np.ndarray], truth: list[np.ndarray]) -> dict:
    prec, rec, iou, none = [], [], [], []
    for m, t in zip(masks, truth):
        none.append(not m.any())
        prec.append((m & t).sum() / m.sum() if m.any() else np.nan)
        rec.append((m & t).sum() / t.sum())
        iou.append(box_iou(tight(m), tight(t)))
    return {"precision": float(np.nanmedian(prec)), "box_iou": float(np.median(iou)),
            "box_iou_mean": float(np.mean(iou)), "recall": float(np.median(rec)), "none": float(np.mean(none)),
            "per_photo_box_iou": iou}


def failure_kind(mask: np.ndarray, truth: np.ndarray) -> str | None:
    """Why a photo's box IoU is below 0.5 (None where it is not): by the tight boxes and the precision."""
    a, b = tight(mask), tight(truth)
    if a is None:
        return "none found"
    if box_iou(a, b) >= 0.5:
        return None
    area = lambda t: (t[2] - t[0]) * (t[3] - t[1])
    if (mask & truth).sum() < 0.5 * mask.sum():
        return "mostly off the animal"
    if area(a) < 0.6 * area(b):
        return "part of the animal"
    if area(a) > 1.6 * area(b):
        return "animal and more"
    return "shifted"


def contact_sheets(names, photos, boxes, masks, folder: Path) -> dict:
    """One PNG per failure kind (photo 2x, hand boxes green, estimate outlined magenta), into ``folder``
    (bench/out: derived from the shared photos, never for the repository)."""
    folder.mkdir(parents=True, exist_ok=True)
    kinds: dict[str, list] = {}
    for name, rgb, bs, m in zip(names, photos, boxes, masks):
        kind = failure_kind(m, fg.boxes_to_mask(bs, rgb.shape[1], rgb.shape[0], False))
        if kind:
            kinds.setdefault(kind, []).append((name, rgb, bs, m))
    for kind, items in kinds.items():
        tiles = []
        for name, rgb, bs, m in items:
            tile = cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_NEAREST)
            for x0, y0, x1, y1 in bs:
                cv2.rectangle(tile, (int(x0 * 2), int(y0 * 2)), (int(x1 * 2) - 1, int(y1 * 2) - 1), (0, 255, 0), 1)
            outline, _ = cv2.findContours(cv2.resize(m.astype(np.uint8), (256, 256), interpolation=cv2.INTER_NEAREST),
                                          cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(tile, outline, -1, (255, 0, 255), 1)
            tiles.append(tile)
        tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % 8)
        sheet = np.vstack([np.hstack(tiles[i:i + 8]) for i in range(0, len(tiles), 8)])
        cv2.imwrite(str(folder / (kind.replace(" ", "-") + ".png")), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return {k: len(v) for k, v in sorted(kinds.items(), key=lambda kv: -len(kv[1]))}


def score_agreement(model_path: Path, names, fold, fold_models, trust: bool) -> None:
    """The 240 boxed photos audited three times by ``model_path`` (the project's precompute, causal check on
    every photo): with the hand boxes, with the learned foreground (each photo's mask from the fold model that
    never saw it) and with the classical one; Spearman of each against the boxes' audit."""
    import pandas as pd
    from scipy.stats import spearmanr

    from whaleaudit.audit.precompute import precompute
    from whaleaudit.audit.store import open_audit
    from whaleaudit.data.dataset import load_dataset

    folder = OUT / "audits"
    folder.mkdir(parents=True, exist_ok=True)
    labels = pd.read_csv(REAL / "labels.csv").set_index("image")["species"]
    pd.DataFrame({"image": names, "species": [labels[n] for n in names]}).to_csv(folder / "labels.csv", index=False)
    dataset = load_dataset(folder / "labels.csv", images=REAL / "images")
    model_of = {n: fold_models[k] for n, k in zip(names, fold)}

    class CrossValidated(fg.ForegroundProvider):
        def __call__(self, image_id, rgb, full_size=None):
            mask = fg.auto_foreground(rgb, model_of[image_id])
            return (mask, "auto") if mask.any() else (None, "none")

        def describe(self):
            return dict(super().describe(), auto_model={"path": f"bench: {len(fold_models)} fold models, "
                                                                "each photo's from the fold that never saw it"})

    class Classical(fg.ForegroundProvider):
        def __call__(self, image_id, rgb, full_size=None):
            mask = fg.colour_rarity_foreground(rgb)
            return (mask, "auto") if mask.any() else (None, "none")

        def describe(self):
            return dict(super().describe(), auto_method=fg.CLASSICAL_METHOD, auto_model=None)

    runs = {"boxes": fg.ForegroundProvider(dataset.image_root, boxes_csv=REAL / "boxes.csv"),
            "learned": CrossValidated(dataset.image_root), "classical": Classical(dataset.image_root)}
    frames = {}
    for name, provider in runs.items():
        t = time.perf_counter()
        store = precompute(dataset, model_path, folder / name, trust=trust, workers=0, foreground=provider,
                           causal=1.0, progress=False)
        frames[name] = open_audit(store).images.set_index("image")
        print(f"audit with the {name} foreground: {time.perf_counter() - t:.0f} s")
    ref = frames["boxes"]
    print(f"\n| score agreement with the boxes' audit ({model_path.name}) | learned (CV) | classical | bar |")
    print("| --- | --- | --- | --- |")
    for col in ("bg_score", "prob_without_animal"):
        rho = {}
        for name in ("learned", "classical"):
            a, b = frames[name][col].reindex(ref.index).to_numpy(float), ref[col].to_numpy(float)
            ok = np.isfinite(a) & np.isfinite(b)
            rho[name] = spearmanr(a[ok], b[ok]).statistic if ok.sum() > 2 else float("nan")
        print(f"| Spearman of `{col}` | {rho['learned']:.2f} | {rho['classical']:.2f} | >= 0.85 "
              f"{'PASS' if rho['learned'] >= 0.85 else 'FAIL'} |")


def black_frames(photos, boxes, learned, fold, fold_models) -> None:
    """The boxed photos again, shrunk into the black frame the shared photos' framed ones have most often
    (``FRAME``: top, bottom, left, right, pixels at 128), each by the fold model that never saw it: cropped
    first (:func:`fg.photo_frame`, as the estimate does) against not (the frame left in the border statistics);
    and how many of the shared photos have a frame at all."""
    top, bottom, left, right = FRAME
    framed, framed_truth = [], []
    for p, bs in zip(photos, boxes):
        h, w = p.shape[:2]
        inner = (w - left - right, h - top - bottom)
        canvas = np.zeros_like(p)
        canvas[top:h - bottom, left:w - right] = cv2.resize(p, inner, interpolation=cv2.INTER_AREA)
        framed.append(canvas)
        to = np.array([inner[0] / w, inner[1] / h] * 2)
        framed_truth.append(fg.boxes_to_mask([np.asarray(b) * to + [left, top, left, top] for b in bs], w, h, False))
    cropped = [fg.auto_foreground(p, fold_models[k]) for p, k in zip(framed, fold)]
    left_in = [fg.mask_from_probability(fg._two_stages(fold_models[k], fg._work_photo(p, "bench")), hull=True)
               for p, k in zip(framed, fold)]
    found = sum(any(fg.photo_frame(p)) for p in framed)
    a, b = against_boxes(cropped, framed_truth), against_boxes(left_in, framed_truth)
    shared = sorted((REAL / "images").glob("*.jpg"))
    n_framed = sum(any(fg.photo_frame(rgb_of(f))) for f in shared)
    print(f"black frame {FRAME} (top, bottom, left, right px) added to the {len(photos)} boxed photos: found on "
          f"{found}; cropped first: precision {a['precision']:.2f}, box IoU {a['box_iou']:.2f}, none {a['none']:.1%}; "
          f"frame left in: {b['precision']:.2f}, {b['box_iou']:.2f}, {b['none']:.1%} (no frame: box IoU "
          f"{learned['box_iou']:.2f}). Shared photos with a black frame found: {n_framed} of {len(shared)}")


def per_photo_ms(fn, photos) -> float:
    fn(photos[0])
    t = time.process_time()
    for p in photos:
        fn(p)
    return (time.process_time() - t) / len(photos) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fit", action="store_true", help="re-fit the shipped model on all boxed photos and write it")
    ap.add_argument("--model-out", type=Path, default=fg.MODEL_PATH, help="where --fit writes (default: the shipped file)")
    ap.add_argument("--smoke", action="store_true", help="a few photos, two folds, a short fit")
    ap.add_argument("--model", type=Path, help="also audit the boxed photos with this trained model (.pth with its "
                    ".json, as `python -m whaleaudit train` writes) and print the score-agreement bars")
    ap.add_argument("--trust", action="store_true", help="allow a pickled .pkl model from outside models/")
    args = ap.parse_args()
    _util.require(REAL / "boxes.csv", REAL / "images")
    smoke = args.smoke
    folds = SMOKE["folds"] if smoke else FOLDS
    fit = dict(fg.FIT, epochs=SMOKE["epochs"]) if smoke else fg.FIT
    t0 = time.perf_counter()

    names, photos, boxes = boxed_photos(SMOKE["photos"] if smoke else None)
    truth = [fg.boxes_to_mask(b, p.shape[1], p.shape[0], False) for b, p in zip(boxes, photos)]
    inputs = [fg.fit_inputs(p, b) for p, b in zip(photos, boxes)]
    d_photos, d_masks = drawn(DRAWN_TRAIN, SMOKE["drawn"] * 4 if smoke else None)
    d_inputs = [(fg.pixel_features(p), m, np.ones_like(m)) for p, m in zip(d_photos, d_masks)]

    def fit_on(train) -> dict:
        """Both stages fitted on these boxed photos and the drawn ones."""
        return fg.fit_model(*zip(*([inputs[i] for i in train] + d_inputs)), fit=fit)

    fold = np.random.default_rng(SEED).permutation(len(names)) % folds
    prob = np.zeros((len(names), fg.MASK_SIZE, fg.MASK_SIZE), np.float32)
    fold_models = []
    for k in range(folds):
        train = np.flatnonzero(fold != k)
        model = fit_on(train)
        fold_models.append(model)
        for i in np.flatnonzero(fold == k):
            prob[i] = fg.animal_probability(photos[i], model)
    learned = [fg.mask_from_probability(p) for p in prob]
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(OUT / "cv_probability.npy", prob)   # each photo's map by the fold model that never saw it
    classical = [fg.colour_rarity_foreground(p) for p in photos]
    ours, today = against_boxes(learned, truth), against_boxes(classical, truth)
    ms_learned = per_photo_ms(lambda p: fg.auto_foreground(p, fold_models[0]), photos)
    ms_classical = per_photo_ms(fg.colour_rarity_foreground, photos)

    print(f"automatic foreground on {len(names)} real photos with hand boxes ({REAL}), "
          f"{folds}-fold cross-validated by photo (seed {SEED}); {_util.machine()}; {_util.load()}")
    rows = [("median precision (mask inside the boxes)", "precision", ">= 0.85", lambda v: v >= 0.85),
            ("median box IoU (tight box vs tight box of the boxes)", "box_iou", ">= 0.75", lambda v: v >= 0.75),
            ("no foreground found", "none", "<= 5%", lambda v: v <= 0.05),
            ("median recall (share of the boxes covered; report)", "recall", "report", None),
            ("mean box IoU (report)", "box_iou_mean", "report", None)]
    print(f"\n| figure | {fg.METHOD} (CV) | {fg.CLASSICAL_METHOD} (today) | bar | learned |")
    print("| --- | --- | --- | --- | --- |")
    fmt = lambda key, v: f"{v:.1%}" if key == "none" else f"{v:.2f}"
    for label, key, rule, ok in rows:
        verdict = "" if ok is None else ("PASS" if ok(ours[key]) else "FAIL")
        print(f"| {label} | {fmt(key, ours[key])} | {fmt(key, today[key])} | {rule} | {verdict} |")
    print(f"| CPU ms per photo at 128 px, one thread | {ms_learned:.1f} | {ms_classical:.1f} | a few ms | |")

    iou = np.array(ours["per_photo_box_iou"])
    print(f"\nshare of photos with box IoU >= 0.5: learned {np.mean(iou >= 0.5):.0%}, today "
          f"{np.mean(np.array(today['per_photo_box_iou']) >= 0.5):.0%} (of {len(names)})")

    species = species_of(names)
    for held in sorted(set(species)):
        train = [i for i, sp in enumerate(species) if sp != held]
        test = [i for i, sp in enumerate(species) if sp == held]
        if not train or not test:
            continue
        model = fit_on(train)
        other = against_boxes([fg.auto_foreground(photos[i], model) for i in test], [truth[i] for i in test])
        same = against_boxes([learned[i] for i in test], [truth[i] for i in test])
        then = against_boxes([classical[i] for i in test], [truth[i] for i in test])
        print(f"a species it never saw: {held} ({len(test)} photos) by a model fitted on the other species only: "
              f"precision {other['precision']:.2f}, box IoU {other['box_iou']:.2f}, none {other['none']:.1%} "
              f"(5-fold CV on both species: {same['precision']:.2f}, {same['box_iou']:.2f}, {same['none']:.1%}; "
              f"today: {then['precision']:.2f}, {then['box_iou']:.2f}, {then['none']:.1%})")
    counts = contact_sheets(names, photos, boxes, learned, OUT / "sheets")
    print(f"photos below box IoU 0.5 by kind (contact sheets in {OUT / 'sheets'}): "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))

    t_photos, t_masks = drawn(DRAWN_TEST, SMOKE["drawn"] if smoke else None)
    d_iou = lambda fn: np.array([(fn(p) & m).sum() / max((fn(p) | m).sum(), 1) for p, m in zip(t_photos, t_masks)])
    li, ci = d_iou(lambda p: fg.auto_foreground(p, fold_models[0])), d_iou(fg.colour_rarity_foreground)
    print(f"drawn photos (seed {DRAWN_TEST['seed']}, {len(t_photos)}, fold-0 model): median IoU with the true mask "
          f"learned {np.median(li):.2f}, today {np.median(ci):.2f}; wrong object or none (IoU < 0.3) "
          f"{np.mean(li < 0.3):.0%} vs {np.mean(ci < 0.3):.0%}")

    black_frames(photos, boxes, ours, fold, fold_models)

    if args.model:
        score_agreement(args.model, names, fold, fold_models, args.trust)

    if args.fit:
        model = fit_on(range(len(names)))
        about = {"fitted_on": f"{len(names)} photos of {REAL.name}/boxes.csv and {len(d_photos)} drawn photos "
                              f"(synth seed {DRAWN_TRAIN['seed']})", "by": "bench/foreground.py --fit",
                 "fit": fit, "every": fg.EVERY, "inner_folds": fg.INNER_FOLDS,
                 "cross_validated": {k: round(ours[k], 3) for k in ("precision", "box_iou", "recall", "none")}}
        fg.save_model(model, args.model_out, about)
        print(f"\nwrote {args.model_out} ({args.model_out.stat().st_size / 1024:.0f} KB): {json.dumps(about)}")
    print(f"\n{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
