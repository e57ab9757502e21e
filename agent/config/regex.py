"""Every regular expression a user writes, compiled to run in time linear in its input.

Users' regexes meet text the agent does not control (log lines, discovered labels, response bodies), so a
backtracking engine would let one line like ``aaaa...!`` against ``(a+)+$`` freeze the agent. Each regex is
compiled by RE2 (Google's ``google-re2`` binding), which runs in time linear in the text: its syntax and its
matches are the ones Prometheus's relabelling and Go programs (mtail) give. A regex RE2 cannot run in linear
time (lookarounds, backreferences, possessive quantifiers, atomic groups, conditionals) is refused with the
reason, and the config error names its file and line.

A call into RE2 costs about a microsecond more than Python's ``re`` per log line, and its library 2.5 MiB of
memory. A regex is also translated to Python's ``re`` when that provably gives the same match in linear time:
for ``match`` (a log ``pattern`` applied to every line; ``agent.config.regex_python``) and for ``search``,
``finditer`` and ``sub`` (a log label's ``rewrite``; ``agent.config.regex_search``). Anything outside those
proofs runs in RE2, which is loaded by the first regex that needs it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from agent.config.regex_python import translate
from agent.config.regex_search import searches_linearly
from agent.text import encodable

__all__ = ["Match", "Regex", "Template", "compile", "parse", "template"]


class Match(Protocol):
    """What both engines' match objects offer."""

    def group(self, group: int | str, /) -> Any: ...
    def groups(self) -> tuple[Any, ...]: ...
    def groupdict(self) -> dict[str, Any]: ...
    def start(self, group: int = 0, /) -> int: ...
    def end(self, group: int = 0, /) -> int: ...


def _re2(pattern: str, dot_matches_newline: bool) -> Any:
    """RE2's compiled ``pattern``; ValueError saying why it is refused. google-re2 (2.5 MiB with its C++
    library) is loaded by the first regex that needs it."""
    import re2

    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern on stderr
    options.dot_nl = dot_matches_newline
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        raise ValueError(_why_refused(pattern, exc)) from None


_NOT_YET = object()  # a form not yet decided


