"""Species: a paged gallery of one species' photos with the predicted-class map on each."""

import streamlit as st

import app_frame as app
from whaleaudit import views

COLUMNS = 4
THUMB = 256

ctx = app.frame("species")
species_names = ctx.table.species
if st.session_state.get("species_focus") not in species_names:
    st.session_state["species_focus"] = species_names[0]

top = st.columns([2, 2, 1], vertical_alignment="bottom")
species = top[0].selectbox("Species", species_names, key="species_focus", persist_state="session")
order = top[1].selectbox("Sort by (worst first)", list(views.SORTS), key="species_sort", persist_state="session")
per_page = top[2].selectbox("Per page", [12, 24, 48], key="species_per_page", persist_state="session")

title, heat = st.columns([5, 1], vertical_alignment="center")
title.title(species.replace("_", " ").capitalize())
if species in (maps := app.class_maps(ctx, app.CLASS_MAP_SIZE * 2)):
    heat.image(maps[species], width="stretch")
    heat.caption("Its average evidence map, over the photos predicted as it", help=app.CLASS_MAP_HELP)
of_species = ctx.table.where("species", [species])
# positions of the matching images, worst first: only the rows of the page shown are taken
ranked = ctx.table.ranked(order, ctx.matching(species=False) & of_species)
app.showing(len(ranked), int(of_species.sum()), f" of {species}")
if not len(ranked):
    st.info("No image of this species matches the filters; loosen them in the sidebar.")
    st.stop()

number = st.pagination(views.page_count(len(ranked), per_page), key=f"species_page@{species}@{order}@{per_page}")
shown = ctx.frame.iloc[views.page(ranked, number, per_page)]
for start in range(0, len(shown), COLUMNS):
    for col, (_, row) in zip(st.columns(COLUMNS), shown.iloc[start:start + COLUMNS].iterrows()):
        with col:
            pred = int(row["pred_idx"]) if row["pred_idx"] >= 0 else None
            app.show_map(ctx, row, pred, THUMB)
            st.caption(f"**{row['image']}**  \n{app.numbers(row)}")
            if st.button("Open", key=f"open_{row['image']}"):
                app.open_image(ctx, row["image"], ranked)
