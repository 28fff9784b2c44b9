"""Issue 16's bars for evidence concepts, on real photos with planted cues, printed as a PASS/FAIL table.

Steps (everything lands in bench/out/concepts; the planted photos, the models and the audits are kept there and
reused when present):

1. Plants three cues into copies of ../shared/data/happywhale128 (2 species, 1,500 photos each): a small logo in a
   random corner and a coloured band along the left edge, each on 40% of the killer whales' training photos (never
   both on one photo), and a printed date and time at the bottom on 80% of the dolphins'; each also on 3% of the
   other species' training photos. Held out: 300 photos per species, in three groups of 100 per species, one
   group per cue, half of each group marked with that cue. Every photo is re-saved alike (JPEG q95), so that only
   the cue tells marked from unmarked. The cue's pixel box is kept per photo.
2. Trains one model on the training part with the project's CLI (``python -m whaleaudit train``) and audits the
   held-out part with it (``python -m whaleaudit precompute --causal 0``, which writes the concepts). With
   ``--trainings N``, N models trained alike but for the training seed (42, 43, ...): what a model learns, and
   where its evidence lies, changes from one training to the next; step 3 for each, then a summary.
3. Per cue: whether the model learned it (the marked photos of the other species called the cue's species,
   against their unmarked group-mates) and where in the frame (the mark's gain in logit margin, by place:
   :func:`with_gains`); the concepts of the cue's species whose evidence lies mostly on the cue's cells
   (:func:`cue_concepts`) and their ranks in the library's order (the Concepts page shows the first
   :data:`SHOWN`); the AUROC of ranking the cue group's photos predicted as that species by those concepts' share
   of their evidence, marked against unmarked (the bar), and the same without the marks at places the model did
   not learn (no evidence there to find). The same ranks under the plain evidence-share order, for the ordering
   decision.
4. Control: a model trained on the clean photos (``--control-model``, or one trained here by the same recipe on
   the training part without cues), its audit of held-out photos, the concepts that lie off the animal and a
   contact sheet of their crops (``control-sheet.png``).
5. Cost: the precompute with the evidence and concepts (the default) and without (``evidence=False``), side by
   side in one process, alternating, best of two: CPU ms per photo and store bytes per photo.
6. A screenshot of the Concepts page per cue, where the dashboard has one (pages/concepts.py).

    .venv/bin/python bench/concepts.py                      # all of it (training: 4-8 minutes on 2 cores)
    .venv/bin/python bench/concepts.py --control-model M.pth # the control from a model trained on clean photos
    .venv/bin/python bench/concepts.py --trainings 5        # the bars on five trainings (4-8 minutes each)
    .venv/bin/python bench/concepts.py --smoke              # every step on a few photos, one epoch, two trainings
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import _util
from _util import DATA, ROOT, concepts_current, require, table

OUT = _util.OUT / "concepts"
REAL = DATA / "happywhale128"
_util.quiet_caches(OUT)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from whaleaudit.audit.concepts import concept_name, open_concepts, positive_evidence  # noqa: E402
from whaleaudit.audit.precompute import normalisation, normalised, precompute  # noqa: E402
from whaleaudit.audit.store import open_audit  # noqa: E402
from whaleaudit.explain.concepts import box_cells, concept_of_cells  # noqa: E402
from whaleaudit.model.load import load_model  # noqa: E402
from whaleaudit.views.concepts import crop as concept_crop  # noqa: E402

SIZE = 128
#: The cues: which species each is planted on, and on what share of the training photos of that species and of
#: the other one (never two cues on one photo).
CUES = {"logo": "killer_whale", "band": "killer_whale", "date": "bottlenose_dolphin"}
RATE = {"own": {"logo": 0.4, "band": 0.4, "date": 0.8}, "other": 0.03}
HELD_OUT = 300      # held-out photos per species, a third of them per cue, half of those marked
RECIPE = dict(epochs=4, lr=3e-3, seed=42)   # `whaleaudit train` options: one frozen epoch, then these
SHOWN = 10          # concepts per class the Concepts page shows first
ON_CUE = 0.5        # a concept lies on a cue when at least this share of its evidence lies on the cue's cells
AUROC_BAR = 0.95
FLIP_BAR = 0.2      # a cue counts as learned when its marked photos of the other species are called its
                    # species this much more often than their unmarked group-mates
GAIN_BAR = 1.0      # a cue counts as learned at a place of the frame when, there, it adds at least this much (median)
                    # to the model's logit margin for its species: the odds times e
SEED = 16
SMOKE = dict(per_species=16, held_out=6, epochs=1)   # and two trainings


# --- 1. planting ---------------------------------------------------------------------------------------------------


def draw_logo(im: Image.Image, rng) -> tuple[int, int, int, int]:
    """A 14 px badge (yellow square, dark centre) in a random corner, 3 px in; returns its box."""
    s = 14 * im.height // 128
    corner = int(rng.integers(4))
    y = 3 if corner < 2 else im.height - 3 - s
    x = 3 if corner % 2 == 0 else im.width - 3 - s
    d = ImageDraw.Draw(im)
    d.rectangle([x, y, x + s - 1, y + s - 1], fill=(250, 210, 20))
    d.rectangle([x + s // 3, y + s // 3, x + s - s // 3 - 1, y + s - s // 3 - 1], fill=(30, 30, 30))
    return x, y, x + s, y + s


def draw_band(im: Image.Image, rng) -> tuple[int, int, int, int]:
    """A magenta band 5 px wide along the left edge, like the black border down the left side of some real
    photos (docs/concepts.md); returns its box."""
    box = (0, 0, 5 * im.width // 128, im.height)
    ImageDraw.Draw(im).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=(230, 40, 200))
    return box


def draw_date(im: Image.Image, rng) -> tuple[int, int, int, int]:
    """A camera's date and time ('14.07.19 10:32', random digits) in bold orange at the bottom left or right;
    returns the box of its ink."""
    text = (f"{rng.integers(1, 29):02d}.{rng.integers(1, 13):02d}.{rng.integers(10, 24):02d} "
            f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}")
    font = ImageFont.load_default()
    d = ImageDraw.Draw(im)
    left, top, right, bottom = d.textbbox((0, 0), text, font=font)
    x = 3 if rng.random() < 0.5 else im.width - 4 - (right - left)
    y = im.height - 3 - (bottom - top)
    for dx in (0, 1):   # bold: the bitmap font's strokes are one pixel wide
        d.text((x - left + dx, y - top), text, fill=(255, 160, 0), font=font)
    return x, y, x + right - left + 1, y + bottom - top


DRAW = {"logo": draw_logo, "band": draw_band, "date": draw_date}


@dataclass
class Planted:
    folder: Path          # images/, train.csv, heldout.csv, cues.csv (image, part, group, cue, x0, y0, x1, y1)
    cues: pd.DataFrame

    @property
    def images(self) -> Path:
        return self.folder / "images"


def plant(folder: Path, per_species: int | None = None, held_out: int = HELD_OUT) -> Planted:
    """The planted copy of the real photos (step 1 of the module docstring), made once into ``folder``;
    ``per_species``: use only that many photos of each species (the smoke run)."""
    if (folder / "cues.csv").is_file():
        return Planted(folder, pd.read_csv(folder / "cues.csv"))
    rng = np.random.default_rng(SEED)
    labels = pd.read_csv(REAL / "labels.csv")
    if per_species:
        labels = labels.groupby("species", group_keys=False).head(per_species)
    held = pd.concat([g.sample(held_out, random_state=SEED) for _, g in labels.groupby("species")])
    held["group"] = np.concatenate([np.arange(held_out) * len(CUES) // held_out for _ in range(2)])
    held["marked"] = np.concatenate([(np.arange(held_out) % 2 == 0) for _ in range(2)])
    train = labels[~labels["image"].isin(held["image"])]
    names = list(CUES)
    rows = []
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    for image, species in zip(train["image"], train["species"]):
        own = [c for c in names if CUES[c] == species]
        p = [RATE["own"][c] if c in own else RATE["other"] for c in names]
        pick = rng.choice(len(names) + 1, p=p + [1 - sum(p)])
        rows.append(_save(image, species, "train", -1, names[pick] if pick < len(names) else "", folder, tmp, rng))
    for image, species, group, marked in held[["image", "species", "group", "marked"]].itertuples(index=False):
        rows.append(_save(image, species, "heldout", group, names[group] if marked else "", folder, tmp, rng))
    cues = pd.DataFrame(rows, columns=["image", "species", "part", "group", "cue", "x0", "y0", "x1", "y1"])
    for part in ("train", "heldout"):
        cues.loc[cues["part"] == part, ["image", "species"]].to_csv(tmp / f"{part}.csv", index=False)
    cues.to_csv(tmp / "cues.csv", index=False)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return Planted(folder, cues)


def _save(image, species, part, group, cue, folder, tmp, rng):
    im = Image.open(REAL / "images" / image).convert("RGB").resize((SIZE, SIZE))
    box = DRAW[cue](im, rng) if cue else (0, 0, 0, 0)
    im.save(tmp / "images" / image, quality=95)
    return (image, species, part, group, cue, *box)


# --- 2. the model and the audit ------------------------------------------------------------------------------------


def cli(*args: str) -> None:
    """``python -m whaleaudit ARGS`` as a user runs it; stops the bench with its error output if it fails."""
    done = subprocess.run([sys.executable, "-m", "whaleaudit", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"whaleaudit {' '.join(args)} exited with {done.returncode}:\n{done.stderr[-3000:]}")


def trained(labels: Path, images: Path, pth: Path, epochs: int, seed: int = RECIPE["seed"]) -> Path:
    """A model trained by ``whaleaudit train`` on ``labels`` (from random weights: nothing is downloaded), once."""
    if not pth.is_file():
        pth.parent.mkdir(parents=True, exist_ok=True)
        cli("train", "--labels", str(labels), "--images", str(images), "--model-out", str(pth.with_suffix(".pkl")),
            "--epochs", str(epochs), "--lr", str(RECIPE["lr"]), "--seed", str(seed), "--no-pretrained",
            "--quiet")
    return pth


def audited(labels: Path, images: Path, pth: Path, out: Path) -> Path:
    """The audit of ``labels`` by ``whaleaudit precompute`` (no causal check: the concepts do not use it), once;
    its concepts found again (``whaleaudit concepts``) where they were written by an older library."""
    if not (out / "concepts.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        cli("precompute", "--labels", str(labels), "--images", str(images), "--model", str(pth), "--out", str(out),
            "--causal", "0", "--quiet")
    elif not concepts_current(out):
        cli("concepts", str(out))
    return out


# --- 3. per cue ----------------------------------------------------------------------------------------------------


def cell_concepts(audit, table: pd.DataFrame, photos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(positive evidence [n, cells], concept row of ``table`` [n, cells])`` of ``photos``: every cell belongs to
    the concept of its nearest piece, as the library assigns them (:func:`concept_of_cells`)."""
    return positive_evidence(audit)[photos], concept_of_cells(audit.cells[photos], table)


