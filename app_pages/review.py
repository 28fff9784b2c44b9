"""Review & export: flag many images at once with a reason and a note, and download the flagged list."""

import streamlit as st

from app_pages import common
from whaleaudit import export, views
from whaleaudit.review import REASONS

TABLE_COLUMNS = ["image", "species", "prediction", "correct", "bg_score", "loss", "prob_pred", "flagged", "reason",
                 "note", "status", "error"]
TARGETS = ["selected rows", "all matching images"]

ctx = common.context()
st.title("Review & export")
rows = views.sort_images(ctx.filters.apply(ctx.frame)[TABLE_COLUMNS], "background attention")
common.showing(len(rows), len(ctx.frame))
if "review_round" not in st.session_state:
    st.session_state["review_round"] = 0
if message := st.session_state.pop("_review_message", None):
    st.success(message)


def act(action: str, selected: list[str], matching: list[str]) -> None:
    """One click, one transaction. The image lists are the ones the analyst saw when clicking; reason, note and
    target are read now, as a note typed just before the click arrives with the click."""
    images = selected if st.session_state["review_target"] == TARGETS[0] else matching
    if not images:
        st.session_state["_review_message"] = "Nothing to do: no image selected."
        return
    if action == "flag":
        reason = st.session_state["review_reason"]
        ctx.review.flag(images, reason, st.session_state["review_note"], ctx.who)
        done = f"Flagged {common.images(len(images))}: {reason}."
    else:
        ctx.review.unflag(images, ctx.who)
        done = f"Unflagged {common.images(len(images))}."
    st.session_state["_review_message"] = done
    st.session_state["review_round"] += 1  # a fresh table: the rows selected may have moved


if rows.empty:
    st.info("No image matches the filters in the sidebar; loosen them to review more.")
else:
    table = rows[TABLE_COLUMNS].reset_index(drop=True)
    picked = st.dataframe(table, hide_index=True, key=f"review_table@{st.session_state['review_round']}",
                          on_select="rerun", selection_mode="multi-row", height=380)
    selected = table["image"].iloc[picked.selection.rows].tolist()
    left, middle, right = st.columns([1, 1, 2], vertical_alignment="bottom")
    left.radio("Apply to", TARGETS, key="review_target",
               captions=[common.images(len(selected)), common.images(len(rows))])
    middle.selectbox("Reason", REASONS, key="review_reason")
    right.text_input("Note", key="review_note", placeholder="optional, saved with each flag")
    matching = rows["image"].tolist()
    flag_col, unflag_col, open_col, _ = st.columns([1, 1, 1, 3])
    flag_col.button("Flag", type="primary", key="review_flag", on_click=act, args=("flag", selected, matching))
    unflag_col.button("Unflag", key="review_unflag", on_click=act, args=("unflag", selected, matching))
    if open_col.button("Open first selected", key="review_open", disabled=not selected):
        common.open_image(selected[0], matching)

st.subheader("Flagged")
flagged = export.flagged_table(ctx.audit.images, ctx.review.flags())
if flagged.empty:
    st.caption("Nothing flagged yet.")
else:
    st.dataframe(flagged, hide_index=True, height=300)
st.download_button(f"Download the flagged list ({common.images(len(flagged))}, CSV)",
                   data=lambda: export.flagged_csv(ctx.audit, ctx.review), file_name=f"{ctx.name}-flagged.csv",
                   mime="text/csv", on_click="ignore", key="review_download", disabled=flagged.empty)
with st.expander("History of changes"):
    st.dataframe(ctx.review.history().iloc[::-1].head(500), hide_index=True)
