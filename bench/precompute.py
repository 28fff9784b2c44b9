"""How fast an audit is built, side by side with plain batched inference in one process.

    .venv/bin/python bench/precompute.py [--images 512] [--repeat 2] [--heads cam fastai] [--quick]

The real 128 px photos of ../shared/data/happywhale128, repeated to ``--images``, through one resnet18 with
the 26 classes of the full Happywhale label file (random weights: speed does not depend on them), batch 64:

- baseline: plain fp32 ``model(x)`` over batches already decoded into tensors, what anyone writes first;
- WhaleAudit's precompute end to end (``whaleaudit.audit.precompute.precompute``): decode, predict, every class's
  map, foreground estimate, scores, write the store; once without the causal check (the goal's scope) and
  once with it on every image (the CLI default: two more forward passes per image), and once with the finer
  layer3 maps (``--cam-layer layer3``: Grad-CAM through layer4 for each of the 26 classes);
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
Goals: precompute >= 1.0x the baseline, >= 4x the notebook's way, >= 2x pytorch-grad-cam.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench._util import DATA, OUT, PeakMemory, load, machine, mib, quiet_caches, table, timed  # noqa: E402

quiet_caches(OUT)

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from whaleaudit.audit.precompute import model_input, precompute  # noqa: E402
from whaleaudit.data.dataset import Dataset, load_dataset  # noqa: E402
from whaleaudit.data.images import load_rgb, resolve_image  # noqa: E402
from whaleaudit.files import (
    file_sha256,  # noqa: E402
    write_json,  # noqa: E402
)
from whaleaudit.model.load import IMAGENET_STATS, build_model, load_model

BS = 64
SIZE = 128
WORK = OUT / "precompute"
GOALS = {"baseline": 1.0, "notebook": 4.0, "grad-cam": 2.0}
BASELINE = "baseline: plain fp32 model(x) on decoded batches"
PRECOMPUTE = "WhaleAudit precompute, no causal check"
CAUSAL = "WhaleAudit precompute + causal check on every image"
LAYER3 = "WhaleAudit precompute, layer3 maps (8x8), no causal check"
NOTEBOOK = "original notebook: test_dl([img]) + hook, one at a time"
GRAD_CAM = "pytorch-grad-cam GradCAM, predicted class only"


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


def decoded_batches(ds: Dataset) -> list[torch.Tensor]:
    mean, std = (torch.tensor(s)[:, None, None] for s in IMAGENET_STATS)
    xs = [model_input(load_rgb(resolve_image(ds.image_root, p)), SIZE, mean, std) for p in ds.frame["path"]]
    return [torch.stack(xs[i:i + BS]) for i in range(0, len(xs), BS)]


# --- the methods ---------------------------------------------------------------------------------------------


def baseline(model, batches) -> None:
    with torch.inference_mode():
        for x in batches:
            model(x)


def whaleaudit_precompute(ds: Dataset, pth: Path, causal: float, workers: int | None, cam_layer: str) -> dict:
    out = WORK / "audit"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.with_name(out.name + ".partial"), ignore_errors=True)
    store = precompute(ds, pth, out, bs=BS, causal=causal, workers=workers, cam_layer=cam_layer, progress=False)
    return json.loads((store / "manifest.json").read_text())


def notebook_learner(ds: Dataset, model):
    """The notebook's set-up: a fastai Learner whose DataLoaders preprocess one image at a time."""
    from fastai.vision.all import ImageDataLoaders, Normalize, Resize, imagenet_stats, resnet18, vision_learner

    dls = ImageDataLoaders.from_df(ds.frame, path=ds.image_root, fn_col="path", label_col="species",
                                   item_tfms=Resize(SIZE, method="squish"), bs=BS, num_workers=0,
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
    with PeakMemory() as mem:
        wall, cpu = timed(fn)
    print(f"  {label}: {n} images in {wall:.1f} s, {cpu:.1f} CPU s ({load()})", file=sys.stderr, flush=True)
    return {"method": label, "images": n, "rate": n / wall, "cpu_ms": 1000 * cpu / n, "start": mem.start,
            "peak": mem.peak, "peak_all": mem.peak_all}


def run_head(head: str, ds: Dataset, names: list[str], args) -> list[dict]:
    """Every method once, the baseline and the precompute ``args.repeat`` times, alternating, so that other
    work on the machine weighs on both alike; the best run of each counts."""
    pth = model_file(head, names)
    model, _ = load_model(pth)
    n = len(ds.frame)
    batches = decoded_batches(ds)
    baseline(model, batches[:1])  # first-call set-up of the kernels

    def plain() -> dict:
        return measure(BASELINE, n, lambda: baseline(model, batches))

    def ours(part: Dataset, causal: float = 0.0, cam_layer: str = "layer4") -> dict:
        label = CAUSAL if causal else LAYER3 if cam_layer == "layer3" else PRECOMPUTE
        return measure(label, len(part.frame),
                       lambda: whaleaudit_precompute(part, pth, causal, args.workers, cam_layer))

    rows = [ours(photos(max(BS, n // 4)))]  # a smaller run: memory must not grow with the images
    for _ in range(args.repeat):
        rows += [plain(), ours(ds)]
    rows.append(ours(ds, causal=1.0))
    rows.append(ours(ds, cam_layer="layer3"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn = notebook_learner(ds, model)
        some = [resolve_image(ds.image_root, p) for p in ds.frame["path"][: args.notebook_images]]
        notebook(learn, some[:2])
        rows.append(measure(NOTEBOOK, len(some), lambda: notebook(learn, some)))
        rows.append(measure(GRAD_CAM, n, lambda: grad_cam(model, batches)))
    rows.append(plain())
    for r in rows:
        r["head"] = head
    return rows


def best(runs: list[dict]) -> dict:
    """The least disturbed of several runs of one method: highest rate, lowest CPU time, highest memory."""
    return dict(runs[0], runs=len(runs), rate=max(r["rate"] for r in runs), cpu_ms=min(r["cpu_ms"] for r in runs),
                peak=max(r["peak"] for r in runs), growth=max(r["peak"] - r["start"] for r in runs),
                peak_all=max(r["peak_all"] for r in runs))


def report(rows: list[dict]) -> str:
    """Per head: the table, then the goals judged on wall-clock rate and on CPU time per image."""
    lines = []
    for head in dict.fromkeys(r["head"] for r in rows):
        runs = {}
        for r in rows:
            if r["head"] == head:
                runs.setdefault((r["method"], r["images"]), []).append(r)
        table_rows = [best(v) for v in runs.values()]
        base = next(r for r in table_rows if r["method"] == BASELINE)
        body = [[r["method"], f"{r['images']:,}", r["runs"], f"{r['rate']:.1f}", f"{r['rate'] / base['rate']:.2f}x",
                 f"{r['cpu_ms']:.1f}", f"{base['cpu_ms'] / r['cpu_ms']:.2f}x", mib(r["peak"]), mib(r["growth"]),
                 mib(r["peak_all"]) if r["peak_all"] else ""] for r in table_rows]
        lines += [f"### resnet18, {'exact-CAM head' if head == 'cam' else 'fastai default head (Grad-CAM)'}, "
                  f"batch {BS}, {SIZE} px, {torch.get_num_threads()} torch threads", "",
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
    return "\n".join(lines)


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
    ap.add_argument("--quick", action="store_true", help="256 images, 64 in the notebook loop, exact-CAM head only")
    args = ap.parse_args()
    if args.quick:
        args.images, args.notebook_images, args.heads, args.repeat = 256, 64, ["cam"], 1
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
    print(report(rows))
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
