"""Text the agent did not write (log lines, JSON bodies, discovered labels), made safe to encode."""

from __future__ import annotations

import functools
import re


@functools.cache
def _surrogates() -> re.Pattern[str]:
    """Compiled on first use: sre builds this class's 2,048-code-point charset in 4 ms, and every command
    imports this module but few ever meet a lone surrogate."""
    return re.compile("[\ud800-\udfff]")


def encodable(text: str) -> str:
    """``text`` with lone surrogates (JSON's ``"\\ud800"``, which UTF-8 cannot encode) replaced by U+FFFD, one
    code point for one, so positions in the result index the original too."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _surrogates().sub("\ufffd", text)