class Regex:
    """A user's regular expression, RE2 syntax and semantics, linear time whatever the text."""

    __slots__ = ("pattern", "dot_matches_newline", "groups", "groupindex", "_compiled", "_python", "_searcher",
                 "_whole")

    def __init__(self, pattern: str, *, dot_matches_newline: bool = False):
        self.pattern = pattern
        self.dot_matches_newline = dot_matches_newline
        # Python's re form of match(), when proven equal and linear: a C call per line instead of RE2's binding.
        # Its syntax is a part of RE2's (_translate), so RE2 is compiled only once a search needs it.
        source = None if dot_matches_newline else translate(pattern, lines=False)
        self._python = re.compile(source, re.ASCII) if source is not None else None
        self._compiled: Any = None if self._python is not None else _re2(pattern, dot_matches_newline)
        numbered: Any = self._python if self._python is not None else self._compiled
        self.groups: int = numbered.groups
        self.groupindex: dict[str, int] = dict(numbered.groupindex)
        # The search and whole-match forms are proven and compiled on first use: a regex used only for
        # ``match`` (a log ``pattern``) never pays for them.
        self._searcher: Any = _NOT_YET  # re.Pattern[str] | None once decided
        self._whole: Any = _NOT_YET

    def _search_form(self) -> re.Pattern[str] | None:
        """The Python form searches (search, finditer, sub) too when the tries from successive positions
        provably read separate stretches of the text: linear in all, and RE2 is not loaded for a rewrite
        either."""
        if self._searcher is _NOT_YET:
            self._searcher = self._python if self._python is not None and searches_linearly(self.pattern) else None
        return self._searcher

    def _whole_form(self) -> re.Pattern[str] | None:
        """RE2's fullmatch is its match of the pattern followed by the end of the text ("$" without (?m)): the
        same proof as ``match``'s gives the Python form of that (a log metric's ``match`` filters)."""
        if self._whole is _NOT_YET:
            whole = translate(f"(?:{self.pattern})$", lines=False) if self._python is not None else None
            self._whole = re.compile(whole, re.ASCII) if whole is not None else None
        return self._whole

    @property
    def _re2(self) -> Any:
        if self._compiled is None:
            self._compiled = _re2(self.pattern, self.dot_matches_newline)
        return self._compiled

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Regex) and (other.pattern, other.dot_matches_newline) == \
            (self.pattern, self.dot_matches_newline)

    def __hash__(self) -> int:
        return hash(self.pattern)

    @property
    def runs_in_python(self) -> bool:
        """Whether ``match`` runs through Python's re (proven linear and equal) rather than RE2's binding."""
        return self._python is not None

    @property
    def fullmatches_in_python(self) -> bool:
        """Whether ``fullmatch`` runs through Python's re (proven linear and equal)."""
        return self._whole_form() is not None

    @property
    def searches_in_python(self) -> bool:
        """Whether ``search``, ``finditer`` and ``sub`` run through Python's re (proven linear and equal)."""
        return self._search_form() is not None

    # RE2 reads UTF-8, which cannot encode a lone surrogate (JSON's "\ud800" in a log line or a label): such a
    # text is searched with U+FFFD in its place, one code point for one, so positions still index ``text``.
    # The Python form of a search is given the same text, so it finds what RE2 would.

    def search(self, text: str) -> Match | None:
        """The leftmost match anywhere in ``text``."""
        if (searcher := self._searcher) is _NOT_YET:  # per line: no call once decided
            searcher = self._search_form()
        if searcher is not None:
            return searcher.search(encodable(text))
        try:
            return self._re2.search(text)
        except UnicodeEncodeError:
            return self._re2.search(encodable(text))

    def match(self, text: str) -> Match | None:
        """A match that starts at the beginning of ``text`` (it may end anywhere)."""
        if self._python is not None:
            return self._python.match(text)
        try:
            return self._re2.match(text)
        except UnicodeEncodeError:
            return self._re2.match(encodable(text))

    def fullmatch(self, text: str) -> Match | None:
        """A match of the whole of ``text`` (how Prometheus's relabelling anchors its regexes)."""
        if (whole := self._whole) is _NOT_YET:
            whole = self._whole_form()
        if whole is not None:
            return whole.match(encodable(text))
        try:
            return self._re2.fullmatch(text)
        except UnicodeEncodeError:
            return self._re2.fullmatch(encodable(text))

    def finditer(self, text: str) -> Iterator[Match]:
        if (searcher := self._search_form()) is not None:
            return searcher.finditer(encodable(text))
        return self._re2.finditer(encodable(text))

    def sub(self, replacement: Template, text: str) -> str:
        """``text`` with every match replaced, as Go's ``ReplaceAllString`` does (an empty match right after
        a match is not replaced)."""
        pieces, position, previous_end = [], 0, -1
        for found in self.finditer(text):
            start, end = found.start(), found.end()
            if start == end == previous_end:
                continue
            pieces.append(text[position:start])
            pieces.append(replacement.expand(found))
            position = previous_end = end
        if not pieces:
            return text
        pieces.append(text[position:])
        return "".join(pieces)

    def line_scanner(self, capture: Iterable[str], *, marked: bool = True) -> re.Pattern[str] | None:
        """A Python pattern whose ``findall()`` over a text of complete lines (each ending in a newline) gives,
        for each line, a tuple of the named groups in ``capture`` (in pattern order) and then, when ``marked``, a
        marker: "\\n" when this regex matches the start of the line (as ``match`` does), "" when not (unmarked,
        a caller tells the lines apart by a group that always captures something). Every other group captures
        nothing, so findall() makes no string for it. None when the regex has no proven-linear Python form
        (``match`` then runs in RE2, line by line).

        A "" in a captured field may be a group that did not take part (``match().group()`` gives None)."""
        body = translate(self.pattern, lines=True, capture=set(capture))
        if body is None:
            return None
        end = "(\\n)" if marked else "\\n"
        return re.compile(f"^(?:(?:{body})[^\\n]*+{end}|[^\\n]*+\\n)", re.ASCII | re.MULTILINE)


