"""``python -m whaleaudit``: train, precompute, merge, audit, concepts, export, foreground, demo, info, dashboard, jobs.

Exit codes: 0 done, 2 bad command line (argparse), 1 a WhaleAuditError (its message on stderr, no traceback),
130 interrupted. Heavy libraries are imported only by the command that needs them, so ``--help`` and ``info``
answer at once; torch, fastai and matplotlib keep their caches in the project's ``.cache/`` unless the
environment already says where.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from . import workspace
from .errors import WhaleAuditError

log = logging.getLogger("whaleaudit.cli")


def main(argv: list[str] | None = None) -> int:
    workspace.use_cache()
    args = parser().parse_args(argv)
    _log_to_stderr()
    try:
        args.run(args)
    except WhaleAuditError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    return 0


def _log_to_stderr() -> None:
    """Progress lines of whaleaudit's loggers on stderr; warnings reach the user once, through ``warnings``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(lambda record: record.levelno < logging.WARNING)
    root = logging.getLogger("whaleaudit")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


# --- commands -----------------------------------------------------------------------------------------------


def cmd_train(args, dataset=None) -> Path:
    from .model.train import default_model_path, train

    dataset = dataset or _dataset(args)
    out = Path(args.model_out or default_model_path(dataset, args.head))
    train(dataset, out=out, **_train_options(args), workers=args.workers, progress=not args.quiet)
    log.info(f"model written: {out} (+ {out.with_suffix('.pth').name}, {out.with_suffix('.json').name})")
    return out


def cmd_precompute(args, dataset=None) -> Path:
    from .audit.precompute import precompute
    from .explain.foreground import ForegroundProvider

    dataset = dataset or _dataset(args)
    out = args.out or workspace.audits() / _dataset_name(dataset)
    if args.foreground and args.no_auto_foreground:
        raise WhaleAuditError("--foreground names the automatic estimate's model; it cannot go with "
                              "--no-auto-foreground (drop one of them).")
    foreground = ForegroundProvider(dataset.image_root, boxes_csv=args.boxes, masks_dir=args.masks,
                                    auto=not args.no_auto_foreground, auto_model=args.foreground)
    options = dict(trust=args.trust, classes=args.classes, bs=args.bs, workers=args.workers, foreground=foreground,
                   causal=args.causal, cam_layer=args.cam_layer, chunk_images=args.chunk_images)
    if args.shards is not None:
        return _sharded(dataset, args, out, options)
    store = precompute(dataset, args.model, out, **options, progress=not args.quiet)
    log.info(f"audit written: {store}  (browse it: whaleaudit dashboard; summary: "
             f"python -m whaleaudit info {store})")
    return store


def _sharded(dataset, args, out: Path, options: dict) -> Path:
    """``--shards``: one shard here (``--shard``, as a Slurm array task runs it), or all of them on Ray, merged."""
    if args.shard is not None:
        from .audit.shards import precompute_shard

        shard = precompute_shard(dataset, args.model, out, args.shard, args.shards, **options,
                                 progress=not args.quiet)
        log.info(f"shard {args.shard} of {args.shards} written: {shard}; once every shard is, merge them with "
                 f"`whaleaudit merge --labels {args.labels} --model {args.model} --out {out}`")
        return shard
    if args.ray is None:
        raise WhaleAuditError("--shards needs --shard I (this machine audits shard I, as a Slurm array task would; "
                              "`whaleaudit merge` joins the shards) or --ray ADDRESS (every shard a Ray task, then "
                              "merged: 'auto' for the cluster `ray start` runs here, 'local' to start one for the run).")
    from .audit.ray_runner import precompute_on_ray

    store = precompute_on_ray(dataset, args.model, out, args.shards, address=args.ray, cpus=args.cpus_per_shard,
                              gpus=args.gpus_per_shard, **options)
    log.info(f"audit written: {store}  (browse it: whaleaudit dashboard)")
    return store


def cmd_merge(args) -> Path:
    """Merge the shards of ``--out`` into the audit, once every shard is complete (README: Beyond one machine)."""
    from .audit.shards import merge_shards

    store = merge_shards(_dataset(args), args.model, args.out, trust=args.trust, classes=args.classes,
                         workers=args.workers or 0)
    log.info(f"audit written: {store}  (browse it: whaleaudit dashboard)")
    return store


