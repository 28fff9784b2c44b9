"""Review & export: flag many images at once with a reason and a note, and download the flagged list."""

import streamlit as st

import app_frame as app
from whaleaudit import views
from whaleaudit.audit import export
from whaleaudit.audit.review import REASONS

TABLE_COLUMNS = ["image", "species", "prediction", "correct", "bg_score", "loss", "prob_pred", "flagged", "reason",
                 "note", "status", "error"]
TARGETS = ["selected rows", "all matching images"]
#: Rows of the table sent to the browser at once: all of them would be 500k rows on every rerun.
PER_PAGE = 1000
HISTORY = 500

ctx = app.frame("review")
st.title("Review & export")
ranked = ctx.table.ranked("background attention", ctx.matching())  # positions, worst first
app.showing(len(ranked), len(ctx.frame))
if "review_round" not in st.session_state:
    st.session_state["review_round"] = 0
if message := st.session_state.pop("_review_message", None):
    st.success(message)


def new_round() -> None:
    """A fresh table, so no selection carries over to rows the analyst has not seen."""
    st.session_state["review_round"] += 1


def act(action: str, selected: list[str], seen: app.Context, matching) -> None:
    """One click, one transaction. The images are the ones the analyst saw when clicking (the ``matching`` row
    positions of the page ``seen``); reason, note and target are read now, as a note typed just before the click
    arrives with the click."""
    everything = st.session_state["review_target"] == TARGETS[1]
    images = seen.frame["image"].iloc[matching].tolist() if everything else selected
    if not images:
        st.session_state["_review_message"] = "Nothing to do: no image selected."
        return
    if action == "flag":
        reason = st.session_state["review_reason"]
        seen.review.flag(images, reason, st.session_state["review_note"], seen.who)
        done = f"Flagged {app.images(len(images))}: {reason}."
    else:
        seen.review.unflag(images, seen.who)
        done = f"Unflagged {app.images(len(images))}."
    st.session_state["_review_message"] = done
    new_round()  # the rows selected may have moved


if not len(ranked):
    st.info("No image matches the filters in the sidebar; loosen them to review more.")
else:
    pages = views.page_count(len(ranked), PER_PAGE)
    number = 1
    if pages > 1:
        number = st.pagination(pages, key="review_page", on_change=new_round)
        first = (number - 1) * PER_PAGE
        st.caption(f"Rows {first + 1:,} to {min(first + PER_PAGE, len(ranked)):,} of {len(ranked):,}, worst background "
                   f"attention first, {PER_PAGE:,} per page: select rows on this page, or apply to all matching "
                   "images; narrow the filters to see fewer.")
    table = ctx.frame.iloc[views.page(ranked, number, PER_PAGE)][TABLE_COLUMNS].reset_index(drop=True)
    picked = st.dataframe(table, hide_index=True, key=f"review_table@{st.session_state['review_round']}",
                          on_select="rerun", selection_mode="multi-row", height=380)
    selected = table["image"].iloc[picked.selection.rows].tolist()
    left, middle, right = st.columns([1, 1, 2], vertical_alignment="bottom")
    left.radio("Apply to", TARGETS, key="review_target",
               captions=[app.images(len(selected)), app.images(len(ranked))])
    middle.selectbox("Reason", REASONS, key="review_reason")
    right.text_input("Note", key="review_note", placeholder="optional, saved with each flag")
    flag_col, unflag_col, open_col, _ = st.columns([1, 1, 1, 3])
    flag_col.button("Flag", type="primary", key="review_flag", on_click=act, args=("flag", selected, ctx, ranked))
    unflag_col.button("Unflag", key="review_unflag", on_click=act, args=("unflag", selected, ctx, ranked))
    if open_col.button("Open first selected", key="review_open", disabled=not selected):
        app.open_image(ctx, selected[0], ranked)

st.subheader("Flagged")
flagged = app.flagged_table(ctx)
if flagged.empty:
    st.caption("Nothing flagged yet.")
else:
    st.dataframe(flagged, hide_index=True, height=300)
st.download_button(f"Download the flagged list ({app.images(len(flagged))}, CSV)",
                   data=lambda: export.flagged_csv(ctx.audit, ctx.review), file_name=f"{ctx.name}-flagged.csv",
                   mime="text/csv", on_click="ignore", key="review_download", disabled=flagged.empty)
with st.expander("History of changes"):
    st.dataframe(ctx.review.history(last=HISTORY).iloc[::-1], hide_index=True)
