"""The frame of every dashboard page: page links, the audit picker, the shared filters, the map style and
the reviewer in the sidebar, the audit and the image in the URL; and what the pages share to render.

Streamlit runs the pages in its ``pages/`` convention: ``streamlit_app.py`` (the Overview) and each script in
``pages/`` is run on its own, with nothing run before it, so a deep link on a fresh server is a run of that
page alone. Each page therefore starts with one call, ``ctx = app_frame.frame("species")``, which draws the
frame and hands the page a :class:`Context`. The frame's widgets keep their values for the whole session
(``persist_state="session"``), so the filters hold from page to page.

This module sits beside ``streamlit_app.py`` (Streamlit puts that folder on ``sys.path``), not in the
``whaleaudit`` package, which never imports Streamlit, and not in ``streamlit_app.py`` itself: Streamlit runs
the entrypoint as a fresh ``__main__`` module on every run, so pages importing it would hold a second copy of
the caches (the audit opened twice). Everything a page shows is computed in
``whaleaudit.views``; this module keeps state and renders.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from whaleaudit import jobs, views, workspace
from whaleaudit.audit import export
from whaleaudit.audit.concepts import class_heats, concept_name
from whaleaudit.audit.review import Review
from whaleaudit.audit.store import MANIFEST, Audit, open_audit
from whaleaudit.errors import ImageError, StoreError, WhaleAuditError
from whaleaudit.explain.concepts import Concepts

#: page -> (its script, relative to streamlit_app.py; its label and icon in the sidebar)
PAGES = {"overview": ("streamlit_app.py", "Overview", ":material/dashboard:"),
         "species": ("pages/species.py", "Species", ":material/photo_library:"),
         "concepts": ("pages/concepts.py", "Concepts", ":material/category:"),
         "top_losses": ("pages/top_losses.py", "Top losses", ":material/trending_down:"),
         "heatmap": ("pages/heatmap.py", "Heatmap", ":material/image_search:"),
         "review": ("pages/review.py", "Review & export", ":material/flag:")}
CORRECTNESS = {"all": None, "correct": True, "wrong": False}
FLAG_STATES = {"all": None, "flagged": True, "not flagged": False}
SPLITS = {"all": None, "validation": "valid", "training": "train"}
#: The frame's widgets keep their values when the user moves to another page.
KEEP = "session"
#: Keys of the frame's widgets; the filters' keys end in ``@<audit>``.
FRAME_KEYS = ("audit", "colormap", "opacity", "who")
FILTER_KEYS = ("threshold", "above", "species", "correct", "flagged", "split", "concept", "concept_share")
#: The concept filter's choice that filters nothing, and the share it starts at once a concept is chosen.
ANY_CONCEPT = "any"
CONCEPT_SHARE = 0.25
#: Pixels of a class's average evidence map on the Overview and Species pages.
CLASS_MAP_SIZE = 96


@dataclass(frozen=True)
class Filters:
    """The sidebar's filters; every list on every page goes through :meth:`Context.matching`."""

    threshold: float
    above_only: bool
    species: tuple[str, ...]
    correct: bool | None
    flagged: bool | None
    split: str | None
    #: ``(class_idx, rank, at_least)``: the photos where that evidence concept holds at least that share.
    concept: tuple[int, int, float] | None = None


@dataclass
class Context:
    """What a page needs: the audit (opened at manifest time ``stamp``), its overlays, table and review, the
    review's version and flags and the image table with them, the filters, the evidence concepts (None where the
    audit has none)."""

    name: str
    stamp: int | None
    audit: Audit
    overlays: views.Overlays
    table: views.Table
    review: Review
    version: tuple
    flags: pd.DataFrame
    frame: pd.DataFrame
    filters: Filters
    colormap: str
    opacity: float
    who: str
    concepts: Concepts | None = None

    def class_idx(self, species: str) -> int | None:
        classes = self.audit.classes
        return classes.index(species) if species in classes else None

    def row(self, image: str) -> pd.Series | None:
        position = self.table.position(image)
        return None if position is None else self.frame.iloc[position]

    def matching(self, *, species: bool = True) -> np.ndarray:
        """Which rows of :attr:`frame` the sidebar's filters keep (the species filter left out on request)."""
        f = self.filters
        return self.table.mask(self.frame, threshold=f.threshold if f.above_only else None,
                               species=f.species if species else None, correct=f.correct, flagged=f.flagged,
                               split=f.split, concept=f.concept)


