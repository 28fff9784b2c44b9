"""Heatmap: one image large, the map of any class, the foreground outlined, the score explained; flag it, and
correct the foreground: drag boxes around the animal on the photo (or say it has none), and the photo is scored
again at once (:mod:`whaleaudit.audit.corrections`)."""

import numpy as np
import plotly.graph_objects as go
import streamlit as st

import app_frame as app
from whaleaudit import views
from whaleaudit.audit.corrections import analyst_mask
from whaleaudit.audit.review import REASONS
from whaleaudit.errors import ImageError
from whaleaudit.views.selection import selection_boxes

LARGE = 512
CLASS_CHOICES = ["predicted", "actual", "another class"]
#: Invisible points every this many pixels of the shown photo: Plotly reports a dragged box only where it
#: selects points, and an image trace has none.
GRID = 8
CORRECTION_RGB = "#00e5ff"
DRAW_WIDTH = 480  # pixels on screen of the photo to draw on (the column's width on a laptop)


def drawing(photo: np.ndarray, boxes) -> go.Figure:
    """The photo as a Plotly image to drag boxes on, with the current correction's boxes outlined."""
    height, width = photo.shape[:2]
    ys, xs = np.mgrid[GRID / 2:height:GRID, GRID / 2:width:GRID]
    figure = go.Figure([go.Image(z=photo, hoverinfo="skip"),
                        go.Scatter(x=xs.ravel(), y=ys.ravel(), mode="markers", hoverinfo="skip", showlegend=False,
                                   marker={"size": GRID, "opacity": 0}, unselected={"marker": {"opacity": 0}},
                                   selected={"marker": {"opacity": 0}})])
    for x0, y0, x1, y1 in boxes:
        figure.add_shape(type="rect", x0=x0 * width, x1=x1 * width, y0=y0 * height, y1=y1 * height,
                         line={"color": CORRECTION_RGB, "width": 3})
    figure.update_layout(dragmode="select", margin={"t": 0, "b": 0, "l": 0, "r": 0},
                         height=round(DRAW_WIDTH * height / width), width=DRAW_WIDTH,
                         newselection={"line": {"color": "#ffcc00", "width": 2, "dash": "solid"}})
    figure.update_xaxes(visible=False, range=[0, width])
    figure.update_yaxes(visible=False, range=[height, 0], scaleanchor="x")
    return figure

ctx = app.frame("heatmap")
# the list previous/next walk, as row positions: the one a gallery opened, or the matching images worst first
ranked = app.kept_list(ctx)
if ranked is None or not len(ranked):
    ranked = ctx.table.ranked("background attention", ctx.matching())
image = st.session_state.get("image")
here = None if image is None else ctx.table.position(image)  # row position of the image shown
if image is not None and here is None:
    st.warning(f"Image {image!r} is not in the audit {ctx.name}; showing the first image of the list instead.")
if here is None:
    if not len(ranked):
        st.info("No image matches the filters in the sidebar; loosen them to pick an image.")
        st.stop()
    here = ranked[0]
    image = ctx.frame["image"].iat[here]
st.session_state["image"] = image
app.sync_url()
row = ctx.frame.iloc[here]
idx = int(row["idx"])

prev_id, next_id = (None if at is None else ctx.frame["image"].iat[at] for at in views.neighbours(ranked, here))
st.title(image)
nav = st.columns([1, 1, 3, 2], vertical_alignment="bottom")
if nav[0].button("Previous", disabled=prev_id is None, key="heatmap_prev"):
    st.session_state["image"] = prev_id
    st.rerun()
if nav[1].button("Next", disabled=next_id is None, key="heatmap_next"):
    st.session_state["image"] = next_id
    st.rerun()
place = np.flatnonzero(ranked == here)
nav[2].caption(f"{place[0] + 1:,} of {len(ranked):,} in the current list" if len(place) else "not in the current list")


