"""PyYAML's class of the characters a YAML stream may not hold, compiled cheaply before PyYAML is imported.

yaml.reader compiles that class (``Reader.NON_PRINTABLE``) as PyYAML is imported, written as the complement of
ranges spanning all of Unicode, ``[^...\\xA0-\\uD7FF...]``: sre fills its charset map by a Python loop over some
55,000 code points, 57 million instructions, 11% of a log agent's start (callgrind). The same characters as a
positive class span 2,100 code points. ``seed`` puts that form in ``re``'s cache under PyYAML's own pattern text,
so yaml.reader's ``re.compile`` returns it; a PyYAML that changes its text misses the cache and compiles its own,
as before (tests/test_config.py checks that it still hits and that both forms hold the same characters)."""

from __future__ import annotations

import re

# yaml.reader.Reader.NON_PRINTABLE's text, verbatim (PyYAML 5.1 to 6.0.2)
PYYAML_NON_PRINTABLE = "[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010ffff]"
# the same characters: C0 controls but tab, LF and CR; DEL and the C1 controls but NEL; surrogates; U+FFFE-FFFF
NON_PRINTABLE = "[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x84\x86-\x9F\uD800-\uDFFF\uFFFE\uFFFF]"


def seed() -> None:
    """Make ``re.compile(PYYAML_NON_PRINTABLE)`` return ``re.compile(NON_PRINTABLE)`` until re's cache drops it."""
    cache = getattr(re, "_cache", None)  # CPython's cache of compiled patterns, keyed (type, text, flags)
    if isinstance(cache, dict):
        cache.setdefault((str, PYYAML_NON_PRINTABLE, 0), re.compile(NON_PRINTABLE))