def cue_concepts(audit, concepts, cues: pd.DataFrame, cue: str) -> pd.DataFrame:
    """The concepts of the cue's species, each with ``on_cue``: the share of its evidence, over the held-out
    photos predicted as that species, that lies on the cells the cue touches or their neighbours
    (:func:`box_cells`) in the photos marked with it."""
    class_idx = audit.classes.index(CUES[cue])
    table = concepts.table[concepts.table["class_idx"] == class_idx].reset_index(drop=True)
    photos = np.flatnonzero((audit.images["pred_idx"] == class_idx).to_numpy())
    if table.empty:   # no photo predicted as the species holds positive evidence
        return table.assign(on_cue=np.zeros(0))
    positive, assign = cell_concepts(audit, table, photos)
    boxes = cues[["x0", "y0", "x1", "y1"]].to_numpy()[photos]
    on = box_cells(boxes, SIZE, audit.evidence.shape[2:]) & (cues["cue"].to_numpy()[photos] == cue)[:, None]
    amounts = np.stack([np.where(assign == j, positive, 0) for j in range(len(table))])
    table["on_cue"] = (amounts * on).sum(axis=(1, 2)) / np.maximum(amounts.sum(axis=(1, 2)), 1e-12)
    return table


@dataclass
class CueResult:
    cue: str
    species: str
    flipped: tuple[int, int]        # marked photos of the other species called the cue's species, of how many
    flipped_clean: tuple[int, int]  # the same for their unmarked group-mates
    ranks: list[int]                # the library's ranks of the concepts on the cue
    share_ranks: list[int]          # their ranks by evidence share alone
    n_concepts: int
    auroc: float                    # the group's photos predicted as the species, by the cue concepts' share
    auroc_photos: tuple[int, int]   # marked, unmarked photos ranked
    gains: dict                     # place of the frame -> (the mark's median logit gain there, marked photos,
                                    # the AUROC of those photos against the unmarked ones)
    auroc_learned: float            # the AUROC without the marked photos at places where the gain is below GAIN_BAR

    @property
    def learned(self) -> bool:
        (m, n), (c, k) = self.flipped, self.flipped_clean
        return n > 0 and m / n - c / max(k, 1) >= FLIP_BAR

    @property
    def passed(self) -> bool:
        """Both bars: every concept on the cue among the first :data:`SHOWN`, and their AUROC."""
        return bool(self.ranks) and max(self.ranks) < SHOWN and self.auroc >= AUROC_BAR