def go_to() -> None:
    """Jump to the typed image id, keeping the list; an unknown id is reported and nothing moves."""
    typed = st.session_state["heatmap_goto"].strip()
    if ctx.row(typed) is None:
        st.session_state["_goto_error"] = typed
    else:
        st.session_state["image"] = typed
        app.keep_list(ctx, ranked)
        st.session_state["heatmap_goto"] = ""


nav[3].text_input("Go to image id", key="heatmap_goto", placeholder="image id", on_change=go_to)
if st.session_state.get("_goto_error"):
    nav[3].error(f"No image {st.session_state.pop('_goto_error')!r} in this audit.")

st.markdown(f"actual **{row['species']}** (label `{row['species_raw']}`) · predicted **{row['prediction'] or '-'}** · "
            f"p {row['prob_pred']:.3f} · loss {row['loss']:.3f} · split {row['split'] or '-'}")
if row["status"] != "ok":
    st.error(f"This image could not be read when the audit was built: {row['error']}")

choice_col, class_col, mask_col = st.columns([2, 2, 1], vertical_alignment="bottom")
which = choice_col.radio("Map for", CLASS_CHOICES, horizontal=True, key="heatmap_which", persist_state="session")
chosen = class_col.selectbox("Class", ctx.audit.classes, key="heatmap_class", disabled=which != "another class",
                             persist_state="session")
with_mask = mask_col.checkbox("Outline foreground", value=True, key="heatmap_mask", persist_state="session",
                              disabled=row["fg_source"] == "none")
class_idx = {"predicted": int(row["pred_idx"]), "actual": int(row["label_idx"]),
             "another class": ctx.class_idx(chosen)}[which]
if class_idx < 0:
    class_idx = None

correction = ctx.review.correction(image)
boxes = None if correction is None else tuple(correction["boxes"])  # the analyst's foreground, if corrected
original, mapped = st.columns(2)
with original:
    drawn = []
    try:
        photo = ctx.overlays.photo(idx, LARGE)
    except ImageError as e:
        st.warning(f"Cannot show {image}: {e}")
    else:
        event = st.plotly_chart(drawing(photo, boxes or ()), key=f"draw@{image}@{correction and correction['when']}",
                                on_select="rerun", selection_mode="box", width="content",
                                config={"displayModeBar": False})
        drawn = selection_boxes(event.selection, photo.shape[1], photo.shape[0])
        st.caption("original · drag a box around the animal (hold Shift for more than one), then save it"
                   + (" · blue: the analyst's foreground" if boxes else ""))
with mapped:
    if class_idx is None:
        st.info("No map: the model has no class for this choice (unknown species or unreadable image).")
    else:
        app.show_map(ctx, row, class_idx, LARGE, with_mask=with_mask, boxes=boxes,
                        caption=f"map for {ctx.audit.classes[class_idx]} · colour scale 0 .. "
                                f"{ctx.overlays.vmax:.3g} (fixed for the whole audit)"
                                + (" · white line: foreground" + (" (the analyst's)" if boxes else " estimate")
                                   if with_mask else ""))

st.subheader("Foreground")
if correction is None:
    st.caption(f"The audit's own foreground ({row['fg_source']}). Drag boxes on the photo to correct it.")
elif boxes:
    st.info(f"Corrected by {correction['who'] or 'someone'} at {correction['when']}: {len(boxes)} box(es). "
            "The scores below use them; the causal check's numbers were measured with the audit's own foreground "
            "(they need the model).")
else:
    st.info(f"Cleared by {correction['who'] or 'someone'} at {correction['when']}: no animal, so no score.")
fix = st.columns([2, 2, 2, 3], vertical_alignment="center")
if fix[0].button(f"Save {len(drawn)} box(es)" if drawn else "Save boxes", type="primary", disabled=not drawn,
                 key="heatmap_save_boxes"):
    ctx.review.correct(image, drawn, ctx.who)
    st.rerun()
