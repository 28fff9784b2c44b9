"""Concepts: what each species' evidence is made of. Per species, its evidence concepts in the library's order,
each with its most representative crops, its numbers, the factors that place it in that order, where in the
frame it lies and whether on the animal;
choosing one lists the photos where it carries at least a share of the evidence (most of it where a photo reaches
that, less for a small concept), and flags them all in one action."""

import numpy as np
import streamlit as st

import app_frame as app
from whaleaudit import jobs, views
from whaleaudit.audit.concepts import concept_name, has_concepts
from whaleaudit.audit.review import REASONS
from whaleaudit.errors import ImageError, WhaleAuditError
from whaleaudit.explain.concepts import FORMAT
from whaleaudit.views import concepts as concept_views

COLUMNS = 4
THUMB = 256
PER_PAGE = 12
HEAT = 96
INTRO = ("A concept is a kind of image cell that carries a species' evidence: the cells where the model finds "
         "the species, grouped by what they look like to it. A concept off the animal is background the model "
         "leans on. A species' concepts come in order of how unusual they are for it: one that looks unlike the "
         "rest of its evidence and lies where the rest does not (a watermark in a corner, say) comes first, however "
         "small, and one like most of the evidence, where most of it lies, comes last, however large.")
FACTORS_HELP = ("Looks unlike the rest: how far the concept's centre lies from the class's average evidence cell, in "
                "units of a typical cell's distance from that average. Sits apart: the share of its evidence that "
                "would have to move to lie where the class's evidence lies. Concentrated: how much of a photo's "
                "evidence it holds where it appears (averaged over those photos, each weighted by that share). The "
                "concepts are ordered by these multiplied, largest first.")

ctx = app.frame("concepts")
st.title("Concepts")
st.caption(INTRO)


@st.cache_data(max_entries=256, show_spinner=False)
def _strip(path: str, stamp: int | None, concepts_stamp: int | None, species: str, rank: int, examples: tuple,
           grid: tuple, _overlays: views.Overlays) -> bytes | None:
    """A concept's crops as one JPEG, made once per audit build and concepts file."""
    rgb = concept_views.strip(_overlays.photo, list(examples), grid)
    return None if rgb is None else views.to_jpeg(rgb)


@st.cache_data(max_entries=512, show_spinner=False)
def _photo(path: str, stamp: int | None, concepts_stamp: int | None, idx: int, class_idx: int, rank: int,
           colormap: str, opacity: float, _concepts, _overlays: views.Overlays) -> bytes:
    """A listed photo with its class's map and the concept's cells outlined (``_concepts``: its class's rows of
    the concepts' table), made once per look."""
    cells = concept_views.concept_cells(_overlays.audit, _concepts, idx, rank)
    return views.to_jpeg(concept_views.outline_cells(_overlays.rgb(idx, class_idx, THUMB, colormap, opacity), cells))


@st.cache_data(max_entries=512, show_spinner=False)
def _heat(heat: tuple, grid: tuple, colormap: str) -> bytes:
    return views.heat_jpeg(np.reshape(heat, grid), HEAT, colormap)


def offer_concepts() -> None:
    """Evidence but no concepts (or damaged ones): say so and offer to find them, as a background job whose
    progress the frame's jobs panel shows; the page reloads with the concepts when it is done."""
    folder = ctx.audit.path.parent
    arguments = jobs.concepts_arguments(ctx.audit.path)
    running = jobs.read(jobs.job_id("concepts", arguments), jobs=jobs.folder(folder))
    if running is not None and running.active:
        st.info("Finding this audit's concepts: the progress shows above; the page shows them when done.")
        return
    if st.button("Compute the concepts", type="primary",
                 help="Runs in the background from the audit's store (no model needed): a reload or a closed tab "
                      "does not stop it."):
        try:
            jobs.start("concepts", arguments, jobs=jobs.folder(folder))
        except (OSError, WhaleAuditError) as e:
            st.error(f"The concepts could not be computed: {e}")
            return
        st.rerun()


if ctx.audit.evidence is None:
    st.warning("This audit was made before evidence concepts existed: it keeps no evidence maps or cell "
               "descriptors to find them in. Audit the photos again with the current WhaleAudit (the analysts' "
               "flags are kept):")
    st.code(concept_views.reaudit_command(ctx.audit), language="bash")
    st.stop()
