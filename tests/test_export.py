"""The flagged-list CSV: the right rows and columns (each photo's largest evidence concepts where the audit has them),
and nothing a spreadsheet would execute."""

import csv
import io

import numpy as np
import pandas as pd
import pytest
from _helpers_dashboard import MALICIOUS_INDIVIDUAL, MALICIOUS_SPECIES_RAW, UNREADABLE, make_audit

from whaleaudit.audit.export import EXPORT_COLUMNS, flagged_csv, neutralise
from whaleaudit.audit.review import Review
from whaleaudit.audit.store import open_audit


@pytest.fixture
def audit(tmp_path):
    return open_audit(make_audit(tmp_path))


def _rows(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


@pytest.mark.parametrize("text", ["=1+1", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\r=x"])
def test_text_a_spreadsheet_would_execute_is_made_inert(text):
    assert neutralise(text) == "'" + text


@pytest.mark.parametrize("value", ["killer_whale", "a=b", " =x", "", -0.5, 3, None])
def test_other_values_are_left_alone(value):
    assert neutralise(value) == value


def test_flagged_images_export_with_their_audit_rows_and_review(audit):
    review = Review(audit.review_path)
    first, second = audit.images["image"].iloc[[5, 6]]
    review.flag([first, second], "attention on water", "fin small", who="ana")
    review.unflag([second])
    review.note(audit.images["image"].iloc[7], "noted, never flagged")

    rows = _rows(flagged_csv(audit, review))
    assert list(rows[0]) == EXPORT_COLUMNS
    assert [r["image"] for r in rows] == [first]
    expected = audit.images.iloc[5]
    row = rows[0]
    assert (row["path"], row["species"], row["prediction"], row["fg_source"], row["causal_checked"]) == (
        expected["path"], expected["species"], expected["prediction"], expected["fg_source"], "sample")
    assert float(row["loss"]) == pytest.approx(expected["loss"])
    assert float(row["bg_score"]) == pytest.approx(expected["bg_score"])
    assert (row["reason"], row["note"], row["who"]) == ("attention on water", "fin small", "ana")
    assert row["when"].endswith("+00:00")


def test_malicious_labels_and_notes_are_neutralised_in_the_csv(audit):
    review = Review(audit.review_path)
    images = audit.images
    species_row, individual_row = images.iloc[1], images.iloc[2]
    assert species_row["species_raw"] == MALICIOUS_SPECIES_RAW and individual_row["individual_id"] == MALICIOUS_INDIVIDUAL
    review.flag([species_row["image"], individual_row["image"]], "label wrong", "=WEBSERVICE(\"http://x\")",
                who="@reviewer")

    rows = {r["image"]: r for r in _rows(flagged_csv(audit, review))}
    assert rows[species_row["image"]]["species_raw"] == "'" + MALICIOUS_SPECIES_RAW
    assert rows[individual_row["image"]]["individual_id"] == "'" + MALICIOUS_INDIVIDUAL
    for row in rows.values():
        assert row["note"] == "'=WEBSERVICE(\"http://x\")" and row["who"] == "'@reviewer"
        for column, cell in row.items():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (column, cell)


def test_a_flag_on_an_image_no_longer_in_the_audit_is_kept(audit):
    review = Review(audit.review_path)
    review.flag(["gone_since_rebuild"], "other", "from an older audit")
    rows = _rows(flagged_csv(audit, review))
    assert [(r["image"], r["path"], r["note"]) for r in rows] == [("gone_since_rebuild", "", "from an older audit")]


def test_nothing_flagged_is_a_header_only_csv(audit):
    assert flagged_csv(audit, Review(audit.review_path)).decode().strip() == ",".join(EXPORT_COLUMNS)


@pytest.fixture
def with_concepts(tmp_path):
    return open_audit(make_audit(tmp_path / "concepts", concepts=True))


def test_each_flagged_photo_exports_its_largest_concepts_and_their_shares(with_concepts):
    audit = with_concepts
    review = Review(audit.review_path)
    images = audit.images
    picked = images["image"].iloc[[0, 1, 5, 7, 20]].tolist() + [UNREADABLE, "gone_since_rebuild"]
    review.flag(picked, "attention on water")

    rows = {r["image"]: r for r in _rows(flagged_csv(audit, review))}
    at = EXPORT_COLUMNS.index("reason")
    names = ["concept_1", "concept_1_share", "concept_2", "concept_2_share", "concept_3", "concept_3_share"]
    assert list(next(iter(rows.values()))) == EXPORT_COLUMNS[:at] + names + EXPORT_COLUMNS[at:]
    evidence = np.load(audit.path / "concept_evidence.npy").astype(np.float64)
    table = pd.read_parquet(audit.path / "concepts.parquet")
    species = dict(zip(zip(table["class_idx"], table["rank"]), table["species"]))
    held_by = []
    for image in picked[:5]:
        position = int(np.flatnonzero(images["image"] == image)[0])
        shares = evidence[position] / evidence[position].sum()
        held = sorted(((-s, rank) for rank, s in enumerate(shares) if s > 0))[:3]   # largest first, ties by rank
        pred = int(images["pred_idx"].iloc[position])
        expected = [(f"{species[(pred, rank)]} #{rank + 1}", -s) for s, rank in held]
        got = [(rows[image][f"concept_{k}"], rows[image][f"concept_{k}_share"]) for k in (1, 2, 3)]
        assert [name for name, _ in got[:len(expected)]] == [name for name, _ in expected], image
        assert [float(share) for _, share in got[:len(expected)]] == pytest.approx([s for _, s in expected], abs=5e-4)
        assert all(cell == ("", "") for cell in got[len(expected):])
        held_by.append(len(expected))
    assert sorted(set(held_by)) == [1, 2]   # the helper's classes have two concepts; some photos show only one
    for image in (UNREADABLE, "gone_since_rebuild"):   # no evidence, or not in the audit: empty cells
        assert all(rows[image][c] == "" for c in names), image


def test_an_audit_whose_concepts_are_not_computed_exports_as_before(with_concepts):
    audit = with_concepts
    (audit.path / "concepts.json").unlink()
    review = Review(audit.review_path)
    review.flag(audit.images["image"].iloc[[3]].tolist(), "other")
    assert list(_rows(flagged_csv(audit, review))[0]) == EXPORT_COLUMNS
