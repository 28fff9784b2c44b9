"""Evidence concepts: the two-class layer3 maps, the cell descriptors, the concepts against hand-built stores,
their files and the CLI verb."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
import torch
from _helpers_engine import SPECIES, make_dataset, tiny_model

from whaleaudit.audit.concepts import (
    CONCEPT_EVIDENCE,
    CONCEPTS_INFO,
    CONCEPTS_TABLE,
    class_heats,
    compute_concepts,
    open_concepts,
    write_concepts,
)
from whaleaudit.audit.store import CELLS, EVIDENCE, open_audit, write_store
from whaleaudit.cli import main
from whaleaudit.columns import IMAGE_COLUMNS
from whaleaudit.data.dataset import load_dataset
from whaleaudit.demo.build import FULL
from whaleaudit.errors import StoreError
from whaleaudit.explain.concepts import (
    MAX_CONCEPTS,
    SPLIT_AT,
    anderson_darling,
    box_cells,
    carrying_cells,
    choose_pieces,
    describe_cells,
    fit_cell_basis,
    joined,
    least_normal,
    nearest,
    unusualness,
)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["cam", "fastai"])
def test_two_class_layer3_maps_are_the_rows_of_every_class_maps(head):
    """The evidence of the predicted and the labelled class equals those classes' rows of the layer3 maps made
    for every class by Grad-CAM (predict_with_maps), on the model as the precompute runs it and as trained; the
    logits and the default maps are those of predict_with_maps; an unknown label (-1) gets a zero map."""
    from whaleaudit.explain.cam import (
        for_inference,
        predict_with_evidence,
        predict_with_maps,
        stages,
    )
    from whaleaudit.model.load import load_model

    model, _ = load_model(tiny_model(head).with_suffix(".pth"))
    model.eval()
    torch.manual_seed(1)
    x = torch.randn(6, 3, 64, 64)
    labels = torch.tensor([0, 1, 1, -1, 0, 1])
    _, every = predict_with_maps(model, x, layer="layer3")
    for net in (model, for_inference(model, torch.device("cpu"))):
        for layer in ("layer4", "layer3"):
            with torch.inference_mode():
                logits, maps, evidence, features = predict_with_evidence(net, x, labels, layer=layer)
            expected_logits, expected_maps = predict_with_maps(model, x, layer=layer)
            torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(maps, expected_maps, rtol=1e-4, atol=1e-5)
            rows = torch.arange(len(x))
            pred = expected_logits.argmax(1)
            torch.testing.assert_close(evidence[:, 0], every[rows, pred], rtol=1e-4, atol=1e-5)
            known = labels >= 0
            torch.testing.assert_close(evidence[known, 1], every[rows[known], labels[known]], rtol=1e-4, atol=1e-5)
            assert not evidence[~known, 1].any() and evidence.shape == (6, 2, 4, 4)
            torch.testing.assert_close(features, stages(model[0], "layer3")[0](x), rtol=1e-4, atol=1e-4)


def test_the_cell_basis_is_the_whitened_principal_axes_and_reproducible():
    rng = np.random.default_rng(0)
    features = rng.gamma(1.0, size=(500, 20)) * rng.uniform(0.1, 3, 20)   # channels of unequal variance
    basis, kept = fit_cell_basis(features, dims=5)
    again, _ = fit_cell_basis(features.copy(), dims=5)
    assert basis.dtype == np.float32 and basis.shape == (6, 20) and basis.tobytes() == again.tobytes()
    np.testing.assert_allclose(basis[0], features.mean(0), rtol=1e-6)
    axes = basis[1:].astype(np.float64)
    centred = features - features.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)   # independent: the SVD's right vectors and values
    spread = s[:5] / np.sqrt(len(features) - 1)
    np.testing.assert_allclose(np.abs(axes @ vt[:5].T), np.diag(1 / spread), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.cov(centred @ axes.T, rowvar=False), np.eye(5), atol=1e-4)   # unit variance
    assert kept == pytest.approx((s[:5] ** 2).sum() / (s ** 2).sum(), abs=1e-4)
    assert (axes[np.arange(5), np.abs(axes).argmax(1)] > 0).all()
    maps = features[:32].reshape(2, 4, 4, 20).transpose(0, 3, 1, 2)   # [B, K, h, w]: cell = y * w + x
    cells = describe_cells(maps, basis)
    assert cells.dtype == np.float16 and cells.shape == (2, 16, 5)
    np.testing.assert_allclose(cells[1, 6], (features[16 + 6] - basis[0]) @ axes.T, rtol=1e-3, atol=1e-3)


def test_the_split_test_is_anderson_darling_along_the_least_normal_principal_axis():
    rng = np.random.default_rng(3)
    stretch = np.diag([3.0, 2.0, 1.5, 0.5])
    one = rng.normal(size=(400, 4)) @ stretch
    two = np.vstack([rng.normal(size=(200, 4)) @ stretch + [9, 0, 0, 0],
                     rng.normal(size=(200, 4)) @ stretch - [9, 0, 0, 0]])
    quiet = np.vstack([rng.normal(size=(380, 4)) @ stretch, rng.normal(size=(20, 4)) * 0.3 + [0, 0, 6, 0]])
    for values in (one[:, 0], two[:, 1], rng.uniform(size=50)):
        n = len(values)
        expected = stats.anderson(values, "norm").statistic * (1 + 4 / n - 25 / n ** 2)
        assert anderson_darling(values) == pytest.approx(expected, rel=1e-6)
    assert least_normal(one)[0] < SPLIT_AT < least_normal(two)[0]
    assert abs(least_normal(two)[1][0]) > 0.99   # split across the gap
    stat, axis = least_normal(quiet)   # 5% of the cells apart along the third axis, the widest being the first
    assert stat > SPLIT_AT and abs(axis[2]) > 0.9


def test_pieces_are_as_many_as_the_cells_have_bumps():
    """G-means: three Gaussian bumps give three pieces, a small far group among many cells gets one of its
    own, 30 bumps give 30 and more bumps than the cap allows give the cap."""
    rng = np.random.default_rng(4)
    means = np.zeros((3, 32), np.float32)
    means[0, 0], means[1, 1], means[2, 2] = 8, 8, 8
    bumps = np.vstack([m + rng.normal(size=(400, 32)) for m in means]).astype(np.float32)
    centres = choose_pieces(bumps)
    assert len(centres) == 3
    assert sorted(nearest(means, centres).tolist()) == [0, 1, 2]
    mark = np.zeros(32, np.float32)
    mark[5] = 8
    few = np.vstack([rng.normal(size=(1500, 32)), mark + rng.normal(size=(40, 32))]).astype(np.float32)
    centres = choose_pieces(few)
    assigned = nearest(few, centres)
    assert len(centres) == 2 and len(set(assigned[1500:])) == 1 and (assigned[:1500] != assigned[1500]).mean() > 0.99
    many = (np.repeat(rng.normal(0, 10, size=(30, 32)), 20, axis=0) + rng.normal(size=(600, 32))).astype(np.float32)
    assert len(choose_pieces(many)) == 30
    more = (np.repeat(rng.normal(0, 10, size=(90, 32)), 20, axis=0) + rng.normal(size=(1800, 32))).astype(np.float32)
    assert len(choose_pieces(more)) == MAX_CONCEPTS == 64
    assert choose_pieces(few.copy()).tobytes() == centres.tobytes()   # no randomness


def test_carrying_cells_are_the_fewest_largest_holding_half():
    evidence = np.array([[0, 3, 1, 4, 0, 2], [1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]], np.float32)
    np.testing.assert_array_equal(carrying_cells(evidence), [[0, 1, 0, 1, 0, 0],   # 4 + 3 >= 5
                                                             [1, 1, 0, 0, 0, 0],   # ties by cell number
                                                             [0, 0, 0, 0, 0, 0]])


CLASSES = ["bottlenose_dolphin", "killer_whale"]
MASK = 8   # 2 x 2 mask pixels per evidence cell of 4 x 4


def hand_built(folder, evidence_cells=True):
    """24 photos predicted bottlenose_dolphin whose evidence sits on two kinds of cell: cell 0 (top left, on the
    animal, descriptors near (10, 0)) and cell 15 (bottom right, a quarter on the animal, near (0, 10)); 2 photos
    predicted killer_whale with no positive evidence; one unreadable photo. Photo 1 has no foreground (its
    mask, all animal, must not count)."""
    n = 27
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({c: [""] * n for c in IMAGE_COLUMNS})
    frame["image"] = frame["path"] = [f"{k:03d}.jpg" for k in range(n)]
    frame["species"] = CLASSES[0]
    frame["status"] = ["ok"] * (n - 1) + ["error"]
    frame["pred_idx"] = [0] * 24 + [1, 1, -1]
    frame["fg_source"] = ["box"] * n
    frame.loc[1, "fg_source"] = "none"
    evidence = np.full((n, 2, 4, 4), -0.5, np.float16)
    top, bottom = np.unravel_index(0, (4, 4)), np.unravel_index(15, (4, 4))
    for i in range(24):   # even photos: 3 on cell 0 and 1 on cell 15; odd ones: 1 and 4
        evidence[i, 0][top], evidence[i, 0][bottom] = (3, 1) if i % 2 == 0 else (1, 4)
    evidence[26] = 0
    cells = np.zeros((n, 16, 2), np.float16)
    cells[:, :8] = [10, 0]
    cells[:, 8:] = [0, 10]
    cells += rng.normal(0, 0.3, cells.shape).astype(np.float16)
    masks = np.zeros((n, MASK, MASK), bool)
    masks[:, :4] = True          # the top half: cells 0-7
    masks[:, 7, 7] = True        # a quarter of cell 15
    masks[1] = True
    manifest = {"classes": CLASSES, "dataset": {"image_root": str(folder)}, "model": {"arch": "resnet18"}}
    extra = {"evidence": evidence, "cells": cells, "cell_basis": np.zeros((3, 4), np.float32)} if evidence_cells else {}
    return write_store(folder / "audit", frame, np.zeros((n, 2), np.float32), np.zeros((n, 2, 2, 2), np.float16),
                       masks, manifest, mask_size=MASK, **extra)


def test_unusualness_is_distinctiveness_displacement_and_concentration():
    """By hand: cells at x = 0 and x = 2 (mean 1, root mean square distance 1); centres at 0, 2 and 4 are 1, 1
    and 3 such distances from the mean. Evidence all in cell 0, all in cell 1, half and half: the class's lies
    half and half, so the first two each have half of theirs to move, the third none. Two photos hold the three
    concepts' evidence 1, 0, 1 and 1, 2, 3: shares 1/2, 0, 1/2 and 1/6, 2/6, 3/6."""
    x = np.array([[0, 0], [2, 0], [0, 0], [2, 0]], np.float32)
    centres = np.array([[0, 0], [2, 0], [4, 0]], np.float32)
    heats = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    amounts = np.array([[1, 0, 1], [1, 2, 3]], np.float32)
    distinct, displaced, concentrated = unusualness(x, centres, heats, amounts)
    np.testing.assert_allclose(distinct, [1, 1, 3], rtol=1e-6)
    np.testing.assert_allclose(displaced, [0.5, 0.5, 0], atol=1e-7)
    np.testing.assert_allclose(concentrated, [(1 / 4 + 1 / 36) / (1 / 2 + 1 / 6), (4 / 36) / (2 / 6), (1 / 4 + 1 / 4) / 1],
                               rtol=1e-6)


