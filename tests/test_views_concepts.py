"""The dashboard's use of the evidence concepts, checked without Streamlit: the concept filter of
:class:`views.Table` against shares worked out from the concept files in the test (tests/_oracles.py), the
classes' average evidence maps against the evidence file, how a class map is drawn, and the words that say
why a concept is where it is in its species' order."""

import io

import numpy as np
import pandas as pd
import pytest
from _helpers_dashboard import CLASSES, make_audit
from _oracles import concept_share, filter_images
from matplotlib import colormaps
from PIL import Image

from whaleaudit import views
from whaleaudit.audit.concepts import CONCEPTS_INFO, class_heats, write_concepts
from whaleaudit.audit.review import Review
from whaleaudit.audit.store import open_audit
from whaleaudit.views import concepts as concept_views


@pytest.fixture
def audit(tmp_path):
    return open_audit(make_audit(tmp_path, concepts=True))


@pytest.fixture
def frame(audit):
    review = Review(audit.review_path)
    review.flag(audit.images["image"].iloc[[0, 4, 8, 9]].tolist(), "attention on ice")
    return views.with_flags(audit.images, review.flags())


def stored(audit):
    """The concept files as written, read with numpy and pandas alone."""
    return np.load(audit.path / "concept_evidence.npy"), pd.read_parquet(audit.path / "concepts.parquet")


def test_the_concept_filter_keeps_the_photos_where_the_concept_holds_that_share(audit, frame):
    table = views.Table(audit.images, audit)
    evidence, concepts = stored(audit)
    assert len(concepts) >= 2 * len(CLASSES)   # the helper's two halves of the frame: two concepts per class
    narrowed = 0
    for concept in concepts.itertuples():
        share = concept_share(evidence, audit.images["pred_idx"], concept.class_idx, concept.rank)
        assert (share[audit.images["pred_idx"] != concept.class_idx] == 0).all()
        for at_least in (0.05, 0.3, 0.55, 0.8):
            kept = frame[table.mask(frame, concept=(concept.class_idx, concept.rank, at_least))]
            expected = frame[share >= at_least]
            assert kept["image"].tolist() == expected["image"].tolist(), (concept.species, concept.rank, at_least)
            assert (kept["pred_idx"] == concept.class_idx).all()
            narrowed += 0 < len(kept) < (audit.images["pred_idx"] == concept.class_idx).sum()
    assert narrowed >= len(concepts)   # the thresholds split the photos of the class, not all or none


def test_the_concept_filter_combines_with_the_others(audit, frame):
    table = views.Table(audit.images, audit)
    evidence, concepts = stored(audit)
    first = concepts.iloc[0]
    for filters in ({"species": ["beluga", "killer_whale"]}, {"correct": False}, {"flagged": True},
                    {"threshold": 0.3, "split": "train"}):
        concept = (int(first["class_idx"]), int(first["rank"]), 0.3)
        kept = frame[table.mask(frame, concept=concept, **filters)]
        pd.testing.assert_frame_equal(kept, filter_images(frame, concept=concept, concept_evidence=evidence, **filters))


def test_the_table_reads_the_concepts_again_when_they_are_recomputed(audit, frame):
    table = views.Table(audit.images, audit)
    first = table.concepts()
    assert first is not None and table.concepts() is first and table.concepts_stamp is not None
    (audit.path / CONCEPTS_INFO).unlink()   # a recomputation under way removes it first
    assert table.concepts() is None and table.concepts_stamp is None
    with pytest.raises(ValueError, match="no evidence concepts to filter by"):
        table.mask(frame, concept=(0, 0, 0.5))
    write_concepts(audit)
    again = table.concepts()
    assert again is not None and again is not first
    pd.testing.assert_frame_equal(again.table, first.table)


def test_an_audit_without_concepts_has_none(tmp_path):
    audit = open_audit(make_audit(tmp_path))
    table = views.Table(audit.images, audit)
    assert table.concepts() is None and views.Table(audit.images).concepts() is None