@st.cache_data(max_entries=16, show_spinner=False)
def _flagged_table(path: str, stamp: int | None, version: tuple, concepts_stamp: int | None, _images: pd.DataFrame,
                   _flags: pd.DataFrame, _concepts: Concepts | None) -> pd.DataFrame:
    return export.flagged_table(_images, _flags, _concepts)


def flagged_table(ctx: Context) -> pd.DataFrame:
    """The flagged list the page shows (with the analyst's corrections and, where the audit has them, each photo's
    largest concepts), made once per audit, review version and computation of the concepts."""
    return _flagged_table(str(ctx.audit.path), ctx.stamp, ctx.version, ctx.table.concepts_stamp, ctx.frame,
                          ctx.flags, ctx.concepts)


@st.cache_data(max_entries=64, show_spinner=False)
def _species_table(path: str, stamp: int | None, version: tuple, threshold: float,
                   _frame: pd.DataFrame) -> pd.DataFrame:
    return views.species_table(_frame, threshold)


def species_table(ctx: Context) -> pd.DataFrame:
    """The overview's table per species at the sidebar's threshold, made once per audit, review version and
    threshold."""
    return _species_table(str(ctx.audit.path), ctx.stamp, ctx.version, ctx.filters.threshold, ctx.frame)


@st.cache_data(max_entries=16, show_spinner=False)
def _class_heats(path: str, stamp: int | None, _audit: Audit) -> np.ndarray | None:
    return None if _audit.evidence is None else class_heats(_audit)


@st.cache_data(max_entries=64, show_spinner=False)
def _class_maps(path: str, stamp: int | None, colormap: str, size: int, _audit: Audit) -> dict[str, bytes]:
    heats = _class_heats(path, stamp, _audit)
    if heats is None:
        return {}
    return {species: views.heat_jpeg(heat, size, colormap) for species, heat in zip(_audit.classes, heats) if heat.any()}


def class_maps(ctx: Context, size: int = CLASS_MAP_SIZE) -> dict[str, bytes]:
    """Species -> its average evidence map as a JPEG (:func:`views.heat_jpeg` in the sidebar's colormap), for each
    species some photo is predicted as with positive evidence; empty for an audit made before evidence maps.
    Worked out once per audit (one pass over its evidence), drawn once per colormap."""
    return _class_maps(str(ctx.audit.path), ctx.stamp, ctx.colormap, size, ctx.audit)


CLASS_MAP_HELP = ("Where in the frame the model's evidence for a species comes from: the layer3 Grad-CAM evidence "
                  "of every photo predicted as it, added up cell by cell (a photo with more evidence weighs more). "
                  f"One scale for all: a cell holding {views.HEAT_SATURATES:g} times its even share saturates. "
                  "The sidebar's filters do not apply.")


def list_audits(folder: Path) -> list[str]:
    """Audit folders by name (unfinished ``.partial`` runs, ``.old`` leftovers and hidden folders excluded)."""
    if not folder.is_dir():
        return []
    return sorted((p.name for p in folder.iterdir() if p.is_dir() and not p.name.endswith((".partial", ".old"))
                   and not p.name.startswith(".")))  # .jobs/: the background jobs' states


def _manifest_stamp(path: Path) -> int | None:
    try:
        return (path / MANIFEST).stat().st_mtime_ns
    except OSError:
        return None


@st.cache_resource(max_entries=4, show_spinner="Opening the audit...")
def _open(path: str, stamp: int | None) -> tuple[Audit, views.Overlays, views.Table]:
    """One open audit per folder and manifest time: a rebuilt audit is opened afresh."""
    audit = open_audit(path)
    return audit, views.Overlays(audit), views.Table(audit.images, audit)