def test_pieces_that_carry_alike_shares_of_the_same_photos_are_joined():
    """Four pieces over four photos. Pieces 0 and 1 are one mark's two cells: alike shares of photos 0 and 1 (3/7
    each, then 2/5 each; Ruzicka 1): joined. Piece 2 holds a little of photos 0-2 (Ruzicka with piece 0: 0.33,
    with 0 and 1 joined: 0.18, with piece 3: 0.09), piece 3 most of photos 2 and 3: neither is joined. Piece 2
    appears in the photos of pieces 0 and 1 and one more, but no more often than chance (in four photos)."""
    amounts = np.array([[3, 3, 1, 0], [2, 2, 1, 0], [0, 0, 1, 4], [0, 0, 0, 1]], np.float32)
    centres = np.eye(4, dtype=np.float32)
    np.testing.assert_array_equal(joined(amounts, centres), [0, 0, 1, 2])
    np.testing.assert_array_equal(joined(amounts[:, [3, 2, 1, 0]], centres), [0, 1, 2, 2])   # numbered by first piece
    np.testing.assert_array_equal(joined(np.zeros((3, 1), np.float32), centres[:1]), [0])


def test_pieces_that_appear_in_the_same_few_photos_are_joined():
    """A band's two halves (pieces 0 and 1) take unalike shares of the four photos they are in (8 to 1: Ruzicka
    0.13) but appear in the same photos (Jaccard 1) 2.5 times as often as chance would put them together (in 4 of
    10 photos each): joined. The water (piece 2) is in every photo: with the band in 4 of 10 (Jaccard 0.4, lift
    1, Ruzicka 0.21), it stays apart."""
    amounts = np.array([[8, 1, 10]] * 4 + [[0, 0, 10]] * 6, np.float32)
    np.testing.assert_array_equal(joined(amounts, np.eye(3, dtype=np.float32)), [0, 0, 1])