def test_the_order_factors_are_worded_from_the_concepts_table(audit):
    """A concept's factors, rounded as an analyst reads them, and the place they give it: written out here from
    the stored table's numbers (and from known numbers first, with concepts of before the third factor); the
    place is the one their product gives."""
    assert concept_views.order_factors(2.345, 0.6449, 0.254, 0, 6) == (
        "#1 of 6 by unusualness = looks unlike the rest: 2.3x × sits apart: 64% of its evidence is where the "
        "class's is not × concentrated: 25% of a photo where it is")
    assert concept_views.order_factors(2.345, 0.6449, np.nan, 0, 6) == (
        "#1 of 6 by unusualness = looks unlike the rest: 2.3x × sits apart: 64% of its evidence is where the "
        "class's is not")
    _, concepts = stored(audit)
    assert concept_views.ranked_by_unusualness(concepts)
    for species, rows in concepts.groupby("species", sort=False):
        product = rows["distinctiveness"] * rows["displacement"] * rows["concentration"]
        assert rows["rank"].tolist() == list(range(len(rows))) and product.is_monotonic_decreasing, species
        for row in rows.itertuples():
            d, moved, c = round(row.distinctiveness, 1), round(100 * row.displacement), round(100 * row.concentration)
            assert concept_views.order_factors(row.distinctiveness, row.displacement, row.concentration, row.rank,
                                               len(rows)) == (
                f"#{row.rank + 1} of {len(rows)} by unusualness = looks unlike the rest: {d}x × sits apart: "
                f"{moved}% of its evidence is where the class's is not × concentrated: {c}% of a photo where it is")
    assert not concept_views.ranked_by_unusualness(concepts.drop(columns=["distinctiveness", "displacement"]))


@pytest.mark.parametrize("block", [5, 65536])
def test_the_class_maps_add_up_each_class_evidence_where_it_lies(audit, block):
    evidence = np.load(audit.path / "evidence.npy").astype(np.float64)
    images = pd.read_parquet(audit.path / "images.parquet")
    heats = class_heats(audit, block=block)
    assert heats.shape == (len(CLASSES), 8, 8) and heats.dtype == np.float32
    for class_idx in range(len(CLASSES)):
        rows = ((images["status"] == "ok") & (images["pred_idx"] == class_idx)).to_numpy()
        total = np.clip(evidence[rows, 0], 0, None).sum(axis=0)
        np.testing.assert_allclose(heats[class_idx], total / total.sum(), rtol=1e-5)
    assert not np.allclose(heats[0], heats[1])


def _pixels(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float64)


def test_a_class_map_is_drawn_on_one_scale_on_a_neutral_frame():
    """Cells at their even share (1/64) read a third of the way up the colormap, cells at three times it its top,
    whatever the rest of the map holds, both blended with the grey frame at the map's opacity; no evidence reads
    as the colormap's bottom."""
    heat = np.full((8, 8), 1 / 64)
    heat[:, 4:] = 3 / 64
    lone = np.zeros((8, 8))
    lone[:, :4] = 1 / 64
    for name in ("turbo", "magma"):
        lut = colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255
        blend = lambda level, lut=lut: 0.15 * 128 + 0.85 * lut[round(level * 255)]  # noqa: E731
        image = _pixels(views.heat_jpeg(heat, 96, name))
        assert image.shape == (96, 96, 3)
        np.testing.assert_allclose(image[40:56, 4:36].mean(axis=(0, 1)), blend(1 / 3), atol=6)
        np.testing.assert_allclose(image[40:56, 60:92].mean(axis=(0, 1)), blend(1.0), atol=6)
        alone = _pixels(views.heat_jpeg(lone, 96, name))   # the same cells, the rest empty: the same colour
        np.testing.assert_allclose(alone[40:56, 4:36].mean(axis=(0, 1)), blend(1 / 3), atol=6)
        np.testing.assert_allclose(alone[40:56, 60:92].mean(axis=(0, 1)), blend(0.0), atol=6)


def test_a_concepts_list_starts_at_most_of_the_evidence_or_as_high_as_lists_a_photo():
    """Made-up shares of six photos' evidence: the list starts at 0.5 where a photo reaches it (exactly, too), else
    at the largest of 0.25, 0.1 and 0.05 a photo reaches, else at 0; the list at that start holds the photos at or
    above it, never none while the concept has a photo."""
    images = pd.DataFrame({"image": [f"img_{i}" for i in range(6)]})
    keep = np.ones(6, bool)
    cases = {(0, .62, .12, 0, .5, .31): 0.5, (0, .12, .31, .07, 0, .2): 0.25, (0, 0, .5, 0, 0, 0): 0.5,
             (.06, .09, 0, 0, 0, 0): 0.05, (0, .03, .01, 0, 0, 0): 0.0, (0, 0, 0, 0, 0, 0): 0.0,
             (.11, .24, 0, 0, 0, .1): 0.1}
    for shares, expected in cases.items():
        share = np.array(shares, np.float32)
        start = concept_views.starting_share(share)
        assert start == expected, shares
        listed = concept_views.concept_photos(share, images, keep, start)
        assert set(listed) == {i for i, s in enumerate(shares) if s > 0 and s >= expected}, shares
        assert len(listed) or not any(shares)