@st.cache_resource
def _review(path: str) -> Review:
    return Review(path)


def _apply_url_once(names: list[str]) -> None:
    """A shared link opens its audit and image; afterwards the session's state drives the URL."""
    if st.session_state.get("_url_applied"):
        return
    st.session_state["_url_applied"] = True
    if st.query_params.get("audit") in names:
        st.session_state["audit"] = st.query_params["audit"]
    if st.query_params.get("image"):
        st.session_state["image"] = st.query_params["image"]


def sync_url() -> None:
    """Write the audit and the selected image into the URL, so it can be shared."""
    for key in ("audit", "image"):
        value = st.session_state.get(key)
        if value and st.query_params.get(key) != value:
            st.query_params[key] = value


#: Which demo recipe the build button asks for (``whaleaudit.demo.build.RECIPES``); tests name "tiny".
DEMO_RECIPE_ENV = "WHALEAUDIT_DEMO_RECIPE"
#: Seconds between two looks at the jobs while one runs, and while none does (one started in another tab).
JOBS_REFRESH, JOBS_WATCH = 1.0, 3.0


def offer_demo(folder: Path) -> None:
    """No audit yet: explain, and offer to build the demo. The build is a background job
    (:mod:`whaleaudit.jobs`): a reload or a closed tab never stops it, and a click in a second tab joins it."""
    st.info(f"No audit found in `{folder}` (set {workspace.AUDITS_ENV} to look elsewhere). Build one with "
            "`whaleaudit audit ...`, or build the demo audit here: synthetic whale photos with "
            "planted shortcuts, a small model trained on them, and its maps (a few minutes on a laptop).")
    arguments = jobs.demo_arguments(folder, os.environ.get(DEMO_RECIPE_ENV, "full"))
    running = jobs.read(jobs.job_id("demo", arguments), jobs=jobs.folder(folder))
    if running is not None and running.active:
        return  # the jobs panel shows its progress
    if st.button("Build the demo audit", type="primary",
                 help="Runs in the background; a build that stopped resumes where it stopped."):
        try:
            jobs.start("demo", arguments, jobs=jobs.folder(folder))
        except (OSError, WhaleAuditError) as e:
            st.error(f"The demo build could not be started: {e}")
            return
        st.session_state["audit"] = "demo"
        st.rerun()


def show_jobs(folder: Path) -> None:
    """The background jobs of this audits folder, on every page: progress while they run (refreshed every
    second), the error and the log where one failed or died; when one starts, ends or dies (in any tab), the
    page reloads to show it."""
    try:
        listed = jobs.list_jobs(jobs=jobs.folder(folder))
    except WhaleAuditError as e:
        st.warning(str(e))
        return
    statuses = {j.id: j.status for j in listed}
    refresh = JOBS_REFRESH if jobs.RUNNING in statuses.values() else JOBS_WATCH
    st.fragment(run_every=refresh)(_jobs_panel)(folder, statuses)


def _jobs_panel(folder: Path, statuses: dict[str, str]) -> None:
    listed = jobs.list_jobs(jobs=jobs.folder(folder))
    if {j.id: j.status for j in listed} != statuses:  # one started, finished or died: redraw the whole page
        st.rerun(scope="app")
    for job in listed:
        name = job.title
        if job.active:
            bar, cancel = st.columns([5, 1], vertical_alignment="bottom")
            bar.progress(job.share, text=f"{name} · {job.sentence()}")
            if cancel.button("Cancel", key=f"cancel_{job.id}"):
                with contextlib.suppress(WhaleAuditError):
                    jobs.cancel(job.id, jobs=jobs.folder(folder))
        elif job.status in (jobs.FAILED, jobs.DIED):
            error, dismiss = st.columns([5, 1], vertical_alignment="center")
            error.error(f"{name} failed. {job.sentence()}")
            if dismiss.button("Dismiss", key=f"dismiss_{job.id}"):
                jobs.forget(job.id, jobs=jobs.folder(folder))
                st.rerun(scope="app")


