"""Searching with a user's regex (``search``, ``finditer``, ``sub``: a log label's ``rewrite``) in Python's re when
that is proven to find RE2's matches in linear time (agent/config/regex_search.py): the same matches and the same
rewritten text as RE2 on generated patterns and texts (hypothesis), linear time on texts made to be slow, and the
patterns outside the proof left to RE2, which searches them in linear time too."""

from __future__ import annotations

import pytest
import re2
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent.config import regex
from agent.config.regex_search import searches_linearly
from agent.text import encodable
from tests.helpers import cpu_time_of, examples
from tests.test_regex import _regexes

# Patterns users write in a rewrite, and the shape of the proof each one falls in
PROVEN = [
    r"/api/item/\d+", r"\d+", r"(\d+)", r"/users/[^/]+", r"session=[^&]*", "x*", r"[0-9a-f]{8}-[0-9a-f]{4}-"
    r"[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", r"/item/(?P<id>\d+)",  # a bounded head, then runs
    r"^(.*)/(\d+)$", r"^/api/(v\d+)/", r"(^[a-z]+)\.",  # anchored at the start of the text
    r"v\d+\.\d+", r"@[a-z.]+\.com", r"\?[^?]*$",  # a first character never consumed again
]
UNPROVEN = [
    r"\d+x",  # every try from a digit reads the rest of a run of digits
    r"\?.*$",  # every try from a "?" reads to the end of the line
    r"a.*b", r"(a+)+$", r"\b\d+\b", r"(?:ab)+c",
    "[0-9a-f]{300}",  # a failing try may read 300 characters: past MAX_HEAD
    r"(?s).*", r"\pL+",  # outside the syntax Python's re and RE2 read alike
]


@pytest.mark.parametrize("pattern", PROVEN)
def test_the_patterns_a_rewrite_is_written_with_search_in_python(pattern):
    assert searches_linearly(pattern)
    assert regex.compile(pattern).searches_in_python


@pytest.mark.parametrize("pattern", UNPROVEN)
def test_patterns_outside_the_proof_search_in_re2(pattern):
    assert not searches_linearly(pattern)
    assert not regex.compile(pattern).searches_in_python


def test_a_rewrite_gives_what_re2_gives():
    path = regex.compile(r"/api/item/(?P<id>\d+)")
    rewrite = regex.template("/api/item/:id<${id}>", path)
    assert path.searches_in_python
    assert path.sub(rewrite, "/api/item/12/x/api/item//api/item/7") == "/api/item/:id<12>/x/api/item//api/item/:id<7>"
    empty = regex.compile("x*")
    assert empty.searches_in_python
    assert empty.sub(regex.template("-", empty), "abxc") == "-a-b-c-"  # Go: no empty match right after one


def test_a_lone_surrogate_is_searched_as_re2_reads_it():
    """RE2 reads a lone surrogate (JSON's "\\ud800") as U+FFFD; the Python form is given the same text."""
    text = "a\ud800b"
    for pattern in (r"a[^b]b", r"a\W", "a.", "[\ufff0-\uffff]"):
        compiled = regex.compile(pattern)
        assert compiled.searches_in_python
        expected = re2.compile(pattern).search(encodable(text))
        found = compiled.search(text)
        assert (found and found.span()) == (expected and expected.span()), pattern


# --- the same matches as RE2 -------------------------------------------------------------------------------

_ONE = st.sampled_from(["a", "b", "/", "1", ".", r"\d", r"\w", r"\s", "[ab]", "[^a]", r"[^/]", r"\S", r"\."])
_HEAD_ITEM = st.one_of(_ONE, _ONE.map(lambda one: one + "{1,3}"), _ONE.map(lambda one: one + "?"),
                       st.tuples(_ONE, _ONE).map(lambda pair: f"(?:{pair[0]}|{pair[1]})"),
                       _ONE.map(lambda one: f"({one})"), st.just(r"\b"))
_RUN = st.tuples(_ONE, st.sampled_from(["*", "?", "{0,2}", "*?", "??"])).map("".join)
_UNBOUNDED = st.tuples(_ONE, st.sampled_from(["+", "*", "+?", "{2,}", "*?"])).map("".join)


def _search_shaped() -> st.SearchStrategy[str]:
    """Patterns near the proof's three shapes (a bounded head then runs, anchored, a first character never
    consumed again), some inside it and some just outside."""
    head_then_runs = st.tuples(st.lists(_HEAD_ITEM, max_size=3).map("".join), _UNBOUNDED,
                               st.lists(_RUN, max_size=2).map("".join), st.sampled_from(["", "$", "b", r"\b"]))
    grouped = head_then_runs.map(lambda parts: f"{parts[0]}({''.join(parts[1:3])}){parts[3]}")
    first = st.tuples(st.sampled_from(["v", "/", "@", "[ab]"]), st.lists(st.one_of(_HEAD_ITEM, _UNBOUNDED, _RUN),
                                                                          min_size=1, max_size=4).map("".join))
    return st.one_of(head_then_runs.map("".join), grouped, first.map("".join), _regexes())


