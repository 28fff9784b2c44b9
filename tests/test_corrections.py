"""The analyst's corrected foregrounds: scored again from the stored maps, shown in the tables and the CSV,
written as a --boxes file that the next audit scores alike; and drawn, saved and kept on the Heatmap page."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _helpers_dashboard import UNREADABLE, make_audit
from _helpers_engine import tiny_dataset, tiny_model
from streamlit.testing.v1 import AppTest

from whaleaudit import views
from whaleaudit.audit.corrections import CORRECTED, with_corrections
from whaleaudit.audit.export import BOX_COLUMNS, boxes_csv, flagged_csv
from whaleaudit.audit.precompute import precompute
from whaleaudit.audit.review import Review
from whaleaudit.audit.store import open_audit
from whaleaudit.cli import main
from whaleaudit.data.dataset import load_dataset
from whaleaudit.explain.foreground import ForegroundProvider, read_boxes
from whaleaudit.notebook import WhaleAudit
from whaleaudit.views.selection import selection_boxes

LEFT_HALF = [(0.0, 0.0, 0.5, 1.0)]


@pytest.fixture
def audit(tmp_path):
    return open_audit(make_audit(tmp_path))


def _row(audit, image):
    return audit.images.loc[audit.images["image"] == image].iloc[0]


def test_a_box_over_the_left_half_scores_as_computed_by_hand(audit):
    """4 x 4 map, a box over the left half of the photo: the two left columns of cells are all animal, the two
    right ones all background, so bg_share is the right columns' share of the positive evidence."""
    image = "img_005"
    row = _row(audit, image)
    review = Review(audit.review_path)
    review.correct(image, LEFT_HALF)
    corrected = with_corrections(audit.images, review.corrections(), audit)
    new = corrected.loc[corrected["image"] == image].iloc[0]
    for cls, suffix in ((row["pred_idx"], ""), (row["label_idx"], "_true")):
        positive = np.clip(audit.cams[row["idx"], cls].astype(np.float64), 0, None)
        assert new[f"bg_share{suffix}"] == pytest.approx(positive[:, 2:].sum() / positive.sum(), abs=1e-9)
    pred_map = audit.cams[row["idx"], row["pred_idx"]].astype(np.float64)
    peak_col = np.unravel_index(pred_map.argmax(), pred_map.shape)[1]
    assert new["peak_on_animal"] == (1.0 if peak_col < 2 else 0.0)
    assert (new["fg_source"], new["fg_area"]) == ("analyst", 0.5)
    assert new["bg_score"] != row["bg_score"] and 0 <= new["bg_score"] <= 1
    untouched = corrected["image"] != image
    pd.testing.assert_frame_equal(corrected[untouched], audit.images[untouched])
    for column in ("prob_without_animal", "cam_entropy", "loss"):  # not the foreground's: kept as measured
        assert new[column] == row[column]


def test_a_cleared_photo_and_an_unreadable_one_have_no_score(audit):
    review = Review(audit.review_path)
    review.clear("img_006")
    review.correct(UNREADABLE, LEFT_HALF)
    review.correct("not_in_this_audit", LEFT_HALF)  # e.g. the audit was rebuilt on other photos
    corrected = with_corrections(audit.images, review.corrections(), audit).set_index("image")
    for image in ("img_006", UNREADABLE):
        assert corrected.loc[image, "fg_source"] == "analyst"
        assert corrected.loc[image, list(CORRECTED[1:])].isna().all()
    assert len(corrected) == len(audit.images)


def test_the_table_pages_share_scores_and_orders_the_corrections(audit):
    """The dashboard's Table: corrections change the scores, the gallery order and the threshold filter, and
    are scored again only when they change."""
    table, review = views.Table(audit.images, audit), Review(audit.review_path)
    _, _, before = table.review_state(review)
    worst = before["image"].iat[table.ranked("background attention", table.readable)[0]]
    review.clear(worst)  # no foreground, no score: it leaves the top of the list
    review.flag([worst], "attention on water")
    _, _, frame = table.review_state(review)
    assert frame.loc[frame["image"] == worst, ["fg_source", "flagged"]].values.tolist() == [["analyst", True]]
    ranked = frame["image"].to_numpy()[table.ranked("background attention", table.readable)]
    assert worst not in ranked[:-5] and ranked[0] != worst
    assert not table.mask(frame, threshold=0.0)[frame["image"] == worst].any()
    with_score = audit.images["bg_score"].notna().sum()
    assert table.histogram["count"].sum() == frame["bg_score"].notna().sum() == with_score - 1
    assert worst not in table.scatter.dropna(subset=["bg_score"])["image"].tolist()
    scored = table._scored
    review.note(worst, "a note changes the flags, not the corrections")
    table.review_state(review)
    assert table._scored is scored
    review.undo_correction(worst)
    _, _, frame = table.review_state(review)
    pd.testing.assert_frame_equal(frame.drop(columns=["flagged", "reason", "note"]), audit.images)


