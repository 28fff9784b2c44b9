"""How fast the dashboard answers on audits the size of the real Happywhale set and ten times that.

    .venv/bin/python bench/dashboard.py [--sizes 51033 510330] [--quick]
    .venv/bin/python bench/dashboard.py --smoke     # tiny stores, one run each: shows the bench works, in seconds

Builds (once, cached under bench/out/stores/) synthetic audit stores with the real label file's rows and
species balance (../shared/data/happywhale_train.csv: 51,033 rows, 26 species), repeated ten times for the
larger one; 4x4 maps of 26 classes, 64x64 foreground masks, 8x8 evidence maps and cell descriptors with the
evidence concepts computed from them (whaleaudit.audit.concepts.write_concepts), a few unreadable images and
a few hundred flags. Nothing is trained: predictions, scores, evidence and descriptors are drawn at random, the
maps' cell means equal the logits as an exact CAM's do, and each row points at one of the 3,000 real 128 px
photos in ../shared/data/happywhale128.

Each size runs in its own process (so its peak memory is its own). For every page it times, with
Streamlit's AppTest on the app ``whaleaudit dashboard`` serves: a first run on a cold server (caches cleared:
the audit is opened), a first run in a new session on a warm server (the page opened directly, as a link
does: its frame included), and a rerun of the same session; then sidebar filter changes on the Review page,
the evidence-concept filter among them.
Goals: at 51k every page under 1.5 s and a filter change under 0.5 s; at 510k every page under 5 s and the
process under 2 GB; galleries (Species, Top losses) cost the same at both sizes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _util import DATA, OUT, concepts_current, load, machine, mib, quiet_caches, require, table, timed

REAL_SIZE = 51_033
SIZES = [REAL_SIZE, 10 * REAL_SIZE]
SMOKE_SIZES = [300, 3_000]
PAGES = ["overview", "species", "concepts", "top_losses", "heatmap", "review"]
GALLERIES = ["species", "top_losses"]
#: Describes how the synthetic stores are drawn; a cached store with other values is rebuilt.
RECIPE = {"bench": "dashboard", "version": 3, "seed": 0, "mask_size": 64, "cam_shape": [4, 4],
          "evidence_shape": [8, 8], "cell_dims": 4, "unreadable_every": 2000, "no_foreground_every": 50, "flags": 500}
#: The concept the concept filter is timed with (the first concept of a species every store has).
CONCEPT = "killer_whale #1"
CHUNK = 32_768
GOALS = {REAL_SIZE: {"page": 1.5, "filter": 0.5}, 10 * REAL_SIZE: {"page": 5.0, "memory": 2 * 2**30}}


# --- synthetic stores ----------------------------------------------------------------------------------------


def audits_folder(n: int) -> Path:
    """One folder per size holding one audit, so the dashboard's audit picker opens that one."""
    return OUT / "stores" / f"n{n}"


def store_path(n: int) -> Path:
    return audits_folder(n) / f"happywhale-{n}"


