"""End to end: a real ``streamlit run`` server driven by headless Chromium (Debian's, never a downloaded one).

Opens every page as the first request of a fresh server (a shared link) and finds it inside its frame;
flags an image on the Review page, downloads the CSV, restarts the server and finds the flag still there;
and saves a screenshot of every page: into $WHALEAUDIT_SCREENSHOTS when set, else the test's temporary
folder. With $WHALEAUDIT_E2E_AUDITS set (e.g. to the folder holding the demo audit) the screenshots show that
audit instead of the small one the test builds, and $WHALEAUDIT_E2E_IMAGE picks the heatmap page's image.
"""

import csv
import io
import os
import re
import sys
import urllib.parse
from pathlib import Path

import pytest
from playwright.sync_api import expect
from _helpers_dashboard import chromium, free_port, make_audit, settle, steady_box
from _helpers_dashboard import serve as serve_command

from whaleaudit.audit.review import Review
from whaleaudit.audit.store import open_audit

REPO = Path(__file__).resolve().parents[1]
#: page -> (its link in the sidebar, a text that shows once its main part has rendered)
PAGES = {"overview": ("Overview", "Background attention per species"), "species": ("Species", "match the filters"),
         "concepts": ("Concepts", "A concept is"), "top_losses": ("Top losses", "Actual species"),
         "heatmap": ("Heatmap", "Background attention"), "review": ("Review & export", "History of changes")}

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def serve(audits: Path, log: Path):
    """``streamlit run streamlit_app.py`` in the checkout, as the README says, over ``audits``."""
    port = free_port()
    return serve_command([sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port)],
                         port, cwd=REPO, env=dict(os.environ, WHALEAUDIT_AUDITS=str(audits)), log=log)