def test_a_concept_too_slight_to_stand_joins_the_one_it_is_most_like():
    """Piece 0 is a mark (6 of 10 units in photos 0-4 of 12), piece 1 the water (the rest of every photo), piece
    2 holds 0.5 units (under a twentieth, below HOLD) of two photos: too slight to stand, whatever the rules.
    Where those are two of the mark's photos (Jaccard 0.4 at 2.4 times chance: 0.8 of the way to JACCARD, above
    LIKE), it joins the mark although its centre lies beside the water's: the mark's fringe. Where they are
    photos without the mark (alike with nothing: Jaccard with the water 1/6, no more than chance), it joins the
    concept whose centre lies nearest its own."""
    mark, water, far = [0, 0], [10, 0], [1, 0]
    fringe = np.array([[6, 4, 0.5]] * 2 + [[6, 4, 0]] * 3 + [[0, 10, 0]] * 7, np.float32)
    np.testing.assert_array_equal(joined(fringe, np.array([mark, water, [9, 0]], np.float32)), [0, 1, 0])
    alone = np.array([[6, 4, 0]] * 5 + [[0, 10, 0]] * 5 + [[0, 9.5, 0.5]] * 2, np.float32)
    np.testing.assert_array_equal(joined(alone, np.array([mark, water, far], np.float32)), [0, 1, 0])
    np.testing.assert_array_equal(joined(alone, np.array([mark, water, [9, 0]], np.float32)), [0, 1, 1])
    standing = alone.copy()
    standing[-2:, 2] = 1.5   # 1.5 of 11: above HOLD, it stands
    np.testing.assert_array_equal(joined(standing, np.array([mark, water, far], np.float32)), [0, 1, 2])


