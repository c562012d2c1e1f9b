"""Where the run store is, and how its location may be shown.

A location is a SQLite path or a ``postgresql://`` URL; a URL may carry a password, so
every message, file and page that shows a location shows ``masked(location)``.
"""

from __future__ import annotations

import os
import re

from sandbox import env

__all__ = ["default_location", "masked"]


def default_location() -> str:
    """``SANDBOX_STORE`` if set, else a SQLite file in the user's cache directory."""
    if env.get("SANDBOX_STORE"):
        return env.get("SANDBOX_STORE")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "torch-compile-sandbox", "runs.db")


def masked(location: str) -> str:
    """The location with any password replaced by ``***``."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", location)