def cmd_audit(args) -> Path:
    """Train (or reuse a model trained with the same data and settings), then precompute."""
    dataset = _dataset(args)
    if args.model is None and args.shard is not None:
        raise WhaleAuditError("audit --shard I would train the model in every shard's task at once: train it first "
                              "(`whaleaudit train ...`) and give it to the shards with --model.")
    if args.model is None:
        from .model.train import default_model_path, trained_alike, training_options

        model_out = Path(args.model_out or default_model_path(dataset, args.head))
        if trained_alike(model_out, dataset, training_options(**_train_options(args))):
            log.info(f"reusing {model_out.with_suffix('.pth')}: trained on this dataset with these settings")
        else:
            args.model_out = model_out
            cmd_train(args, dataset)
        args.model = model_out.with_suffix(".pth")
    return cmd_precompute(args, dataset)


def cmd_concepts(args) -> None:
    """Recompute an audit's evidence concepts from its store (no model needed) and list them per class."""
    from .audit.concepts import write_concepts
    from .audit.store import open_audit

    table = write_concepts(open_audit(args.audit)).table
    for species, rows in table.groupby("species", sort=False):
        on = rows["on_animal"].dropna()
        where = f", {int((on > 0.5).sum())} mostly on the animal, {int((on < 0.5).sum())} mostly off" if len(on) else ""
        print(f"{species}: {len(rows)} concepts{where}; the largest holds {rows['evidence_share'].max():.0%} "
              "of its evidence")
    log.info(f"concepts written into {args.audit}")


def cmd_export(args) -> None:
    from .audit.export import boxes_csv, flagged_csv
    from .audit.review import Review
    from .audit.store import open_audit

    if args.out is None and args.boxes is None:
        raise WhaleAuditError("export needs --out (the flagged images as CSV), --boxes (the analyst's corrected "
                              "foregrounds as a --boxes file for the next audit), or both.")
    audit = open_audit(args.audit)
    review = Review(audit.review_path)
    if args.out is not None:
        _write_out(args.out, flagged_csv(audit, review), "flagged images")
    if args.boxes is not None:
        corrections = review.corrections()
        cleared = int((corrections["boxes"].str.len() == 0).sum())
        _write_out(args.boxes, boxes_csv(review), f"boxes of {len(corrections) - cleared} corrected photo(s)")
        if cleared:
            log.info(f"{cleared} photo(s) the analyst cleared (no animal) are not in the boxes file: a --boxes file "
                     "cannot say 'no animal', so the next audit estimates them")


def cmd_foreground(args) -> None:
    """Fit the automatic foreground's model from a --boxes file and its photos (``foreground fit``)."""
    from .explain.foreground import fit_from_boxes, save_model

    if args.out.suffix != ".json":
        raise WhaleAuditError(f"{args.out}: a foreground model is written as JSON; give a path ending in .json.")
    if not args.images.is_dir():
        raise WhaleAuditError(f"{args.images}: not a folder; --images is the folder the box file's photos are in.")
    model, about = fit_from_boxes(args.boxes, args.images, {"epochs": args.epochs})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, args.out, dict(about, by="whaleaudit foreground fit"))
    log.info(f"foreground model written: {args.out} ({about['fitted_on']}); use it with "
             f"`whaleaudit audit ... --foreground {args.out}`")


def _write_out(out: Path, data: bytes, what: str) -> None:
    if str(out) == "-":
        sys.stdout.buffer.write(data)
    else:
        Path(out).write_bytes(data)
        log.info(f"{what} written: {out}")


def cmd_demo(args) -> Path:
    from .demo.build import RECIPES, build_demo

    store = build_demo(args.out, recipe=RECIPES[args.recipe])
    log.info(f"demo audit ready: {store}  (browse it: whaleaudit dashboard)")
    return store


def cmd_info(args) -> None:
    print(summary(args.audit))


def cmd_dashboard(args) -> None:
    """Serve the dashboard with Streamlit on this machine only, whatever folder it is started from: the
    options of ``.streamlit/config.toml`` are passed on the command line, as Streamlit reads that file only
    from the current folder and the app's."""
    app = dashboard_app()
    if args.audits is not None:
        if args.audits.exists() and not args.audits.is_dir():
            raise WhaleAuditError(f"{args.audits}: not a folder; --audits takes the folder that holds the audits")
        os.environ[workspace.AUDITS_ENV] = str(args.audits.resolve())
    from streamlit.web import cli as streamlit

    streamlit.main(["run", str(app), "--server.address", "127.0.0.1", "--server.port", str(args.port),
                    "--server.headless", "true", "--server.fileWatcherType", "none",
                    "--browser.gatherUsageStats", "false", "--client.showSidebarNavigation", "false"],
                   prog_name="streamlit", standalone_mode=False)


