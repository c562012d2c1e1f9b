"""A store location for a bench run: the one given, or a temporary one removed afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def scratch_store(location: str | None, keep: bool, prefix: str) -> Iterator[str]:
    """``location`` as is; without one, ``runs.db`` in a temporary folder, deleted at
    the end unless ``keep`` (then its path is printed)."""
    if location:
        yield location
        return
    tmp = tempfile.mkdtemp(prefix=prefix)
    path = os.path.join(tmp, "runs.db")
    try:
        yield path
    finally:
        if keep:
            print(f"store kept: {path}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
