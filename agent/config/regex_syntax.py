"""The syntax that RE2 and Python's parser read alike: a user's regex within it gets Python's parse (which the
proven Python forms of ``agent.config.regex_python`` and ``regex_search`` are built from), anything else is left
to RE2 alone. Within it, RE2 accepts whatever Python's parser accepts (tests/test_regex.py holds it to that on
generated patterns), so RE2 need not be compiled to know that a pattern with a Python form is valid.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

__all__ = ["MAX_REPEAT", "parse_shared_syntax"]

_ESCAPES_SAFE = set("dDsSwWbBAtnrfv") | {chr(c) for c in range(33, 127) if not chr(c).isalnum()}
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_BACKSPACE_IN_CLASS_RE = re.compile(r"\[[^\]]*\\[bBA]")  # [\b] is a backspace in Python, an error in RE2
# A comment group and the flags RE2 does not have ((?u), (?a), (?L), (?x)) leave no trace in Python's parse, and
# RE2 refuses them (refusing a flag RE2 has here too only sends the pattern to RE2)
_PYTHON_ONLY_GROUP_RE = re.compile(r"\(\?[#aiLmsux-]")
_GROUP_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_REPEAT = 1000  # RE2's largest repetition count


def _size(items: Any, sre: Any) -> int:
    """About how many instructions RE2 compiles ``items`` to (a repetition copies its body); past any budget
    when a count is beyond RE2's largest."""
    total = 0
    for op, av in items:
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            low, high, sub = av
            if low > MAX_REPEAT or (high is not sre.MAXREPEAT and high > MAX_REPEAT):
                return 10**9
            total += _size(sub.data, sre) * max(low + 1 if high is sre.MAXREPEAT else high, 1)
        elif op is sre.SUBPATTERN:
            total += _size(av[3].data, sre)
        elif op is sre.BRANCH:
            total += sum(_size(branch.data, sre) for branch in av[1])
        else:
            total += 1
    return total


def parse_shared_syntax(pattern: str) -> Any | None:
    """Python's parse of ``pattern`` when RE2 and Python's parser read it alike, or None: escapes outside a
    known set, "{,n}" (a literal in RE2, a repeat in Python), inline flags and POSIX classes (a warning in
    Python) are left to RE2."""
    import re._constants as sre
    import re._parser as sre_parse

    if any(escape not in _ESCAPES_SAFE for escape in _ESCAPE_RE.findall(pattern)) or "{," in pattern \
            or _BACKSPACE_IN_CLASS_RE.search(pattern) or _PYTHON_ONLY_GROUP_RE.search(pattern) or len(pattern) > 5000:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            parsed = sre_parse.parse(pattern)
    except (re.error, FutureWarning, RecursionError, OverflowError):
        return None
    if parsed.state.flags & ~re.UNICODE or not all(map(_GROUP_NAME_RE.fullmatch, parsed.state.groupdict)) \
            or _size(parsed.data, sre) > 10_000:  # RE2 refuses programs past its memory budget
        return None
    return parsed
