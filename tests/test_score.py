"""Background-attention score: fair to map resolution and animal size, NaN where it cannot be known."""

import numpy as np
import pytest

from whaleaudit.explain.foreground import MASK_SIZE
from whaleaudit.explain.score import attention_scores, cell_coverage


def _mask(y0, y1, x0, x1):
    m = np.zeros((MASK_SIZE, MASK_SIZE), bool)
    m[y0:y1, x0:x1] = True
    return m


def _scores(cams, masks, has_mask=None):
    cams, masks = np.asarray(cams, np.float32), np.asarray(masks)
    return attention_scores(cams, masks, np.ones(len(cams), bool) if has_mask is None else np.asarray(has_mask))


def test_coverage_is_the_area_average_of_the_mask_per_cell():
    fin = _mask(20, 24, 40, 44)                     # 16 mask pixels inside one 16x16 cell of a 4x4 map
    cover = cell_coverage(fin[None], (4, 4))[0]
    assert cover[1, 2] == pytest.approx(16 / 256) and cover.sum() == pytest.approx(16 / 256)
    for shape in [(7, 7), (5, 3), (1, 1), (64, 64), (128, 128)]:   # cells that do not divide the mask
        cover = cell_coverage(fin[None], shape)[0]
        assert cover.shape == shape
        assert cover.mean() == pytest.approx(fin.mean())         # area is preserved
    assert cell_coverage(fin[None], (64, 64))[0] == pytest.approx(fin.astype(float))


def test_maps_from_the_true_mask_score_zero_for_small_and_large_animals_alike():
    small, large = _mask(20, 24, 40, 44), _mask(16, 64, 0, 48)
    masks = np.stack([small, large])
    cams = cell_coverage(masks, (4, 4))             # a model that looks only at the animal, cell by cell
    s = _scores(cams, masks)
    assert s["bg_score"] == pytest.approx([0, 0], abs=1e-9)
    assert s["bg_share"][0] > 0.9 and s["bg_share"][1] == pytest.approx(0, abs=1e-9)   # the plain share is unfair
    assert (s["peak_on_animal"] == 1).all()


def test_evidence_far_from_the_animal_scores_one_and_a_mixture_scores_between():
    fin = _mask(4, 8, 4, 8)                          # in the top-left cell
    on_fin = np.zeros((4, 4)); on_fin[0, 0] = 1
    far = np.zeros((4, 4)); far[3, 3] = far[3, 2] = far[2, 3] = 1
    half = on_fin + far / 3
    negative_on_fin = far.copy(); negative_on_fin[0, 0] = -50     # raw maps: only positive evidence counts
    s = _scores([on_fin, far, half, negative_on_fin], [fin] * 4)
    assert s["bg_score"][0] == 0 and s["bg_score"][1] > 0.97 and s["bg_score"][3] == s["bg_score"][1]
    assert 0.1 < s["bg_score"][2] < 0.6
    assert s["bg_share"] == pytest.approx([1 - 16 / 256, 1, 1 - 8 / 256, 1])
    assert list(s["peak_on_animal"]) == [1, 0, 1, 0]


def test_evidence_next_to_the_animal_counts_less_than_evidence_far_away():
    fin = _mask(20, 24, 20, 24)                       # cell (1, 1)
    near = np.zeros((4, 4)); near[1, 2] = 1
    far = np.zeros((4, 4)); far[3, 3] = 1
    s = _scores([near, far], [fin, fin])
    assert 0 < s["bg_score"][0] < s["bg_score"][1]
    assert s["bg_share"][0] == s["bg_share"][1] == 1


def test_the_softening_is_as_wide_as_the_maps_spread():
    """A network that spreads evidence less has its evidence beside the animal counted as off it sooner."""
    fin = _mask(20, 24, 20, 24)                       # cell (1, 1)
    beside = np.zeros((4, 4)); beside[1, 2] = 1
    cams, masks, has = np.stack([beside]), np.stack([fin]), np.ones(1, bool)
    by_spread = [attention_scores(cams, masks, has, spread)["bg_score"][0] for spread in (0.5, 1.0, 1.5)]
    assert by_spread[0] > 0.5 and by_spread[0] > by_spread[1] > by_spread[2]
    assert attention_scores(cams, masks, has)["bg_score"][0] == by_spread[1]    # one cell unless measured


def test_score_does_not_depend_on_the_maps_scale_and_a_floor_of_evidence_raises_it():
    fin = _mask(14, 18, 30, 36)                       # straddles four cells
    cams = cell_coverage(fin[None], (4, 4))
    s = _scores(np.concatenate([cams, 1000 * cams, cams + cams.max()]), [fin] * 3)
    assert s["bg_score"][0] == s["bg_score"][1] == 0
    assert s["bg_score"][2] > 0.1


def test_nan_where_there_is_no_mask_no_animal_or_no_positive_evidence():
    fin = _mask(20, 24, 40, 44)
    empty = np.zeros_like(fin)
    cam = np.random.default_rng(0).random((4, 4))
    s = _scores([cam, cam, -cam, np.zeros((4, 4))], [fin, empty, fin, fin], has_mask=[False, True, True, True])
    for key in ("bg_share", "bg_score"):
        assert np.isnan(s[key]).all()
    assert np.isnan(s["peak_on_animal"][:2]).all() and s["peak_on_animal"][2] == 0
    assert np.isfinite(s["cam_entropy"][:2]).all() and np.isnan(s["cam_entropy"][2:]).all()  # entropy needs no mask


def test_entropy_runs_from_one_cell_to_uniform():
    fin = _mask(20, 24, 40, 44)
    one = np.zeros((4, 4)); one[0, 0] = 3
    s = _scores([one, np.ones((4, 4)), np.ones((8, 8))[:4, :4]], [fin] * 3)
    assert s["cam_entropy"] == pytest.approx([0, 1, 1])


def test_batch_equals_one_by_one_for_any_map_size():
    rng = np.random.default_rng(1)
    masks = rng.random((6, MASK_SIZE, MASK_SIZE)) > 0.7
    for shape in [(4, 4), (8, 8), (3, 5)]:
        cams = rng.normal(size=(6,) + shape).astype(np.float32)
        batch = _scores(cams, masks)
        for i in range(6):
            single = _scores(cams[i:i + 1], masks[i:i + 1])
            for key, values in batch.items():
                assert values[i] == pytest.approx(single[key][0], nan_ok=True)


def test_several_classes_per_image_score_as_each_class_alone():
    """The precompute scores the predicted and the labelled class in one call; each must equal its own call."""
    rng = np.random.default_rng(5)
    masks = np.stack([_mask(20, 24, 40, 44), _mask(16, 64, 0, 48), _mask(0, 0, 0, 0)])
    cams = rng.normal(size=(3, 2, 4, 4))
    cams[1, 1] = -1.0                                # no positive evidence: NaN, as alone
    has_mask = np.array([True, True, False])
    both = attention_scores(cams, masks, has_mask)
    for k in range(2):
        alone = attention_scores(cams[:, k], masks, has_mask)
        for name, values in alone.items():
            np.testing.assert_array_equal(both[name][:, k], values, err_msg=name)
