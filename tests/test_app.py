"""Every dashboard page through Streamlit's AppTest, on a small audit the tests build: widgets change what
is shown, flags set in the UI land in SQLite and in the CSV, and bad input gives a message, not a traceback.

The lists the pages show are checked against pandas' own sorting and filtering of the image table, not
against the ``views`` functions the pages call."""

import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _helpers_dashboard import CLASSES, UNREADABLE, VANISHED, make_audit
from _oracles import concept_share, sort_images, top_losses
from streamlit.testing.v1 import AppTest

from whaleaudit import views
from whaleaudit.audit.export import flagged_csv
from whaleaudit.audit.review import Review
from whaleaudit.audit.store import open_audit

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"
PAGES = ["species", "top_losses", "heatmap", "review"]
IMAGE_ID = re.compile(r"\*\*(img_\w+)\*\*")


@pytest.fixture(autouse=True)
def _app_folder_importable(monkeypatch):
    """The pages import the frame beside the entrypoint, on ``sys.path`` as ``streamlit run`` puts it."""
    monkeypatch.syspath_prepend(str(APP.parent))


@pytest.fixture
def audit(tmp_path, monkeypatch):
    store = make_audit(tmp_path)
    monkeypatch.setenv("WHALEAUDIT_AUDITS", str(store.parent))
    return open_audit(store)


