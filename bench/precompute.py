"""How fast an audit is built, side by side with plain batched inference in one process.

    .venv/bin/python bench/precompute.py [--images 512] [--repeat 2] [--heads cam fastai] [--quick] [--smoke]
    .venv/bin/python bench/precompute.py --images 2000 --heads cam --skip causal layer3 --full-images 0
                                                        # issue 18's goals at 2,000 photos, and the stages

The real 128 px photos of ../shared/data/happywhale128, repeated to ``--images``, through one resnet18 with
the 26 classes of the full Happywhale label file (random weights: speed does not depend on them), batch 64:

- baseline: plain fp32 ``model(x)`` over batches already decoded into tensors, what anyone writes first;
- WhaleAudit's precompute end to end (``whaleaudit.audit.precompute.precompute``): decode, predict, every class's
  map, foreground estimate, scores, write the store; once without the causal check (the goal's scope), once
  with the default causal check (``causal="auto"``: the top tenth by background attention, the top tenth by
  loss and a random tenth; goal: at most twice the CPU time of the run without it), once with it on every
  image (three more forward passes per image), and once with the finer layer3 maps (``--cam-layer layer3``:
  Grad-CAM through layer4 for each of the 26 classes);
- the original notebook's way: one image at a time through ``dls.test_dl([img])`` and a forward hook;
- pytorch-grad-cam's GradCAM (PyPI ``grad-cam``) over the same decoded batches: the predicted class's map
  only (all 26 classes would take 26 calls).

Each method reports images per second (wall clock) and CPU milliseconds per image (this process and its
loader processes), each with its ratio to the baseline: on a machine busy with other work the CPU time
still tells what the work costs. The baseline and the precompute run ``--repeat`` times, alternating; the
best run counts. Memory: this process's peak resident size while the method ran, how much it grew
meanwhile, and for the precompute the peak proportional set size of this process and its loader processes
together. The precompute also runs on ``--images`` / 4: a store written as it goes grows no more on the
larger run.
Goals (issue 18: measured at 2,000 photos or more, where fixed costs weigh as in a real run): precompute
>= 0.7x the baseline and >= 2x pytorch-grad-cam; >= 4x the notebook's way (an earlier goal). Beside each table:
the CPU's vector and matrix extensions (AVX2, AVX-512, AMX), and the precompute's CPU time per photo stage by
stage (decode, foreground, network, maps, scores, the spread; the rest is the store and the set-up), each
stage timed alone on up to ``--stage-images`` photos, so the overhead over plain inference is visible.

Full-size photos: users' photos are camera JPEGs of several megapixels, not 128 px. The first
``--full-images`` real photos are made into ``--full-size`` JPEGs (upscaled, with grain so that they compress
like photos with detail, not like smooth upscales: about 1.4 MB each at 2400x1600), generated once into
bench/out/fullsize, and the precompute (no causal check) runs on them and on the same photos at 128 px,
alternating. Goal: at most 1.3x the CPU time per photo at 128 px.

``--smoke``: a few photos through every method once, to show the bench still runs (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

from _util import DATA, OUT, PeakMemory, cpu_features, load, machine, mib, quiet_caches, require, table, timed

quiet_caches(OUT)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from whaleaudit.audit.precompute import model_input, precompute  # noqa: E402
from whaleaudit.data.dataset import Dataset, load_dataset  # noqa: E402
from whaleaudit.data.images import load_rgb, resolve_image  # noqa: E402
from whaleaudit.files import file_sha256, write_json  # noqa: E402
from whaleaudit.model.load import IMAGENET_STATS, build_model, load_model  # noqa: E402

SIZE = 128
WORK = OUT / "precompute"
GOALS = {"baseline": 0.7, "notebook": 4.0, "grad-cam": 2.0}
FULL_SIZE_GOAL = 1.3   # CPU time per full-size photo, at most this times that of the same photo at 128 px
GRAIN = 12             # standard deviation of the grain added to the upscaled photos, in 8-bit levels
BASELINE = "baseline: plain fp32 model(x) on decoded batches"
PRECOMPUTE = "WhaleAudit precompute, no causal check"
CAUSAL = "WhaleAudit precompute + causal check on every image"
AUTO_CAUSAL = "WhaleAudit precompute + default causal check (auto)"
AUTO_CAUSAL_GOAL = 2.0   # the default causal check: at most this times the CPU time of the run without it
LAYER3 = "WhaleAudit precompute, layer3 maps (8x8), no causal check"
NOTEBOOK = "original notebook: test_dl([img]) + hook, one at a time"
GRAD_CAM = "pytorch-grad-cam GradCAM, predicted class only"
STAGES = "stages"
EVIDENCE = "evidence (layer3 Grad-CAM of the predicted and labelled class)"
CONCEPTS = "concepts (found once per audit from the complete store)"


def photos(n: int) -> Dataset:
    """The real photos repeated to ``n`` rows, each row with its own image id."""
    real = load_dataset(DATA / "happywhale128")
    reps = -(-n // len(real.frame))
    frame = pd.concat([real.frame.assign(image=real.frame["image"] + f"#{k}") for k in range(reps)],
                      ignore_index=True).iloc[:n]
    return Dataset(frame.reset_index(drop=True), real.image_root, None)


def classes() -> list[str]:
    labels = load_dataset(DATA / "happywhale_train.csv", images=DATA / "happywhale128" / "images").frame
    return sorted(labels["species"].unique())


def model_file(head: str, names: list[str]) -> Path:
    """A resnet18 with random weights saved as WhaleAudit loads one: weights plus sidecar."""
    pth = WORK / f"resnet18-{head}.pth"
    torch.manual_seed(0)
    torch.save(build_model(head, len(names)).state_dict(), pth)
    write_json(pth.with_suffix(".json"), {
        "format": "whaleaudit-model/1", "arch": "resnet18", "head": head, "classes": names, "size": SIZE,
        "normalize": {"mean": IMAGENET_STATS[0], "std": IMAGENET_STATS[1]}, "pretrained": False,
        "files": {"pth": {"file": pth.name, "sha256": file_sha256(pth)}}})
    return pth


def full_size_photos(ds: Dataset, size: tuple[int, int]) -> Dataset:
    """``ds``'s photos as ``size`` JPEGs (quality 90) with grain: upscaled, then noise of :data:`GRAIN` levels, so
    that they carry detail everywhere as camera photos do (a smooth upscale compresses to a fifth and decodes
    faster). Made once into bench/out/fullsize, each written to a temporary name and renamed into place."""
    folder = OUT / "fullsize" / f"{size[0]}x{size[1]}-grain{GRAIN}"
    rng = np.random.default_rng(0)
    for rel in dict.fromkeys(ds.frame["path"]):
        target = folder / rel
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(resolve_image(ds.image_root, rel)) as im:
            big = np.asarray(im.convert("RGB").resize(size, Image.Resampling.BICUBIC), np.float32)
        big += rng.standard_normal(big.shape, dtype=np.float32) * GRAIN
        Image.fromarray(np.clip(big + 0.5, 0, 255).astype(np.uint8)).save(target.with_suffix(".tmp"), "JPEG",
                                                                            quality=90)
        os.replace(target.with_suffix(".tmp"), target)
    return Dataset(ds.frame, folder, None)


def decoded_batches(ds: Dataset, bs: int) -> list[torch.Tensor]:
    mean, std = (torch.tensor(s)[:, None, None] for s in IMAGENET_STATS)
    xs = [model_input(load_rgb(resolve_image(ds.image_root, p)), SIZE, mean, std) for p in ds.frame["path"]]
    return [torch.stack(xs[i:i + bs]) for i in range(0, len(xs), bs)]


# --- the methods ---------------------------------------------------------------------------------------------


def baseline(model, batches) -> None:
    with torch.inference_mode():
        for x in batches:
            model(x)


def whaleaudit_precompute(ds: Dataset, pth: Path, bs: int, causal: float | str, workers: int | None,
                          cam_layer: str = "layer4") -> dict:
    out = WORK / "audit"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.with_name(out.name + ".partial"), ignore_errors=True)
    store = precompute(ds, pth, out, bs=bs, causal=causal, workers=workers, cam_layer=cam_layer, progress=False)
    return json.loads((store / "manifest.json").read_text())


def notebook_learner(ds: Dataset, model, bs: int):
    """The notebook's set-up: a fastai Learner whose DataLoaders preprocess one image at a time."""
    from fastai.vision.all import ImageDataLoaders, Normalize, Resize, imagenet_stats, resnet18, vision_learner

    dls = ImageDataLoaders.from_df(ds.frame, path=ds.image_root, fn_col="path", label_col="species",
                                   item_tfms=Resize(SIZE, method="squish"), bs=bs, num_workers=0,
                                   batch_tfms=Normalize.from_stats(*imagenet_stats))
    learn = vision_learner(dls, resnet18, pretrained=False, normalize=False)
    learn.model = model  # the same network as every other method
    return learn