def test_the_flagged_csv_and_the_notebook_show_the_corrected_numbers(audit):
    review = Review(audit.review_path)
    image = "img_007"
    review.flag([image], "attention on ice", "boxed by hand")
    review.correct(image, LEFT_HALF, who="ana")
    expected = with_corrections(audit.images, review.corrections(), audit).set_index("image").loc[image]
    (row,) = csv.DictReader(io.StringIO(flagged_csv(audit, review).decode()))
    assert row["fg_source"] == "analyst" and float(row["bg_score"]) == pytest.approx(expected["bg_score"])
    assert float(row["bg_share"]) == pytest.approx(expected["bg_share"])
    assert (row["reason"], row["note"]) == ("attention on ice", "boxed by hand")
    notebook = WhaleAudit.open(audit.path)
    assert notebook.images.set_index("image").loc[image, "fg_source"] == "analyst"
    flagged = notebook.flagged()
    assert flagged[["image", "fg_source", "reason"]].values.tolist() == [[image, "analyst", "attention on ice"]]
    assert flagged["bg_score"].iat[0] == pytest.approx(expected["bg_score"])


def test_the_score_card_marks_the_causal_numbers_as_measured_with_the_old_foreground(audit):
    review = Review(audit.review_path)
    review.correct("img_008", LEFT_HALF)
    row = with_corrections(audit.images, review.corrections(), audit).set_index("image").loc["img_008"]
    card = views.score_card(row).set_index("measure")["value"]
    assert card["fg_source"] == "analyst"
    assert card["prob_without_animal"] == f"{row['prob_without_animal']:.3f} ({views.OLD_FOREGROUND})"
    assert "(" not in card["bg_score"]


def test_export_boxes_writes_a_boxes_file_that_read_boxes_reads_back(audit, tmp_path, capsys):
    review = Review(audit.review_path)
    review.correct("img_001", [(1 / 3, 0.1, 0.7, 0.9), (0.05, 0.5, 0.2, 0.6)])
    review.correct("img_002", LEFT_HALF)
    review.clear("img_003")
    out = tmp_path / "corrected.csv"
    assert main(["export", str(audit.path), "--boxes", str(out)]) == 0
    assert "1 photo(s) the analyst cleared" in capsys.readouterr().err
    assert out.read_text().splitlines()[0] == ",".join(BOX_COLUMNS)
    boxes, fractions = read_boxes(out)
    assert fractions and boxes == {"img_001": [(1 / 3, 0.1, 0.7, 0.9), (0.05, 0.5, 0.2, 0.6)],
                                   "img_002": LEFT_HALF}
    assert main(["export", str(audit.path), "--boxes", "-"]) == 0
    assert capsys.readouterr().out.encode() == boxes_csv(review)


def test_export_without_out_or_boxes_says_what_it_needs(audit, capsys):
    assert main(["export", str(audit.path)]) == 1
    assert "--out" in capsys.readouterr().err


def test_the_next_audit_given_the_exported_boxes_scores_them_as_the_correction_did(tmp_path):
    """Two routes to one number: the correction scored from the first audit's stored maps, and a second audit of
    the same photos by the same model with the exported boxes as --boxes."""
    dataset = load_dataset(tiny_dataset())
    weights = tiny_model("cam").with_suffix(".pth")
    first = open_audit(precompute(dataset, weights, tmp_path / "auto", workers=0, progress=False, causal=0.0))
    review = Review(first.review_path)
    photos = first.images["image"].iloc[[0, 5, 13]].tolist()
    review.correct(photos[0], [(0.1, 0.2, 0.6, 0.7)])
    review.correct(photos[1], [(0.0, 0.0, 0.3, 0.4), (0.55, 0.5, 1.0, 1.0)])
    review.correct(photos[2], [(0.7, 0.05, 0.95, 0.3)])
    corrected = with_corrections(first.images, review.corrections(), first).set_index("image").loc[photos]
    boxes = tmp_path / "boxes.csv"
    assert main(["export", str(first.path), "--boxes", str(boxes)]) == 0
    provider = ForegroundProvider(dataset.image_root, boxes_csv=boxes)
    second = open_audit(precompute(dataset, weights, tmp_path / "boxed", workers=0, progress=False, causal=0.0,
                                   foreground=provider))
    again = second.images.set_index("image").loc[photos]
    assert (again["fg_source"] == "box").all() and (corrected["fg_source"] == "analyst").all()
    assert (second.images.set_index("image").drop(photos)["fg_source"] != "box").all()
    assert second.spread == pytest.approx(first.spread)
    for column in CORRECTED[1:]:  # maps stored as float16 in the first audit, scored in float32 by the second
        np.testing.assert_allclose(corrected[column].astype(float), again[column].astype(float), atol=2e-3,
                                   err_msg=column)
    assert np.abs(corrected["bg_score"] - first.images.set_index("image").loc[photos, "bg_score"]).max() > 0.01


