"""The notebook API: a Learner in memory audited in one call into the store the command line builds; an audit
opened from disk gives the dashboard's lists, plots and review; ``import whaleaudit`` stays light; and
docs/notebook.ipynb runs end to end."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _helpers_dashboard import CLASSES, UNREADABLE, VANISHED, make_audit
from _helpers_engine import SIZE, make_dataset, tiny_dataset, tiny_model
from PIL import Image

from whaleaudit import WhaleAudit
from whaleaudit.audit.review import Review
from whaleaudit.errors import DatasetError, ModelError, WhaleAuditError

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "docs" / "notebook.ipynb"


# --- the package's surface ----------------------------------------------------------------------------------


def test_import_whaleaudit_loads_no_torch_and_every_public_name_resolves():
    heavy = ("import sys, whaleaudit; print(sorted(m for m in sys.modules "
             "if m.split('.')[0] in ('torch', 'fastai', 'torchvision', 'matplotlib')))")
    light = subprocess.run([sys.executable, "-c", heavy], capture_output=True, text=True, check=True)
    assert light.stdout.strip() == "[]"
    help_only = ("import contextlib, io, sys\nfrom whaleaudit.cli import main\n"
                 "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
                 "    main(['--help'])\n"
                 "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", help_only], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
    star = ("import whaleaudit\nfrom whaleaudit import *\n"
            "print(len(whaleaudit.__all__), [n for n in whaleaudit.__all__ if n not in globals()])")
    names = subprocess.run([sys.executable, "-c", star], capture_output=True, text=True, check=True)
    count, missing = names.stdout.split(" ", 1)
    assert int(count) >= 15 and missing.strip() == "[]"
    import whaleaudit

    for name in ("WhaleAudit", "open_audit", "precompute", "train", "load_model", "load_dataset", "Review",
                 "flagged_csv", "build_demo", "WhaleAuditError", "DatasetError"):
        assert name in whaleaudit.__all__ and callable(getattr(whaleaudit, name)), name
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        getattr(whaleaudit, "nothing_here")  # noqa: B009 -- the look-up is what is tested


# --- a DataFrame's labels, checked at the door --------------------------------------------------------------


def test_a_dataframe_of_labels_is_read_as_a_label_file_is(tmp_path):
    from whaleaudit.data.dataset import dataset_from_frame, load_dataset

    labels = make_dataset(tmp_path, n_per_species=3)
    df = pd.read_csv(labels)
    from_frame = dataset_from_frame(df, tmp_path / "images")
    from_file = load_dataset(labels)
    pd.testing.assert_frame_equal(from_frame.frame, from_file.frame)
    assert from_frame.image_root == from_file.image_root and from_frame.label_file is None

    messy = pd.DataFrame({"Image": ["a.jpg", "sub/b.jpg"], " Species ": ["Killer Whale", "kiler_whale"],
                          "individual_id": ["x", None]})
    frame = dataset_from_frame(messy, tmp_path).frame
    assert frame["species"].tolist() == ["killer_whale", "killer_whale"]
    assert frame["species_raw"].tolist() == ["Killer Whale", "kiler_whale"]
    assert frame["path"].tolist() == ["a.jpg", "sub/b.jpg"] and frame["individual_id"].tolist() == ["x", ""]


def test_the_fingerprint_of_a_dataframe_follows_its_labels_and_order(tmp_path):
    """A resumed audit must not mix rows of other labels or another order into its store."""
    from whaleaudit.data.dataset import dataset_from_frame

    df = pd.DataFrame({"image": ["a.jpg", "b.jpg", "c.jpg"], "species": ["orca", "beluga", "orca"]})
    first = dataset_from_frame(df, tmp_path).fingerprint()
    assert dataset_from_frame(df.copy(), tmp_path).fingerprint() == first
    relabelled = df.assign(species=["orca", "orca", "orca"])
    assert dataset_from_frame(relabelled, tmp_path).fingerprint() != first
    assert dataset_from_frame(df.iloc[::-1], tmp_path).fingerprint() != first


@pytest.mark.parametrize("frame, images, message", [
    ({"image": ["a.jpg"], "species": ["orca"]}, ".", "a dict, not a pandas DataFrame"),
    (pd.DataFrame({"image": ["a.jpg"], "label": ["orca"]}), ".", r"has no 'species' column; found \['image', 'label'\]"),
    (pd.DataFrame({"image": ["a.jpg"], "Species": ["orca"], "species": ["x"]}), ".", "the column 'species' twice"),
    (pd.DataFrame({"image": ["a.jpg", "b.jpg"], "species": ["orca", None]}, index=["first", "second"]), ".",
     "row second has no species \\(image 'b.jpg'\\)"),
    (pd.DataFrame({"image": ["a.jpg", "", "c.jpg"], "species": ["orca", "orca", "orca"]}), ".",
     "row 1 has no image file name"),
    (pd.DataFrame({"image": ["a.jpg", "b.jpg", "a.jpg"], "species": ["orca", "orca", "beluga"]}), ".",
     "image 'a.jpg' is listed on row 0 and again on row 2"),
    (pd.DataFrame({"image": ["../secret.jpg"], "species": ["orca"]}), ".", "climbs out of the image folder"),
    (pd.DataFrame({"image": ["a.jpg"], "species": ["orca"]}), "missing-folder", "the image folder does not exist"),
    (pd.DataFrame({"image": ["a.jpg"], "species": ["orca"]}), None, "say where its images are: images="),
])
def test_from_learner_refuses_a_bad_dataframe_before_touching_the_learner(tmp_path, frame, images, message):
    not_a_learner = object()  # never reached: the labels are checked first
    with pytest.raises(DatasetError, match=message):
        WhaleAudit.from_learner(not_a_learner, frame, images=None if images is None else tmp_path / images,
                                out=tmp_path / "audit")
    assert not (tmp_path / "audit").exists()


def test_images_without_a_dataframe_is_refused(tmp_path):
    with pytest.raises(WhaleAuditError, match="images= names the folder of a DataFrame's images"):
        WhaleAudit.from_learner(object(), images=tmp_path)


# --- from a Learner in memory -------------------------------------------------------------------------------


def notebook_learner(head: str, valid_pct: float = 0.25):
    """A Learner as a notebook makes it (fastai's ImageDataLoaders.from_df on the tiny label file), holding the
    weights of the tiny model the command-line tests load from its .pth."""
    import torch
    from fastai.vision.all import (
        ImageDataLoaders,
        Resize,
        ResizeMethod,
        resnet18,
        vision_learner,
    )

    from whaleaudit.model.train import HEAD_ARGS

    labels = tiny_dataset()
    dls = ImageDataLoaders.from_df(pd.read_csv(labels), path=labels.parent, folder="images", valid_pct=valid_pct,
                                   seed=3, item_tfms=Resize(SIZE, method=ResizeMethod.Squish), bs=8, num_workers=0)
    learn = vision_learner(dls, resnet18, pretrained=False, normalize=False, **HEAD_ARGS[head])
    learn.model.load_state_dict(torch.load(tiny_model(head).with_suffix(".pth"), weights_only=True))
    return learn


def cli_store(head: str, out: Path) -> Path:
    from whaleaudit.cli import main

    assert main(["precompute", "--labels", str(tiny_dataset()), "--model", str(tiny_model(head).with_suffix(".pth")),
                 "--out", str(out), "--workers", "0", "--quiet"]) == 0
    return out


def assert_same_audit(ours, theirs):
    """The same photos, predictions, maps, foregrounds and scores, number for number."""
    columns = ["image", "path", "species", "status", "label_idx", "pred_idx", "prediction", "correct", "fg_source"]
    pd.testing.assert_frame_equal(ours.images[columns], theirs.images[columns])
    numbers = ["prob_pred", "prob_true", "loss", "fg_area", "bg_share", "bg_score", "bg_share_true", "bg_score_true",
               "peak_on_animal", "cam_entropy", "prob_without_animal", "prob_animal_only", "prob_flat_photo"]
    np.testing.assert_allclose(ours.images[numbers].to_numpy(float), theirs.images[numbers].to_numpy(float),
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours.probs, theirs.probs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.cams.astype(np.float32), theirs.cams.astype(np.float32), rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(ours.masks_packed, theirs.masks_packed)
    assert ours.classes == theirs.classes and ours.manifest["cam"] == theirs.manifest["cam"]


@pytest.mark.slow
@pytest.mark.parametrize("head", ["cam", "fastai"])
def test_from_learner_builds_the_store_the_command_line_builds(head, tmp_path):
    import torch
    from fastai.learner import load_learner

    from whaleaudit.audit.store import open_audit

    learn = notebook_learner(head)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    training = learn.model.training
    audit = WhaleAudit.from_learner(learn, out=tmp_path / "notebook", workers=0, progress=False)
    # the learner is left as it was
    assert learn.model.training == training
    assert all(torch.equal(before[k], v) for k, v in learn.model.state_dict().items())
    cli = open_audit(cli_store(head, tmp_path / "cli"))
    assert_same_audit(audit.audit, cli)

    # what the learner itself predicts for the same photos
    labels = pd.read_csv(tiny_dataset())
    probs, _ = learn.get_preds(dl=learn.dls.test_dl(labels))
    np.testing.assert_allclose(audit.audit.probs, probs.numpy(), rtol=0, atol=1e-4)
    # the dataloaders' own split, recorded
    valid = set(learn.dls.valid_ds.items["image"])
    assert 0 < len(valid) < len(labels)
    assert audit.images["split"].tolist() == ["valid" if i in valid else "train" for i in labels["image"]]
    m = audit.manifest
    assert m["model"]["head"] == head and m["model"]["path"] is None and len(m["model"]["sha256"]) == 64
    assert m["cam"]["method"] == {"cam": "exact-cam", "fastai": "grad-cam"}[head]

    # a learner without photos (load_learner keeps none) takes a DataFrame of labels, with the same result
    exported = load_learner(tiny_model(head))
    with pytest.raises(ModelError, match="hold no photos"):
        WhaleAudit.from_learner(exported, out=tmp_path / "nothing")
    from_df = WhaleAudit.from_learner(exported, labels, images=tiny_dataset().parent / "images",
                                      out=tmp_path / "from_df", workers=0, progress=False)
    assert_same_audit(from_df.audit, cli)
    assert (from_df.images["split"] == "").all()


@pytest.mark.slow
def test_a_learner_whaleaudit_trained_is_audited_with_the_split_it_recorded(tmp_path):
    from whaleaudit.data.dataset import load_dataset
    from whaleaudit.model.train import train

    labels = make_dataset(tmp_path / "data", n_per_species=6, seed=4)
    (tmp_path / "data" / "images" / "040005.jpg").write_bytes(b"not a photo")  # left out of training
    with pytest.warns(UserWarning, match="left out of training"):
        learn = train(load_dataset(labels), out=tmp_path / "models" / "m.pkl", epochs=1, bs=4, size=SIZE,
                      pretrained=False, workers=0, progress=False)
    audit = WhaleAudit.from_learner(learn, out=tmp_path / "audit", workers=0, progress=False)
    recorded = json.loads((tmp_path / "models" / "m.json").read_text())["split"]
    images = audit.images
    assert sorted(images.loc[images["split"] == "valid", "image"]) == sorted(recorded["valid"])
    assert sorted(images.loc[images["split"] == "train", "image"]) == sorted(recorded["train"])
    assert "040005.jpg" not in set(images["image"]) and len(images) == 11


@pytest.mark.slow
def test_the_learners_fingerprint_is_its_weights():
    """The manifest's sha256 of a Learner: the same weights, in any memory layout, give the same hash (a killed
    audit resumes); any change of a weight gives another."""
    import torch

    from whaleaudit.model.load import learner_model

    learn = notebook_learner("cam")
    _, first = learner_model(learn)
    learn.model.to(memory_format=torch.channels_last)
    assert learner_model(learn)[1]["sha256"] == first["sha256"]
    assert learner_model(notebook_learner("cam", valid_pct=0.5))[1]["sha256"] == first["sha256"]
    with torch.no_grad():
        learn.model[1][-1].bias[0] += 1e-3
    assert learner_model(learn)[1]["sha256"] != first["sha256"]
    assert first["classes"] == ["bottlenose_dolphin", "killer_whale"] and first["size"] == SIZE
    assert first["normalize"] is None and first["head"] == "cam"


@pytest.mark.slow
def test_a_killed_audit_of_a_learner_resumes(tmp_path):
    """A fresh copy of the same learner's weights fingerprints alike, so the second run computes only the
    chunks the first did not finish, and ends with the store of an uninterrupted run."""
    from whaleaudit.audit.precompute import precompute
    from whaleaudit.audit.store import open_audit, partial_dir
    from whaleaudit.model.load import learner_dataset, learner_model

    learn = notebook_learner("cam")
    dataset, _ = learner_dataset(learn)
    n = len(dataset.frame)

    def killed_after_two_chunks(fraction):
        if fraction * n >= 16:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        precompute(dataset, learner_model(learn), tmp_path / "audit", bs=8, chunk_images=8, workers=0,
                   progress=killed_after_two_chunks)
    finished = len(list((partial_dir(tmp_path / "audit") / "chunks").glob("*.parquet")))
    assert finished >= 1
    resumed = open_audit(precompute(dataset, learner_model(learn), tmp_path / "audit", bs=8, chunk_images=8,
                                   workers=0, progress=False))
    assert resumed.manifest["timings"]["images_computed"] == n - 8 * finished
    whole = open_audit(precompute(dataset, learner_model(learn), tmp_path / "whole", bs=8, chunk_images=8,
                                 workers=0, progress=False))
    assert_same_audit(resumed, whole)


@pytest.mark.slow
def test_species_keep_the_learners_spelling(tmp_path):
    """Folder names such as "Killer Whale" are the vocab: the photos' species must match the model's classes
    as spelt there, or no photo would get a loss."""
    from fastai.vision.all import ImageDataLoaders, Resize, resnet18, vision_learner

    (tmp_path / "photos").mkdir()
    for k, (name, drawn) in enumerate([("Bottlenose Dolphin", "bottlenose_dolphin"), ("Killer Whale", "killer_whale")]):
        make_dataset(tmp_path / f"drawn{k}", n_per_species=4, species=[drawn], seed=k)
        (tmp_path / f"drawn{k}" / "images").rename(tmp_path / "photos" / name)
    dls = ImageDataLoaders.from_folder(tmp_path / "photos", valid_pct=0.25, seed=0, item_tfms=Resize(SIZE), bs=4,
                                       num_workers=0)
    learn = vision_learner(dls, resnet18, pretrained=False)
    with pytest.warns(UserWarning, match="resizes with method"):  # fastai's default Resize crops
        audit = WhaleAudit.from_learner(learn, out=tmp_path / "audit", workers=0, progress=False)
    images = audit.images
    assert audit.classes == ["Bottlenose Dolphin", "Killer Whale"]
    assert sorted(images["species"].unique()) == audit.classes and (images["label_idx"] >= 0).all()
    assert images["loss"].notna().all() and images["image"].str.startswith(("Bottlenose Dolphin/", "Killer Whale/")).all()


@pytest.mark.slow
def test_a_learner_whose_items_name_no_file_is_refused():
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        ImageBlock,
        Resize,
        resnet18,
        vision_learner,
    )

    photos = [np.full((SIZE, SIZE, 3), v, np.uint8) for v in (0, 80, 160, 240)]
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_x=lambda i: photos[i], get_y=lambda i: "ab"[i % 2],
                      item_tfms=Resize(SIZE))
    learn = vision_learner(block.dataloaders(list(range(4)), bs=2, num_workers=0), resnet18, pretrained=False)
    with pytest.raises(ModelError, match="cannot tell which file an item is"):
        WhaleAudit.from_learner(learn)


# --- an audit from disk: lists, plots, review ---------------------------------------------------------------


@pytest.fixture
def opened(tmp_path):
    return WhaleAudit.open(make_audit(tmp_path))


def test_top_lists_rank_as_sorting_the_table_does(opened):
    table = opened.audit.images
    scored = table[table["bg_score"].notna()]
    expected = scored.sort_values("bg_score", ascending=False)["image"].head(7).tolist()
    assert opened.top_background(7)["image"].tolist() == expected
    beluga = scored[scored["species"] == "beluga"].sort_values("bg_score", ascending=False)["image"].head(3)
    assert opened.top_background(3, species="beluga")["image"].tolist() == beluga.tolist()

    with_loss = table[(table["status"] == "ok") & table["loss"].notna()]
    assert opened.top_losses(5)["image"].tolist() == with_loss.nlargest(5, "loss")["image"].tolist()
    cell = with_loss[(with_loss["species"] == "beluga") & (with_loss["prediction"] == "killer_whale")]
    got = opened.top_losses(100, species="beluga", predicted="killer_whale")
    assert got["image"].tolist() == cell.sort_values("loss", ascending=False)["image"].tolist()
    assert UNREADABLE not in set(opened.top_losses(100)["image"])
    with pytest.raises(WhaleAuditError, match="species 'orca' is not in this audit; it has beluga"):
        opened.top_losses(species="orca")


def test_species_table_and_confusion_count_the_photos(opened):
    table = opened.audit.images
    species = opened.species_table()
    assert species.set_index("species")["images"].to_dict() == table["species"].value_counts().to_dict()
    assert set(species["species"]) == set(CLASSES)
    ok = table[table["status"] == "ok"]
    expected = pd.crosstab(ok["species"], ok["prediction"])
    confusion = opened.confusion()
    assert confusion.to_numpy().sum() == len(ok)
    pd.testing.assert_frame_equal(confusion, expected, check_names=False, check_dtype=False)


def test_plots_draw_one_photo_with_its_map_and_outline_per_row(opened):
    fig = opened.plot_top_losses(5, ncols=2, size=96)
    rows = opened.top_losses(5)
    assert len(fig.axes) == 5
    for ax, (_, row) in zip(fig.axes, rows.iterrows()):
        title = ax.get_title()
        assert row["image"] in title and f"{row['species']} → {row['prediction']}" in title
        assert f"({row['prob_pred']:.2f})" in title and f"loss {row['loss']:.2f}" in title
        if row["image"] == VANISHED:  # deleted after the audit was built
            assert not ax.images and "file not found" in ax.texts[0].get_text()
            continue
        shown = np.asarray(ax.images[0].get_array())
        photo = np.asarray(Image.open(opened.audit.image_root / row["path"]).convert("RGB").resize(
            shown.shape[1::-1], Image.Resampling.LANCZOS))
        assert shown.shape[:2] == (72, 96)  # the 24 x 32 photo fitted to 96 px
        assert np.abs(shown.astype(int) - photo).mean() > 5  # a map is blended over it
        assert (shown == 255).all(axis=2).any() == (row["fg_source"] != "none")  # the white outline
    assert fig._repr_png_().startswith(b"\x89PNG")
    assert len(opened.plot_top_background(4).axes) == 4
    assert len(opened.plot_top_losses(1000).axes) == len(opened.top_losses(1000))


def test_a_photo_that_cannot_be_read_says_why_in_its_place(opened):
    from whaleaudit.views.plots import plot_photos

    rows = opened.images[opened.images["image"].isin([UNREADABLE, VANISHED, "img_000"])]
    fig = plot_photos(opened.overlays, rows)
    shown = {ax.get_title().split("\n")[0]: ax for ax in fig.axes}
    assert set(shown) == {UNREADABLE, VANISHED, "img_000"}
    assert not shown[UNREADABLE].images and "cannot show this photo" in shown[UNREADABLE].texts[0].get_text()
    assert "file not found" in shown[VANISHED].texts[0].get_text()
    assert shown["img_000"].images
    empty = plot_photos(opened.overlays, rows.iloc[:0])
    assert len(empty.axes) == 1 and empty.axes[0].texts[0].get_text() == "No photos to show."


def test_the_flagged_list_of_an_audit_with_concepts_names_each_photos_largest_concepts(tmp_path):
    audit = WhaleAudit.open(make_audit(tmp_path, concepts=True))
    audit.flag(audit.top_background(3), "attention on water")
    flagged = audit.flagged()
    assert len(flagged) == 3 and {"concept_1", "concept_1_share"} <= set(flagged.columns)
    assert flagged["concept_1"].str.startswith(tuple(audit.audit.classes)).all()


def test_flags_go_to_the_review_the_dashboard_and_export_read(opened, tmp_path):
    from whaleaudit.audit.export import flagged_csv

    opened.flag(["img_001", "img_002"], "attention on water", note="sea only", who="ana")
    opened.flag(opened.top_background(1), "label wrong")
    first = opened.top_background(1)["image"].iat[0]
    flagged = opened.flagged()
    assert set(flagged["image"]) == {"img_001", "img_002", first}
    assert flagged.set_index("image").loc["img_001", ["reason", "note", "who"]].tolist() == [
        "attention on water", "sea only", "ana"]
    assert flagged["bg_score"].is_monotonic_decreasing
    # the dashboard's review object and the CSV export see the same flags
    assert set(Review(opened.audit.review_path).flags()["image"]) == set(flagged["image"])
    csv = pd.read_csv(io.BytesIO(flagged_csv(opened.audit, opened.review)), keep_default_na=False)
    assert sorted(csv["image"]) == sorted(flagged["image"])
    assert list(csv.columns) == list(flagged.columns)  # the concepts and causal_checked included
    assert opened.images.set_index("image").loc["img_002", "flagged"]

    reopened = WhaleAudit.open(opened.path)
    assert reopened.flagged()["image"].tolist() == flagged["image"].tolist()
    reopened.unflag("img_002")
    assert set(opened.flagged()["image"]) == {"img_001", first}
    assert opened.review.state("img_002")["note"] == "sea only"
    assert repr(opened).splitlines()[-1] == "2 flagged"

    with pytest.raises(WhaleAuditError, match="1 image\\(s\\) are not in this audit: nope"):
        opened.flag(["img_001", "nope"], "other")
    with pytest.raises(ValueError, match="is not one of"):
        opened.flag(["img_001"], "looks odd")


def test_repr_says_what_the_audit_holds(opened):
    lines = repr(opened).splitlines()
    n = len(opened.audit.images)
    assert lines[0] == f"WhaleAudit('{opened.path}')"
    assert lines[1].startswith(f"{n} photos of 3 species (1 unreadable); accuracy ")
    assert "validation photos" in lines[1] and lines[2].startswith("Model: resnet18, cam head")
    assert lines[3] == "0 flagged"


def test_browsing_an_audit_needs_no_torch(opened):
    code = ("import sys\nfrom whaleaudit import WhaleAudit\n"
            f"audit = WhaleAudit.open({str(opened.path)!r})\n"
            "audit.top_losses(3), audit.top_background(3), audit.species_table(), audit.flagged(), repr(audit)\n"
            "audit.plot_top_losses(3)._repr_png_()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'fastai', 'torchvision')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


# --- the example notebook -----------------------------------------------------------------------------------


def test_the_committed_notebook_has_no_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_the_example_notebook_runs_end_to_end(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("WHALEAUDIT_HOME", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) == 2
    audit = WhaleAudit.open(tmp_path / "audits" / "notebook")
    assert len(audit.images) == 48 and set(audit.images["split"]) == {"train", "valid"}
    assert len(audit.flagged()) == 2
    last = nb.cells[-1].outputs[-1]["data"]["text/plain"]
    assert all(image in last for image in audit.flagged()["image"])
