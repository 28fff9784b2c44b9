"""The full demo's bars, measured: the whole build in at most 3 minutes on a 2-core machine, the demo model at
90% validation accuracy or better, and a species with a planted shortcut on top of mean background attention.

Builds the demo from nothing into bench/out/demo (the data, the model and the audit; a previous run there is
removed first) in this process, timing each step as the progress callback reports it, then reads the audit
back and prints per-species numbers from the store and the truth table.

    .venv/bin/python bench/demo.py [--keep]     # --keep: reuse what bench/out/demo holds (times the rest)
    .venv/bin/python bench/demo.py --smoke      # the tiny recipe the tests use: shows the bench runs, in seconds
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from _util import OUT, load, machine, quiet_caches, table


def main(keep: bool, smoke: bool) -> None:
    root = OUT / "demo"
    quiet_caches(OUT)
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    print(machine())
    print(f"before: {load()}")
    started = time.perf_counter()
    marks: list[tuple[str, float]] = []

    def progress(fraction: float, text: str, images_per_second: float | None = None) -> None:
        if not marks or marks[-1][0] != text:
            marks.append((text, time.perf_counter() - started))

    from whaleaudit.demo.build import FULL, TINY, build_demo  # timed: importing torch is part of the cost

    recipe = TINY if smoke else FULL
    out = build_demo(root=root, recipe=recipe, progress=progress)
    total = time.perf_counter() - started
    print(f"after:  {load()}")
    print(f"recipe: {recipe}")

    ends = [t for _, t in marks[1:]] + [total]
    print(table(["step", "seconds"], [[text, f"{end - begin:.1f}"] for (text, begin), end in zip(marks, ends)]
                + [["import (before the first step)", f"{marks[0][1]:.1f}"], ["total", f"{total:.1f}"]]))
    if smoke:
        print("smoke run: the tiny recipe's bars below say nothing about the demo")
    _bars(root, out, total)


def _bars(root: Path, out: Path, total: float) -> None:
    import numpy as np
    import pandas as pd

    from whaleaudit.audit.store import open_audit
    from whaleaudit.demo.synth import SHORTCUTS

    audit = open_audit(out)
    sidecar = json.loads((root / "models" / "demo.json").read_text())
    truth = pd.read_csv(root / "demo_data" / "truth.csv")
    frame = audit.images.merge(truth[["image", "background", "logo", "has_shortcut", "animal_area"]], on="image")
    valid = frame[frame["split"] == "valid"]
    per_species = frame.groupby("species").agg(
        images=("image", "size"), cue=("has_shortcut", "mean"), bg_score=("bg_score", "mean"),
        bg_share=("bg_share", "mean"), peak_on_animal=("peak_on_animal", "mean"),
        prob_without_animal=("prob_without_animal", "mean"), prob_flat_photo=("prob_flat_photo", "mean"),
    ).sort_values("bg_score", ascending=False)
    valid_acc = valid.groupby("species")["correct"].mean()
    print(table(["species", "planted cue", "share with cue", "valid acc", "mean bg_score", "mean bg_share",
                 "peak on animal", "p(pred) without animal", "p(pred) flat photo"],
                [[s, SHORTCUTS.get(s, "-"), f"{r.cue:.2f}", f"{valid_acc.get(s, np.nan):.3f}", f"{r.bg_score:.3f}",
                  f"{r.bg_share:.3f}", f"{r.peak_on_animal:.2f}", f"{r.prob_without_animal:.2f}",
                  f"{r.prob_flat_photo:.2f}"]
                 for s, r in per_species.iterrows()]))
    by_cue = valid.groupby(["species", "has_shortcut"])["correct"].agg(accuracy="mean", images="size").reset_index()
    print("validation accuracy with and without the planted cue (shortcut species):")
    print(table(["species", "cue in photo", "accuracy", "images"],
                [[r.species, bool(r.has_shortcut), f"{r.accuracy:.3f}", r.images]
                 for r in by_cue.itertuples() if r.species in SHORTCUTS]))
    accuracy = sidecar["training"]["valid_accuracy"]
    print(f"BAR time:     {total:.1f} s  (<= 180 s: {'PASS' if total <= 180 else 'FAIL'})")
    print(f"BAR accuracy: {accuracy:.3f} valid (>= 0.90: {'PASS' if accuracy >= 0.9 else 'FAIL'}); "
          f"trained {sidecar['training']['train_seconds']:.0f} s on {sidecar['training']['n_train']} images")
    top = per_species.index[0]
    print(f"BAR shortcut: top of mean bg_score is {top} (planted: "
          f"{', '.join(f'{s}: {cue}' for s, cue in SHORTCUTS.items())}; {'PASS' if top in SHORTCUTS else 'FAIL'})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="reuse what bench/out/demo holds (times the rest)")
    parser.add_argument("--smoke", action="store_true", help="the tests' tiny recipe: its bars mean nothing")
    args = parser.parse_args()
    main(args.keep, args.smoke)
