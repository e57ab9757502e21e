"""Text the agent did not write (log lines, JSON bodies, discovered labels), made safe to encode."""

from __future__ import annotations

import re

_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def encodable(text: str) -> str:
    """``text`` with lone surrogates (JSON's ``"\\ud800"``, which UTF-8 cannot encode) replaced by U+FFFD, one
    code point for one, so positions in the result index the original too."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATE_RE.sub("\ufffd", text)