def measure_cue(audit, concepts, cues: pd.DataFrame, cue: str) -> CueResult:
    """One cue's row of the table (step 3 of the module docstring); ``cues`` with the ``place`` and ``gain`` columns
    of :func:`with_gains`."""
    species = CUES[cue]
    class_idx = audit.classes.index(species)
    images = audit.images
    pred = images["pred_idx"].to_numpy()
    group = (cues["group"] == list(CUES).index(cue)).to_numpy()
    marked = (cues["cue"] == cue).to_numpy()
    other = (images["species"] != species).to_numpy()
    count = lambda rows: (int((pred[rows] == class_idx).sum()), int(rows.sum()))  # noqa: E731
    table = cue_concepts(audit, concepts, cues, cue)
    on = table[table["on_cue"] >= ON_CUE]
    by_share = table.sort_values("evidence_share", ascending=False, kind="stable").index.tolist()
    ranked = group & (pred == class_idx)
    score = concepts.shares()[:, on["rank"].to_numpy(int)].sum(axis=1)
    places = cues[group & marked].groupby("place")["gain"].agg(["median", "size"])
    learned_at = cues["place"].isin(places.index[places["median"] >= GAIN_BAR]).to_numpy()
    at = cues["place"].to_numpy()

    def auroc(rows):
        y = marked[rows]
        return float(roc_auc_score(y, score[rows])) if len(on) and 0 < y.sum() < len(y) else float("nan")

    return CueResult(cue, species, count(group & other & marked), count(group & other & ~marked),
                     sorted(on["rank"].tolist()), sorted(by_share.index(j) for j in on.index), len(table),
                     auroc(ranked), (int(marked[ranked].sum()), int((~marked[ranked]).sum())),
                     {p: (float(r["median"]), int(r["size"]), auroc(ranked & (~marked | (at == p))))
                      for p, r in places.iterrows()},
                     auroc(ranked & (learned_at | ~marked)))