def open_page(browser, base: str, path: str, text: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.goto(f"{base}/{path}")
    settle(page, text)
    return page


@pytest.mark.parametrize("name", list(PAGES))
def test_a_shared_link_is_the_first_request_and_opens_the_page_in_its_frame(browser, tmp_path, name):
    """A fresh server for each page, whose first request is a link to that page and an image: the page shows
    its own content inside the frame (page links, audit picker, filters), and the URL keeps the page and the
    image and gains the audit."""
    store = make_audit(tmp_path)
    headings = {"overview": "Overview · small", "species": "Beluga", "concepts": "Concepts", "top_losses": "Top losses",
                "heatmap": "img_005", "review": "Review & export"}
    path = "" if name == "overview" else name
    with serve(store.parent, tmp_path / "streamlit.log") as base:
        page = open_page(browser, base, f"{path}?image=img_005", PAGES[name][1])
        page.get_by_role("heading", name=headings[name]).wait_for(timeout=60_000)
        sidebar = page.get_by_test_id("stSidebar")
        # The frontend loads a widget kind's code on its first use, and draws the page links after the page's
        # own script has run: on a fresh server the sidebar may fill in a moment after the heading shows, so
        # wait for each part rather than count at once.
        for link, _ in PAGES.values():
            expect(sidebar.get_by_role("link", name=link, exact=True)).to_have_count(1, timeout=30_000)
        expect(sidebar.get_by_role("combobox", name="Audit")).to_have_value("small", timeout=30_000)
        for label in ("Background-attention threshold", "Prediction", "Flag", "Colormap"):
            expect(sidebar.get_by_text(label, exact=True)).to_have_count(1, timeout=30_000)
        assert not page.locator('[data-testid="stException"]').count()
        page.wait_for_function("() => new URLSearchParams(location.search).get('audit') === 'small'",
                               timeout=60_000)
        url = urllib.parse.urlsplit(page.url)
        assert url.path == f"/{path}"
        assert urllib.parse.parse_qs(url.query) == {"audit": ["small"], "image": ["img_005"]}
        page.close()


def test_flag_on_review_download_csv_and_survive_a_restart(browser, tmp_path):
    store = make_audit(tmp_path)
    audit = open_audit(store)
    worst = audit.images.sort_values(["bg_score", "image"], ascending=[False, True])["image"].iloc[0]
    log = tmp_path / "streamlit.log"
    with serve(store.parent, log) as base:
        page = open_page(browser, base, "review", "Review & export")
        grid = page.get_by_test_id("stDataFrame").first
        # the grid draws its rows a moment after it shows (its accessible copy names each cell): worst first
        expect(grid.get_by_test_id("glide-cell-1-0")).to_have_text(worst, timeout=30_000)
        box = steady_box(grid)
        page.mouse.click(box["x"] + 20, box["y"] + 35 + 17)  # the first row's selection box, under the header
        settle(page, "1 image", exact=True)  # the selection's caption ("31 images" holds "1 image" too)
        page.get_by_role("button", name="Flag", exact=True).click()
        settle(page, "Flagged 1 image:")
        with page.expect_download(timeout=60_000) as download:
            page.get_by_role("button", name="Download the flagged list").click()
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        page.close()
    assert [(r["image"], r["species"], r["reason"]) for r in rows] == [
        (worst, audit.images.set_index("image").loc[worst, "species"], "attention on water")]
    assert Review(audit.review_path).flags()["image"].tolist() == [worst]

    with serve(store.parent, log) as base:
        page = open_page(browser, base, "review", "Flagged")
        settle(page, "Download the flagged list (1 image,")
        page.close()


def click_first_confusion_cell(page) -> None:
    """A click on the matrix's top-left cell sets both species filters of the list below it."""
    area = steady_box(page.locator(".js-plotly-plot .nsewdrag").first)
    labels = page.wait_for_function("""() => {
        const n = ['ytick', 'xtick'].map(t => new Set([...document.querySelectorAll(
            `.js-plotly-plot .${t} text`)].map(e => e.textContent)).size);
        return n.every(k => k > 0) && n; }""", timeout=60_000).json_value()
    page.mouse.click(area["x"] + area["width"] / labels[1] / 2, area["y"] + area["height"] / labels[0] / 2)
    for name in ("Actual species", "Predicted species"):  # set by the rerun the click asked for
        expect(page.get_by_role("combobox", name=name)).not_to_have_value("any", timeout=60_000)
    settle(page, "Actual species")


def test_every_page_renders_and_is_photographed(browser, tmp_path):
    """Opens the app and walks the sidebar's links, as an analyst does."""
    audits = Path(os.environ.get("WHALEAUDIT_E2E_AUDITS") or make_audit(tmp_path).parent)
    shots = Path(os.environ.get("WHALEAUDIT_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with serve(audits, tmp_path / "streamlit.log") as base:
        page = open_page(browser, base, "", PAGES["overview"][1])
        for name, (link, text) in PAGES.items():
            page.get_by_test_id("stSidebar").get_by_role("link", name=link).click()
            # the URL changes once the server runs the new page: until then the old page's text may match
            path = "/" if name == "overview" else f"/{name}"
            expect(page).to_have_url(re.compile(rf"^[^?]*{re.escape(path)}\?(.*&)?audit="), timeout=60_000)
            settle(page, text)
            assert not page.locator('[data-testid="stException"]').count(), f"{name}: a traceback is shown"
            if name == "top_losses":
                click_first_confusion_cell(page)
            if name == "heatmap" and os.environ.get("WHALEAUDIT_E2E_IMAGE"):
                image = os.environ["WHALEAUDIT_E2E_IMAGE"]
                goto = page.get_by_label("Go to image id")
                goto.fill(image)
                goto.press("Enter")
                goto.blur()
                page.get_by_role("heading", name=image).wait_for(timeout=60_000)
                settle(page, text)
            page.screenshot(path=str(shots / f"{name}.png"), full_page=name != "heatmap")
        page.close()
    assert sorted(p.stem for p in shots.glob("*.png")) == sorted(PAGES)
