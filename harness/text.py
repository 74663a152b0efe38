"""Text from participants made safe to show: no terminal escapes, no bidi tricks, bounded length.

Submission names, archive member names, exception messages from a model runtime and anything else
a participant wrote can hold ``ESC ] 0 ; title BEL`` (sets the terminal title), ``ESC [ 2 J``
(clears the screen), carriage returns that overwrite a line, or right-to-left overrides that make
``exe.txt`` read as ``txt.exe``. Pass such text through :func:`safe_text` (one line) or
:func:`safe_lines` (keeps line breaks) before it reaches a terminal, a log or a report.
"""

from __future__ import annotations

import re

# Whitespace controls (and Unicode line/paragraph separators) become a space so words stay apart.
_SPACES = "\t\n\v\f\r\x1c\x1d\x1e\x1f\x85\u2028\u2029"
# Everything else that can steer a terminal or reorder text is shown as an escape: C0, DEL, C1,
# bidi embeddings/overrides/isolates and marks, and lone surrogates (undecodable bytes from
# ``surrogateescape``, which a UTF-8 terminal cannot even encode).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_KEEP_LINES = re.compile("\r\n|[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
                                "\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
ELLIPSIS = "..."


def _replace(match: re.Match) -> str:
    ch = match.group()
    if ch == "\r\n":
        return "\n"
    if ch in _SPACES:
        return " "
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _truncate(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    if limit <= len(ELLIPSIS):
        return text[:max(limit, 0)]
    return text[:limit - len(ELLIPSIS)] + ELLIPSIS


def safe_text(s, limit: int | None = None) -> str:
    """``s`` as one printable line: control characters, bidi controls and lone surrogates escaped
    (``\\x1b``, ``\\u202e``), tabs and line breaks turned into spaces, at most ``limit`` characters
    (cut with ``...``). Non-strings are shown with ``str()``."""
    text = s if isinstance(s, str) else str(s)
    return _truncate(_UNSAFE.sub(_replace, text), limit)


def safe_lines(s, limit: int | None = None) -> str:
    """Like :func:`safe_text` but keeps line breaks (``\\n``; ``\\r\\n`` becomes ``\\n``) and tabs,
    for multi-line detail such as a traceback; a lone ``\\r`` becomes a space."""
    text = s if isinstance(s, str) else str(s)
    return _truncate(_UNSAFE_KEEP_LINES.sub(_replace, text), limit)


def quoted(s, limit: int = 200) -> str:
    """``'s'`` made safe by :func:`safe_text` and cut at ``limit`` characters, for names in messages."""
    return "'" + safe_text(s, limit) + "'"


def is_safe(s: str) -> bool:
    """True when :func:`safe_text` would leave ``s`` unchanged (no control or bidi characters)."""
    return _UNSAFE.search(s) is None
