"""WhaleAudit dashboard: ``streamlit run streamlit_app.py``.

The frame around the pages: navigation, the audit picker and the shared filters in the sidebar. The page,
the audit and the selected image live in the URL, so a link to an image can be shared.

The page scripts live in ``app_pages/``, not ``pages/``: Streamlit still treats a ``pages/`` folder beside the
entrypoint as old-style multipage pages for a fresh server's first run (and for every AppTest run), and then
runs a page such as ``/species`` without this frame, which shows a blank page.
"""

import streamlit as st

from app_pages import common

st.set_page_config(page_title="WhaleAudit", page_icon=":material/water:", layout="wide")

page = st.navigation([
    st.Page(common.PAGES["overview"], title="Overview", icon=":material/dashboard:", url_path="overview",
            default=True),
    st.Page(common.PAGES["species"], title="Species", icon=":material/photo_library:", url_path="species"),
    st.Page(common.PAGES["top_losses"], title="Top losses", icon=":material/trending_down:", url_path="top_losses"),
    st.Page(common.PAGES["heatmap"], title="Heatmap", icon=":material/image_search:", url_path="heatmap"),
    st.Page(common.PAGES["review"], title="Review & export", icon=":material/flag:", url_path="review"),
])
common.sidebar()
common.sync_url()
page.run()