def place(x0: int, y0: int, x1: int, y1: int) -> str:
    """Where in the frame a cue's box lies: the third of each axis its centre falls in ('top-left', 'bottom',
    'right'; a band along an edge spans the other axis's middle)."""
    third = lambda c, low, high: low if c < SIZE / 3 else high if c > 2 * SIZE / 3 else ""  # noqa: E731
    return "-".join(p for p in (third((y0 + y1) / 2, "top", "bottom"), third((x0 + x1) / 2, "left", "right")) if p)


def with_gains(cues: pd.DataFrame, planted: Planted, model: Path) -> pd.DataFrame:
    """``cues`` plus ``place`` (:func:`place`) and ``gain``: for each marked photo, how much its mark adds to the
    model's logit margin of the mark's species over the other species, the planted photo against the same real
    photo re-saved alike without the mark (NaN where unmarked). It tells where in the frame the model learned
    the cue: flips count photos, the gain measures the mark itself."""
    import io

    import torch

    net, info = load_model(model)
    stats = normalisation(info["normalize"], torch.device("cpu"))
    marked = cues[cues["cue"].isin(list(CUES))]

    def pixels(image: str, with_mark: bool) -> np.ndarray:
        if with_mark:
            return np.asarray(Image.open(planted.images / image).convert("RGB"))
        buf = io.BytesIO()
        Image.open(REAL / "images" / image).convert("RGB").resize((SIZE, SIZE)).save(buf, "JPEG", quality=95)
        return np.asarray(Image.open(buf).convert("RGB"))

    gains = []
    for start in range(0, len(marked), 64):
        part = marked.iloc[start:start + 64]
        own = torch.as_tensor([info["classes"].index(CUES[c]) for c in part["cue"]])
        margins = []
        for with_mark in (True, False):
            with torch.inference_mode():
                logits = net(normalised(torch.from_numpy(np.stack([pixels(i, with_mark) for i in part["image"]])),
                                        *stats))
            mine = logits.gather(1, own[:, None])[:, 0]
            margins.append(mine - logits.scatter(1, own[:, None], -torch.inf).max(dim=1).values)
        gains.extend((margins[0] - margins[1]).tolist())
    return cues.assign(place=[place(*box) for box in cues[["x0", "y0", "x1", "y1"]].to_numpy()],
                       gain=pd.Series(gains, index=marked.index, dtype=float))