def notebook(learn, paths) -> None:
    """fastbook's CAM recipe, image by image."""
    from fastai.vision.all import first

    class Hook:
        def hook_func(self, m, i, o):
            self.stored = o.detach().clone()

    hook_output = Hook()
    hook = learn.model[0].register_forward_hook(hook_output.hook_func)
    for img in paths:
        x, = first(learn.dls.test_dl([img]))
        with torch.no_grad():
            learn.model.eval()(x)
        act = hook_output.stored[0]
        torch.einsum("ck,kij->cij", learn.model[1][-1].weight, act)
    hook.remove()


def grad_cam(model, batches) -> None:
    from pytorch_grad_cam import GradCAM

    with GradCAM(model=model, target_layers=[model[0][-1]]) as cam:
        for x in batches:
            cam(input_tensor=x, targets=None)  # None: the predicted class


# --- measuring -----------------------------------------------------------------------------------------------


def measure(label: str, n: int, fn) -> dict:
    """One run of ``fn`` over ``n`` images: rate, CPU ms per image (of which in child processes: the
    precompute's loaders), memory."""
    children = os.times()
    with PeakMemory() as mem:
        wall, cpu = timed(fn)
    children = sum(os.times()[2:4]) - sum(children[2:4])
    print(f"  {label}: {n} images in {wall:.1f} s, {cpu:.1f} CPU s, {children:.1f} of them in child processes "
          f"({load()})", file=sys.stderr, flush=True)
    return {"method": label, "images": n, "rate": n / wall, "cpu_ms": 1000 * cpu / n,
            "children_ms": 1000 * children / n, "start": mem.start, "peak": mem.peak, "peak_all": mem.peak_all}


