"""Store text for the terminal: shown, never obeyed.

Everything the CLI prints from a run store (run names, code locations, kernel names, failure
messages, host names, job ids) was written by whoever wrote that store. A control character in
it would reach the terminal as a command: ESC sequences clear the screen or set the window
title, OSC 52 writes the clipboard, C1 codes (U+0080-U+009F) act as ESC sequences on some
terminals, bidi overrides and isolates (U+202A-U+202E, U+2066-U+2069) reorder what is shown.

Two places keep it text:

- :func:`printable`: one store string on one line. Every character that Python does not call
  printable (C0 and C1 controls, DEL, format characters such as bidi overrides and zero-width
  joiners, line and paragraph separators, surrogates, unassigned code points, spaces other than
  ``" "``) becomes its visible escape (``\\x1b``, ``\\u202e``), newlines and tabs included,
  so a store string cannot start a line of its own.
- :class:`TerminalWriter`: the stream every text-mode command writes through (``sandbox.cli.main``
  wraps stdout and stderr in it). Whatever was missed above is escaped here, with only the CLI's
  own layout kept: ``\\n`` and ``\\t``. JSON output (``--json``) passes through unchanged: JSON
  escapes every control character and, as the CLI writes it, every non-ASCII one.
"""

from __future__ import annotations

from typing import Any, TextIO

__all__ = ["TerminalWriter", "layout_text", "printable", "wrap"]

# What the CLI's own layout may send to the terminal besides printable text.
LAYOUT = frozenset("\n\t")


def _escape(ch: str) -> str:
    """``\\x1b``, ``\\u202e``, ``\\U000e0001``, ``\\n``: the character as Python would spell it."""
    return ch.encode("unicode_escape").decode("ascii")


def printable(text: Any) -> str:
    """``text`` (any value: it is made a string) with every non-printable character, newlines and
    tabs included, replaced by its visible escape: one line of plain text."""
    s = text if isinstance(text, str) else str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in s)


def layout_text(text: str) -> str:
    """Like :func:`printable`, but keeps ``\\n`` and ``\\t`` (the CLI's own lines and columns)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in LAYOUT else _escape(ch) for ch in text)


class TerminalWriter:
    """A text stream that writes through :func:`layout_text`: no control character but a newline or
    a tab reaches the stream underneath. Everything else (``flush``, ``isatty``, ``fileno``,
    ``encoding``, ...) is the underlying stream's."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        safe = layout_text(text)
        try:
            self.stream.write(safe)
        except UnicodeEncodeError:  # a terminal that cannot show the character: its escape instead
            encoding = getattr(self.stream, "encoding", None) or "ascii"
            self.stream.write(safe.encode(encoding, "backslashreplace").decode(encoding))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def wrap(stream: TextIO) -> TextIO:
    """``stream`` behind a :class:`TerminalWriter` (once: a wrapped stream is returned as it is)."""
    return stream if isinstance(stream, TerminalWriter) else TerminalWriter(stream)  # type: ignore[return-value]