def test_a_concept_that_holds_a_tenth_of_hardly_any_photo_it_is_in_is_slight():
    """Among many photos, one where a concept holds a tenth does not make it stand: piece 2 appears in 60 of 100
    photos, holding a twentieth of 59 and a fifth of one; it must hold a tenth of at least OFTEN (2%) of them,
    1.2 photos. Holding a fifth of two, it stands."""
    centres = np.array([[0, 0], [10, 0], [1, 0]], np.float32)
    amounts = np.array([[6, 4, 0]] * 39 + [[0, 10, 0]] + [[0, 9.5, 0.5]] * 59 + [[0, 8, 2]], np.float32)
    np.testing.assert_array_equal(joined(amounts, centres), [0, 1, 0])
    amounts[-2] = [0, 8, 2]
    np.testing.assert_array_equal(joined(amounts, centres), [0, 1, 2])


def test_concepts_of_a_hand_built_store(tmp_path):
    """Two concepts: cell 0's (48 of the class's 108 units of evidence) and cell 15's (60); they share each photo
    unalike (3 to 1, then 1 to 4: Ruzicka 0.29), so they stay two. They look equally unlike the class's evidence
    (their centres lie equally far from its mean); cell 0's sits further from where the class's evidence lies
    (60/108 of its evidence would have to move, against 48/108 of cell 15's) and is nearly as concentrated
    (0.63 against 0.67): it ranks first."""
    audit = open_audit(hand_built(tmp_path))
    concepts = compute_concepts(audit)
    table = concepts.table
    assert table["species"].tolist() == [CLASSES[0]] * 2 and table["rank"].tolist() == [0, 1]
    first, second = table.iloc[0], table.iloc[1]   # cell 0's, cell 15's
    assert first["evidence_share"] == pytest.approx(48 / 108) and second["evidence_share"] == pytest.approx(60 / 108)
    assert first["displacement"] == pytest.approx(60 / 108) and second["displacement"] == pytest.approx(48 / 108)
    assert first["concentration"] == pytest.approx((0.75 ** 2 + 0.2 ** 2) / 0.95)
    assert second["concentration"] == pytest.approx((0.25 ** 2 + 0.8 ** 2) / 1.05)
    fitted = np.concatenate([audit.cells[0:24:2, 0], audit.cells[1:24:2, 15]]).astype(np.float64)  # carrying cells
    rms = np.sqrt(((fitted - fitted.mean(0)) ** 2).sum(1).mean())
    for row, own in ((first, audit.cells[0:24:2, 0]), (second, audit.cells[1:24:2, 15])):
        expected_distinct = np.linalg.norm(own.astype(np.float64).mean(0) - fitted.mean(0)) / rms
        assert row["distinctiveness"] == pytest.approx(expected_distinct, rel=1e-3)
    assert first["on_animal"] == pytest.approx(1.0) and second["on_animal"] == pytest.approx(0.25)
    assert first["n_photos"] == 12 and second["n_photos"] == 12 and first["n_cells"] == 12
    np.testing.assert_allclose(first["heat"], np.eye(16)[0])
    np.testing.assert_allclose(second["heat"], np.eye(16)[15])
    assert list(first["example_cell"]) == [0] * 8 and set(first["example_idx"]) <= set(range(0, 24, 2))
    assert len(set(second["example_idx"])) == 8 and set(second["example_idx"]) <= set(range(1, 24, 2))
    np.testing.assert_allclose(np.stack(first["centres"]), [[10, 0]], atol=0.3)   # one piece: the cells on cell 0
    np.testing.assert_allclose(np.stack(second["centres"]), [[0, 10]], atol=0.3)
    expected = np.zeros((27, MAX_CONCEPTS), np.float32)   # column: the concept's rank in the photo's class
    expected[:24:2, :2] = [3, 1]
    expected[1:24:2, :2] = [1, 4]
    np.testing.assert_array_equal(concepts.evidence, expected)
    positive = np.maximum(audit.evidence[:, 0].astype(np.float32), 0).sum(axis=(1, 2))
    np.testing.assert_allclose(concepts.evidence.sum(axis=1), positive)   # the photo's positive evidence
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0], heat[3, 3] = 48 / 108, 60 / 108
    heats = class_heats(audit)
    np.testing.assert_allclose(heats[0], heat, rtol=1e-6)
    assert not heats[1].any()   # its photos hold no positive evidence
    shares = concepts.shares()
    np.testing.assert_allclose(shares[:24].sum(axis=1), 1, rtol=1e-6)
    assert not shares[24:].any()