if ctx.concepts is None:
    if has_concepts(ctx.audit):
        st.info("This audit's concept files cannot be read (the sidebar says why): compute them again.")
    else:
        st.info(f"No evidence concepts computed for this audit yet: compute them here, or with "
                f"`whaleaudit concepts {ctx.audit.path}`.")
    offer_concepts()
    st.stop()
concepts_stamp = ctx.table.concepts_stamp
species_names = concept_views.species_with_concepts(ctx.concepts.table)
if not species_names:
    st.info("No photo of this audit holds positive evidence for its predicted species: there are no concepts.")
    st.stop()

key = f"concepts_species@{ctx.name}"
if st.session_state.get(key) not in species_names:
    st.session_state[key] = species_names[0]
species = st.selectbox("Species (as predicted)", species_names, key=key, persist_state="session")
class_idx = ctx.class_idx(species)
table = concept_views.of_species(ctx.concepts.table, species)
in_class = int((ctx.table.readable & ctx.table.where("prediction", [species])).sum())
grid = tuple(ctx.audit.evidence.shape[2:])
chosen_key = f"concepts_pick@{ctx.name}@{species}"
if st.session_state.get(chosen_key) not in table["rank"].tolist():
    st.session_state[chosen_key] = int(table["rank"].iloc[0])
ranked = concept_views.ranked_by_unusualness(table)
order = "the most unusual first" if ranked else "the largest share of the evidence first"
why = ", and under them the factors that place it" if ranked else ""
st.caption(f"{len(table)} concepts in the evidence of the {app.images(in_class)} predicted as {species}, {order}. "
           f"Each shows its most typical cells, outlined in their surroundings{why}; the square is the "
           "frame, bright where the concept's evidence lies.")
if not ranked:
    st.info("These concepts were found before WhaleAudit ordered them by how unusual they are: they come by their "
            "share of the evidence, so a small mark may be far down the list. Compute them again to see the new "
            "order.")
    offer_concepts()
elif (older := concept_views.older_format(ctx.concepts.info)) is not None:
    st.info(f"These concepts were found by an earlier WhaleAudit ({older}; this one writes "
            f"{FORMAT}), which found them differently. Compute them again to see what it finds now: "
            "the flags are kept, with their reasons and notes, but a concept's number may change.")
    offer_concepts()


def choose(rank: int) -> None:
    st.session_state[chosen_key] = rank


BADGES = {"on the animal": "green", "off the animal": "orange", "no foreground": "gray"}
with st.container(height=620):
    for concept in table.itertuples():
        with st.container(border=True):
            crops, numbers, heat = st.columns([7, 3, 1.2], vertical_alignment="center")
            jpeg = _strip(str(ctx.audit.path), ctx.stamp, concepts_stamp, species, int(concept.rank),
                          tuple((int(i), int(c)) for i, c in zip(concept.example_idx, concept.example_cell)), grid,
                          ctx.overlays)
            if jpeg is None:
                crops.caption("None of its example photos can be read.")
            else:
                crops.image(jpeg)
            if ranked:
                crops.caption(concept_views.order_factors(concept.distinctiveness, concept.displacement,
                                                          getattr(concept, "concentration", np.nan),
                                                          int(concept.rank), len(table)), help=FACTORS_HELP)
            mark = concept_views.where(concept.on_animal)
            on = "n/a" if mark == "no foreground" else f"{concept.on_animal:.0%}"
            numbers.markdown(f"**{concept_name(species, concept.rank)}** :{BADGES[mark]}-badge[{mark}]  \n"
                             f"{concept.evidence_share:.1%} of the class's evidence  \n"
                             f"in {concept.n_photos:,} of {app.images(in_class)}  \n"
                             f"{on} on the animal")
            numbers.button("List its photos", key=f"concepts_list_{concept.rank}", on_click=choose,
                           args=(int(concept.rank),),
                           type="primary" if st.session_state[chosen_key] == concept.rank else "secondary")
            heat.image(_heat(tuple(concept.heat), grid, ctx.colormap), width="stretch")

