"""The proven-linear Python form of a user's regex: Python's ``re`` source that gives RE2's match (``match``:
anchored at the start) in time linear in the text, or None. ``agent.config.regex`` runs a log pattern's hot path
through it.

Python's re backtracks: after a quantifier or an alternation has matched, a failure later makes it try the
other choices. Where no other choice could lead to a match, forbidding them (a possessive quantifier, an
atomic group) changes no result, and a pattern with no choice left runs in one pass. A choice is provably
useless when the characters it would hand to what follows (FIRST of the rest) are ones the rest can never
start with. What follows the end of the pattern always succeeds (match() may end anywhere). At most one
greedy or lazy run (``.*``) is left to give back characters, when what follows it starts with a character it
never reads past again: the tries from each such character read separate stretches of the text. Sets of
characters are tuples of inclusive code-point ranges; \\d \\s \\w are RE2's (ASCII).

Only syntax that RE2 and Python's parser read alike is translated (``agent.config.regex_syntax``; a part of
RE2's syntax: RE2 is compiled only when a search needs it): escapes outside a known set, "{,n}" (a literal in
RE2, a repeat in Python), inline flags, comments, POSIX classes (a warning in Python), [\\b], counts past 1000,
non-ASCII group names and programs past RE2's budget are left to RE2.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from agent.config.regex_syntax import parse_shared_syntax

_Ranges = tuple[tuple[int, int], ...]
_MAX = 0x10FFFF
_ALL: _Ranges = ((0, _MAX),)
_NONE: _Ranges = ()
_NEWLINE: _Ranges = ((10, 10),)


class NotLinear(Exception):
    """The pattern is outside what the translation proves."""


def _merge(ranges: Iterable[tuple[int, int]]) -> _Ranges:
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return tuple(merged)


def _complement(ranges: _Ranges) -> _Ranges:
    result, next_low = [], 0
    for low, high in ranges:
        if low > next_low:
            result.append((next_low, low - 1))
        next_low = high + 1
    if next_low <= _MAX:
        result.append((next_low, _MAX))
    return tuple(result)


def intersects(a: _Ranges, b: _Ranges) -> bool:
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][1] < b[j][0]:
            i += 1
        elif b[j][1] < a[i][0]:
            j += 1
        else:
            return True
    return False


def _minus(a: _Ranges, b: _Ranges) -> _Ranges:
    return _complement(_merge([*_complement(a), *b]))


_DIGIT: _Ranges = ((48, 57),)
_SPACE: _Ranges = _merge([(9, 10), (12, 13), (32, 32)])  # RE2's \s: [\t\n\f\r ]
_WORD: _Ranges = _merge([(48, 57), (65, 90), (95, 95), (97, 122)])


def _char(code: int) -> str:
    character = chr(code)
    if character.isascii() and character.isalnum():
        return character
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


# Sets Python's matcher tests fastest (a category, one character or none), as RE2 means them: Python's ASCII
# \s also holds \v, RE2's does not.
_FAST_FORMS = {_DIGIT: r"\d", _complement(_DIGIT): r"\D", _WORD: r"\w", _complement(_WORD): r"\W",
               _complement(_SPACE): r"[\S\v]", _complement(_NEWLINE): "."}


def _set_text(ranges: _Ranges) -> str:
    fast = _FAST_FORMS.get(ranges)
    if fast is not None:
        return fast
    if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return _char(ranges[0][0])
    negated = _complement(ranges)
    if len(negated) == 1 and negated[0][0] == negated[0][1]:
        return f"[^{_char(negated[0][0])}]"
    shown, prefix = (negated, "^") if negated and len(negated) < len(ranges) else (ranges, "")
    inside = "".join(_char(low) if low == high else f"{_char(low)}-{_char(high)}" for low, high in shown)
    return f"[{prefix}{inside}]"


@dataclass(frozen=True)
class _Info:
    first: _Ranges  # characters the text may continue with where this part can succeed
    nullable: bool  # can succeed without consuming
    always: bool  # succeeds without consuming, whatever comes next


_ALWAYS = _Info(_NONE, True, True)


class Translation:
    """Python source for one pattern, built from Python's parse of it (``re._parser``)."""

    def __init__(self, parsed: Any, *, lines: bool, capture: set[str] | None):
        import re._constants as sre

        self.sre = sre
        self.lines = lines  # for a text of lines: no set holds "\n", ^ and $ are per line
        self.names = {index: name for name, index in parsed.state.groupdict.items()}
        self.capture = capture  # named groups that capture; None: every group, as written
        self.scan_used = False
        self.source = self.sequence(parsed.data, (_ALWAYS,), scan_allowed=True)

    # what the parts of a pattern accept ------------------------------------------------------------------

    def single(self, op: Any, av: Any) -> _Ranges | None:
        """The set of a one-character item, or None for anything else; for lines, without "\n"."""
        ranges = self.written(op, av)
        return _minus(ranges, _NEWLINE) if self.lines and ranges is not None else ranges

    def written(self, op: Any, av: Any) -> _Ranges | None:
        """The set of a one-character item as written (RE2's meaning), or None for anything else."""
        sre = self.sre
        if op is sre.LITERAL:
            ranges: _Ranges = ((av, av),)
        elif op is sre.NOT_LITERAL:
            ranges = _complement(((av, av),))
        elif op is sre.ANY:
            ranges = _complement(_NEWLINE)
        elif op is sre.IN:
            ranges = self.in_set(av)
        else:
            return None
        return ranges

    def in_set(self, items: list[tuple[Any, Any]]) -> _Ranges:
        sre = self.sre
        categories = {sre.CATEGORY_DIGIT: _DIGIT, sre.CATEGORY_SPACE: _SPACE, sre.CATEGORY_WORD: _WORD,
                      sre.CATEGORY_NOT_DIGIT: _complement(_DIGIT), sre.CATEGORY_NOT_SPACE: _complement(_SPACE),
                      sre.CATEGORY_NOT_WORD: _complement(_WORD)}
        ranges: list[tuple[int, int]] = []
        negate = False
        for op, av in items:
            if op is sre.NEGATE:
                negate = True
            elif op is sre.LITERAL:
                ranges.append((av, av))
            elif op is sre.RANGE:
                ranges.append(av)
            elif op is sre.CATEGORY and av in categories:
                ranges += categories[av]
            else:
                raise NotLinear
        merged = _merge(ranges)
        return _complement(merged) if negate else merged

    def set_text(self, ranges: _Ranges, written: _Ranges | None) -> str:
        """``ranges`` as Python source; over lines, ``written`` (the set with "\n") when it is faster to test
        (a category, or all but one character). The caller passes ``written`` only where reading past a
        line's "\n" changes nothing: outside loops, optional groups and alternations, and for a run, when what
        follows can never start at a "\n". The match then spans lines (the pipeline sees it) or fails where
        the line's own match would have failed."""
        if self.lines and written is not None and written != ranges and written in _FAST_FORMS:
            return _FAST_FORMS[written]
        if self.lines and written is not None and len(_complement(written)) == 1:
            return _set_text(written)
        return _set_text(ranges)

    def info(self, items: list[tuple[Any, Any]], start: int = 0) -> _Info:
        """FIRST, nullable and always of ``items[start:]`` alone."""
        first: list[tuple[int, int]] = []
        always = True
        for op, av in items[start:]:
            part = self.item_info(op, av)
            first += part.first
            always = always and part.always
            if not part.nullable:
                return _Info(_merge(first), False, False)
        return _Info(_merge(first), True, always)

    def item_info(self, op: Any, av: Any) -> _Info:
        sre = self.sre
        ranges = self.single(op, av)
        if ranges is not None:
            return _Info(ranges, False, False)
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            low, _, sub = av
            inner = self.info(sub.data)
            return _Info(inner.first, low == 0 or inner.nullable, low == 0 or inner.always)
        if op is sre.SUBPATTERN:
            return self.info(av[3].data)
        if op is sre.BRANCH:
            parts = [self.info(branch.data) for branch in av[1]]
            return _Info(_merge(r for part in parts for r in part.first), any(p.nullable for p in parts),
                         any(p.always for p in parts))
        if op is sre.AT:
            # zero width; "$" passes where a newline follows (per line), or at the end, where nothing does
            return _Info(_NEWLINE if av is sre.AT_END and self.lines else _NONE if av is sre.AT_END else _ALL,
                         True, False)
        raise NotLinear

    def follow(self, rest: tuple[Any, ...]) -> _Info:
        """What may come after a point: ``rest`` is a chain of (items, start) and _Info, inner first."""
        first: list[tuple[int, int]] = []
        always = True
        for part in rest:
            info = part if isinstance(part, _Info) else self.info(*part)
            first += info.first
            if not info.nullable:
                return _Info(_merge(first), False, False)
            always = always and info.always
        return _Info(_merge(first), True, always)

    # the translation -------------------------------------------------------------------------------------

    def sequence(self, items: list[tuple[Any, Any]], rest: tuple[Any, ...], scan_allowed: bool) -> str:
        return "".join(self.item(op, av, ((items, index + 1), *rest), scan_allowed)
                       for index, (op, av) in enumerate(items))

    def item(self, op: Any, av: Any, rest: tuple[Any, ...], scan_allowed: bool) -> str:
        sre = self.sre
        ranges = self.single(op, av)
        if ranges is not None:
            if not ranges:
                raise NotLinear  # only "\n", which no line holds
            return self.set_text(ranges, self.written(op, av) if scan_allowed else ranges)
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            low, high, sub = av
            return self.repeat(op is sre.MAX_REPEAT, low, high, sub, rest, scan_allowed)
        if op is sre.SUBPATTERN:
            group, add_flags, del_flags, sub = av
            if add_flags or del_flags:
                raise NotLinear
            inner = self.sequence(sub.data, rest, scan_allowed)
            if group is None:
                return f"(?:{inner})"
            name = self.names.get(group)
            if self.capture is None:
                return f"(?P<{name}>{inner})" if name else f"({inner})"
            return f"(?P<{name}>{inner})" if name in self.capture else f"(?:{inner})"
        if op is sre.BRANCH:
            return self.branch(av[1], rest)
        if op is sre.AT:
            text = {sre.AT_BEGINNING: "^" if self.lines else r"\A", sre.AT_BEGINNING_STRING: "^" if self.lines
                    else r"\A", sre.AT_END: "$" if self.lines else r"\Z", sre.AT_BOUNDARY: r"\b",
                    sre.AT_NON_BOUNDARY: r"\B"}.get(av)
            if text is None:
                raise NotLinear
            return text
        raise NotLinear

    def repeat(self, greedy: bool, low: int, high: int, sub: Any, rest: tuple[Any, ...], scan_allowed: bool) -> str:
        unbounded = high is self.sre.MAXREPEAT
        count = "*" if (low, unbounded) == (0, True) else "+" if (low, unbounded) == (1, True) else \
            "?" if (low, high) == (0, 1) else f"{{{low}}}" if low == high else \
            f"{{{low},}}" if unbounded else f"{{{low},{high}}}"
        after = self.follow(rest)
        one = self.single(*sub.data[0]) if len(sub.data) == 1 else None
        if one is not None:
            if not one:
                raise NotLinear
            crossing = scan_allowed and not after.always and not intersects(after.first, _NEWLINE)
            text = self.set_text(one, self.written(*sub.data[0]) if crossing else one)
            if low == high:
                return text + count
            if after.always:  # what follows succeeds at once: greedy keeps its longest try, lazy its shortest
                return text + count + "+" if greedy else f"{text}{{{low}}}"
            if not intersects(one, after.first):  # giving back a character could never let the rest match
                return text + count + "+"
            if scan_allowed and not self.scan_used and self.scan_tail(one, rest):
                self.scan_used = True
                return self.set_text(one, one) + count + ("" if greedy else "?")
            raise NotLinear
        inner_info = self.info(sub.data)
        if inner_info.nullable:
            raise NotLinear
        loop = _Info(_merge([*inner_info.first, *after.first]), False, False) if high != 1 else after
        inner = self.sequence(sub.data, (loop,), scan_allowed=False)
        if low == high:
            return f"(?:{inner}){count}"
        if after.always:
            return f"(?:{inner}){count}+" if greedy else f"(?:{inner}){{{low}}}"
        if intersects(inner_info.first, after.first):
            raise NotLinear
        return f"(?:{inner}){count}+"

    def branch(self, branches: list[Any], rest: tuple[Any, ...]) -> str:
        """An alternation of which at most one branch can match at any point: atomic changes nothing."""
        infos = [self.info(branch.data) for branch in branches]
        if any(info.nullable for info in infos):
            raise NotLinear
        literals = [text for branch in branches if (text := self.literal_text(branch.data)) is not None]
        if len(literals) == len(branches):  # literal strings of which none is a prefix of another
            disjoint = not any(i != j and b.startswith(a) for i, a in enumerate(literals)
                               for j, b in enumerate(literals))
        else:
            disjoint = all(not intersects(a.first, b.first) for i, a in enumerate(infos) for b in infos[i + 1:])
        if not disjoint:
            raise NotLinear
        return "(?>" + "|".join(self.sequence(branch.data, rest, scan_allowed=False) for branch in branches) + ")"

    def literal_text(self, items: list[tuple[Any, Any]]) -> str | None:
        if all(op is self.sre.LITERAL for op, _ in items):
            return "".join(chr(av) for _, av in items)
        return None

    def scan_tail(self, scanned: _Ranges, rest: tuple[Any, ...]) -> bool:
        """Whether a greedy or lazy run of ``scanned`` may be left to give back characters: what follows it
        starts with one character c and never consumes c again, so the tries of what follows, one from each
        c, read separate stretches of the text: linear in all."""
        items: list[tuple[Any, Any]] = []
        for part in rest:
            if isinstance(part, _Info):
                if not part.always:
                    return False
                break
            items += part[0][part[1]:]
        while items and items[0][0] is self.sre.SUBPATTERN and not items[0][1][1] and not items[0][1][2]:
            items = [*items[0][1][3].data, *items[1:]]
        if not items or items[0][0] is not self.sre.LITERAL:
            return False
        stop = ((items[0][1], items[0][1]),)
        return all(not intersects(ranges, stop) for ranges in self.consumed(items[1:]))

    def consumed(self, items: list[tuple[Any, Any]]) -> Iterator[_Ranges]:
        """Every set of characters ``items`` may consume, at any depth."""
        sre = self.sre
        for op, av in items:
            ranges = self.single(op, av)
            if ranges is not None:
                yield ranges
            elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
                yield from self.consumed(av[2].data)
            elif op is sre.SUBPATTERN:
                yield from self.consumed(av[3].data)
            elif op is sre.BRANCH:
                for branch in av[1]:
                    yield from self.consumed(branch.data)
            elif op is not sre.AT:
                yield _ALL


def translate(pattern: str, *, lines: bool, capture: set[str] | None = None) -> str | None:
    """The proven-linear Python source equal to RE2's ``match`` of ``pattern`` (``lines``: on one line of a
    text of lines), or None (outside the syntax both read alike, or outside the proof)."""
    parsed = parse_shared_syntax(pattern)
    if parsed is None:
        return None
    try:
        return Translation(parsed, lines=lines, capture=capture).source
    except (NotLinear, RecursionError):
        return None

