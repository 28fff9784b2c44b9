"""What a training epoch costs on full-size photos against the same photos at 128 px, side by side in one run.

    .venv/bin/python bench/train.py [--images 256] [--epochs 3] [--repeat 2] [--full-size 2400x1600] [--smoke]

The first ``--images`` real photos of ../shared/data/happywhale128, and the same photos made into full-size
JPEGs with grain (``bench/precompute.py``'s, about 1.4 MB each at 2400 x 1600), each trained on with
``whaleaudit.model.train.train`` (random weights, batch 64, 128 px, no head-only warm-up) for ``--epochs``
epochs:

- 128 px photos: what training costs when decoding is cheap;
- full-size photos with the cache switched off (patched, as training did before it): every epoch decodes
  every photo;
- full-size photos, the resized-photo cache (``whaleaudit.data.resized``) empty at the start: the first epoch
  decodes every photo once and fills it, the later ones read it.

Each row gives the first epoch and the mean of the later ones, in wall seconds and CPU milliseconds per photo
(this process and its loader processes, which end with each epoch), and the later epochs' CPU time against
the 128 px row's. The three rows run ``--repeat`` times, alternating, and each row's run with the least CPU
time counts: the main process's torch threads spin while they wait for slow loaders, so other work on the
machine inflates CPU time too. An epoch is read off the progress callback, from one epoch's last training batch to the
next's: the first includes the set-up, the later ones the previous epoch's validation pass, alike in every row. Goal (issue 18): a training epoch on full-size photos at most 1.3x one at 128 px.

``--smoke``: a few photos, two epochs, small "full-size" photos: shows the bench runs (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
import warnings

from _util import DATA, OUT, cpu_features, load, machine, quiet_caches, require, table

quiet_caches(OUT)

from precompute import full_size_photos, photos, pixels  # noqa: E402

from whaleaudit.data import resized  # noqa: E402
from whaleaudit.data.images import load_rgb_resized  # noqa: E402
from whaleaudit.model.train import train  # noqa: E402

SIZE = 128
WORK = OUT / "train"
GOAL = 1.3
SMALL = "128 px photos"
CACHED = "full-size photos, resized-photo cache (empty at the start)"
UNCACHED = "full-size photos, no cache (every epoch decodes)"


def epochs_timed(ds, epochs: int, bs: int) -> list[tuple[float, float]]:
    """Train on ``ds``; (wall s, CPU s) of each epoch, read off the progress callback at each epoch's end."""
    marks = [(time.perf_counter(), sum(os.times()[:4]))]

    def progress(done: float) -> None:
        if done >= len(marks) / epochs - 1e-9:
            marks.append((time.perf_counter(), sum(os.times()[:4])))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(ds, out=WORK / "model.pkl", epochs=epochs, bs=bs, size=SIZE, pretrained=False, freeze_epochs=0,
              progress=progress)
    marks.append((time.perf_counter(), sum(os.times()[:4])))  # the last epoch's loaders have ended by now
    ends = marks[1:epochs] + [marks[-1]]
    return [(end[0] - start[0], end[1] - start[1]) for start, end in zip(marks, ends)]


def run(label: str, ds, args, *, cache: bool) -> dict:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    os.environ["WHALEAUDIT_HOME"] = str(WORK)  # the cache lands in WORK/.cache, empty at the start
    original = resized.ResizedPhotos.__call__
    if not cache:
        resized.ResizedPhotos.__call__ = lambda self, path: load_rgb_resized(path, self.size)
    try:
        epochs = epochs_timed(ds, args.epochs, args.bs)
    finally:
        resized.ResizedPhotos.__call__ = original
    n = len(ds.frame)
    later = epochs[1:]
    return {"label": label, "n": n, "first": epochs[0],
            "later": (sum(e[0] for e in later) / len(later), sum(e[1] for e in later) / len(later))}


def report(rows: list[dict]) -> str:
    base = rows[0]["later"][1] / rows[0]["n"]
    out = []
    for r in rows:
        first_ms, later_ms = (1000 * r[k][1] / r["n"] for k in ("first", "later"))
        out.append([r["label"], str(r["n"]), f"{r['first'][0]:.1f}", f"{first_ms:.1f}", f"{r['later'][0]:.1f}",
                    f"{later_ms:.1f}", f"{later_ms / 1000 / base:.2f}x"])
    return table(["photos", "images", "epoch 1 s", "epoch 1 CPU ms/img", "later epochs s",
                  "later CPU ms/img", "later x 128 px (CPU)"], out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--full-size", type=pixels, default=(2400, 1600))
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.images, args.epochs, args.bs, args.repeat, args.full_size = 16, 2, 8, 1, (480, 320)
    require(DATA / "happywhale128" / "labels.csv")
    ds = photos(args.images)
    full = full_size_photos(ds, args.full_size)
    megabytes = sum(os.path.getsize(full.image_root / p) for p in dict.fromkeys(full.frame["path"])) / len(full.frame) / 1e6
    print(machine())
    print(f"CPU features: {', '.join(cpu_features()) or 'none of AVX2, AVX-512, AMX'}; before: {load()}")
    print(f"full-size photos: {args.full_size[0]}x{args.full_size[1]} JPEGs with grain, {megabytes:.1f} MB each")
    runs = [[run(SMALL, ds, args, cache=True), run(UNCACHED, full, args, cache=False),
             run(CACHED, full, args, cache=True)]  # the cached run last: its cache stays in bench/out/train
            for _ in range(args.repeat)]
    rows = [min(same, key=lambda r: r["first"][1] + r["later"][1]) for same in zip(*runs)]
    print(f"after: {load()}")
    print(report(rows))
    ratio = rows[2]["later"][1] / rows[2]["n"] / (rows[0]["later"][1] / rows[0]["n"])
    print(f"goal: a full-size epoch at most {GOAL}x one at 128 px (CPU): {ratio:.2f}x, "
          f"{'met' if ratio <= GOAL else 'missed'}" + (" (smoke run: means nothing)" if args.smoke else ""))


if __name__ == "__main__":
    main()