def test_concept_files_are_written_once_and_identical_on_a_rerun(tmp_path):
    audit = open_audit(hand_built(tmp_path))
    with pytest.raises(StoreError, match=r"no evidence concepts computed yet\. Compute them with `python -m "
                                         r"whaleaudit concepts"):
        open_concepts(audit)
    write_concepts(audit)
    first = {name: (audit.path / name).read_bytes() for name in (CONCEPTS_TABLE, CONCEPT_EVIDENCE, CONCEPTS_INFO)}
    assert not list(audit.path.glob("*.tmp"))
    write_concepts(open_audit(audit.path))
    assert first == {name: (audit.path / name).read_bytes() for name in first}
    read = open_concepts(open_audit(audit.path))
    computed = compute_concepts(audit)
    pd.testing.assert_frame_equal(read.table, computed.table)
    np.testing.assert_array_equal(read.evidence, computed.evidence)
    assert read.info == json.loads(json.dumps(computed.info)) and read.info["n_concepts"] == 2
    np.save(audit.path / CONCEPT_EVIDENCE, np.zeros((3, 3), np.float32))
    with pytest.raises(StoreError, match=r"concept_evidence\.npy has shape \(3, 3\).*python -m whaleaudit concepts"):
        open_concepts(open_audit(audit.path))


def test_an_audit_made_before_concepts_opens_and_says_what_to_do(tmp_path, capsys):
    store = hand_built(tmp_path, evidence_cells=False)
    audit = open_audit(store)
    assert audit.evidence is None and audit.cells is None and audit.cell_basis is None
    assert "evidence" not in audit.manifest
    for attempt in (compute_concepts, open_concepts):
        with pytest.raises(StoreError, match=r"no evidence maps or cell descriptors to find concepts in \(it was made "
                                             r"before evidence concepts.*Rebuild it with the current precompute"):
            attempt(audit)
    assert main(["concepts", str(store)]) == 1
    assert "was made before evidence concepts" in capsys.readouterr().err
    assert not (store / CONCEPTS_INFO).exists()


