"""What the pages list, from :class:`views.Table`'s fast orderings, filters and counts, is what plain pandas gives
(tests/_oracles.py): worst first, missing numbers last, ties by image id; the rows every filter keeps; the top
losses and the confusion matrix of the rows shown."""

import numpy as np
import pandas as pd
import pytest
from _oracles import SORTS, confusion, filter_images, loss_positions, sort_images, top_losses

from whaleaudit import views

SPECIES = ["beluga", "killer_whale", "blue_whale"]


@pytest.fixture
def frame():
    """Many ties (numbers rounded to one decimal), missing scores, unreadable rows, ids in shuffled order, an index
    that is not the row position, and the review's columns as :func:`views.with_flags` adds them."""
    rng = np.random.default_rng(0)
    n = 400
    ok = rng.random(n) > 0.05
    species = rng.choice(SPECIES, n)
    prediction = np.where(ok, rng.choice(SPECIES, n), "")
    score = rng.random(n).round(1)
    score[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({
        "image": [f"img_{k:04d}" for k in rng.permutation(n)],
        "status": np.where(ok, "ok", "error"), "species": species, "prediction": prediction,
        "split": rng.choice(["train", "valid"], n), "correct": ok & (species == prediction),
        "bg_score": score, "loss": np.where(ok, rng.random(n).round(1), np.nan), "prob_pred": rng.random(n).round(1),
        "flagged": rng.random(n) < 0.2,
    }, index=rng.permutation(n) * 3)


def test_the_pages_offer_the_orderings_the_oracle_knows():
    assert list(views.SORTS) == list(SORTS)


@pytest.mark.parametrize("by", list(SORTS))
def test_the_order_matches_a_two_key_sort_with_ties_by_image_id(frame, by):
    expected = sort_images(frame, by)
    assert expected[SORTS[by][0]].duplicated().sum() > 100  # the ties are there to be broken
    table = views.Table(frame)
    pd.testing.assert_frame_equal(frame.iloc[table.order(by)], expected)
    assert frame.iloc[views.sort_positions(frame, by)].index.tolist() == expected.index.tolist()


@pytest.mark.parametrize("by", list(SORTS))
def test_a_ranked_subset_is_the_sorted_subset(frame, by):
    """A page lists the rows its filters keep in the ordering made once for the whole table."""
    keep = np.random.default_rng(1).random(len(frame)) < 0.3
    table = views.Table(frame)
    table.order(by)  # made before the subset is asked for, as on a page's second run
    pd.testing.assert_frame_equal(frame.iloc[table.ranked(by, keep)], sort_images(frame[keep], by))


@pytest.mark.parametrize("cell", [(None, None), ("beluga", None), (None, "killer_whale"), ("beluga", "blue_whale")])
def test_top_losses_are_the_readable_rows_of_the_cell_highest_loss_first(frame, cell):
    actual, predicted = cell
    table = views.Table(frame)
    ranked = table.ranked("loss", table.with_loss(actual, predicted))
    np.testing.assert_array_equal(ranked, loss_positions(frame, actual, predicted))
    expected = top_losses(frame, actual, predicted)
    assert 0 < len(expected) < len(frame)
    pd.testing.assert_frame_equal(frame.iloc[ranked], expected)


def test_a_page_of_positions_is_the_page_of_the_sorted_rows(frame):
    order = views.Table(frame).order("loss")
    expected = sort_images(frame, "loss")
    for number, rows in ((1, slice(0, 24)), (3, slice(48, 72)), (17, slice(384, 400)), (99, slice(384, 400))):
        pd.testing.assert_frame_equal(frame.iloc[views.page(order, number, 24)], expected.iloc[rows])
    assert views.page_count(len(order), 24) == 17  # 400 rows: 16 full pages and 16 rows on the 17th


@pytest.mark.parametrize("filters", [
    {}, {"threshold": 0.5}, {"threshold": 0.0}, {"species": ["beluga", "blue_whale"]}, {"species": []},
    {"correct": True}, {"correct": False}, {"flagged": True}, {"flagged": False}, {"split": "valid"},
    {"threshold": 0.3, "species": ["killer_whale"], "correct": False, "flagged": False, "split": "train"},
], ids=lambda f: ",".join(f) or "none")
def test_the_mask_keeps_what_the_filters_say(frame, filters):
    table = views.Table(frame.drop(columns="flagged"))  # as on a page: the audit's table, the flags joined apart
    pd.testing.assert_frame_equal(frame[table.mask(frame, **filters)], filter_images(frame, **filters))


def test_the_confusion_of_a_subset_is_the_confusion_of_its_rows(frame):
    table = views.Table(frame)
    pd.testing.assert_frame_equal(table.confusion(), confusion(frame))
    keep = np.random.default_rng(2).random(len(frame)) < 0.5
    pd.testing.assert_frame_equal(table.confusion(keep), confusion(frame[keep]))
    beluga = (frame["species"] == "beluga").to_numpy()
    assert list(table.confusion(beluga).index) == ["beluga"]  # species with no row kept are no row of the matrix
    pd.testing.assert_frame_equal(table.confusion(beluga), confusion(frame[beluga]))