def cue_table(results: list[CueResult]) -> str:
    rows = []
    for r in results:
        learned = f"{r.flipped[0]}/{r.flipped[1]} vs {r.flipped_clean[0]}/{r.flipped_clean[1]} unmarked"
        gains = ", ".join(f"{p} {g:+.1f} ({n}; {a:.2f})" for p, (g, n, a) in sorted(r.gains.items(),
                                                                                  key=lambda t: -t[1][0]))
        if not r.learned:
            rows.append([r.cue, r.species, learned + ": NOT LEARNED", gains, "", "", "", "", "not scored"])
            continue
        rows.append([r.cue, r.species, learned, gains, f"{[k + 1 for k in r.ranks] or 'none'} of {r.n_concepts}",
                     f"{[k + 1 for k in r.share_ranks] or '-'}",
                     f"{r.auroc:.3f} ({r.auroc_photos[0]} vs {r.auroc_photos[1]})", f"{r.auroc_learned:.3f}",
                     "PASS" if r.passed else "FAIL"])
    return table(["cue", "planted on", "learned: other species' marked photos called it",
                  "the mark's median logit gain by place (photos; AUROC there)",
                  f"cue concepts' places (of the first {SHOWN} shown)", "places by evidence share",
                  f"AUROC marked vs unmarked (bar {AUROC_BAR})", f"AUROC, places with a gain of {GAIN_BAR}+",
                  "bars"], rows)


def trainings_table(per_seed: dict[int, list[CueResult]]) -> str:
    """Per cue, over the models trained with different seeds: where it was learned, where it passed, the AUROCs."""
    rows = []
    for i, cue in enumerate(CUES):
        results = {seed: found[i] for seed, found in per_seed.items()}
        learned = [seed for seed, r in results.items() if r.learned]
        rows.append([cue, f"{len(learned)} of {len(results)}",
                     f"{sum(results[s].passed for s in learned)} of {len(learned)}",
                     ", ".join(f"{s}: {[k + 1 for k in results[s].ranks] or 'none'}" for s in learned),
                     ", ".join(f"{s}: {results[s].auroc:.3f}" for s in learned)])
    return table(["cue", "learned by", "passed on", "cue concepts' places, by training seed", "AUROC"], rows)


# --- 4. the control ------------------------------------------------------------------------------------------------


def control_audit(planted: Planted, model: Path | None, epochs: int) -> Path:
    """The audit of held-out clean photos by a model trained on clean photos: ``model``'s own validation photos
    where given, else the held-out part's originals through a model trained here on the training part's."""
    folder = OUT / "control"
    folder.mkdir(parents=True, exist_ok=True)
    if model is None:
        model = trained(planted.folder / "train.csv", REAL / "images", OUT / "models" / "clean.pth", epochs)
        labels = planted.folder / "heldout.csv"
    else:
        valid = set(json.loads(model.with_suffix(".json").read_text())["split"]["valid"])
        real = pd.read_csv(REAL / "labels.csv")
        labels = folder / "valid.csv"
        real[real["image"].isin(valid)].to_csv(labels, index=False)
    return audited(labels, REAL / "images", model, OUT / "audits" / f"control-{model.stem}")