def dashboard_app() -> Path:
    """The dashboard's entrypoint: the copy the wheel ships in ``whaleaudit/_dashboard``, else (a checkout or
    an editable install) the checkout's ``streamlit_app.py`` beside the package."""
    package = Path(__file__).resolve().parent
    for folder in (package / "_dashboard", package.parent):
        if (folder / "streamlit_app.py").is_file() and (folder / "app_frame.py").is_file():
            return folder / "streamlit_app.py"
    raise WhaleAuditError(f"the dashboard's files are missing: neither {package / '_dashboard'} nor {package.parent} "
                          "holds streamlit_app.py and app_frame.py; reinstall whaleaudit (pip install whaleaudit)")


def cmd_jobs(args) -> None:
    """List the background jobs, cancel one, or (``run``, the job's own process) do one."""
    from . import jobs

    folder = jobs.folder(args.audits)
    if args.action == "run":
        raise SystemExit(jobs.run(args.id, Path(args.folder), args.lock_fd))
    if args.action == "cancel":
        job = jobs.cancel(args.id, jobs=folder)
        print(f"cancelling {job.id} (process group {job.pid})")
        return
    listed = jobs.list_jobs(jobs=folder)
    if not listed:
        print(f"no jobs in {folder}")
    for job in listed:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.started)) if job.started else "?"
        print(f"{job.id}  {job.status:9}  started {started}  {job.sentence()}")


def summary(store: Path) -> str:
    """A few lines on an audit: images, failures, classes, accuracy, CAM method, model."""
    from .audit.store import open_audit

    audit = open_audit(store)
    m, images = audit.manifest, audit.images
    ok = images["status"] == "ok"
    known = ok & (images["label_idx"] >= 0)
    lines = [f"audit:    {audit.path}",
             f"images:   {len(images)} ({int(ok.sum())} ok, {int((~ok).sum())} failed)",
             f"classes:  {len(audit.classes)} ({', '.join(audit.classes)})"]
    if known.any():
        accuracy = f"accuracy: {images['correct'][known].mean():.3f} on {int(known.sum())} labelled images"
        valid = known & (images["split"] == "valid")
        if valid.any():
            accuracy += f"; {images['correct'][valid].mean():.3f} on {int(valid.sum())} validation images"
        lines.append(accuracy)
    cam, model = m.get("cam", {}), m.get("model", {})
    shape = "x".join(map(str, m.get("cam_shape", [])))
    lines += [f"CAM:      {cam.get('method', '?')} at {cam.get('layer', '?')}, {shape} cells, "
              f"{m.get('input_size', '?')} px input",
              f"model:    {model.get('path', '?') or 'a Learner in memory'} ({model.get('arch', '?')}, "
              f"{model.get('head', '?')} head, "
              f"pretrained: {model.get('pretrained')})",
              f"dataset:  {m['dataset'].get('label_file') or m['dataset']['image_root']}"]
    return "\n".join(lines)


# --- helpers ------------------------------------------------------------------------------------------------


def _dataset(args):
    from .data.dataset import load_dataset

    return load_dataset(args.labels, args.images)


def _dataset_name(dataset) -> str:
    return (dataset.label_file.parent if dataset.label_file is not None else dataset.image_root).name or "audit"


def _train_options(args) -> dict:
    return dict(epochs=args.epochs, lr=args.lr, bs=args.train_bs, size=args.size, head=args.head,
                pretrained=not args.no_pretrained, weights=args.weights, seed=args.seed, valid_pct=args.valid_pct)


def _classes(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if len(names) < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least two class names, comma-separated, in the "
                                         "model's output order")
    return names


def _causal(text: str) -> float | str:
    return text if text == "auto" else _share(text)


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: a share between 0 and 1")
    return value


def _dataset_options(p) -> None:
    p.add_argument("--labels", required=True, type=Path,
                   help="label CSV (image,species[,individual_id]) or a folder with one sub-folder per species")
    p.add_argument("--images", type=Path, help="image folder (default: images/ beside the label file, or its folder)")
    p.add_argument("--workers", type=int, help="data-loading processes (default: min(4, CPUs))")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _train_arguments(p) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--model-out", type=Path, help="where to export the learner (.pkl; .pth and .json beside it; "
                                                   "default models/<dataset>-resnet18-<head>.pkl)")
    g.add_argument("--epochs", type=int, default=10, help="epochs after the first, frozen one (default 10)")
    g.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    g.add_argument("--train-bs", type=int, default=64, help="training batch size (default 64)")
    g.add_argument("--size", type=int, default=128, help="input size in pixels, photos squashed to it (default 128)")
    g.add_argument("--head", choices=["cam", "fastai"], default="cam",
                   help="cam: avg-pool + one linear layer, exact CAM (default); fastai: fastai's head, Grad-CAM")
    g.add_argument("--no-pretrained", action="store_true", help="start from random weights, not ImageNet")
    g.add_argument("--weights", type=Path, help="torchvision resnet18 state dict (.pth) to start from (offline)")
    g.add_argument("--seed", type=int, default=42, help="seed of the split and the training (default 42)")
    g.add_argument("--valid-pct", type=float, default=0.2, help="validation share per species (default 0.2)")