def _carry(keys) -> None:
    """Hand the values the frame's widgets had on the previous page to this page's widgets. Each page has its
    own copy of a widget; kept with ``persist_state="session"`` alone, the copy shows its default, or the value
    it had when this page was last open, in its first run (Streamlit 1.67). Setting the key first makes every
    copy take the session's value."""
    for key in keys:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def _threshold_step(low: float, high: float) -> float:
    return float(10 ** np.floor(np.log10(max(high - low, 1e-9) / 100)))


def _concepts(table: views.Table) -> Concepts | None:
    """The audit's evidence concepts; a damaged concept file is a warning (the Concepts page says how to
    recompute them), and the pages go on without the concepts."""
    try:
        return table.concepts()
    except StoreError as e:
        st.sidebar.warning(f"Evidence concepts left out: {e}")
        return None


def _filters(name: str, table: views.Table, concepts: Concepts | None) -> Filters:
    """The shared filters, keyed per audit so another audit's values never land out of range."""
    low, high = table.score_range
    step = _threshold_step(low, high)
    _carry(f"{key}@{name}" for key in FILTER_KEYS)
    key = f"threshold@{name}"
    if key not in st.session_state:
        st.session_state[key] = float(np.clip(round(table.default_threshold / step) * step, low, high))
    st.sidebar.subheader("Filters")
    threshold = st.sidebar.slider("Background-attention threshold", low, high, step=step, key=key,
                                  persist_state=KEEP,
                                  help="bg_score at or above this counts as attention on the background.")
    above_only = st.sidebar.toggle("Only images at or above the threshold", key=f"above@{name}", persist_state=KEEP)
    species = st.sidebar.multiselect("Species", sorted(table.species), key=f"species@{name}", persist_state=KEEP,
                                     placeholder="all species")
    correct = st.sidebar.radio("Prediction", list(CORRECTNESS), horizontal=True, key=f"correct@{name}",
                               persist_state=KEEP)
    flagged = st.sidebar.radio("Flag", list(FLAG_STATES), horizontal=True, key=f"flagged@{name}",
                               persist_state=KEEP)
    split = "all"
    if table.has_split:  # only an audit of a model WhaleAudit trained knows which photos were held out
        split = st.sidebar.radio("Photos", list(SPLITS), horizontal=True, key=f"split@{name}", persist_state=KEEP,
                                 help="validation: the photos held out from training, where the model's errors "
                                      "are honest ones; training: the photos it learnt from.")
    concept = None if concepts is None else _concept_filter(name, concepts)
    return Filters(threshold, above_only, tuple(species), CORRECTNESS[correct], FLAG_STATES[flagged], SPLITS[split],
                   concept)


def _concept_filter(name: str, concepts: Concepts) -> tuple[int, int, float] | None:
    """"Share of concept X at least t": a concept by name (:func:`whaleaudit.audit.concepts.concept_name`), then
    the share of the photo's evidence it must hold."""
    choices = {concept_name(c.species, c.rank): (c.class_idx, c.rank, c.evidence_share)
               for c in concepts.table.itertuples()}
    key = f"concept@{name}"
    if st.session_state.get(key) not in (ANY_CONCEPT, *choices):  # unset, or gone from recomputed concepts
        st.session_state[key] = ANY_CONCEPT
    st.session_state.setdefault(f"concept_share@{name}", CONCEPT_SHARE)
    chosen = st.sidebar.selectbox(
        "Evidence concept", [ANY_CONCEPT, *choices], key=key, persist_state=KEEP,
        format_func=lambda c: c if c == ANY_CONCEPT else f"{c} · {choices[c][2]:.0%} of the class's evidence",
        help="Evidence concepts are what the model's evidence for a species is made of (the Concepts page shows "
             "them): photos where the chosen one holds at least the share below of the evidence for their "
             "predicted species.")
    if chosen == ANY_CONCEPT:
        return None
    at_least = st.sidebar.slider("Its share of the photo's evidence, at least", 0.01, 1.0, step=0.01,
                                 key=f"concept_share@{name}", persist_state=KEEP)
    class_idx, rank, _ = choices[chosen]
    return class_idx, rank, at_least


