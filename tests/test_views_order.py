"""The fast orderings of views.py give exactly the order a two-key pandas sort gives: worst first, missing
numbers last, ties by image id, and the top losses of a confusion-matrix cell."""

import numpy as np
import pandas as pd
import pytest

from whaleaudit import views


@pytest.fixture
def frame():
    """Many ties (scores rounded to one decimal), missing scores, unreadable rows, ids in shuffled order."""
    rng = np.random.default_rng(0)
    n = 400
    ok = rng.random(n) > 0.05
    species = rng.choice(["beluga", "killer_whale", "blue_whale"], n)
    prediction = np.where(ok, rng.choice(["beluga", "killer_whale", "blue_whale"], n), "")
    score = rng.random(n).round(1)
    score[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({
        "image": [f"img_{k:04d}" for k in rng.permutation(n)],
        "status": np.where(ok, "ok", "error"), "species": species, "prediction": prediction,
        "bg_score": score, "loss": np.where(ok, rng.random(n).round(1), np.nan), "prob_pred": rng.random(n).round(1),
    }, index=rng.permutation(n) * 3)


@pytest.mark.parametrize("by", list(views.SORTS))
def test_sort_matches_a_two_key_sort_with_ties_by_image_id(frame, by):
    column, worst_high = views.SORTS[by]
    expected = frame.sort_values([column, "image"], ascending=[not worst_high, True], na_position="last",
                                 kind="stable")
    pd.testing.assert_frame_equal(views.sort_images(frame, by), expected)
    assert frame.iloc[views.sort_positions(frame, by)].index.tolist() == expected.index.tolist()


@pytest.mark.parametrize("cell", [(None, None), ("beluga", None), (None, "killer_whale"), ("beluga", "blue_whale")])
def test_loss_positions_are_the_readable_rows_of_the_cell_highest_loss_first(frame, cell):
    actual, predicted = cell
    rows = frame[(frame["status"] == "ok") & frame["loss"].notna()]
    if actual:
        rows = rows[rows["species"] == actual]
    if predicted:
        rows = rows[rows["prediction"] == predicted]
    expected = rows.sort_values(["loss", "image"], ascending=[False, True], kind="stable")
    assert frame.iloc[views.loss_positions(frame, actual, predicted)].index.tolist() == expected.index.tolist()
    pd.testing.assert_frame_equal(views.top_losses(frame, actual, predicted), expected)


def test_a_page_of_positions_is_the_page_of_rows(frame):
    order = views.sort_positions(frame, "loss")
    for number in (1, 3, 99):
        pd.testing.assert_frame_equal(frame.iloc[views.page(order, number, 24)],
                                      views.page(views.sort_images(frame, "loss"), number, 24))


@pytest.mark.parametrize("by", list(views.SORTS))
def test_a_ranked_subset_is_the_sorted_subset(frame, by):
    """A page lists the rows its filters keep in the ordering made once for the whole table."""
    keep = np.random.default_rng(1).random(len(frame)) < 0.3
    table = views.Table(frame)
    pd.testing.assert_frame_equal(frame.iloc[table.ranked(by, keep)], views.sort_images(frame[keep], by))


def test_the_confusion_of_a_subset_is_the_confusion_of_its_rows(frame):
    keep = np.random.default_rng(2).random(len(frame)) < 0.5
    pd.testing.assert_frame_equal(views.Table(frame).confusion(keep), views.confusion(frame[keep]))
    expected = (frame[frame["status"] == "ok"].groupby(["species", "prediction"]).size().unstack(fill_value=0)
                .rename_axis(index="actual", columns="predicted"))
    pd.testing.assert_frame_equal(views.confusion(frame), expected, check_dtype=False)
