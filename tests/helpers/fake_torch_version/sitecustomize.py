"""Another torch in place of this one: on PYTHONPATH with FAKE_TORCH_VERSION set, the package
metadata of every interpreter started with it (a client, the compile service it starts, its
workers) says torch is that version, as it would if another torch were installed."""

import importlib.metadata
import os

_fake = os.environ.get("FAKE_TORCH_VERSION")
if _fake:
    _version = importlib.metadata.version

    def version(name: str) -> str:
        return _fake if name == "torch" else _version(name)

    importlib.metadata.version = version