def test_the_cli_verb_recomputes_the_concepts_from_the_store(tmp_path, capsys):
    store = hand_built(tmp_path)
    assert main(["concepts", str(store)]) == 0
    out = capsys.readouterr().out
    assert "bottlenose_dolphin: 2 concepts, 1 mostly on the animal, 1 mostly off; the largest holds 56%" in out
    concepts = open_concepts(open_audit(store))
    pd.testing.assert_frame_equal(concepts.table, compute_concepts(open_audit(store)).table)


@pytest.mark.slow
def test_precompute_keeps_the_evidence_within_budget_and_writes_concepts(tmp_path):
    """At 128 px (8 x 8 layer3 cells) the evidence maps and cell descriptors add at most 8 KB a photo; the stored
    descriptors are the photos' layer3 features projected on the stored basis; the concepts come with the
    store and are those its store gives."""
    from whaleaudit.audit.precompute import AuditImages, normalisation, normalised, precompute
    from whaleaudit.explain.cam import stages
    from whaleaudit.explain.foreground import ForegroundProvider
    from whaleaudit.files import file_sha256, write_json
    from whaleaudit.model.load import build_model

    dataset = load_dataset(make_dataset(tmp_path / "data", n_per_species=6, species=SPECIES[:2]))
    torch.manual_seed(0)
    model = build_model("cam", 2).eval()
    pth = tmp_path / "r18.pth"
    torch.save(model.state_dict(), pth)
    normalize = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    write_json(pth.with_suffix(".json"), {"format": "whaleaudit-model/1", "arch": "resnet18", "head": "cam",
                                          "classes": list(SPECIES[:2]), "size": 128, "normalize": normalize,
                                          "pretrained": False, "files": {"pth": {"file": pth.name,
                                                                                 "sha256": file_sha256(pth)}}})
    sizes = {}
    for evidence in (False, True):
        out = precompute(dataset, pth, tmp_path / f"audit-{evidence}", evidence=evidence, causal=0.0, workers=0,
                         progress=False)
        sizes[evidence] = sum(f.stat().st_size for f in out.iterdir())
    audit = open_audit(out)
    n = len(dataset.frame)
    per_photo = sum((out / name).stat().st_size - 128 for name in (EVIDENCE, CELLS)) / n   # less .npy headers
    assert per_photo <= 8192 and audit.evidence.shape == (n, 2, 8, 8) and audit.cells.shape[:2] == (n, 64)
    assert sizes[True] - sizes[False] < n * 8192 + 256_000   # the rest: the basis and the concepts, once
    photos = AuditImages(dataset.frame, dataset.image_root, 128, ForegroundProvider(dataset.image_root))
    x = normalised(torch.stack([photos[i]["pixels"] for i in range(n)]), *normalisation(normalize, "cpu"))
    with torch.no_grad():
        features = stages(model[0], "layer3")[0](x).numpy()
    np.testing.assert_allclose(audit.cells.astype(np.float32), describe_cells(features, audit.cell_basis),
                               rtol=1e-2, atol=2e-2)
    concepts = open_concepts(audit)
    assert concepts.info["n_concepts"] == len(concepts.table) > 0
    pd.testing.assert_frame_equal(concepts.table, compute_concepts(audit).table)
    again = tmp_path / "again"
    shutil.copytree(out, again)
    write_concepts(open_audit(again))
    for name in (CONCEPTS_TABLE, CONCEPT_EVIDENCE, CONCEPTS_INFO):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


@pytest.mark.slow
def test_a_model_without_stages_is_audited_without_evidence(tmp_path):
    """A body that is not a Sequential of stages (a user's unusual architecture) has no layer3 to read: the audit
    is made as before, without the evidence arrays, and says why."""
    from torch import nn

    from whaleaudit.audit.precompute import precompute
    from whaleaudit.model.load import load_model

    class Opaque(nn.Module):
        def __init__(self, body):
            super().__init__()
            self.inner = body

        def forward(self, x):
            return self.inner(x)

    model, sidecar = load_model(tiny_model("cam").with_suffix(".pth"))
    wrapped = nn.Sequential(Opaque(model[0]), model[1]).eval()
    dataset = load_dataset(make_dataset(tmp_path / "data", n_per_species=3, species=SPECIES[:2]))
    with pytest.warns(UserWarning, match="this audit gets no evidence concepts: layer3 maps need the body as a "
                                         "Sequential of stages"):
        audit = open_audit(precompute(dataset, (wrapped, sidecar), tmp_path / "audit", causal=0.0, workers=0,
                                      progress=False))
    assert audit.evidence is None and audit.manifest["parameters"]["evidence"] is False
    assert (audit.images["status"] == "ok").all() and not (audit.path / CONCEPTS_INFO).exists()


