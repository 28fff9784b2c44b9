"""End to end, the analyst's correction: a real ``streamlit run`` server and Debian's headless Chromium. Drag a box
around the animal on the Heatmap page's photo, save it, see the score change; restart the server and find it
kept; export it as a --boxes file."""

import os
import re
import sys
from pathlib import Path

import pytest
from playwright.sync_api import expect
from _helpers_dashboard import chromium, free_port, make_audit, settle, steady_box
from _helpers_dashboard import serve as serve_command

from whaleaudit.audit.corrections import with_corrections
from whaleaudit.audit.review import Review
from whaleaudit.audit.store import open_audit
from whaleaudit.cli import main
from whaleaudit.explain.foreground import read_boxes
from whaleaudit.views import explain_score

REPO = Path(__file__).resolve().parents[1]
SCORE = re.compile(r"bg_score = 1 - on / ideal = (\d\.\d{3})")

pytestmark = pytest.mark.e2e


def serve(audits: Path, log: Path):
    port = free_port()
    return serve_command([sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port)],
                         port, cwd=REPO, env=dict(os.environ, WHALEAUDIT_AUDITS=str(audits)), log=log)


def shown_score(page) -> str:
    """The predicted class's bg_score as the page's explanation of it states it, once it shows."""
    main = page.get_by_test_id("stMain")
    expect(main).to_contain_text(SCORE, timeout=60_000)
    found = SCORE.findall(main.inner_text())
    assert len(found) == 1, found
    return found[0]


def test_drag_a_box_save_see_the_score_change_restart_and_export(tmp_path):
    store = make_audit(tmp_path)
    audit = open_audit(store)
    image = "img_009"
    log = tmp_path / "streamlit.log"
    with chromium() as browser, serve(store.parent, log) as base:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(f"{base}/heatmap?image={image}")
        settle(page, "Drag boxes on the photo to correct it")
        before = shown_score(page)  # the test's audit has made-up stored scores: the page explains the map's own
        row = audit.images.set_index("image").loc[image]
        own = explain_score(audit.cam(row["idx"], row["pred_idx"]), audit.mask(row["idx"]), audit.spread)
        assert before == f"{own['bg_score']:.3f}"

        area = steady_box(page.locator(".js-plotly-plot").first.locator(".nsewdrag"))  # the photo, above the grid
        left, top, width, height = area["x"], area["y"], area["width"], area["height"]
        page.mouse.move(left + 2, top + 2)
        page.mouse.down()
        for k in range(1, 11):  # Plotly follows the pointer: move as a hand does, in steps
            page.mouse.move(left + 2 + k * (width / 2 - 2) / 10, top + 2 + k * (height - 6) / 10)
        page.mouse.up()
        settle(page, "1 box(es) drawn, not saved yet.")
        page.get_by_role("button", name="Save 1 box(es)").click()
        settle(page, "Corrected by")

        (boxes,) = Review(audit.review_path).corrections()["boxes"]
        assert len(boxes) == 1
        x0, y0, x1, y1 = boxes[0]
        assert x0 < 0.1 and y0 < 0.1 and 0.4 < x1 < 0.6 and y1 > 0.9  # the left half, as dragged
        expected = with_corrections(audit.images, Review(audit.review_path).corrections(), audit)
        after = f"{expected.set_index('image').loc[image, 'bg_score']:.3f}"
        page.wait_for_function("s => document.body.innerText.includes(s)",
                               arg=f"bg_score = 1 - on / ideal = {after}", timeout=60_000)
        assert shown_score(page) == after != before
        page.close()

    with chromium() as browser, serve(store.parent, log) as base:  # a restarted server reads review.sqlite
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(f"{base}/heatmap?image={image}")
        settle(page, "Corrected by")
        assert shown_score(page) == after
        page.close()

    out = tmp_path / "corrected.csv"
    assert main(["export", str(store), "--boxes", str(out)]) == 0
    assert read_boxes(out) == ({image: boxes}, True)