if fix[1].button("Clear the animal", disabled=boxes == (), key="heatmap_clear", help="The photo has no animal."):
    ctx.review.clear(image, ctx.who)
    st.rerun()
if fix[2].button("Undo my correction", disabled=correction is None, key="heatmap_undo"):
    ctx.review.undo_correction(image, ctx.who)
    st.rerun()
if drawn:
    fix[3].caption(f"{len(drawn)} box(es) drawn, not saved yet.")

st.subheader("Background attention")
st.dataframe(views.score_card(row), hide_index=True)
mask = ctx.audit.mask(idx) if boxes is None else analyst_mask(boxes)
if class_idx is not None and row["status"] == "ok" and row["fg_source"] != "none" and mask.any():
    parts = views.explain_score(ctx.audit.cam(idx, class_idx), mask, ctx.audit.spread)
    st.markdown(
        f"How it is computed, for the map of **{ctx.audit.classes[class_idx]}**: each of the map's "
        f"{parts['evidence'].size} cells holds a share of the positive evidence and is covered by the foreground "
        "estimate in part (grid below: each cell's share of the evidence, then its share of foreground). "
        f"Weighted by evidence, the coverage is {1 - parts['bg_share']:.3f}, so bg_share = "
        f"**{parts['bg_share']:.3f}**. A map this coarse cannot point finer than a cell, and this network's "
        f"evidence reaches about {ctx.audit.spread:.2f} cells beyond where it comes from (measured on this "
        "model), so the score softens the foreground by that much and compares with a model that looks "
        f"only at this animal: on = **{parts['on']:.3f}** against ideal = {parts['ideal']:.3f}, so "
        f"bg_score = 1 - on / ideal = **{parts['bg_score']:.3f}** "
        "(0: as much on the animal as this map can be; 1: all of it off the animal). "
        f"Peak on the animal: {'yes' if parts['peak_on_animal'] else 'no'}; "
        f"spread of the evidence (entropy): {parts['cam_entropy']:.2f}.")
    fine = parts["evidence"].size > 16  # a layer3 map: 8 x 8 cells have room for the numbers only
    text = [[f"{e:.0%}<br>{c:.0%}" if fine else f"{e:.0%} evidence<br>{c:.0%} foreground" for e, c in zip(er, cr)]
            for er, cr in zip(parts["evidence"], parts["coverage"])]
    grid = go.Figure(go.Heatmap(z=parts["evidence"], text=text, texttemplate="%{text}", colorscale="Blues",
                                showscale=False, hoverinfo="skip"))
    grid.update_layout(height=480 if fine else 320, width=560 if fine else 420, margin=dict(t=10, b=10, l=10, r=10),
                       yaxis=dict(autorange="reversed", visible=False), xaxis=dict(visible=False))
    st.plotly_chart(grid, key="cell_grid", width="content")

st.subheader("Review")
state = ctx.review.state(image)
if state["flagged"]:
    st.success(f"Flagged: {state['reason']} · by {state['who'] or 'someone'} at {state['when']}")
else:
    st.caption("Not flagged.")
form = st.columns([2, 3], vertical_alignment="bottom")
reason = form[0].selectbox("Reason", REASONS, key=f"reason@{image}",
                           index=REASONS.index(state["reason"]) if state["reason"] in REASONS else 0)
note = form[1].text_input("Note", value=state["note"], key=f"note@{image}")
buttons = st.columns([1, 1, 1, 4])
if buttons[0].button("Flag", type="primary", key="heatmap_flag"):
    ctx.review.flag([image], reason, note, ctx.who)
    st.rerun()
if buttons[1].button("Unflag", disabled=not state["flagged"], key="heatmap_unflag"):
    ctx.review.unflag([image], ctx.who)
    st.rerun()
if buttons[2].button("Save note", key="heatmap_note"):
    ctx.review.note(image, note, ctx.who)
    st.rerun()
