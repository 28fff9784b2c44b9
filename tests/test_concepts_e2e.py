"""End to end, the Concepts page in Debian's headless Chromium on a real ``streamlit run`` server: choose a
concept and a reason, flag every photo it lists in one click, and find exactly those photos in the Review page's
flagged list and its CSV download."""

import csv
import io
from pathlib import Path

import pytest
from _helpers_dashboard import chromium, make_audit, settle
from playwright.sync_api import expect
from test_concepts_page import expected_photos, with_evidence
from test_e2e import open_page, serve

from whaleaudit.audit.concepts import write_concepts
from whaleaudit.audit.review import Review
from whaleaudit.audit.store import open_audit

pytestmark = pytest.mark.e2e


def test_choose_a_concept_flag_all_its_photos_and_find_them_on_the_review_page(tmp_path):
    store = with_evidence(make_audit(tmp_path, n=60))
    concepts = write_concepts(open_audit(store)).table
    second = concepts[concepts["species"] == "beluga"].iloc[1]
    listed = expected_photos(store, "beluga", int(second["rank"]), 0.5)
    assert listed
    with chromium() as browser, serve(store.parent, tmp_path / "streamlit.log") as base:
        page = open_page(browser, base, "concepts?audit=small", "List its photos")
        page.get_by_role("button", name="List its photos").nth(1).click()
        settle(page, f"where beluga #{int(second['rank']) + 1} carries at least 50%")
        flag = page.get_by_role("button", name=f"Flag all {len(listed)} images")
        expect(flag).to_be_disabled()   # until the analyst chooses a reason: none is assumed
        reason = page.get_by_role("combobox", name="Reason")
        reason.fill("attention on ice")   # typed, as an analyst may: the list narrows to that reason
        reason.press("ArrowDown")
        reason.press("Enter")
        expect(reason).to_have_value("attention on ice")
        expect(flag).to_be_enabled()
        flag.click()
        settle(page, f"Flagged {len(listed)} images: attention on ice.")
        assert set(Review(store / "review.sqlite").flags()["image"]) == set(listed)

        page.get_by_test_id("stSidebar").get_by_role("link", name="Review & export").click()
        settle(page, f"Download the flagged list ({len(listed)} images, CSV)")
        with page.expect_download(timeout=60_000) as download:
            page.get_by_role("button", name="Download the flagged list").click()
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        page.close()
    assert sorted(r["image"] for r in rows) == sorted(listed)
    assert {r["reason"] for r in rows} == {"attention on ice"}
    assert {r["note"] for r in rows} == {f"evidence concept beluga #{int(second['rank']) + 1}: at least 50% of the "
                                         "evidence"}


def test_an_audit_without_concepts_computes_them_in_the_background_and_shows_them(tmp_path):
    """The offer's button starts the concepts job; its progress shows in the frame's jobs panel, and the page
    shows the concepts by itself once the job is done (the panel reloads it), with no click of the analyst's."""
    store = with_evidence(make_audit(tmp_path))
    with chromium() as browser, serve(store.parent, tmp_path / "streamlit.log") as base:
        page = open_page(browser, base, "concepts?audit=small", "No evidence concepts computed for this audit yet")
        page.get_by_role("button", name="Compute the concepts").click()
        page.get_by_text("beluga #1", exact=True).wait_for(timeout=60_000)
        settle(page, "List its photos")
        assert not page.get_by_text("No evidence concepts computed").count()
        page.close()
    assert (store / "concepts.json").is_file()