def frame(page: str) -> Context:
    """Draw the frame around ``page`` (a key of :data:`PAGES`) and return the page's Context. Without an
    audit to show, the page stops here, after the frame has said why (or offered to build the demo)."""
    _, label, _ = PAGES[page]
    st.set_page_config(page_title=f"{label} · WhaleAudit", page_icon=":material/water:", layout="wide")
    for path, link, icon in PAGES.values():
        st.sidebar.page_link(path, label=link, icon=icon)
    folder = workspace.audits()
    names = list_audits(folder)
    _carry(FRAME_KEYS)
    _apply_url_once(names)
    show_jobs(folder)
    if not names:
        offer_demo(folder)
        st.stop()
    if st.session_state.get("audit") not in names:
        st.session_state["audit"] = names[0]
    name = st.sidebar.selectbox("Audit", names, key="audit", persist_state=KEEP)
    path = folder / name
    try:
        stamp = _manifest_stamp(path)
        audit, overlays, table = _open(str(path), stamp)
        review = _review(str(audit.review_path))
        version, flags, rows = table.review_state(review)
    except StoreError as e:
        st.error(str(e))
        st.stop()
    concepts = _concepts(table)
    filters = _filters(name, table, concepts)
    st.sidebar.subheader("Maps")
    colormap = st.sidebar.selectbox("Colormap", views.COLORMAPS, key="colormap", persist_state=KEEP)
    st.session_state.setdefault("opacity", 0.5)
    opacity = st.sidebar.slider("Opacity", 0.0, 1.0, step=0.05, key="opacity", persist_state=KEEP)
    who = st.sidebar.text_input("Reviewer", key="who", placeholder="your name, saved with each flag",
                                persist_state=KEEP)
    sync_url()
    return Context(name, stamp, audit, overlays, table, review, version, flags, rows, filters, colormap, opacity, who,
                   concepts)


def open_image(ctx: Context, image: str, positions: np.ndarray) -> None:
    """Go to the heatmap page on ``image``, with the rows at ``positions`` as the list that previous/next walks."""
    st.session_state["image"] = image
    keep_list(ctx, positions)
    st.switch_page(PAGES["heatmap"][0])


def keep_list(ctx: Context, positions: np.ndarray) -> None:
    """Keep a list of images for the heatmap as row positions (a list of 500k ids would cost a tenth of a second
    to make and 40 MB per session), with the audit they belong to."""
    st.session_state["image_list"] = (ctx.name, ctx.stamp, positions)


def kept_list(ctx: Context) -> np.ndarray | None:
    """The list :func:`keep_list` kept, if it belongs to this build of this audit."""
    kept = st.session_state.get("image_list")
    return kept[2] if kept is not None and kept[:2] == (ctx.name, ctx.stamp) else None


def open_species(species: str) -> None:
    st.session_state["species_focus"] = species
    st.switch_page(PAGES["species"][0])


def show_map(ctx: Context, row: pd.Series, class_idx: int | None, size: int, *, caption: str | None = None,
             with_mask: bool = False, boxes: tuple | None = None) -> None:
    """One photo with a class's map (or alone); a photo that cannot be read gets a message in its place. ``boxes``:
    the analyst's corrected foreground, outlined instead of the audit's."""
    try:
        jpeg = ctx.overlays.jpeg(int(row["idx"]), class_idx, size, ctx.colormap, round(ctx.opacity, 2), with_mask,
                                 boxes)
    except ImageError as e:
        st.warning(f"Cannot show {row['image']}: {e}")
        return
    st.image(jpeg, caption=caption, width="stretch")


def numbers(row: pd.Series) -> str:
    """The line under a thumbnail: background attention, loss, confidence, flag."""
    flag = " · flagged" if row.get("flagged") else ""
    return (f"bg {row['bg_score']:.3f} · loss {row['loss']:.2f} · p {row['prob_pred']:.2f} "
            f"({row['prediction']}){flag}")


def images(n: int) -> str:
    return f"{n:,} image" if n == 1 else f"{n:,} images"


def showing(n: int, total: int, what: str = "") -> None:
    st.caption(f"{n:,} of {images(total)}{what} match the filters.")
