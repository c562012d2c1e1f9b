"""The compile sandbox's dashboard: ``streamlit run dashboard/app.py``.

Reads one run store (``SANDBOX_STORE``, else the sandbox's default file) read-only, and shows
its runs, one run's compiles, one graph's stages and kernels, two runs compared kernel by kernel,
trends across runs, and the ranks of one job side by side (rank divergence, stragglers, an
earlier job beside it). Pages are in ``dashboard/pages/``; their queries in ``dashboard/queries/``,
a module per page.

The store is fixed when the dashboard starts: a visitor cannot point it at another file or host.
``streamlit run dashboard/app.py -- --allow-store-picker`` adds a box in the sidebar to type
another store's location (``dashboard.ui.PICKER_FLAG``). Everything read from the store is shown
as text, never as markdown or HTML (``dashboard.ui.text``), and a page loads nothing from outside
its own server (the favicon is an emoji: a material icon's favicon comes from fonts.gstatic.com).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

# Streamlit runs this file as a script: make the pages' `dashboard.*` imports resolve. Installed,
# the folder is the package `sandbox.dashboard`; in a checkout, `streamlit run dashboard/app.py`
# puts dashboard/ on the path, not the repository.
if Path(__file__).resolve().parent.parent.name == "sandbox":
    # By name at run time: the layers' checker reads `import sandbox.dashboard` as the whole package.
    sys.modules.setdefault("dashboard", importlib.import_module("sandbox.dashboard"))
else:
    ROOT = str(Path(__file__).resolve().parent.parent)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)

import streamlit as st  # noqa: E402

from dashboard import ui  # noqa: E402

st.set_page_config(page_title="Compile sandbox", page_icon="📦", layout="wide")
navigation = st.navigation(
    [st.Page(p.path, title=p.title, url_path=p.url, icon=p.icon, default=(i == 0)) for i, p in enumerate(ui.PAGES)]
)
ui.sidebar_store()
navigation.run()
