"""WhaleAudit dashboard: ``streamlit run streamlit_app.py`` (or ``whaleaudit dashboard``).

The entrypoint is the Overview page: how well the model does and where it looks, species by species. The
other pages are the scripts in ``pages/``; every page draws the frame first (``app_frame``).
"""

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import app_frame as app
from whaleaudit import views

ctx = app.frame("overview")
frame, threshold = ctx.frame, ctx.filters.threshold

st.title(f"Overview · {ctx.name}")
stats = ctx.table.summary
above = int(ctx.table.mask(frame, threshold=threshold).sum())
cols = st.columns(5)
cols[0].metric("Images", f"{stats['images']:,}")
cols[1].metric("Species", stats["species"])
if stats["n_valid"]:
    cols[2].metric("Validation accuracy", f"{stats['valid_accuracy']:.1%}",
                   help=f"On the {stats['n_valid']:,} photos held out from training. On all photos, the training "
                        f"ones included: {stats['accuracy']:.1%}.")
else:
    cols[2].metric("Accuracy, all photos", f"{stats['accuracy']:.1%}",
                   help="The audit does not know which photos the model was trained on, so this may count them.")
cols[3].metric("At or above threshold", f"{above:,}")
cols[4].metric("Flagged", f"{int(frame['flagged'].sum()):,}")
st.caption(views.model_line(ctx.audit.manifest))
if stats["unreadable"]:
    st.warning(f"{app.images(stats['unreadable'])} could not be read when the audit was built; "
               "they are listed on the Review page with their error.")

st.subheader("Species")
table = app.species_table(ctx)
all_photos = st.column_config.NumberColumn("accuracy, all photos", format="percent")
held_out = st.column_config.NumberColumn("validation accuracy", format="percent")
picked = st.dataframe(table, hide_index=True, key="species_table", on_select="rerun", selection_mode="single-row",
                      column_config={"accuracy": all_photos, "validation accuracy": held_out})
choice_col, button_col = st.columns([3, 1], vertical_alignment="bottom")
species = choice_col.selectbox("Open a species", table["species"], key="overview_species")
if button_col.button("Open its gallery", key="open_species"):
    app.open_species(species)
if picked.selection.rows:
    app.open_species(table["species"].iloc[picked.selection.rows[0]])

if maps := app.class_maps(ctx):
    st.subheader("Where the evidence comes from", help=app.CLASS_MAP_HELP)
    named = [s for s in table["species"] if s in maps]
    st.image([maps[s] for s in named], caption=named, width=app.CLASS_MAP_SIZE)
    st.caption("Each species' average evidence map over the photos predicted as it (species no photo is "
               "predicted as are left out); the Species page shows it larger.")

left, right = st.columns(2)
with left:
    hist = ctx.table.histogram
    fig = go.Figure(go.Bar(x=(hist["left"] + hist["right"]) / 2, y=hist["count"], width=hist["right"] - hist["left"],
                           marker_color="#4c78a8", hovertemplate="bg %{x:.3f}: %{y} images<extra></extra>"))
    fig.add_vline(x=threshold, line_dash="dash", line_color="#e45756",
                  annotation_text=f"threshold {threshold:g}", annotation_position="top right")
    fig.update_layout(title="Background attention", xaxis_title="bg_score", yaxis_title="images", height=360,
                      margin=dict(t=50, b=40, l=40, r=10), bargap=0)
    st.plotly_chart(fig, key="hist_chart")
with right:
    sample = ctx.table.scatter
    fig = px.scatter(sample, x="bg_score", y="loss", color=sample["correct"].map({True: "correct", False: "wrong"}),
                     hover_data=["image", "species", "prediction"], render_mode="svg", opacity=0.6,
                     title=f"Background attention against loss ({len(sample):,} images shown)",
                     color_discrete_map={"correct": "#4c78a8", "wrong": "#e45756"})
    fig.add_vline(x=threshold, line_dash="dash", line_color="#e45756")
    fig.update_layout(height=360, margin=dict(t=50, b=40, l=40, r=10), legend_title_text="")
    st.plotly_chart(fig, key="scatter_chart")

score_cols = [c for c in table.columns if c.endswith("bg_score")]
fig = px.bar(table.melt(id_vars="species", value_vars=score_cols, var_name="statistic", value_name="bg_score"),
             x="species", y="bg_score", color="statistic", barmode="group",
             title="Background attention per species (click a bar to open the species)")
fig.add_hline(y=threshold, line_dash="dash", line_color="#e45756")
fig.update_layout(height=380, margin=dict(t=50, b=40, l=40, r=10))
clicked = st.plotly_chart(fig, key="species_chart", on_select="rerun", selection_mode="points")
if clicked.selection.points:
    app.open_species(clicked.selection.points[0]["x"])