_TEXTS = st.text(alphabet="ab/1 .v@\n\xe9", max_size=24)


def _spans(matches, groups: int) -> list[list[tuple[int, int]]]:
    """Every group's span of each match, as Go's FindAll gives them: an empty match abutting the match before it
    is no match (google-re2's finditer yields an empty match at the end twice: (2, 2) twice for \\b in "11")."""
    spans, previous_end = [], -1
    for found in matches:
        if found.start() == found.end() == previous_end:
            continue
        spans.append([found.span(index) for index in range(groups + 1)])
        previous_end = found.end()
    return spans


def _re2_sub(reference, replacement: regex.Template, text: str) -> str:
    """Go's ReplaceAllString over RE2's own matches (an empty match right after a match is not replaced)."""
    pieces, position, previous_end = [], 0, -1
    for found in reference.finditer(encodable(text)):
        start, end = found.span()
        if start == end == previous_end:
            continue
        pieces += [text[position:start], replacement.expand(found)]
        position = previous_end = end
    return "".join([*pieces, text[position:]])


@settings(max_examples=examples(4), deadline=None)
@given(_search_shaped(), st.lists(_TEXTS, min_size=1, max_size=4))
def test_the_python_search_finds_exactly_what_re2_finds(pattern, texts):
    proven = searches_linearly(pattern)
    try:
        reference = re2.compile(pattern)
    except re2.error:
        assert not proven  # RE2 refuses it: no Python form may accept it
        return
    assume(proven)
    compiled = regex.compile(pattern)
    assert compiled.searches_in_python
    replacement = regex.template("<$0" + "".join(f"|${index}" for index in range(1, compiled.groups + 1)) + ">",
                                 compiled)
    for text in texts:
        assert _spans(compiled.finditer(text), compiled.groups) == _spans(reference.finditer(text), compiled.groups), \
            (pattern, text)
        found, expected = compiled.search(text), reference.search(text)
        assert (found and found.span()) == (expected and expected.span()), (pattern, text)
        assert compiled.sub(replacement, text) == _re2_sub(reference, replacement, text), (pattern, text)


# --- linear time --------------------------------------------------------------------------------------------

@settings(max_examples=examples(2), deadline=None)
@given(_search_shaped(), st.text(alphabet="ab/1 .v@", min_size=1, max_size=6))
def test_a_proven_search_is_linear_on_any_repeated_text(pattern, unit):
    """A text of one short piece repeated is how tries from successive positions re-read each other's
    characters (the digits of ``\\d+x``): 200,000 characters would take Python's re minutes to search
    quadratically; a linear search takes milliseconds."""
    assume(searches_linearly(pattern))
    compiled = regex.compile(pattern)
    replacement = regex.template("-", compiled)
    text = unit * (200_000 // len(unit))
    assert cpu_time_of(lambda: compiled.sub(replacement, text), repeat=1) < 3, pattern


@pytest.mark.parametrize(("pattern", "text"), [
    (r"/api/item/\d+", "/api/item/" * 20_000), (r"v\d+\.\d+", "v" + "1" * 200_000), (r"^(.*)/(\d+)$", "/1" * 100_000),
    (r"\d+", "1" * 200_000 + "x"), (r"[0-9a-f]{8}-[0-9a-f]{4}", "0123456-" * 25_000),
])
def test_proven_patterns_on_texts_made_to_be_slow(pattern, text):
    compiled = regex.compile(pattern)
    assert compiled.searches_in_python
    assert cpu_time_of(lambda: compiled.sub(regex.template("-", compiled), text), repeat=1) < 3


@pytest.mark.parametrize(("pattern", "text"), [
    (r"\d+x", "1" * 200_000), (r"\?.*$", "?" * 200_000 + "\n"), ("(a+)+$", "a" * 200_000 + "!"),
])
def test_a_search_python_would_take_quadratic_time_over_runs_in_re2_in_linear_time(pattern, text):
    """Issue 18: Python's re would try each of 200,000 positions and read on to the end from each (about 2 *
    10^10 steps); RE2 reads the text once."""
    compiled = regex.compile(pattern)
    assert not compiled.searches_in_python
    assert cpu_time_of(lambda: compiled.sub(regex.template("-", compiled), text), repeat=1) < 3