def start(page: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.query_params.update(query)
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    return ok(at)


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def frame_of(audit):
    return views.with_flags(audit.images, Review(audit.review_path).flags())


def shown_ids(at: AppTest, elements) -> list[str]:
    return [m for e in elements for m in IMAGE_ID.findall(e.value)]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.mark.parametrize("page", PAGES)
def test_a_page_run_first_draws_its_frame(audit, page):
    """A deep link: the first run of a new session is the page itself, with nothing run before it."""
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.query_params.update(audit="small", image="img_005")
    at.switch_page(f"pages/{page}.py").run()
    ok(at)
    assert at.sidebar.selectbox(key="audit").value == "small"
    assert at.sidebar.slider(key="threshold@small") and at.sidebar.radio(key="flagged@small")
    links = [e.proto.label for e in at.sidebar.get("page_link")]
    assert links == ["Overview", "Species", "Concepts", "Top losses", "Heatmap", "Review & export"]
    assert at.query_params["audit"] == "small"


def test_the_filters_and_the_audit_hold_from_page_to_page(tmp_path, monkeypatch):
    """Set on the Overview, the audit, a filter and the colormap are what every other page shows in its first
    run, and come back to the Overview."""
    for name in ("alpha", "beta"):
        store = make_audit(tmp_path, name=name, seed=len(name) + (name == "beta"))
    monkeypatch.setenv("WHALEAUDIT_AUDITS", str(store.parent))
    frame = frame_of(open_audit(store))  # beta
    wrong = frame[(frame["status"] == "ok") & ~frame["correct"]]
    first_species = sorted(frame["species"].unique())[0]
    expected = {"species": (r"^(\d+) of \d+ images of", (wrong["species"] == first_species).sum()),
                "top_losses": (r"^(\d+) of \d+ images", wrong["loss"].notna().sum()),
                "heatmap": (r"of (\d+) in the current list", len(wrong)),
                "review": (r"^(\d+) of \d+ images", len(wrong))}
    at = start()
    at.sidebar.selectbox(key="audit").set_value("beta").run()
    at.sidebar.slider(key="threshold@beta").set_value(0.4)
    at.sidebar.radio(key="correct@beta").set_value("wrong")
    at.sidebar.selectbox(key="colormap").set_value("magma").run()
    for page in [*PAGES, "../streamlit_app"]:
        at.switch_page(f"pages/{page}.py").run()
        ok(at)
        assert (at.sidebar.selectbox(key="audit").value, at.sidebar.slider(key="threshold@beta").value,
                at.sidebar.radio(key="correct@beta").value, at.sidebar.selectbox(key="colormap").value) == (
            "beta", 0.4, "wrong", "magma"), page
        assert at.query_params["audit"] == "beta"
        if page in expected:  # what the page's first run drew: the list of the wrong predictions
            pattern, count = expected[page]
            shown = [int(m.group(1)) for c in at.caption if (m := re.search(pattern, c.value))]
            assert shown == [count], (page, [c.value for c in at.caption])
    assert metric(at, "At or above threshold") == str((frame["bg_score"] >= 0.4).sum())


def test_overview_shows_the_audit_and_the_threshold_moves_the_counts(audit):
    at = start()
    assert at.title[0].value == "Overview · small"
    assert (metric(at, "Images"), metric(at, "Species")) == ("36", "3")
    frame = frame_of(audit)
    held_out = frame[(frame["split"] == "valid") & (frame["status"] == "ok")]
    assert metric(at, "Validation accuracy") == f"{held_out['correct'].mean():.1%}"
    assert ("Model: resnet18, cam head, 128 px input, trained from random weights. Maps: exact CAM at the body's "
            "output (layer4), 4 x 4 cells per photo.") in [c.value for c in at.caption]
    at.slider(key="threshold@small").set_value(0.5).run()
    ok(at)
    assert metric(at, "At or above threshold") == str((frame["bg_score"] >= 0.5).sum())
    table = at.dataframe[0].value
    above = (frame["bg_score"] >= 0.5).groupby(frame["species"]).sum()   # counted here, not by the page's function
    assert dict(zip(table["species"], table["above threshold"])) == above.to_dict()


def test_choosing_a_species_opens_its_gallery(audit):
    at = start()
    at.selectbox(key="overview_species").set_value("killer_whale")
    at.button(key="open_species").click().run()
    ok(at)
    assert at.selectbox(key="species_focus").value == "killer_whale"
    rows = sort_images(frame_of(audit).query("species == 'killer_whale'"), "background attention")
    assert shown_ids(at, at.caption) == rows["image"].tolist()[:12]


def test_gallery_sorts_restyles_and_reports_a_vanished_photo(audit):
    species = audit.images.set_index("image").loc[VANISHED, "species"]
    at = start("species")
    at.selectbox(key="species_focus").set_value(species).run()
    at.selectbox(key="species_sort").set_value("confidence").run()
    ok(at)
    rows = sort_images(frame_of(audit).query("species == @species"), "confidence")
    assert shown_ids(at, at.caption) == rows["image"].tolist()[:12]
    assert any(VANISHED in w.value for w in at.warning)  # the vanished photo gets a message in its place
    before = [url for i in at.image for url in i.value]
    at.sidebar.selectbox(key="colormap").set_value("magma").run()
    after = [url for i in ok(at).image for url in i.value]
    assert len(after) == len(before) == 11 and set(after).isdisjoint(before)
    at.selectbox(key="species_per_page").set_value(24).run()
    assert len(shown_ids(ok(at), at.caption)) == 12  # a species has 12 images in the small audit

    gallery = shown_ids(at, at.caption)
    at.button(key=f"open_{gallery[0]}").click().run()
    assert ok(at).title[0].value == gallery[0] and at.query_params["image"] == gallery[0]
    at.switch_page("pages/heatmap.py")  # AppTest would rerun the page start() switched to, a browser stays
    at.button(key="heatmap_next").click().run()  # previous/next walk the gallery's order
    assert ok(at).title[0].value == gallery[1]


def test_heatmap_explains_the_score_of_a_finer_layer3_map(tmp_path, monkeypatch):
    store = make_audit(tmp_path, cam_shape=(8, 8))
    monkeypatch.setenv("WHALEAUDIT_AUDITS", str(store.parent))
    at = start("heatmap", image="img_005")
    audit = open_audit(store)
    parts = views.explain_score(audit.cam(5, int(audit.images["pred_idx"][5])), audit.mask(5),
                                audit.spread)  # img_005's map
    assert parts["evidence"].shape == (8, 8) and audit.spread == 1.3
    assert any("each of the map's 64 cells" in m.value and f"**{parts['bg_score']:.3f}**" in m.value
               and "reaches about 1.30 cells beyond where it comes from" in m.value for m in at.markdown)


def test_top_losses_worst_first_and_filtered_by_a_confusion_cell(audit):
    at = start("top_losses")
    frame = frame_of(audit)
    assert shown_ids(at, at.markdown) == top_losses(frame)["image"].tolist()[:10]
    at.selectbox(key="loss_actual").set_value("beluga")
    at.selectbox(key="loss_predicted").set_value("killer_whale").run()
    ok(at)
    expected = top_losses(frame, "beluga", "killer_whale")["image"].tolist()
    assert shown_ids(at, at.markdown) == expected[:10] and expected


def test_heatmap_from_a_shared_link_walks_the_list_and_flags(audit):
    at = start("heatmap", image="img_005")
    assert at.title[0].value == "img_005" and at.query_params["image"] == "img_005"
    at.radio(key="heatmap_which").set_value("another class").run()
    at.selectbox(key="heatmap_class").set_value("beluga").run()
    assert [c for i in ok(at).image for c in i.captions][0].startswith("map for beluga")

    listed = sort_images(frame_of(audit), "background attention")["image"].tolist()
    at.button(key="heatmap_next").click().run()
    current = listed[listed.index("img_005") + 1]
    assert ok(at).title[0].value == current and at.query_params["image"] == current

    at.selectbox(key=f"reason@{current}").set_value("attention on another object")
    at.text_input(key=f"note@{current}").set_value("a boat")
    at.button(key="heatmap_flag").click().run()
    state = Review(audit.review_path).state(current)
    assert (state["flagged"], state["reason"], state["note"]) == (True, "attention on another object", "a boat")
    assert "Flagged: attention on another object" in ok(at).success[0].value
    at.button(key="heatmap_unflag").click().run()
    assert not Review(audit.review_path).state(current)["flagged"]


def test_heatmap_explains_unknown_vanished_and_unreadable_images(audit):
    at = start("heatmap", image="no_such_image")
    assert "not in the audit" in at.warning[0].value
    at.text_input(key="heatmap_goto").input(VANISHED).run()
    assert ok(at).title[0].value == VANISHED and any("Cannot show" in w.value for w in at.warning)
    at.text_input(key="heatmap_goto").input(UNREADABLE).run()
    assert any("could not be read" in e.value for e in ok(at).error)


def test_review_threshold_filter_flags_all_matching_and_exports_them_neutralised(audit):
    at = start("review")
    at.sidebar.toggle(key="above@small").set_value(True)
    at.sidebar.slider(key="threshold@small").set_value(0.6).run()
    frame = frame_of(audit)
    expected = sort_images(frame[frame["bg_score"] >= 0.6], "background attention")
    assert ok(at).dataframe[0].value["image"].tolist() == expected["image"].tolist()

    at.radio(key="review_target").set_value("all matching images")
    at.selectbox(key="review_reason").set_value("attention on water")
    at.text_input(key="review_note").set_value("=HYPERLINK(\"http://evil\")")
    at.button(key="review_flag").click().run()
    ok(at)
    flags = Review(audit.review_path).flags()
    assert sorted(flags["image"]) == sorted(expected["image"]) and set(flags["reason"]) == {"attention on water"}
    rows = list(csv.DictReader(io.StringIO(flagged_csv(audit, Review(audit.review_path)).decode())))
    assert sorted(r["image"] for r in rows) == sorted(expected["image"])
    assert {r["note"] for r in rows} == {"'=HYPERLINK(\"http://evil\")"}
    assert at.download_button[0].label.startswith(f"Download the flagged list ({len(expected)} images")

    at.sidebar.radio(key="flagged@small").set_value("not flagged").run()
    assert "No image matches" in ok(at).info[0].value


def test_review_lists_only_the_held_out_photos_when_asked(audit):
    at = start("review")
    at.sidebar.radio(key="split@small").set_value("validation").run()
    frame = frame_of(audit)
    expected = sort_images(frame[frame["split"] == "valid"], "background attention")
    assert ok(at).dataframe[0].value["image"].tolist() == expected["image"].tolist()
    assert 0 < len(expected) < len(audit.images)


def test_review_flags_the_selected_rows_only(audit):
    at = start("review")
    table = at.dataframe[0].value
    at.session_state["review_table@0"] = {"selection": {"rows": [0, 2], "columns": [], "cells": []}}
    at.run()
    at.button(key="review_flag").click().run()
    assert sorted(Review(audit.review_path).flags()["image"]) == sorted(table["image"].iloc[[0, 2]])
    assert ok(at).success[0].value.startswith("Flagged 2 images")


def test_the_review_table_pages_through_a_long_list(tmp_path, monkeypatch):
    """The browser gets a page of rows at a time; selecting and flagging work on the page shown."""
    store = make_audit(tmp_path, n=1030)
    monkeypatch.setenv("WHALEAUDIT_AUDITS", str(store.parent))
    listed = sort_images(open_audit(store).images, "background attention")["image"].tolist()
    at = start("review")
    assert at.dataframe[0].value["image"].tolist() == listed[:1000]
    assert any(c.value.startswith("Rows 1 to 1,000 of 1,030") for c in at.caption)
    at.session_state["review_page"] = 2
    at.run()
    assert ok(at).dataframe[0].value["image"].tolist() == listed[1000:]
    at.session_state["review_table@0"] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    at.button(key="review_flag").click().run()
    assert Review(store / "review.sqlite").flags()["image"].tolist() == [listed[1001]]


def test_a_flag_saved_elsewhere_shows_on_the_next_run(audit):
    """What the pages derive from the flags is kept per review state: another tab's flag invalidates it."""
    at = start()
    assert metric(at, "Flagged") == "0"
    Review(audit.review_path).flag(["img_003"], "other")
    at.run()
    assert metric(ok(at), "Flagged") == "1"
    at.switch_page("pages/review.py").run()
    assert ok(at).download_button[0].label.startswith("Download the flagged list (1 image,")


def test_a_corrupt_audit_is_a_message_not_a_traceback(tmp_path, monkeypatch):
    broken = tmp_path / "audits" / "broken"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{not json")
    monkeypatch.setenv("WHALEAUDIT_AUDITS", str(broken.parent))
    for page in (None, *PAGES):
        at = start(page)
        assert "manifest.json: unreadable" in at.error[0].value


def test_the_audit_picker_and_a_shared_link_choose_the_audit(tmp_path, monkeypatch):
    for name in ("alpha", "beta"):
        store = make_audit(tmp_path, name=name)
    monkeypatch.setenv("WHALEAUDIT_AUDITS", str(store.parent))
    assert start(audit="beta").title[0].value == "Overview · beta"
    at = start()
    assert at.title[0].value == "Overview · alpha" and at.query_params["audit"] == "alpha"
    at.sidebar.selectbox(key="audit").set_value("beta").run()
    assert ok(at).title[0].value == "Overview · beta" and at.query_params["audit"] == "beta"


def test_the_pages_never_import_torch_or_fastai(audit):
    """The dashboard starts fast: browsing an audit needs the store, never the model code."""
    code = f"""
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(APP)!r}, default_timeout=60).run()
for page in {PAGES!r}:
    at.switch_page(f"pages/{{page}}.py").run()
    assert not at.exception, at.exception
print(sorted(m for m in ("torch", "fastai", "torchvision") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(APP.parent)))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("page", PAGES)
def test_an_empty_filter_result_is_a_message(audit, page):
    at = start()
    at.sidebar.radio(key="flagged@small").set_value("flagged").run()  # nothing is flagged yet
    at.switch_page(f"pages/{page}.py").run()
    assert "No image" in ok(at).info[0].value


def test_the_heatmap_keeps_its_image_when_the_list_empties(audit):
    at = start("heatmap", image="img_007")
    at.sidebar.radio(key="flagged@small").set_value("flagged").run()
    assert ok(at).title[0].value == "img_007" and "not in the current list" in at.caption[0].value


@pytest.fixture
def concepts_audit(tmp_path, monkeypatch):
    """The small audit with its evidence maps and evidence concepts."""
    store = make_audit(tmp_path, concepts=True)
    monkeypatch.setenv("WHALEAUDIT_AUDITS", str(store.parent))
    return open_audit(store)


def test_overview_and_species_show_each_species_average_evidence_map(concepts_audit):
    audit = concepts_audit
    evidence = np.load(audit.path / "evidence.npy").astype(np.float64)
    images = pd.read_parquet(audit.path / "images.parquet")
    readable = (images["status"] == "ok").to_numpy()
    with_evidence = {species for c, species in enumerate(CLASSES)
                     if np.clip(evidence[readable & (images["pred_idx"] == c).to_numpy(), 0], 0, None).sum() > 0}
    counts = images["species"].value_counts()
    in_table_order = sorted(with_evidence, key=lambda s: (-counts[s], s))   # the species table's order
    at = start()
    assert "Where the evidence comes from" in [s.value for s in at.subheader]
    (maps,) = at.image
    assert maps.captions == in_table_order == sorted(CLASSES) and len(set(maps.value)) == len(CLASSES)
    at.sidebar.selectbox(key="colormap").set_value("magma").run()
    assert set(ok(at).image[0].value).isdisjoint(maps.value)   # drawn in the sidebar's colormap

    at.switch_page("pages/species.py").run()
    seen = {}
    for species in ("killer_whale", "beluga"):
        at.selectbox(key="species_focus").set_value(species).run()
        photos = len(shown_ids(ok(at), at.caption)) - any(VANISHED in w.value for w in at.warning)
        assert len(at.image) == photos + 1   # its map, then the photos that can be shown
        assert "Its average evidence map, over the photos predicted as it" in [c.value for c in at.caption]
        seen[species] = at.image[0].value
    assert seen["killer_whale"] != seen["beluga"]


def test_without_concepts_neither_the_class_maps_nor_the_concept_filter_show(audit):
    at = start()
    assert "Where the evidence comes from" not in [s.value for s in at.subheader] and not at.image
    assert "concept@small" not in {w.key for w in at.sidebar.selectbox}
    at.switch_page("pages/species.py").run()
    at.selectbox(key="species_focus").set_value("beluga").run()
    assert len(ok(at).image) == len(shown_ids(at, at.caption)) == 12   # the photos alone
    assert "Its average evidence map, over the photos predicted as it" not in [c.value for c in at.caption]


def test_the_concept_filter_narrows_the_lists_of_every_page(concepts_audit):
    audit = concepts_audit
    evidence = np.load(audit.path / "concept_evidence.npy")
    class_idx = CLASSES.index("killer_whale")
    share = concept_share(evidence, audit.images["pred_idx"], class_idx, 0)
    frame = frame_of(audit)
    kept = frame[share >= 0.5]
    assert 0 < len(kept) < (frame["pred_idx"] == class_idx).sum()

    at = start()
    at.sidebar.selectbox(key="concept@small").set_value("killer_whale #1").run()
    assert ok(at).sidebar.slider(key="concept_share@small").value == 0.25   # where a chosen concept starts
    at.sidebar.slider(key="concept_share@small").set_value(0.5).run()
    at.switch_page("pages/review.py").run()
    assert ok(at).dataframe[0].value["image"].tolist() == sort_images(kept, "background attention")["image"].tolist()
    assert f"{len(kept)} of 36 images match the filters." in [c.value for c in at.caption]
    at.switch_page("pages/species.py").run()
    at.selectbox(key="species_focus").set_value("killer_whale").run()
    expected = sort_images(kept[kept["species"] == "killer_whale"], "background attention")["image"].tolist()
    assert shown_ids(ok(at), at.caption) == expected
    at.switch_page("pages/top_losses.py").run()
    assert shown_ids(ok(at), at.markdown) == top_losses(kept)["image"].tolist()[:10]
    at.sidebar.selectbox(key="concept@small").set_value("any").run()
    at.switch_page("pages/review.py").run()
    assert len(ok(at).dataframe[0].value) == 36


def test_damaged_concept_files_leave_the_filter_out_with_a_warning(concepts_audit):
    (concepts_audit.path / "concept_evidence.npy").write_bytes(b"not an array")
    at = start()
    assert any("Evidence concepts left out" in w.value and "python -m whaleaudit concepts" in w.value
               for w in at.sidebar.warning)
    assert "concept@small" not in {w.key for w in at.sidebar.selectbox}
    assert len(at.image[0].value) == len(CLASSES)   # the class maps come from the evidence, which is intact
    at.switch_page("pages/review.py").run()
    assert len(ok(at).dataframe[0].value) == 36
