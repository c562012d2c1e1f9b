"""The precompiled header of C++ kernels, as a worker killed mid-compile can leave it.

Inductor keeps it outside ``TORCHINDUCTOR_CACHE_DIR`` (``<temp dir>/torchinductor_<user>/precompiled_headers``),
shared by every process on the host, and never builds a header again once its file exists. A
header whose writing was cut short is ignored by g++ ("not a PCH file"), so each later kernel
parses the whole header: on a 2-core VM, 1.6 s per kernel instead of 0.5 s. Each worker removes
such a header in its warm-up and says so (a warning, and ``sandbox.workers()``), and the next
kernel builds it again.
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
    "'repaired': [w['repaired_headers'] for w in sandbox.workers()]}))"
)


def _compile(tmp_path: Path, name: str) -> tuple[dict, str]:
    env = script_env(tmp_path / name, {"TMPDIR": str(tmp_path / "tmp")})
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_a_worker_removes_a_header_whose_writing_was_cut_short(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    first, _ = _compile(tmp_path, "first")
    assert first == {"ok": True, "outcomes": ["isolated"], "repaired": [[]]}
    (header,) = (tmp_path / "tmp").glob("torchinductor_*/precompiled_headers/*.h.gch")
    assert header.read_bytes()[:4] == b"gpch", "g++ finished the header"
    size = header.stat().st_size
    with open(header, "r+b") as f:  # what g++ leaves when it is killed while writing
        f.write(b"gpcWrite")
        f.truncate(size // 2)

    # A fresh cache dir: the kernel compiles again, beside the same host-wide header folder.
    second, stderr = _compile(tmp_path, "second")
    assert second == {"ok": True, "outcomes": ["isolated"], "repaired": [[header.name]]}
    assert f"removed 1 unfinished precompiled header(s) of C++ kernels ({header.name})" in stderr, stderr[-3000:]
    assert header.read_bytes()[:4] == b"gpch", "the kernel's compile built the header again"
    assert header.stat().st_size >= size * 0.9