def ensure_store(n: int) -> Path:
    """The synthetic audit of ``n`` rows with its concepts, built unless a complete one with the same recipe is
    cached (whose concepts are found again if an older library wrote them)."""
    from whaleaudit.audit.concepts import CONCEPTS_INFO, write_concepts
    from whaleaudit.audit.store import is_complete, open_audit

    store = store_path(n)
    if (is_complete(store) and (store / CONCEPTS_INFO).is_file()
            and json.loads((store / "manifest.json").read_text()).get("synthetic") == dict(RECIPE, n=n)):
        if not concepts_current(store):
            write_concepts(open_audit(store))
        return store
    started = time.perf_counter()
    build_store(n, store)
    print(f"built {store} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return store


def build_store(n: int, store: Path) -> None:
    """Write the store chunk by chunk through StoreWriter, so memory stays flat whatever ``n``; then its concepts."""
    from whaleaudit.audit.concepts import write_concepts
    from whaleaudit.audit.review import REASONS, Review
    from whaleaudit.audit.store import StoreWriter, open_audit
    from whaleaudit.data.dataset import load_dataset

    photos = DATA / "happywhale128" / "images"
    labels = load_dataset(DATA / "happywhale_train.csv", images=photos).frame
    classes = sorted(labels["species"].unique())
    files = np.array(sorted(p.name for p in photos.iterdir()), dtype=object)
    side = RECIPE["mask_size"]
    basis = np.zeros((1 + RECIPE["cell_dims"], 256), np.float32)   # descriptors are drawn, not projected
    writer = StoreWriter(store, n_images=n, classes=classes, cam_shape=tuple(RECIPE["cam_shape"]), mask_size=side,
                         fingerprint=dict(RECIPE, n=n), evidence_shape=tuple(RECIPE["evidence_shape"]),
                         cell_basis=basis)
    for k, start in enumerate(range(0, n, CHUNK)):
        if writer.chunk_done(k):
            continue
        writer.write_chunk(k, start, *synthetic_chunk(labels, classes, files, start, min(start + CHUNK, n), side))
    manifest = {"dataset": {"label_file": str(DATA / "happywhale_train.csv"), "image_root": str(photos),
                            "n_images": n, "n_species": len(classes)},
                "model": {"arch": "resnet18", "head": "cam", "classes": classes, "pretrained": None},
                "cam": {"method": "exact-cam", "layer": "layer4", "shape": RECIPE["cam_shape"]}, "input_size": 128,
                "synthetic": dict(RECIPE, n=n)}
    writer.finish(manifest)
    write_concepts(open_audit(store))
    review = Review(store / "review.sqlite")
    if review.flags().empty:  # a rebuilt store keeps its review; seed one only once
        rng = np.random.default_rng(RECIPE["seed"])
        picked = rng.choice(n, size=min(RECIPE["flags"], n // 10), replace=False)
        ids = pd.read_parquet(store / "images.parquet", columns=["image"])["image"].to_numpy()[picked]
        for reason, group in zip(REASONS, np.array_split(ids, len(REASONS))):
            review.flag(list(group), reason, "bench", "bench")
    review.close()


def synthetic_chunk(labels: pd.DataFrame, classes: list[str], files: np.ndarray, start: int, stop: int, side: int):
    """Rows ``start..stop`` of a synthetic audit, with their probabilities, maps, masks, evidence maps and cell
    descriptors: the label file's rows in order, repeated with new ids. Every column of the store
    (``IMAGE_COLUMNS``) is filled: those not drawn here on purpose are drawn as scores in [0, 1], NaN without a
    foreground, so a column the store gains cannot break the bench."""
    from whaleaudit.columns import IMAGE_COLUMNS

    rng = np.random.default_rng([RECIPE["seed"], start])
    i = np.arange(start, stop)
    base = labels.iloc[i % len(labels)].reset_index(drop=True)
    copy = i // len(labels)
    stem = base["image"].str.rsplit(".", n=1).str[0]
    image = np.where(copy == 0, base["image"], stem + "-" + pd.Series(copy).astype(str) + ".jpg")
    n, c = len(i), len(classes)
    label = pd.Categorical(base["species"], categories=classes).codes.astype(np.int64)
    logits = rng.normal(0, 1, (n, c)) + 3.0 * np.eye(c)[label]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
    ok = (i + 1) % RECIPE["unreadable_every"] != 0
    has_fg = ok & ((i + 7) % RECIPE["no_foreground_every"] != 0)
    pred = np.where(ok, probs.argmax(1), -1)
    p_true = probs[np.arange(n), label]
    nan_if = lambda keep, x: np.where(keep, x, np.nan)  # noqa: E731
    scores = {name: nan_if(has_fg, rng.beta(2, 5, n)) for name in ("bg_share", "bg_score", "bg_share_true",
                                                                   "bg_score_true")}
    rows = pd.DataFrame({
        "idx": i, "image": image, "path": files[i % len(files)], "species_raw": base["species_raw"],
        "species": base["species"], "individual_id": base["individual_id"],
        "split": np.where(i % 5 == 0, "valid", "train"), "status": np.where(ok, "ok", "error"),
        "error": np.where(ok, "", "unreadable: the file ends before the image does (truncated JPEG)"),
        "label_idx": label, "pred_idx": pred,
        "prediction": np.where(ok, np.array(classes, dtype=object)[pred.clip(0)], ""),
        "prob_pred": nan_if(ok, probs.max(1)), "prob_true": nan_if(ok, p_true),
        "loss": nan_if(ok, -np.log(p_true)), "correct": ok & (pred == label),
        "fg_source": np.where(has_fg, "auto", "none"), "fg_area": nan_if(has_fg, rng.uniform(0.02, 0.5, n)),
        **scores,
        "peak_on_animal": nan_if(has_fg, rng.integers(0, 2, n).astype(float)),
        "cam_entropy": nan_if(ok, rng.uniform(0, 1, n)),
    })
    for name in IMAGE_COLUMNS:
        if name not in rows:
            rows[name] = nan_if(has_fg, rng.uniform(0, 1, n))
    rows = rows[IMAGE_COLUMNS]
    h, w = RECIPE["cam_shape"]
    noise = rng.normal(0, 1, (n, c, h, w))
    cams = (logits[:, :, None, None] + noise - noise.mean(axis=(2, 3), keepdims=True)) * ok[:, None, None, None]
    top, left = rng.integers(0, side // 2, (2, n))
    height, width = rng.integers(4, side // 2, (2, n))
    grid = np.arange(side)
    inside_rows = (grid >= top[:, None]) & (grid < (top + height)[:, None])
    inside_cols = (grid >= left[:, None]) & (grid < (left + width)[:, None])
    masks = inside_rows[:, :, None] & inside_cols[:, None, :] & has_fg[:, None, None]
    probs[~ok] = np.nan
    eh, ew = RECIPE["evidence_shape"]
    evidence = rng.normal(0.3, 1, (n, 2, eh, ew)) * ok[:, None, None, None]
    cells = rng.normal(0, 1, (n, eh * ew, RECIPE["cell_dims"]))
    return rows, probs, cams.astype(np.float16), masks, evidence.astype(np.float16), cells.astype(np.float16)


# --- timing one size, in its own process -------------------------------------------------------------------------


def measure(n: int, repeat: int) -> dict:
    """Times of every page and of filter changes on the audit of ``n`` rows; best of ``repeat`` each."""
    os.environ["STREAMLIT_LOGGER_LEVEL"] = "error"  # AppTest outside a server warns about the missing runtime
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from whaleaudit.cli import dashboard_app

    store = ensure_store(n)
    os.environ["WHALEAUDIT_AUDITS"] = str(store.parent)
    app = dashboard_app()
    sys.path.insert(0, str(app.parent))  # as `streamlit run` does: the pages import the frame beside the entrypoint
    app = str(app)
    name = store.name
    rss_before = peak_rss()

    def session(page: str) -> tuple[AppTest, tuple[float, float]]:
        at = AppTest.from_file(app, default_timeout=600)
        if page != PAGES[0]:
            at.switch_page(f"pages/{page}.py")
        return at, run(at)

    def run(at: AppTest) -> tuple[float, float]:
        seconds = timed(at.run)
        if at.exception:
            raise RuntimeError(f"the app failed on {n:,} rows: {[e.value for e in at.exception]}")
        return seconds

    def cold(page: str) -> tuple[float, float]:
        """First run after the server starts: caches empty, the audit is read."""
        gc.collect()  # earlier sessions go first, as on a restarted server
        st.cache_data.clear()
        st.cache_resource.clear()
        return session(page)[1]

    pages = {page: {"cold": [], "warm": [], "rerun": []} for page in PAGES}
    filters = {}
    pages[PAGES[0]]["cold"].append(cold(PAGES[0]))
    for _ in range(repeat):  # one server, as an analyst uses it: every page, then filters on the Review page
        for page in PAGES:
            at, seconds = session(page)
            pages[page]["warm"].append(seconds)
            pages[page]["rerun"].append(run(at))
            del at  # the tab is closed: one open session at a time
            gc.collect()
        at, _ = session("review")
        for label, change in filter_changes(at, name):
            change()
            filters.setdefault(label, []).append(run(at))
        del at
    serving = peak_rss()
    for _ in range(repeat):  # then a restarted server for each other page
        for page in PAGES[1:]:
            pages[page]["cold"].append(cold(page))
    pages = {page: {kind: best(v) for kind, v in times.items()} for page, times in pages.items()}
    filters = {label: best(v) for label, v in filters.items()}
    return {"n": n, "pages": pages, "filters": filters, "rss_before_audit": rss_before, "peak_rss": serving,
            "peak_rss_with_restarts": peak_rss(), "load": load()}


def peak_rss() -> int:
    """This process's peak resident size (VmHWM). Not getrusage's maxrss: that one carries the parent's peak
    over fork and exec, and the parent may just have built a store of a million rows."""
    return int(re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1)) * 1024


def best(times: list[tuple[float, float]]) -> dict:
    """The least disturbed of several runs: lowest wall and lowest CPU time."""
    return {"wall": min(t[0] for t in times), "cpu": min(t[1] for t in times)}


def filter_changes(at, name: str) -> list:
    """Sidebar filter changes on an open session, each undone by the next (widgets looked up after each run)."""
    radio = lambda: at.radio(key=f"correct@{name}")  # noqa: E731
    species = lambda: at.multiselect(key=f"species@{name}")  # noqa: E731
    concept = lambda: at.selectbox(key=f"concept@{name}")  # noqa: E731
    return [("prediction: wrong", lambda: radio().set_value("wrong")),
            ("species: killer_whale", lambda: species().set_value(["killer_whale"])),
            (f"concept: {CONCEPT}, share at least 0.25", lambda: concept().set_value(CONCEPT)),
            ("every filter off", lambda: (radio().set_value("all"), species().set_value([]),
                                          concept().set_value("any")))]


# --- report -------------------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def cell(t: dict) -> str:
    return f"{t['wall']:.2f} / {t['cpu']:.2f}"


KINDS = {"cold": "server start", "warm": "new session", "rerun": "rerun"}


def report(results: list[dict]) -> str:
    """The table (seconds: wall / CPU), the notes on load and memory, and the goals."""
    by_n = {r["n"]: r for r in results}
    two = len(results) == 2
    header = ["page"] + [f"{r['n']:,}: {label}" if k == "cold" else label
                         for r in results for k, label in KINDS.items()]
    header += [f"new session {results[1]['n'] // results[0]['n']}x / 1x (CPU)"] if two else []
    rows = []
    for page in PAGES:
        rows.append([page] + [cell(r["pages"][page][k]) for r in results for k in KINDS]
                    + ([f"{ratio(results, lambda r: r['pages'][page]['warm']):.2f}"] if two else []))
    for label in results[0]["filters"]:
        rows.append([f"review filter: {label}"] + [x for r in results for x in ("", "", cell(r["filters"][label]))]
                    + ([f"{ratio(results, lambda r: r['filters'][label]):.2f}"] if two else []))
    for label, key in (("peak memory: one server, every page", "peak_rss"),
                       ("peak memory: and a restart per page", "peak_rss_with_restarts")):
        rows.append([label] + [x for r in results for x in ("", "", mib(r[key]))] + ([""] if two else []))
    lines = [table(header, rows), ""]
    for r in results:
        lines.append(f"- {r['n']:,} rows: {r['load']} at the end; {mib(r['rss_before_audit'])} resident before "
                     "the audit was opened (Python, Streamlit, pandas).")
    return "\n".join(lines + [""] + goals(by_n))


def ratio(results: list[dict], pick) -> float:
    return pick(results[1])["cpu"] / pick(results[0])["cpu"]


def goals(by_n: dict) -> list[str]:
    """Each goal judged on wall time and on CPU time: on a busy machine the CPU time is what an idle one
    would show as wall time (the pages run on one thread)."""
    out = []
    for n, goal in GOALS.items():
        r = by_n.get(n)
        if r is None:
            continue
        for what, times in (("page, new session or rerun",
                             [t[k] for t in r["pages"].values() for k in ("warm", "rerun")]),
                            ("page, first after the server starts", [t["cold"] for t in r["pages"].values()]),
                            ("filter change", list(r["filters"].values()) if "filter" in goal else [])):
            if times:
                limit = goal["filter" if what == "filter change" else "page"]
                wall, cpu = max(t["wall"] for t in times), max(t["cpu"] for t in times)
                out.append(f"- {n:,}, slowest {what}: {wall:.2f} s wall, {cpu:.2f} s CPU (goal < {limit} s): "
                           f"{verdict(wall < limit)} by wall time, {verdict(cpu < limit)} by CPU time")
        if "memory" in goal:
            out.append(f"- {n:,}, peak memory of one server: {mib(r['peak_rss'])} (goal < {mib(goal['memory'])}): "
                       f"{verdict(r['peak_rss'] < goal['memory'])}")
    if len(by_n) == 2:
        small, big = (by_n[n] for n in sorted(by_n))
        ratios = {p: big["pages"][p]["warm"]["cpu"] / small["pages"][p]["warm"]["cpu"] for p in GALLERIES}
        out.append("- galleries, CPU time of a new session at 10x the rows / at 1x: "
                   + ", ".join(f"{p} {v:.2f}" for p, v in ratios.items())
                   + f" (goal: the same cost, within 1.5x): {verdict(max(ratios.values()) < 1.5)}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=SIZES, help="audit sizes in rows (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per measurement; the best counts (default 2)")
    ap.add_argument("--quick", action="store_true", help="one run per measurement")
    ap.add_argument("--smoke", action="store_true", help=f"stores of {SMOKE_SIZES} rows, one run per measurement: "
                                                          "every page runs; the numbers mean nothing")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size, print JSON
    args = ap.parse_args()
    require(DATA / "happywhale_train.csv", DATA / "happywhale128" / "images")
    quiet_caches(OUT)
    repeat = 1 if args.quick or args.smoke else args.repeat
    if args.smoke:
        args.sizes = SMOKE_SIZES
    if args.one:
        print(json.dumps(measure(args.one, repeat)))
        return
    print(f"machine: {machine()}\nbefore: {load()}", flush=True)
    results = []
    for n in args.sizes:
        ensure_store(n)  # built outside the measuring process, so its memory does not count
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--repeat", str(repeat)],
                             capture_output=True, text=True, check=False)
        if out.returncode:
            sys.exit(f"measuring {n:,} rows failed:\n{out.stderr[-4000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(report(results))


if __name__ == "__main__":
    main()