def stage_costs(ds: Dataset, pth: Path, bs: int, n_audit: int) -> dict[str, float]:
    """CPU ms per photo of each stage of the precompute, each run alone in this process over the photos of ``ds``
    with the functions the precompute calls: decode (reduced-scale JPEG decode and squash, in the loader
    processes during an audit), foreground (the automatic estimate), network (normalise and forward, the model
    folded as the precompute runs it), maps (``predict_with_maps`` less the forward it includes), evidence
    (``predict_with_evidence`` less ``predict_with_maps``: the evidence concepts' layer3 maps), scores
    (predicted and labelled class), the maps' spread (once per audit, spread over ``n_audit`` photos) and the
    evidence concepts, found once per audit from the last store the bench wrote (``n_audit`` photos)."""
    from whaleaudit.audit.concepts import compute_concepts
    from whaleaudit.audit.precompute import SPREAD_PHOTOS, normalisation, normalised
    from whaleaudit.audit.store import open_audit
    from whaleaudit.data.images import load_rgb_reduced, squish
    from whaleaudit.explain.cam import for_inference, predict_with_evidence, predict_with_maps, spread
    from whaleaudit.explain.foreground import MASK_SIZE, ForegroundProvider
    from whaleaudit.explain.score import attention_scores

    model, info = load_model(pth)
    size, n = int(info["size"]), len(ds.frame)
    paths = [resolve_image(ds.image_root, p) for p in ds.frame["path"]]
    cost = {}

    def per_photo(name: str, fn, photos: int = n):
        """Times ``fn()`` (timed again: the best run counts); returns what it returned."""
        results = []
        cost[name] = min(cost.get(name, np.inf), 1000 * timed(lambda: results.append(fn()))[1] / photos)
        return results[0]

    decoded = per_photo("decode", lambda: [(rgb, full, squish(rgb, size))
                                           for rgb, full in (load_rgb_reduced(p, size) for p in paths)])
    provider = ForegroundProvider(ds.image_root)
    with threadpool_limits(1, user_api="blas"):   # as the loader processes run it
        found = per_photo("foreground", lambda: [provider(i, rgb, full)[0]
                                                 for i, (rgb, full, _) in zip(ds.frame["image"], decoded)])
    mean, std = normalisation(info["normalize"], torch.device("cpu"))
    net = for_inference(model.eval(), torch.device("cpu"))
    pixels = [torch.from_numpy(np.stack([d[2] for d in decoded[i:i + bs]])) for i in range(0, n, bs)]
    with torch.inference_mode():
        net(normalised(pixels[0], mean, std))  # first-call set-up of the kernels
        for _ in range(2):   # alternating, the best of two each: the maps' own cost is the small difference
            per_photo("network", lambda: [net(normalised(x, mean, std)) for x in pixels])
            out = per_photo("maps", lambda: [predict_with_maps(net, normalised(x, mean, std)) for x in pixels])
    known = {c: k for k, c in enumerate(info["classes"])}
    labels = torch.tensor([known.get(c, -1) for c in ds.frame["species"]])
    per_photo(EVIDENCE, lambda: [predict_with_evidence(net, normalised(x, mean, std), labels[i * bs:(i + 1) * bs])
                                 for i, x in enumerate(pixels)])
    cost[EVIDENCE] -= cost["maps"]
    cost["maps"] -= cost["network"]
    maps = torch.cat([m for _, m in out]).numpy()
    pred = torch.cat([lo for lo, _ in out]).argmax(1).numpy()
    masks = np.stack([m if m is not None else np.zeros((MASK_SIZE, MASK_SIZE), bool) for m in found])
    has = np.array([m is not None for m in found])
    rows = np.arange(n)[:, None]
    per_photo("scores", lambda: attention_scores(maps[rows, np.stack([pred, pred], 1)], masks, has, 1.0))
    sample = normalised(pixels[0][:SPREAD_PHOTOS], mean, std)
    per_photo("spread (once per audit)", lambda: spread(net, sample), n_audit)
    per_photo(CONCEPTS, lambda: compute_concepts(open_audit(WORK / "audit")), n_audit)
    return cost


