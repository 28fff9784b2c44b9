"""Top losses: the images the model gets most wrong, with the maps of the predicted and the actual class."""

import plotly.graph_objects as go
import streamlit as st

import app_frame as app
from whaleaudit import views

ANY = "any"
PER_PAGE = 10
THUMB = 256

ctx = app.frame("top_losses")
st.title("Top losses")

matching = ctx.matching()
matrix = ctx.table.confusion(matching)
cells = matrix.stack().rename("count").reset_index()
height = min(900, 160 + 40 * max(len(matrix.index), 1))
fig = go.Figure([
    go.Heatmap(x=list(matrix.columns), y=list(matrix.index), z=matrix.values, texttemplate="%{z}",
               colorscale="Blues", hoverinfo="skip"),
    # Plotly reports no clicks on heatmap cells; invisible markers over the cells make them clickable
    go.Scatter(x=cells["predicted"], y=cells["actual"], mode="markers", customdata=cells["count"],
               marker=dict(symbol="square", size=40, opacity=0), showlegend=False,
               hovertemplate="actual %{y}<br>predicted %{x}<br>%{customdata} images<extra></extra>"),
])
fig.update_layout(title="Confusion matrix (click a cell to list its images)", height=height,
                  xaxis=dict(title="predicted", type="category"),
                  yaxis=dict(title="actual", type="category", autorange="reversed"),
                  margin=dict(t=50, b=60, l=60, r=10))
clicked = st.plotly_chart(fig, key="confusion_chart", on_select="rerun", selection_mode="points")
points = clicked.selection.points
cell = (points[0]["y"], points[0]["x"]) if points else None
if cell != st.session_state.get("_confusion_cell"):  # a new click; the selectboxes may have moved on since the last
    st.session_state["_confusion_cell"] = cell
    if cell:
        st.session_state["loss_actual"], st.session_state["loss_predicted"] = cell

choices = [ANY] + sorted(set(matrix.index) | set(matrix.columns))
for key in ("loss_actual", "loss_predicted"):
    if st.session_state.get(key) not in choices:
        st.session_state[key] = ANY
left, right = st.columns(2)
actual = left.selectbox("Actual species", choices, key="loss_actual", persist_state="session")
predicted = right.selectbox("Predicted species", choices, key="loss_predicted", persist_state="session")

# positions of the matching images, highest loss first: only the rows of the page shown are taken
in_cell = ctx.table.with_loss(None if actual == ANY else actual, None if predicted == ANY else predicted)
ranked = ctx.table.ranked("loss", matching & in_cell)
app.showing(len(ranked), len(ctx.frame))
if not len(ranked):
    st.info("No image matches this cell and the filters in the sidebar.")
    st.stop()

number = st.pagination(views.page_count(len(ranked), PER_PAGE), key=f"loss_page@{actual}@{predicted}")
for _, row in ctx.frame.iloc[views.page(ranked, number, PER_PAGE)].iterrows():
    st.divider()
    info, pred_map, true_map = st.columns([1, 1, 1])
    with info:
        st.markdown(f"**{row['image']}**  \nactual **{row['species']}** · predicted **{row['prediction']}**")
        st.markdown(f"loss {row['loss']:.3f} · p(predicted) {row['prob_pred']:.3f} · "
                    f"p(actual) {row['prob_true']:.3f}  \nbg_score {row['bg_score']:.3f}"
                    + (" · flagged" if row["flagged"] else ""))
        if st.button("Open", key=f"open_{row['image']}"):
            app.open_image(ctx, row["image"], ranked)
    with pred_map:
        app.show_map(ctx, row, int(row["pred_idx"]), THUMB, caption=f"map for {row['prediction']} (predicted)")
    with true_map:  # a loss exists only for species the model knows, so the actual class has a map
        app.show_map(ctx, row, int(row["label_idx"]), THUMB, caption=f"map for {row['species']} (actual)")
