"""Reading the dashboard through Streamlit's ``AppTest``, for the tests of this folder that
open its pages (``test_dashboard.py``, ``test_dashboard_gpu.py``): :func:`open_page` opens the
app on a store at a page, the others read what it rendered."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
from streamlit.testing.v1 import AppTest
from support import ROOT

APP = ROOT / "dashboard" / "app.py"
TIMEOUT_S = 60


def open_page(store: Path | str, page: str | None = None, **params: str) -> AppTest:
    """The app on ``store`` (through SANDBOX_STORE, as a user starts it), at ``page`` with
    query parameters ``params`` (as a link would open it)."""
    os.environ["SANDBOX_STORE"] = str(store)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.run()
    if page:
        at.query_params = dict(params)
        at.switch_page(f"pages/{page}.py").run()
    check(at)
    return at


def check(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def frame(at: AppTest, containing: str) -> pd.DataFrame:
    """The first table with a column named ``containing``."""
    for df in at.dataframe:
        if containing in df.value.columns:
            return df.value
    raise AssertionError(f"no table with a column {containing!r}: {[list(d.value.columns) for d in at.dataframe]}")


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.title]
    parts += [e.value for e in at.error] + [w.value for w in at.warning] + [i.value for i in at.info]
    parts += [s.value for s in at.success] + [s.value for s in at.subheader]
    return "\n".join(parts)


def plain(markdown: str) -> str:
    """Markdown as it reads: the backslash escapes that keep store text from being markdown removed."""
    return re.sub(r"\\(.)", r"\1", markdown)


def numbers(at: AppTest) -> str:
    """The Compare page's summary in numbers (``dashboard.queries.compare.verdict``), as it reads."""
    [block] = [e for e in at.expander if e.label == "What changed, in numbers"]
    return plain(block.markdown[0].value)