st.subheader("Photos of a concept")
left, right = st.columns([2, 3], vertical_alignment="bottom")
marks = dict(zip(table["rank"], table["on_animal"].map(concept_views.where)))
rank = left.selectbox("Concept", list(marks), key=chosen_key,
                      format_func=lambda r: f"{concept_name(species, r)} · {marks[r]}")
name = concept_name(species, rank)
share = ctx.table.concept_share(class_idx, rank)
# Each concept keeps its own share: one the analyst chose for a large concept would empty a small one's list.
# It starts at a share a photo of the species reaches, whatever the sidebar's filters: a filter does not move it.
start = concept_views.starting_share(share)
share_key = f"concepts_share@{ctx.name}@{species}@{rank}"
st.session_state[share_key] = st.session_state.get(share_key, start)   # set first: the page's copy takes it
at_least = right.slider("Share of the photo's evidence it carries, at least", min_value=0.0, max_value=1.0,
                        step=0.05, key=share_key, persist_state="session",
                        help="0.5: the photos where this concept carries most of the evidence; 0: every photo it "
                             "appears in. It starts at 0.5 where a photo reaches that, else as high as lists one.")
listed = concept_views.concept_photos(share, ctx.frame, ctx.matching(species=False), at_least)
most = concept_views.STARTING_SHARES[0]
short = f" (no photo reaches {most:.0%})" if at_least < most and start < most else ""
app.showing(len(listed), in_class, f" predicted as {species}, where {name} carries at least {at_least:.0%} of the "
            f"evidence{short},")
st.caption(f"Each photo with the map of {species}; outlined, the cells {name} holds.")
if message := st.session_state.pop("_concepts_flagged", None):
    st.success(message)


def flag_all(seen: app.Context, positions, note_key: str, reason_key: str) -> None:
    """One click, one transaction: the photos the analyst saw listed when clicking."""
    images = seen.frame["image"].iloc[positions].tolist()
    reason = st.session_state[reason_key]
    seen.review.flag(images, reason, st.session_state[note_key], seen.who)
    st.session_state["_concepts_flagged"] = f"Flagged {app.images(len(images))}: {reason}."


if not len(listed):
    st.info("No photo matches: lower the share, or loosen the filters in the sidebar.")
    st.stop()
reason_col, note_col, button_col = st.columns([1, 2, 1], vertical_alignment="bottom")
# Chosen for each concept, none assumed: a list of badge photos flagged "attention on water" would mislead.
reason_key = f"concepts_reason@{ctx.name}@{species}@{rank}"
reason = reason_col.selectbox("Reason", REASONS, index=None, placeholder="Choose a reason", key=reason_key,
                              help="What these photos' evidence rests on, for the flagged list and its CSV.")
note_key = f"concepts_note@{species}@{rank}@{at_least}"
note_col.text_input("Note", value=f"evidence concept {name}: at least {at_least:.0%} of the evidence",
                    key=note_key)
button_col.button(f"Flag all {app.images(len(listed))}", type="primary", key="concepts_flag_all", on_click=flag_all,
                  args=(ctx, listed, note_key, reason_key), disabled=reason is None,
                  help="Choose a reason first." if reason is None else None)

pages = views.page_count(len(listed), PER_PAGE)
page = st.pagination(pages, key=f"concepts_page@{species}@{rank}@{at_least}") if pages > 1 else 1
shown = views.page(listed, page, PER_PAGE)
for start in range(0, len(shown), COLUMNS):
    for col, position in zip(st.columns(COLUMNS), shown[start:start + COLUMNS]):
        row = ctx.frame.iloc[position]
        with col:
            try:
                st.image(_photo(str(ctx.audit.path), ctx.stamp, concepts_stamp, int(position), class_idx, rank,
                                ctx.colormap, round(ctx.opacity, 2), table, ctx.overlays), width="stretch")
            except ImageError as e:
                st.warning(f"Cannot show {row['image']}: {e}")
            st.caption(f"**{row['image']}**  \n{name}: {share[position]:.0%} of its evidence  \n"
                       f"{app.numbers(row)}")
            if st.button("Open", key=f"concepts_open_{row['image']}"):
                app.open_image(ctx, row["image"], listed)
