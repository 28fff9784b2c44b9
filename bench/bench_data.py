"""How fast the data layer reads the real data, as ratios against plain pandas / Pillow in the same process.

    .venv/bin/python bench/bench_data.py [--images 1000] [--repeat 5]

Needs ../shared/data (the full Happywhale label file and the 128 px photos).
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from bench._util import DATA, OUT  # noqa: E402
from whaleaudit.data.dataset import load_dataset, stratified_split  # noqa: E402
from whaleaudit.data.images import load_rgb_resized, resolve_image  # noqa: E402


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
    args = ap.parse_args()

    labels = DATA / "happywhale_train.csv"
    ours = best(lambda: load_dataset(labels), args.repeat)
    base = best(lambda: pd.read_csv(labels, dtype=str, keep_default_na=False), args.repeat)
    ds = load_dataset(labels)
    split = best(lambda: stratified_split(ds.frame["species"]), args.repeat)
    print(f"label file, {len(ds.frame):,} rows: load_dataset {ours * 1000:.0f} ms, bare pd.read_csv "
          f"{base * 1000:.0f} ms (x{ours / base:.1f}); stratified_split {split * 1000:.0f} ms")

    photos = load_dataset(DATA / "happywhale128")
    rel = photos.frame["path"][: args.images].tolist()
    resolve = best(lambda: [resolve_image(photos.image_root, r) for r in rel], args.repeat)
    paths = [resolve_image(photos.image_root, r) for r in rel]
    ours = best(lambda: [load_rgb_resized(p, 128) for p in paths], args.repeat)
    base = best(lambda: pil_decode(paths, 128), args.repeat)
    print(f"{len(paths)} real 128 px photos: load_rgb_resized {len(paths) / ours:,.0f}/s, bare Pillow "
          f"{len(paths) / base:,.0f}/s (ours/bare time x{ours / base:.2f}); "
          f"resolve_image {len(paths) / resolve:,.0f}/s")

    big = [Image.fromarray(np.asarray(Image.open(p).convert("RGB").resize((1024, 1024)))) for p in paths[:50]]
    tmp = OUT / "big"
    tmp.mkdir(parents=True, exist_ok=True)
    big_paths = []
    for k, im in enumerate(big):
        big_paths.append(tmp / f"{k}.jpg")
        im.save(big_paths[-1], quality=90)
    ours = best(lambda: [load_rgb_resized(p, 128) for p in big_paths], args.repeat)
    base = best(lambda: pil_decode(big_paths, 128), args.repeat)
    print(f"{len(big_paths)} 1024 px JPEGs to 128 px: load_rgb_resized {len(big_paths) / ours:,.0f}/s, "
          f"full decode then resize {len(big_paths) / base:,.0f}/s (speed-up x{base / ours:.1f})")


if __name__ == "__main__":
    main()