def _precompute_arguments(p, model_required: bool) -> None:
    g = p.add_argument_group("precompute")
    g.add_argument("--model", type=Path, required=model_required,
                   help="trained model: .pth with its .json sidecar (safe), or a fastai .pkl export")
    g.add_argument("--trust", action="store_true", help="load a pickled learner from outside models/ (runs its code)")
    g.add_argument("--classes", type=_classes, help="class names in output order, for a .pth without sidecar")
    g.add_argument("--out", type=Path, help="audit folder (default audits/<dataset>)")
    g.add_argument("--bs", type=int, default=64, help="inference batch size (default 64)")
    g.add_argument("--boxes", type=Path, help="CSV of animal boxes per image (image,x0,y0,x1,y1)")
    g.add_argument("--masks", type=Path, help="folder of animal mask PNGs named like the images")
    g.add_argument("--no-auto-foreground", action="store_true", help="no automatic animal estimate where no box or mask")
    g.add_argument("--foreground", type=Path, help="the automatic estimate's model (.json, from `whaleaudit "
                                                   "foreground fit`; default the one shipped)")
    g.add_argument("--causal", type=_causal, default="auto",
                   help="which images are checked with the animal painted out / left alone: 'auto' (default: the "
                        "top tenth by background attention, the top tenth by loss, a random tenth for reference) "
                        "or a share of all images, 0 to 1")  # whaleaudit.audit.precompute.AUTO, without torch
    g.add_argument("--cam-layer", choices=["layer4", "layer3"], default="layer4",
                   help="where the maps are read: layer4, the body's output (4x4 at 128 px, default), or "
                        "layer3 (8x8 Grad-CAM: places a cue beside the animal better; several times slower with "
                        "many classes)")  # whaleaudit.explain.cam.LAYERS, written out so that --help needs no torch