def compile(pattern: str, *, dot_matches_newline: bool = False) -> Regex:  # noqa: A001 - as re.compile
    """``pattern`` compiled; ValueError saying why when RE2 refuses it."""
    return Regex(pattern, dot_matches_newline=dot_matches_newline)


def parse(value: Any) -> Regex:
    """A config value holding a regular expression (the ``Fields`` value parser)."""
    if not isinstance(value, str):
        raise ValueError(f"expected a regular expression string, got {type(value).__name__}")
    return Regex(value)


# --- refusals ---------------------------------------------------------------------------------------------

_LINEAR = "regular expressions run in time linear in their input (RE2 syntax, as in Prometheus and Go)"


def _why_refused(pattern: str, error: Exception) -> str:
    """What a user needs to read for a pattern RE2 refuses: the Python-only feature when Python's parser
    recognises one, RE2's own words otherwise."""
    quoted = pattern if len(pattern) <= 80 else pattern[:77] + "..."
    feature = _python_only_feature(pattern)
    if feature is not None:
        return f"regular expression {quoted!r}: {feature} cannot be used: {_LINEAR}"
    reason = str(error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else error)
    if "\\Z" in reason:
        reason += " (RE2 writes the end of the text as \\z, or $)"
    return f"regular expression {quoted!r} does not compile: {reason}"


def _python_only_feature(pattern: str) -> str | None:
    import re._constants as sre
    import re._parser as sre_parse

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return None
    names = {
        sre.ASSERT: "a lookaround ((?=...), (?<=...))", sre.ASSERT_NOT: "a negative lookaround ((?!...), (?<!...))",
        sre.GROUPREF: "a backreference (\\1, (?P=name))", sre.GROUPREF_EXISTS: "a conditional group ((?(1)...))",
        sre.POSSESSIVE_REPEAT: "a possessive quantifier (*+, ++, ?+)", sre.ATOMIC_GROUP: "an atomic group ((?>...))",
    }
    stack = [parsed.data]
    while stack:
        for op, av in stack.pop():
            if op in names:
                return names[op]
            for item in av if isinstance(av, (tuple, list)) else (av,):
                if isinstance(item, sre_parse.SubPattern):
                    stack.append(item.data)
                elif isinstance(item, list):
                    stack += [sub.data for sub in item if isinstance(sub, sre_parse.SubPattern)]
    return None


# --- replacement templates --------------------------------------------------------------------------------

_TEMPLATE_RE = re.compile(r"\$(?:(\$)|\{([^{}]*)\}|([a-zA-Z0-9_]+))?")


@dataclass(frozen=True)
class Template:
    """A replacement written as in Prometheus relabelling and Go's regexp: ``$1``, ``${1}``, ``$name``,
    ``${name}``, ``$$`` for a dollar. Literal text and group references, alternating (literals at even
    positions)."""

    parts: tuple[str | int, ...]

    def expand(self, found: Match) -> str:
        return "".join(part if part.__class__ is str else (found.group(part) or "") for part in self.parts)


def template(replacement: str, regex: Regex) -> Template:
    """``replacement`` parsed against ``regex``'s groups. A reference to no group of the regex is an error
    (Go would silently insert nothing)."""
    parts: list[str | int] = []
    literal, position = [], 0
    for found in _TEMPLATE_RE.finditer(replacement):
        literal.append(replacement[position:found.start()])
        position = found.end()
        reference = found.group(2) if found.group(2) is not None else found.group(3)
        if found.group(1) or reference is None:  # "$$", or a "$" not followed by a name: a dollar
            literal.append("$")
            continue
        if reference.isdigit():
            if int(reference) > regex.groups:
                raise ValueError(f"${reference} refers to group {int(reference)}, but the regex has "
                                 f"{regex.groups} group{'s' if regex.groups != 1 else ''}")
            index = int(reference)
        elif reference in regex.groupindex:
            index = regex.groupindex[reference]
        else:
            hint = " (write ${1}x for group 1 followed by x)" if reference[:1].isdigit() else ""
            raise ValueError(f"{'$' + reference!r} names no group of the regex{hint}")
        parts += ["".join(literal), index]
        literal = []
    literal.append(replacement[position:])
    parts.append("".join(literal))
    return Template(tuple(parts))
