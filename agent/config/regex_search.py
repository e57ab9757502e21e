"""Whether the proven-linear Python form of a user's regex (``agent.config.regex_python``) may also search
(``search``, ``finditer``, and so ``sub``: a log label's ``rewrite``), finding RE2's matches in time linear in
the text.

A search tries a match at each position of the text in turn, and both engines take the first position where
one succeeds, with the match a match from there gives (leftmost-first): so the proven match form of
``agent.config.regex_python`` finds RE2's matches. Each try is linear in the characters it reads, but tries
from successive positions may read the same characters again: ``\\d+x`` over a line of digits reads the rest
of the line from every digit, quadratic in all. A search is linear when the tries provably read separate
stretches of the text, which holds in three shapes:

- anchored: the pattern starts at the start of the text (``^``), so every try but the first fails at once;
- a bounded head, then runs that always succeed: what may fail (``/api/item/\\d``, at most
  ``MAX_HEAD`` characters of it) comes first, and after it only repeats of one set of characters that may
  match none (``\\d*``, and so the rest of ``\\d+``). A try that fails reads at most the head; one that
  succeeds reads its match and one character past each run, and the next try starts where the match ended;
- a first character that comes back nowhere: the pattern starts with one character of a set F and never
  consumes a character of F again (``v\\d+\\.\\d+``). A try reads only characters outside F after its first,
  so the tries from two F characters read stretches that meet at most at one end, and a try from any other
  character fails at once.

Anything else is searched by RE2.
"""

from __future__ import annotations

from typing import Any

from agent.config.regex_python import NotLinear, Translation, intersects
from agent.config.regex_syntax import parse_shared_syntax

__all__ = ["MAX_HEAD", "searches_linearly"]

MAX_HEAD = 256  # characters a failing try may read in the bounded-head shape: each position of the text may be
# read that many times over (a UUID is 36, a SHA-256 in hex 64)


def searches_linearly(pattern: str) -> bool:
    """Whether ``translate(pattern, lines=False)``, the proven match form, also finds RE2's matches of
    ``pattern`` anywhere in a text (``re.search``, ``re.finditer``) in time linear in the text."""
    parsed = parse_shared_syntax(pattern)
    if parsed is None:
        return False
    try:
        translation = Translation(parsed, lines=False, capture=None)
    except (NotLinear, RecursionError):
        return False
    shapes = _Shapes(translation)
    items = _leading_groups_opened(parsed.data, translation.sre)
    return shapes.anchored(items) or shapes.head_then_runs(parsed.data) is not None or shapes.first_never_again(items)


def _leading_groups_opened(items: list[tuple[Any, Any]], sre: Any) -> list[tuple[Any, Any]]:
    """``items`` with each group at their start replaced by its content (a group consumes what it holds)."""
    while items and items[0][0] is sre.SUBPATTERN and not items[0][1][1] and not items[0][1][2]:
        items = [*items[0][1][3].data, *items[1:]]
    return items


class _Shapes:
    def __init__(self, translation: Translation):
        self.translation = translation
        self.sre = translation.sre

    def anchored(self, items: list[tuple[Any, Any]]) -> bool:
        sre = self.sre
        return bool(items) and items[0][0] is sre.AT and items[0][1] in (sre.AT_BEGINNING, sre.AT_BEGINNING_STRING)

    def first_never_again(self, items: list[tuple[Any, Any]]) -> bool:
        if not items:
            return False
        first = self.translation.single(*items[0])
        if not first:  # not one character (or none)
            return False
        return not any(intersects(ranges, first) for ranges in self.translation.consumed(items[1:]))

    def head_then_runs(self, items: list[tuple[Any, Any]]) -> int | None:
        """How many characters a failing try of ``items`` reads at most, when it is at most MAX_HEAD and the
        first item of unbounded length is a run of one set whose rest, with all that follows, always succeeds;
        else None."""
        sre = self.sre
        head = 0
        for index, (op, av) in enumerate(items):
            cost = self.bounded_cost(op, av)
            if cost is not None:
                head += cost
            elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT) and self.single_run(av[2]) and self.runs(items[index + 1:]):
                head += av[0]  # the run's first ``low`` characters may fail; the rest always succeeds
                break
            elif op is sre.SUBPATTERN and not av[1] and not av[2] and self.runs(items[index + 1:]):
                inner = self.head_then_runs(av[3].data)
                if inner is None:
                    return None
                head += inner
                break
            else:
                return None
            if head > MAX_HEAD:
                return None
        return head if head <= MAX_HEAD else None

    def bounded_cost(self, op: Any, av: Any) -> int | None:
        """How many characters a try reads at most in this item, None when it has no bound: one per
        character of the longest match (and each branch of an alternation read from its start)."""
        sre = self.sre
        if self.translation.single(op, av) is not None:
            return 1
        if op is sre.AT:
            return 0
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            low, high, sub = av
            inner = self.sequence_cost(sub.data)
            return None if high is sre.MAXREPEAT or inner is None else high * inner
        if op is sre.SUBPATTERN:
            return self.sequence_cost(av[3].data)
        if op is sre.BRANCH:
            costs = [self.sequence_cost(branch.data) for branch in av[1]]
            return None if None in costs else sum(c for c in costs if c is not None)
        return None

    def sequence_cost(self, items: list[tuple[Any, Any]]) -> int | None:
        total = 0
        for op, av in items:
            cost = self.bounded_cost(op, av)
            if cost is None or total + cost > MAX_HEAD:
                return None
            total += cost
        return total

    def single_run(self, sub: Any) -> bool:
        return len(sub.data) == 1 and self.translation.single(*sub.data[0]) is not None

    def runs(self, items: list[tuple[Any, Any]]) -> bool:
        """Whether ``items`` are runs of one set each that may match nothing (and groups of such runs): they
        always succeed, reading what they match and one character more each."""
        sre = self.sre
        for op, av in items:
            if op in (sre.MAX_REPEAT, sre.MIN_REPEAT) and av[0] == 0 and self.single_run(av[2]):
                continue
            if op is sre.SUBPATTERN and not av[1] and not av[2] and self.runs(av[3].data):
                continue
            return False
        return True