def _sharding_arguments(p) -> None:
    g = p.add_argument_group("beyond one machine (README: Beyond one machine)")
    g.add_argument("--chunk-images", type=int, default=1024,  # whaleaudit.audit.precompute.CHUNK_IMAGES
                   help="photos per resumable chunk, the unit shards are cut in (default 1024)")
    g.add_argument("--shards", type=int, metavar="N", help="cut the photos into N shards by row order, each audited on its own "
                                              "into <out>.shards/, then merged into the one audit")
    g.add_argument("--shard", type=int, metavar="I", help="with --shards: audit shard I only (0 to N-1), as a Slurm array task; "
                                             "`whaleaudit merge` joins them")
    g.add_argument("--ray", metavar="ADDRESS", help="with --shards: every shard a Ray task, then merged: 'auto' (the "
                                                    "cluster `ray start` runs here), a head's host:port, or 'local' "
                                                    "(pip install whaleaudit[ray])")
    g.add_argument("--cpus-per-shard", type=float, default=1, metavar="CPUS", help="with --ray: CPUs each shard task asks for "
                                                                   "(default 1; loader processes: one fewer)")
    g.add_argument("--gpus-per-shard", type=float, default=0, metavar="GPUS", help="with --ray: GPUs each shard task asks for "
                                                                   "(default 0: the shards run on the CPU)")


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text}: a TCP port between 1 and 65535")
    return port


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m whaleaudit", description="Audit an image dataset through the "
                                  "model trained on it: where does the model look?")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a resnet18 on a labelled dataset and export it",
                       description="Train a resnet18 species classifier with fastai; writes .pkl, .pth and .json.")
    _dataset_options(p)
    _train_arguments(p)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("precompute", help="build an audit from a dataset and a trained model",
                       description="Predictions, maps and background-attention scores for every image, into an "
                                   "audit folder. A killed run resumes when the same command runs again.")
    _dataset_options(p)
    _precompute_arguments(p, model_required=True)
    _sharding_arguments(p)
    p.set_defaults(run=cmd_precompute)

    p = sub.add_parser("merge", help="merge the shards of a sharded precompute into one audit",
                       description="Join the complete shards of --out (from `precompute --shards N --shard I`) into "
                                   "the audit a single run would have written; the same dataset and model.")
    _dataset_options(p)
    p.add_argument("--model", type=Path, required=True, help="the model the shards were made with")
    p.add_argument("--trust", action="store_true", help="load a pickled learner from outside models/ (runs its code)")
    p.add_argument("--classes", type=_classes, help="class names in output order, for a .pth without sidecar")
    p.add_argument("--out", type=Path, required=True, help="the audit folder given to the shards")
    p.set_defaults(run=cmd_merge)

    p = sub.add_parser("audit", help="train (or load --model), then precompute",
                       description="Train a model (or reuse one trained on the same data with the same settings, "
                                   "or load --model), then precompute the audit.")
    _dataset_options(p)
    _train_arguments(p)
    _precompute_arguments(p, model_required=False)
    _sharding_arguments(p)
    p.set_defaults(run=cmd_audit)

    p = sub.add_parser("concepts", help="recompute an audit's evidence concepts from its store",
                       description="Cluster the cells that carry each class's evidence into concepts (what the "
                                   "evidence is made of, on or off the animal) and write them into the audit.")
    p.add_argument("audit", type=Path, help="audit folder")
    p.set_defaults(run=cmd_concepts)

    p = sub.add_parser("export", help="write the flagged images of an audit as CSV, or its corrected boxes",
                       description="Write the images flagged in the dashboard, with reasons and notes, as CSV; "
                                   "and/or the foregrounds the analyst corrected, as a --boxes file for the next "
                                   "audit.")
    p.add_argument("audit", type=Path, help="audit folder")
    p.add_argument("--out", type=Path, help="CSV file of the flagged images to write ('-' for stdout)")
    p.add_argument("--boxes", type=Path, help="CSV file (image,x0,y0,x1,y1 in fractions of the photo) of the "
                                              "analyst's corrected boxes to write ('-' for stdout)")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("foreground", help="fit the automatic foreground from boxes (yours or the analyst's)",
                       description="Fit the automatic foreground estimate from a --boxes file (your own boxes, or "
                                   "the analyst's corrections from `export --boxes`) and the photos it names; "
                                   "audit with it by --foreground.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    fit = actions.add_parser("fit", help="fit a foreground model from a boxes file and its photos")
    fit.add_argument("--boxes", type=Path, required=True, help="CSV of animal boxes (as --boxes of an audit)")
    fit.add_argument("--images", type=Path, required=True, help="folder of the photos the box file names")
    fit.add_argument("--out", type=Path, required=True, help="model file to write (.json)")
    fit.add_argument("--epochs", type=int, default=30, help="passes over the pixels per stage (default 30)")
    p.set_defaults(run=cmd_foreground)

    p = sub.add_parser("demo", help="build the demo audit (drawn whales, trained and audited here)",
                       description="Draw the demo dataset, train on it and precompute its audit.")
    p.add_argument("--out", type=Path, help="demo audit folder (default: the dashboard's demo location)")
    p.add_argument("--recipe", choices=["full", "tiny"], default="full",  # whaleaudit.demo.build.RECIPES
                   help="full: the demo (about 3 minutes on 2 cores, default); tiny: every step in seconds, "
                        "nothing learnt (a quick check of an install)")
    p.set_defaults(run=cmd_demo)

    p = sub.add_parser("info", help="summarise an audit", description="Summarise an audit: images, failures, "
                                                                       "classes, accuracy, CAM method, model.")
    p.add_argument("audit", type=Path, help="audit folder")
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("jobs", help="list or cancel the background jobs the dashboard started",
                       description="List the background jobs (the demo build started from the dashboard), or "
                                   "cancel one.")
    p.add_argument("--audits", type=Path, help="folder holding the audits and their .jobs/ (default: the dashboard's)")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    cancel = actions.add_parser("cancel", help="stop a running job (SIGTERM to its processes)")
    cancel.add_argument("id", help="the job's id, as listed")
    run = actions.add_parser("run")  # the job's own process, started by whaleaudit.jobs.start; not listed
    run.add_argument("id")
    run.add_argument("--folder", required=True)
    run.add_argument("--lock-fd", type=int, required=True)
    p.set_defaults(run=cmd_jobs)

    p = sub.add_parser("dashboard", help="browse the audits in the Streamlit dashboard",
                       description="Serve the dashboard on this machine (http://127.0.0.1:PORT). With no audit yet "
                                   "it offers to build the demo.")
    p.add_argument("--audits", type=Path, help=f"folder holding the audits (default: ${workspace.AUDITS_ENV}, else "
                                                f"audits/ in ${workspace.HOME_ENV} or the current folder)")
    p.add_argument("--port", type=_port, default=8501, help="port to listen on (default 8501)")
    p.set_defaults(run=cmd_dashboard)
    return top
