"""Where the run store is, and how its location may be shown.

A location is a SQLite path, a ``postgresql://`` URL or a libpq keyword string
(``host=db dbname=runs user=me password=...``). Both PostgreSQL forms may carry a password
(in the URL's user info, as a ``password=`` query parameter, or as a keyword), so every
message, file and page that shows a location shows ``masked(location)``, and every driver
message about one goes through ``redact(message, location)``.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote

from sandbox import env

__all__ = ["default_location", "is_postgresql", "looks_like_url", "masked", "redact", "secrets"]

MASK = "***"

# libpq reads only these two prefixes as a URL; anything else is a keyword string to it.
POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")

# A scheme (two characters at least: "C:" is a Windows drive, not a scheme).
_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.\-]+):")
# A libpq keyword string starts with ``keyword=``; no file path the sandbox makes does.
_KEYWORD_START = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=")
# A keyword whose value is a secret (password, sslpassword), its ``=``, then its value: quoted
# (backslash escapes, maybe unterminated), or unquoted up to the next ``keyword=``: libpq ends
# it at the first blank and then fails on the rest, which the user meant as the password too.
_KEYWORD_SECRET = re.compile(
    r"(?i)(?<![A-Za-z0-9_?&])([A-Za-z_]*password\s*=\s*)"
    r"('(?:\\[\s\S]|[^'\\])*(?:'|\\?$)"
    r"|(?:\\[\s\S]|[^\s\\])*\\?(?:\s+(?![A-Za-z_][A-Za-z0-9_]*\s*=)(?:\\[\s\S]|[^\s\\])+\\?)*)"
)
# A URL query parameter: its key (maybe percent-encoded) and value (up to the next ``&``).
_QUERY_PARAM = re.compile(r"([?&])([^=&?]*)=([^&]*)")


def default_location() -> str:
    """``SANDBOX_STORE`` if set, else a SQLite file in the user's cache directory."""
    if env.get("SANDBOX_STORE"):
        return env.get("SANDBOX_STORE")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "torch-compile-sandbox", "runs.db")


def is_keyword_string(location: str) -> bool:
    """A libpq keyword string (``host=db dbname=runs ...``), not a file path."""
    return not looks_like_url(location) and bool(_KEYWORD_START.match(location))


def is_postgresql(location: str) -> bool:
    """A location libpq takes: a ``postgresql://`` / ``postgres://`` URL or a keyword string."""
    return location.lstrip().startswith(POSTGRESQL_SCHEMES) or is_keyword_string(location)


def looks_like_url(location: str) -> bool:
    """``scheme:/...`` or ``scheme:user:pw@...``: meant as a URL (maybe of a mistyped scheme),
    never to be taken for a SQLite file name. ``file:`` URLs are paths."""
    m = _SCHEME.match(location)
    if not m or m.group(1).lower() == "file":
        return False
    rest = location[m.end() :]
    return rest.startswith("/") or "@" in rest


def _is_secret_key(key: str) -> bool:
    return unquote(key).strip().lower().endswith("password")


def _userinfo(location: str) -> tuple[int, int] | None:
    """Where the password of ``scheme://user:password@host`` is, as (start, end) offsets.

    The user info is taken to end at the last ``@``: a password with an unencoded ``@``, ``/``
    or ``?`` is still masked whole (showing too little of a location beats showing a secret)."""
    m = _SCHEME.match(location)
    if not m or m.group(1).lower() == "file":
        return None
    start = m.end()
    while start < len(location) and location[start] == "/":
        start += 1
    at = location.rfind("@")
    if at < start:
        return None
    colon = location.find(":", start, at)
    if colon < 0:
        return None  # a user name alone
    return colon + 1, at


def masked(location: str) -> str:
    """The location with every password (and ``sslpassword``) replaced by ``***``, in any form
    libpq accepts and any scheme, mistyped ones included."""
    text = str(location)
    if _SCHEME.match(text) and not text.lower().startswith("file:"):
        span = _userinfo(text)
        if span:
            text = text[: span[0]] + MASK + text[span[1] :]

        def query(m: re.Match[str]) -> str:
            return f"{m.group(1)}{m.group(2)}={MASK}" if _is_secret_key(m.group(2)) else m.group(0)

        text = _QUERY_PARAM.sub(query, text)
    return _KEYWORD_SECRET.sub(lambda m: m.group(1) + MASK, text)


def secrets(location: str) -> list[str]:
    """The secret values in ``location`` as written and as the driver reads them (percent-decoded,
    unquoted): what no message may contain."""
    text = str(location)
    found: list[str] = []
    if _SCHEME.match(text) and not text.lower().startswith("file:"):
        span = _userinfo(text)
        if span:
            found.append(text[span[0] : span[1]])
        found += [m.group(3) for m in _QUERY_PARAM.finditer(text) if _is_secret_key(m.group(2))]
        found += [unquote(s) for s in found]
    for m in _KEYWORD_SECRET.finditer(text):
        value = m.group(2)
        found.append(value)
        inner = value[1:-1] if value.startswith("'") and value.endswith("'") and len(value) > 1 else value
        found.append(re.sub(r"\\(.)", r"\1", inner.lstrip("'"), flags=re.S))
        if not value.startswith("'"):
            found += value.split()  # what libpq took, and what it choked on
    return sorted({s for s in found if s and s != MASK}, key=len, reverse=True)


WITHHELD = (
    "the driver's message is not shown because it quotes part of the password (in a URL, write @ / ? "
    "in a password as %40 %2F %3F; in a keyword string, quote a password with blanks: password='...')"
)


def redact(message: str, location: str) -> str:
    """``message`` (a driver's error about ``location``) with the location masked; withheld
    whole if it still quotes a password or four characters of one (a parse error quotes the
    text around the place it stopped)."""
    text = str(message)
    if location:
        text = text.replace(str(location), masked(location))
    for secret in secrets(location):
        n = min(len(secret), 4)
        if any(secret[i : i + n] in text for i in range(len(secret) - n + 1)):
            return WITHHELD
    return text