def _selection(box: list[list[float]]) -> str:
    """The event Streamlit's frontend sends when the user drags boxes on a Plotly chart, in the chart's axes."""
    return json.dumps({"selection": {"points": [], "point_indices": [], "lasso": [],
                                     "box": [{"xref": "x", "yref": "y", "x": [x0, x1], "y": [y0, y1]}
                                             for x0, y0, x1, y1 in box]}})


# --- the Heatmap page ------------------------------------------------------------------------------------------

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"


@pytest.fixture
def served(tmp_path, monkeypatch):
    """The small audit where the dashboard finds it, and the pages' folder importable as ``streamlit run`` has it."""
    store = make_audit(tmp_path)
    monkeypatch.setenv("WHALEAUDIT_AUDITS", str(store.parent))
    monkeypatch.syspath_prepend(str(APP.parent))
    return open_audit(store)


def _heatmap(image: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.query_params["image"] = image
    at.run()
    at.switch_page("pages/heatmap.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _drag(at: AppTest, boxes: list) -> AppTest:
    """Simulate the browser's selection event: Streamlit's frontend sets the chart's widget value to the
    selection, then reruns. AppTest has no Plotly element to set, so the value goes in beside the others'."""
    (chart,) = [e for e in at.main if getattr(e, "type", None) == "plotly_chart" and e.proto.selection_mode]
    states = at._tree.get_widget_states()
    state = states.widgets.add()
    state.id, state.string_value = chart.proto.id, _selection(boxes)
    at._run(states)
    assert not at.exception, [e.value for e in at.exception]
    return at


def _card(at: AppTest) -> pd.Series:
    (card,) = [d.value for d in at.dataframe if "measure" in d.value.columns]
    return card.set_index("measure")["value"]


def test_heatmap_draw_save_see_the_score_change_and_a_new_session_sees_it(served):
    image = "img_009"
    before = _row(served, image)
    at = _heatmap(image)
    assert _card(at)["bg_score"] == f"{before['bg_score']:.3f}" and _card(at)["fg_source"] == "auto"
    assert at.button(key="heatmap_save_boxes").disabled and at.button(key="heatmap_undo").disabled

    photo = views.Overlays(served).photo(int(before["idx"]), 512)  # the photo as the page shows it
    height, width = photo.shape[:2]
    _drag(at, [[width / 2, height, 0, 0]])  # dragged from bottom right to top left: the left half
    assert "1 box(es) drawn, not saved yet." in [c.value for c in at.caption]
    at.button(key="heatmap_save_boxes").click().run()

    saved = Review(served.review_path).correction(image)
    assert saved["boxes"] == LEFT_HALF
    expected = with_corrections(served.images, Review(served.review_path).corrections(), served)
    expected = expected.set_index("image").loc[image]
    card = _card(at)
    assert card["fg_source"] == "analyst" and card["bg_score"] == f"{expected['bg_score']:.3f}" != \
        f"{before['bg_score']:.3f}"
    assert card["prob_without_animal"].endswith(f"({views.OLD_FOREGROUND})")
    assert any("Corrected by" in i.value for i in at.info)
    assert f"bg_score = 1 - on / ideal = **{expected['bg_score']:.3f}**" in "".join(m.value for m in at.markdown)

    again = _heatmap(image)  # another tab, or after a restart: it reads review.sqlite
    assert _card(again)["bg_score"] == f"{expected['bg_score']:.3f}" and _card(again)["fg_source"] == "analyst"
    again.button(key="heatmap_clear").click().run()
    assert Review(served.review_path).correction(image)["boxes"] == []
    assert _card(again)["bg_score"] == "n/a" and any("Cleared by" in i.value for i in again.info)
    again.button(key="heatmap_undo").click().run()
    assert Review(served.review_path).correction(image) is None
    assert _card(again)["bg_score"] == f"{before['bg_score']:.3f}" and _card(again)["fg_source"] == "auto"
    assert Review(served.review_path).correction_history()["action"].tolist() == ["boxes", "clear", "undo"]


def test_a_dragged_box_becomes_fractions_of_the_photo_clipped_to_it():
    selection = {"box": [{"x": [384.0, 128.0], "y": [-10.0, 200.0]}, {"x": [5.0, 5.0], "y": [0.0, 9.0]},
                         {"x": [], "y": []}]}
    assert selection_boxes(selection, 512, 400) == [(0.25, 0.0, 0.75, 0.5)]
    assert selection_boxes({"box": []}, 512, 400) == []
