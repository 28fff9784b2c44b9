"""How fast the data layer reads the real data, as ratios against plain pandas / Pillow in the same process.

    .venv/bin/python bench/bench_data.py [--images 1000] [--repeat 5] [--smoke]

Needs ../shared/data (the full Happywhale label file and the 128 px photos). ``--smoke``: a few photos, one
run each, to show the bench still runs (its numbers mean nothing).
"""

import argparse
import time

import numpy as np
import pandas as pd
from _util import DATA, OUT, load, machine, require, table
from PIL import Image

from whaleaudit.data.dataset import load_dataset, stratified_split
from whaleaudit.data.images import load_rgb_resized, resolve_image


def best(fn, repeat):
    """Best of ``repeat`` runs: the least disturbed by other work on a shared machine."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def pil_decode(paths, size):
    for p in paths:
        with Image.open(p) as im:
            np.asarray(im.convert("RGB").resize((size, size)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="20 photos, 5 large ones, one run each")
    args = ap.parse_args()
    big_images = 50
    if args.smoke:
        args.images, args.repeat, big_images = 20, 1, 5
    labels, photos_folder = DATA / "happywhale_train.csv", DATA / "happywhale128"
    require(labels, photos_folder / "labels.csv")
    print(f"machine: {machine()}\nbefore: {load()}")
    rows = []

    ours = best(lambda: load_dataset(labels), args.repeat)
    base = best(lambda: pd.read_csv(labels, dtype=str, keep_default_na=False), args.repeat)
    ds = load_dataset(labels)
    rows.append([f"label file, {len(ds.frame):,} rows: load_dataset / bare pd.read_csv", f"{ours * 1000:.0f} ms",
                 f"{base * 1000:.0f} ms", f"x{ours / base:.1f}"])
    split = best(lambda: stratified_split(ds.frame["species"]), args.repeat)
    rows.append([f"stratified_split of {len(ds.frame):,} rows", f"{split * 1000:.0f} ms", "", ""])

    photos = load_dataset(photos_folder)
    rel = photos.frame["path"][: args.images].tolist()
    resolve = best(lambda: [resolve_image(photos.image_root, r) for r in rel], args.repeat)
    paths = [resolve_image(photos.image_root, r) for r in rel]
    rows.append([f"resolve_image, {len(paths)} paths", f"{len(paths) / resolve:,.0f}/s", "", ""])
    ours = best(lambda: [load_rgb_resized(p, 128) for p in paths], args.repeat)
    base = best(lambda: pil_decode(paths, 128), args.repeat)
    rows.append([f"{len(paths)} real 128 px photos: load_rgb_resized / bare Pillow", f"{len(paths) / ours:,.0f}/s",
                 f"{len(paths) / base:,.0f}/s", f"x{ours / base:.2f} the time"])

    tmp = OUT / "big"
    tmp.mkdir(parents=True, exist_ok=True)
    big_paths = []
    for k, p in enumerate(paths[:big_images]):
        with Image.open(p) as im:
            big_paths.append(tmp / f"{k}.jpg")
            im.convert("RGB").resize((1024, 1024)).save(big_paths[-1], quality=90)
    ours = best(lambda: [load_rgb_resized(p, 128) for p in big_paths], args.repeat)
    base = best(lambda: pil_decode(big_paths, 128), args.repeat)
    rows.append([f"{len(big_paths)} 1024 px JPEGs to 128 px: load_rgb_resized / full decode then resize",
                 f"{len(big_paths) / ours:,.0f}/s", f"{len(big_paths) / base:,.0f}/s", f"speed-up x{base / ours:.1f}"])
    print(table(["measurement", "WhaleAudit", "plain", "ratio"], rows))
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