def run_head(head: str, ds: Dataset, names: list[str], args) -> list[dict]:
    """Every method once, the baseline and the precompute ``args.repeat`` times, alternating, so that other
    work on the machine weighs on both alike; the best run of each counts. Then the precompute's stages, alone,
    on up to ``args.stage_images`` of the photos."""
    pth = model_file(head, names)
    model, _ = load_model(pth)
    n = len(ds.frame)
    batches = decoded_batches(ds, args.bs)
    baseline(model, batches[:1])  # first-call set-up of the kernels

    def plain() -> dict:
        return measure(BASELINE, n, lambda: baseline(model, batches))

    def ours(part: Dataset, causal: float | str = 0.0, cam_layer: str = "layer4") -> dict:
        label = (AUTO_CAUSAL if causal == "auto" else CAUSAL if causal else LAYER3 if cam_layer == "layer3"
                 else PRECOMPUTE)
        return measure(label, len(part.frame),
                       lambda: whaleaudit_precompute(part, pth, args.bs, causal, args.workers, cam_layer))

    rows = [ours(photos(max(args.bs, n // 4)))]  # a smaller run: memory must not grow with the images
    for _ in range(args.repeat):
        rows += [plain(), ours(ds)]
    if "auto" not in args.skip:
        rows.append(ours(ds, causal="auto"))
    if "causal" not in args.skip:
        rows.append(ours(ds, causal=1.0))
    if "layer3" not in args.skip:
        rows.append(ours(ds, cam_layer="layer3"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn = notebook_learner(ds, model, args.bs)
        some = [resolve_image(ds.image_root, p) for p in ds.frame["path"][: args.notebook_images]]
        notebook(learn, some[:2])
        rows.append(measure(NOTEBOOK, len(some), lambda: notebook(learn, some)))
        rows.append(measure(GRAD_CAM, n, lambda: grad_cam(model, batches)))
    rows.append(plain())
    part = Dataset(ds.frame.iloc[: args.stage_images].reset_index(drop=True), ds.image_root, None)
    rows.append({"method": STAGES, "stages": stage_costs(part, pth, args.bs, n)})
    for r in rows:
        r["head"] = head
    return rows


def best(runs: list[dict]) -> dict:
    """The least disturbed of several runs of one method: highest rate, lowest CPU time, highest memory."""
    fastest = min(runs, key=lambda r: r["cpu_ms"])
    return dict(runs[0], runs=len(runs), rate=max(r["rate"] for r in runs), cpu_ms=fastest["cpu_ms"],
                children_ms=fastest["children_ms"],
                peak=max(r["peak"] for r in runs), growth=max(r["peak"] - r["start"] for r in runs),
                peak_all=max(r["peak_all"] for r in runs))


def run_full_size(ds: Dataset, names: list[str], args) -> list[dict]:
    """The precompute (no causal check) on the photos of ``ds`` at 128 px and as full-size JPEGs, alternating
    ``args.repeat`` times; the first head's model."""
    full = full_size_photos(ds, args.full_size)
    megabytes = np.mean([(full.image_root / p).stat().st_size for p in full.frame["path"]]) / 1e6
    pth = model_file(args.heads[0], names)
    label_full = f"{args.full_size[0]}x{args.full_size[1]} JPEGs with grain, {megabytes:.1f} MB each"
    rows = []
    for _ in range(args.repeat):
        for label, part in ((f"the same photos at {SIZE} px", ds), (label_full, full)):
            rows.append(measure(label, len(part.frame),
                                lambda part=part: whaleaudit_precompute(part, pth, args.bs, 0.0, args.workers)))
    return rows


def full_size_report(rows: list[dict], bs: int) -> str:
    """The full-size photos against the same photos at 128 px: CPU time per photo and its ratio, the goal."""
    runs = {}
    for r in rows:
        runs.setdefault(r["method"], []).append(r)
    small, full = (best(v) for v in runs.values())
    body = [[r["method"], f"{r['images']:,}", r["runs"], f"{r['rate']:.1f}", f"{r['cpu_ms']:.1f}",
             f"{r['cpu_ms'] / small['cpu_ms']:.2f}x", mib(r["peak_all"]) if r["peak_all"] else ""] for r in (small, full)]
    ratio = full["cpu_ms"] / small["cpu_ms"]
    return "\n".join([f"### Full-size photos: WhaleAudit precompute, no causal check, batch {bs}, input {SIZE} px", "",
                      table(["photos", "images", "runs", "img/s", "CPU ms/img", f"x {SIZE} px (CPU)",
                             "with loaders (PSS)"], body), "",
                      f"- full-size photos: {ratio:.2f}x the CPU time per photo at {SIZE} px "
                      f"(goal <= {FULL_SIZE_GOAL}x: {verdict(ratio <= FULL_SIZE_GOAL)})", ""])


def report(rows: list[dict], bs: int) -> str:
    """Per head: the table, then the goals judged on wall-clock rate and on CPU time per image, then the
    precompute's CPU time per photo stage by stage."""
    lines = []
    for head in dict.fromkeys(r["head"] for r in rows):
        runs, stages = {}, None
        for r in rows:
            if r["head"] == head and r["method"] == STAGES:
                stages = r["stages"]
            elif r["head"] == head:
                runs.setdefault((r["method"], r["images"]), []).append(r)
        table_rows = [best(v) for v in runs.values()]
        base = next(r for r in table_rows if r["method"] == BASELINE)
        body = [[r["method"], f"{r['images']:,}", r["runs"], f"{r['rate']:.1f}", f"{r['rate'] / base['rate']:.2f}x",
                 f"{r['cpu_ms']:.1f}", f"{base['cpu_ms'] / r['cpu_ms']:.2f}x", mib(r["peak"]), mib(r["growth"]),
                 mib(r["peak_all"]) if r["peak_all"] else ""] for r in table_rows]
        lines += [f"### resnet18, {'exact-CAM head' if head == 'cam' else 'fastai default head (Grad-CAM)'}, "
                  f"batch {bs}, {SIZE} px, {torch.get_num_threads()} torch threads", "",
                  f"CPU features: {' '.join(cpu_features()) or 'none of AVX2, AVX-512, AMX'}", "",
                  table(["method", "images", "runs", "img/s", "x baseline", "CPU ms/img", "x baseline (CPU)",
                         "peak RSS", "growth", "with loaders (PSS)"], body), ""]
        small, big = sorted((r for r in table_rows if r["method"] == PRECOMPUTE), key=lambda r: r["images"])
        others = {"baseline": base, "notebook": next(r for r in table_rows if r["method"] == NOTEBOOK),
                  "grad-cam": next(r for r in table_rows if r["method"] == GRAD_CAM)}
        checks = [f"{name}: {big['rate'] / o['rate']:.2f}x by wall time, {o['cpu_ms'] / big['cpu_ms']:.2f}x by CPU time "
                  f"(goal >= {GOALS[name]}x: {verdict(big['rate'] / o['rate'] >= GOALS[name])} / "
                  f"{verdict(o['cpu_ms'] / big['cpu_ms'] >= GOALS[name])})" for name, o in others.items()]
        flat = big["growth"] < 1.25 * small["growth"] + 2**25
        checks.append(f"memory growth while it ran: {mib(small['growth'])} at {small['images']:,} images, "
                      f"{mib(big['growth'])} at {big['images']:,} ({'flat' if flat else 'GROWS'})")
        lines += ["Precompute (no causal check) against"] + [f"- {c}" for c in checks] + [""]
        auto = next((r for r in table_rows if r["method"] == AUTO_CAUSAL), None)
        if auto:
            ratio = auto["cpu_ms"] / big["cpu_ms"]
            lines += [f"Default causal check: {ratio:.2f}x the CPU time per photo of the run without it "
                      f"(goal <= {AUTO_CAUSAL_GOAL}x: {verdict(ratio <= AUTO_CAUSAL_GOAL)})", ""]
        lines += [stage_table(stages, big, base), ""]
    return "\n".join(lines)


def stage_table(stages: dict[str, float], total: dict, base: dict) -> str:
    """The stages' CPU ms per photo beside the precompute's total; what the stages leave of it is writing the
    store, the set-up (loading and folding the model, starting the loader processes) and the hand-off of
    photos between processes."""
    rest = total["cpu_ms"] - sum(stages.values())
    body = [[name, f"{ms:.2f}" if ms >= 0 else f"{ms:.2f} (within the noise)", f"{ms / total['cpu_ms']:.0%}"]
            for name, ms in stages.items()]
    body += [["store, set-up, loader hand-off (the total less the above)", f"{rest:.2f}",
              f"{rest / total['cpu_ms']:.0%}"],
             ["(the loader processes' share of the total: decode, foreground, hand-off)",
              f"{total['children_ms']:.2f}", f"{total['children_ms'] / total['cpu_ms']:.0%}"],
             [f"precompute, no causal check ({total['images']:,} images)", f"{total['cpu_ms']:.2f}", "100%"],
             ["baseline: plain fp32 model(x), for reference", f"{base['cpu_ms']:.2f}",
              f"{base['cpu_ms'] / total['cpu_ms']:.0%}"]]
    return table(["precompute stage", "CPU ms/photo", "share"], body)


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512, help="images per method (default %(default)s)")
    ap.add_argument("--notebook-images", type=int, default=128,
                    help="images for the slow one-at-a-time loop (default %(default)s)")
    ap.add_argument("--heads", nargs="+", default=["cam", "fastai"], choices=["cam", "fastai"])
    ap.add_argument("--workers", type=int, help="precompute loader processes (default: the precompute's own)")
    ap.add_argument("--threads", type=int, help="torch threads for every method (default: torch's, one per core)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of the baseline and the precompute (default 2)")
    ap.add_argument("--bs", type=int, default=64, help="batch size of every method (default %(default)s)")
    ap.add_argument("--full-size", type=pixels, default=(2400, 1600), metavar="WxH",
                    help="the full-size photos' size (default 2400x1600)")
    ap.add_argument("--skip", nargs="+", default=[], choices=["auto", "causal", "layer3"],
                    help="leave out the default causal check's, the every-photo causal check's or the layer3 row")
    ap.add_argument("--stage-images", type=int, default=512,
                    help="photos the stages are timed on one by one (default %(default)s)")
    ap.add_argument("--full-images", type=int, default=256,
                    help="photos in the full-size comparison, 0: none (default %(default)s)")
    ap.add_argument("--quick", action="store_true", help="256 images, 64 in the notebook loop, exact-CAM head only")
    ap.add_argument("--smoke", action="store_true", help="8 images, batch 4, every method once: shows the bench "
                    "runs, in well under a minute (its numbers mean nothing)")
    args = ap.parse_args()
    if args.quick:
        args.images, args.notebook_images, args.heads, args.repeat = 256, 64, ["cam"], 1
    if args.smoke:
        args.images, args.notebook_images, args.heads, args.repeat, args.bs, args.full_images = 8, 2, ["cam"], 1, 4, 4
        print("smoke run: a few photos through every method once; the numbers below mean nothing")
    require(DATA / "happywhale128" / "labels.csv", DATA / "happywhale_train.csv")
    WORK.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads\n"
          f"before: {load()}", flush=True)
    ds, names = photos(args.images), classes()
    rows = []
    for head in args.heads:
        rows += run_head(head, ds, names, args)
        print(f"{head} head done; {load()}", file=sys.stderr, flush=True)
    full = run_full_size(photos(args.full_images), names, args) if args.full_images else []
    print(report(rows, args.bs))
    if full:
        print(full_size_report(full, args.bs))
    print(f"after: {load()}")


def pixels(text: str) -> tuple[int, int]:
    """``"2400x1600"`` -> (2400, 1600)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give the size as WIDTHxHEIGHT, e.g. 2400x1600") from None
    return width, height


if __name__ == "__main__":
    main()