#: The demo's own recipe without the causal check (the concepts do not use it).
DEMO_RECIPE = dataclasses.replace(FULL, causal=0.0)


def test_box_cells_are_the_cells_a_box_touches_and_their_neighbours():
    """At 128 px on 8 x 8 cells of 16 px: a badge 3 px into the top-left corner touches cells (0, 0) to (1, 1),
    so (0, 0) to (2, 2) with their neighbours; a box exactly on cell (1, 1) touches that one cell only; a band
    along the bottom touches the last row, so the last two rows; an empty box (an unmarked photo) none."""
    near = box_cells([(3, 3, 17, 17), (16, 16, 32, 32), (0, 123, 128, 128), (0, 0, 0, 0)], 128, (8, 8))
    grid = near.reshape(4, 8, 8)
    expected = np.zeros((4, 8, 8), bool)
    expected[0, :3, :3] = expected[1, :3, :3] = True
    expected[2, 6:, :] = True
    assert (grid == expected).all()
    on_demo = box_cells([(3, 3, 17, 17)], 100, (7, 7)).reshape(7, 7)   # the demo's 100 px frame
    assert on_demo[:3, :3].all() and on_demo.sum() == 9


@pytest.mark.slow
def test_the_demo_cues_come_out_as_concepts_of_their_species(tmp_path):
    """The demo users get, built here without its causal check (drawn photos, a model trained on them, the audit;
    a smaller one has too few cells for the test that decides how many concepts a species gets): among the
    humpbacks' first 10 concepts is one that lies off the animal (true masks) with most of its evidence on the
    cells of the watermark the demo draws in the bottom-right corner (its box from the drawing's own font
    metrics); among the belugas' first 10, one off the animal whose example cells are largely white: the pack ice
    drawn behind most belugas, whiter than any of the first 10 of the species without planted ice (their white
    concepts are the sun's glare and the few ice scenes the demo gives every species)."""
    import cv2
    from PIL import Image

    from whaleaudit.demo import synth
    from whaleaudit.demo.build import build_demo

    audit = open_audit(build_demo(root=tmp_path, recipe=DEMO_RECIPE))
    concepts = open_concepts(audit).table
    size, grid = DEMO_RECIPE.size, tuple(audit.evidence.shape[2:])
    scale = size / 128 * 0.32   # synth._logo's text, at its widest margins
    (w, h), _ = cv2.getTextSize(synth.LOGO, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    mark = box_cells([(size - w - 4 * size // 128, size - 5 * size // 128 - h, size, size)], size, grid)[0]
    first = concepts[concepts["rank"] < 10]
    humpbacks = first[first["species"] == "humpback_whale"]
    on_mark = [float(np.asarray(heat)[mark].sum()) for heat in humpbacks["heat"]]
    assert any(on >= 0.5 and off < 0.5 for on, off in zip(on_mark, humpbacks["on_animal"])), \
        humpbacks.assign(on_mark=on_mark)[["rank", "evidence_share", "on_animal", "on_mark"]]

    root = Path(audit.manifest["dataset"]["image_root"])

    def white(idx: int, cell: int) -> float:   # share of near-white pixels in the cell
        rgb = np.asarray(Image.open(root / audit.images["path"][idx]).convert("RGB"))
        y, x = divmod(int(cell), grid[1])
        side = rgb.shape[0] // grid[0]
        return float((rgb[y * side:(y + 1) * side, x * side:(x + 1) * side].min(axis=2) > 170).mean())

    first = first.assign(white=[np.mean([white(i, c) for i, c in zip(row.example_idx, row.example_cell)])
                                for row in first.itertuples()])
    belugas = first[first["species"] == "beluga"]
    ice = belugas[(belugas["on_animal"] < 0.5) & (belugas["white"] >= 0.25)]
    assert len(ice), belugas
    others = first[first["species"].isin(["killer_whale", "bottlenose_dolphin"])]
    assert ice["white"].max() > others["white"].max(), (ice, others)
