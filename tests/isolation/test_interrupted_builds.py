"""C++ builds that a killed compile cut short, as a worker killed at its timeout can leave them.

Inductor compiles each C++ kernel (and each precompiled header) in a build folder beside its
output, removes the folder once the build succeeded, and never builds an output again once the
file exists. Cut short, a kernel library kills every later process that loads it (SIGBUS), so its
graph fails on that cache dir every time; a precompiled header, kept outside
``TORCHINDUCTOR_CACHE_DIR`` and shared by the whole host, is ignored by g++ ("not a PCH file"), so
every later kernel parses the whole header (on a 2-core VM 1.6 s per kernel instead of 0.5 s).
Each worker removes such builds in its warm-up and says so (a warning, and ``sandbox.workers()``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import script_env

CODE = (
    "import json, torch, sandbox; "
    "f = torch.compile(lambda x: torch.relu(x) * 2 + 1, backend='sandbox'); x = torch.randn(64); "
    "ok = bool(torch.allclose(f(x), torch.relu(x) * 2 + 1)); "
    "print(json.dumps({'ok': ok, 'outcomes': [r.outcome for r in sandbox.reports()], "
    "'repaired': [w['repaired_builds'] for w in sandbox.workers()]}))"
)


def _compile(tmp_path: Path, cache: str, extra: dict[str, str] | None = None) -> tuple[dict, str]:
    env = script_env(tmp_path / cache, {"TMPDIR": str(tmp_path / "tmp"), **(extra or {})})
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def _cut_short(path: Path, magic: bytes | None = None, keep: int | None = None) -> int:
    """What g++ leaves when it is killed while writing ``path``: its start (``keep`` bytes, else half)."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        if magic:
            f.write(magic)
        f.truncate(size // 2 if keep is None else keep)
    return size


def test_a_worker_removes_a_precompiled_header_whose_writing_was_cut_short(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    first, _ = _compile(tmp_path, "first")
    assert first == {"ok": True, "outcomes": ["isolated"], "repaired": [[]]}
    (header,) = (tmp_path / "tmp").glob("torchinductor_*/precompiled_headers/*.h.gch")
    assert header.read_bytes()[:4] == b"gpch", "g++ finished the header"
    size = _cut_short(header, b"gpcWrite")

    # A fresh cache dir: the kernel compiles again, beside the same host-wide header folder.
    second, stderr = _compile(tmp_path, "second")
    build = header.name[: -len(".gch")]
    assert second == {"ok": True, "outcomes": ["isolated"], "repaired": [[build]]}
    assert f"removed 1 C++ build(s) that a killed compile left unfinished ({build!r})" in stderr, stderr[-3000:]
    assert header.read_bytes()[:4] == b"gpch", "the kernel's compile built the header again"
    assert header.stat().st_size >= size * 0.9


def test_a_worker_removes_a_kernel_library_whose_build_was_cut_short(tmp_path: Path) -> None:
    """Without the repair the second compile's worker dies of SIGBUS loading the library, and the
    graph is recorded failed on every later run on that cache dir."""
    (tmp_path / "tmp").mkdir()
    no_caches = {"TORCHINDUCTOR_FX_GRAPH_CACHE": "0", "TORCHINDUCTOR_AUTOGRAD_CACHE": "0"}
    first, _ = _compile(tmp_path, "cache", no_caches)
    assert first == {"ok": True, "outcomes": ["isolated"], "repaired": [[]]}
    (library,) = (tmp_path / "cache").glob("*/*.main.so")
    _cut_short(library, keep=4096)
    build = library.name[: -len(".so")]
    (library.parent / f"{build}_CxxBuild").mkdir()
    # Another user may leave any name in a shared cache dir: the warning shows it escaped.
    hostile = "zz\x1b]0;owned\x07\x1b[2J"
    (library.parent / f"{hostile}_CxxBuild").mkdir()

    second, stderr = _compile(tmp_path, "cache", no_caches)
    assert second == {"ok": True, "outcomes": ["isolated"], "repaired": [[build, hostile]]}, stderr[-3000:]
    assert f"({build!r}, {hostile!r})" in stderr and "a partial kernel library" in stderr, stderr[-3000:]
    assert "\x1b" not in stderr and "\x07" not in stderr, "a file name wrote control characters to the terminal"
    assert not (library.parent / f"{build}_CxxBuild").exists()
    assert not (library.parent / f"{hostile}_CxxBuild").exists()
    assert library.read_bytes()[:4] == b"\x7fELF" and library.stat().st_size > 0