def contact_sheet(audit, concepts, rows: pd.DataFrame, path: Path, title: str) -> None:
    """One row per concept of ``rows``: its label, then its example crops as the Concepts page draws them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = tuple(audit.evidence.shape[2:])
    cols = 1 + max(len(e) for e in rows["example_idx"]) if len(rows) else 2
    fig, axes = plt.subplots(max(len(rows), 1), cols, figsize=(1.3 * cols + 1.5, 1.4 * max(len(rows), 1)),
                             squeeze=False, gridspec_kw={"width_ratios": [2.5] + [1] * (cols - 1)})
    root = Path(audit.manifest["dataset"]["image_root"])
    for ax, row in zip(axes, rows.itertuples()):
        ax[0].text(0, 0.5, f"{concept_name(row.species, row.rank)}\n{row.evidence_share:.1%} of its evidence\n"
                   f"{row.on_animal:.0%} on the animal\nin {row.n_photos} photos", va="center", fontsize=8)
        for a, idx, cell in zip(ax[1:], row.example_idx, row.example_cell):
            photo = Image.open(root / audit.images["path"][idx]).convert("RGB").resize((SIZE, SIZE))
            a.imshow(concept_crop(np.asarray(photo), cell, grid))
    for a in axes.flat:
        a.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def off_animal(concepts) -> pd.DataFrame:
    return concepts.table[concepts.table["on_animal"] < 0.5]


# --- 5. cost -------------------------------------------------------------------------------------------------------


def cost(n: int, repeat: int) -> list[list[str]]:
    """The precompute with the evidence and concepts and without, at 26 classes (bench/precompute.py's photos and
    random-weight model), CLI defaults otherwise (causal check on every photo), alternating; best of ``repeat``."""
    import precompute as precompute_bench

    precompute_bench.WORK.mkdir(parents=True, exist_ok=True)
    ds, pth = precompute_bench.photos(n), precompute_bench.model_file("cam", precompute_bench.classes())
    runs = {False: [], True: []}
    for _ in range(repeat):
        for evidence in (False, True):
            out = OUT / f"cost-{evidence}"
            shutil.rmtree(out, ignore_errors=True)
            label = f"precompute, evidence={evidence}"
            run = precompute_bench.measure(label, n, lambda o=out, e=evidence: precompute(ds, pth, o, evidence=e,
                                                                                      progress=False))
            run["bytes"] = sum(f.stat().st_size for f in out.iterdir())
            runs[evidence].append(run)
    best = {k: (min(r["cpu_ms"] for r in v), max(r["rate"] for r in v), v[0]["bytes"]) for k, v in runs.items()}
    (base_ms, base_rate, base_bytes), (ms, rate, size) = best[False], best[True]
    return [["today's default (no evidence)", f"{base_ms:.1f}", f"{base_rate:.1f}", f"{base_bytes / n:,.0f}", "", ""],
            ["with evidence and concepts", f"{ms:.1f}", f"{rate:.1f}", f"{size / n:,.0f}",
             f"{ms / base_ms:.2f}x CPU, {base_rate / rate:.2f}x wall (bar 1.35x)",
             f"+{(size - base_bytes) / n:,.0f} B (bar 8,192)"]]


# --- 6. screenshots ------------------------------------------------------------------------------------------------


def screenshots(audit: Path, results: list[CueResult]) -> list[Path]:
    """The Concepts page of ``audit`` for each learned cue's species, the cue's first concept chosen, as PNGs
    beside the bench's output; none where the dashboard has no Concepts page or Chromium is absent."""
    if not (ROOT / "pages" / "concepts.py").is_file() or not Path("/usr/bin/chromium").is_file():
        return []
    import socket
    import time
    import urllib.request

    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, WHALEAUDIT_AUDITS=str(audit.parent))
    with open(OUT / "dashboard.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"),
                                   "--server.headless", "true", "--server.port", str(port),
                                   "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    shots = []
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                time.sleep(0.3)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            for r in results:
                if not r.learned or not r.ranks:
                    continue
                page.goto(f"{base}/concepts?audit={audit.name}")
                page.get_by_text("Photos of a concept").first.wait_for(timeout=120_000)
                page.get_by_test_id("stMain").get_by_test_id("stSelectbox").first.click()
                page.get_by_role("option", name=r.species, exact=True).click()
                named = re.compile(f"predicted as ({r.species}|{r.species.replace('_', ' ')})")
                page.get_by_text(named).first.wait_for(timeout=60_000)
                page.get_by_role("button", name="List its photos").nth(r.ranks[0]).click()
                page.wait_for_timeout(5000)
                shots.append(OUT / f"concepts-page-{r.cue}.png")
                page.screenshot(path=shots[-1], full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return shots


# --- the run -------------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--control-model", type=Path, help="a model trained on the clean photos (.pth with its .json "
                    "sidecar); its validation photos are audited (default: train one here)")
    ap.add_argument("--trainings", type=int, default=1, help="models trained on the planted photos, one per "
                    f"training seed from {RECIPE['seed']}: the bars for each and a summary (default %(default)s)")
    ap.add_argument("--cost-images", type=int, default=512, help="photos per cost run (default %(default)s)")
    ap.add_argument("--skip", nargs="+", default=[], choices=["control", "cost", "screenshots"])
    ap.add_argument("--smoke", action="store_true", help="every step on a few photos, one epoch and two "
                    "trainings, in a folder of its own: shows the bench runs (its numbers mean nothing)")
    args = ap.parse_args()
    if args.trainings < 1:
        ap.error("--trainings: at least 1")
    global OUT
    require(REAL / "labels.csv", DATA / "happywhale_train.csv")
    epochs, repeat = RECIPE["epochs"], 2
    if args.smoke:
        OUT = OUT / "smoke"
        shutil.rmtree(OUT, ignore_errors=True)
        epochs, repeat, args.cost_images = SMOKE["epochs"], 1, 8
        args.trainings = max(args.trainings, 2)   # the summary over trainings runs too
        args.skip.append("screenshots")
        print("smoke run: a few photos and one epoch; the numbers below mean nothing")
    print(f"machine: {_util.machine()}\nbefore: {_util.load()}", flush=True)
    planted = plant(OUT / "planted", *((SMOKE["per_species"], SMOKE["held_out"]) if args.smoke else ()))
    per_seed = {}
    for seed in range(RECIPE["seed"], RECIPE["seed"] + args.trainings):
        name = "cues" if seed == RECIPE["seed"] else f"cues-seed{seed}"
        model = trained(planted.folder / "train.csv", planted.images, OUT / "models" / f"{name}.pth", epochs, seed)
        audit = open_audit(audited(planted.folder / "heldout.csv", planted.images, model, OUT / "audits" / name))
        concepts = open_concepts(audit)
        cues = with_gains(planted.cues.set_index("image").loc[audit.images["image"]].reset_index(), planted, model)
        per_seed[seed] = [measure_cue(audit, concepts, cues, cue) for cue in CUES]
        print(f"\n## Planted cues, training seed {seed}: {len(audit.images)} held-out photos, accuracy "
              f"{audit.images['correct'].mean():.3f}\n")
        print(cue_table(per_seed[seed]))
        if seed == RECIPE["seed"]:
            first, results = audit, per_seed[seed]   # the screenshots'
    if args.trainings > 1:
        print(f"\n## Over {args.trainings} trainings\n")
        print(trainings_table(per_seed))
    if "control" not in args.skip:
        control = open_audit(control_audit(planted, args.control_model, epochs))
        found = open_concepts(control)
        rows = off_animal(found)
        sheet = OUT / "control-sheet.png"
        contact_sheet(control, found, rows, sheet, f"Off-animal concepts of a model trained on clean photos "
                                                   f"({len(control.images)} held-out photos)")
        print(f"\n## Control: {len(control.images)} clean photos, accuracy {control.images['correct'].mean():.3f}; "
              f"{len(rows)} of {len(found.table)} concepts lie off the animal (contact sheet: {sheet})\n")
        print(table(["concept", "share of the class's evidence", "on the animal", "photos"],
                    [[concept_name(r.species, r.rank), f"{r.evidence_share:.1%}", f"{r.on_animal:.0%}", r.n_photos]
                     for r in rows.itertuples()]))
    if "cost" not in args.skip:
        print(f"\n## Cost: {args.cost_images} photos, 26 classes, causal check on every photo\n")
        print(table(["precompute", "CPU ms/photo", "photos/s", "store B/photo", "time", "store"],
                    cost(args.cost_images, repeat)))
    if "screenshots" not in args.skip:
        shots = screenshots(first.path, results)
        print("\nConcepts page:", ", ".join(map(str, shots)) if shots else "no Concepts page in this checkout "
              "(pages/concepts.py) or no Chromium: no screenshots")
    print(f"after: {_util.load()}")


if __name__ == "__main__":
    main()
