"""Users' regexes: RE2 syntax and results, linear time, Python-only features refused with the reason; the
Python form the log pipeline runs gives RE2's results exactly (hypothesis over a small regex grammar)."""

from __future__ import annotations

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import regex
from agent.config.regex_python import translate as _translate
from tests.helpers import cpu_time_of, examples

NGINX = (r'^(?P<ip>\S+) \S+ \S+ \[[^\]]+\] "(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) '
         r'(?P<bytes>\d+) .* (?P<rt>[0-9.]+)$')


@pytest.mark.parametrize(("pattern", "feature"), [
    ("(?=a)b", "lookaround"), ("a(?<!b)", "lookaround"), (r"(a)\1", "backreference"),
    ("(?P<x>a)(?P=x)", "backreference"), ("a*+", "possessive"), ("(?>ab)", "atomic group"),
    ("(a)?(?(1)b|c)", "conditional"),
])
def test_python_only_features_are_refused_with_the_reason(pattern, feature):
    with pytest.raises(ValueError) as refused:
        regex.compile(pattern)
    assert feature in str(refused.value) and "linear" in str(refused.value)


def test_re2_syntax_is_accepted_and_bad_syntax_says_why():
    assert regex.compile(r"\pL+\z").search("héllo")
    assert regex.compile("[[:digit:]]+").fullmatch("123")
    with pytest.raises(ValueError, match="missing ]"):
        regex.compile("[a")
    with pytest.raises(ValueError, match=r"\\z"):
        regex.compile(r"a\Z")


@pytest.mark.parametrize("pattern", [r"[\b]x", "x{1001}", "(x{1000}){1000}", "(?P<\u00e9>a)", "[[:alpha:]]",
                                     r"a{,3}", r"\Z", r"(?P<a>x)(?P<a>y)", r"\8", "(?#x)a", "(?u)a", "(?a)a"])
def test_patterns_python_reads_otherwise_than_re2_never_get_a_python_form(pattern):
    """RE2 is compiled only when a search needs it, so a Python form must only exist for RE2's syntax."""
    assert _translate(pattern, lines=False) is None
    assert _translate(pattern, lines=True) is None


@pytest.mark.parametrize("pattern", ["(?#x)a", "a(?#x)", "(?u)a", "(?a)a", "(?L)a"])
def test_what_python_reads_without_a_trace_and_re2_refuses_is_refused(pattern):
    with pytest.raises(ValueError, match="does not compile"):
        regex.compile(pattern)


def test_a_catastrophic_pattern_runs_in_linear_time():
    attack = regex.compile("(a+)+$")
    assert not attack.runs_in_python  # no proof: RE2 runs it

    def attacked() -> None:
        for length in (40, 10_000, 100_000):
            assert attack.fullmatch("a" * length + "!") is None
            assert attack.match("a" * length + "!") is None

    assert cpu_time_of(attacked, repeat=1) < 5  # CPU seconds; Python's re: 2^40 steps for the first alone


def test_the_nginx_pattern_runs_in_python_possessively():
    compiled = regex.compile(NGINX)
    assert compiled.runs_in_python
    line = '10.0.0.1 - - [24/Nov/2026:10:00:00 +0000] "GET /a HTTP/1.1" 200 512 "-" "b/1" 0.042'
    assert compiled.match(line).groupdict() == re2.compile(NGINX).match(line).groupdict()
    assert compiled.match(line)["rt"] == "0.042"


@pytest.mark.parametrize("pattern", ["5..", r"\d+", "GET|POST", "/api/.*", "(?P<code>[45])\\d\\d", "a.*b"])
def test_log_match_filters_fullmatch_in_python(pattern):
    """A log metric's ``match`` filters are whole-value matches: RE2's fullmatch is its match of the pattern
    followed by the end of the text, which the match form's proof covers."""
    assert regex.compile(pattern).fullmatches_in_python


def test_replacement_templates_expand_like_go():
    path = regex.compile(r"/item/(?P<id>\d+)")
    assert path.sub(regex.template("/item/:id${id}x$$", path), "/item/12/item/3") == "/item/:id12x$/item/:id3x$"
    empty = regex.compile("x*")
    assert empty.sub(regex.template("-", empty), "abxc") == "-a-b-c-"  # Go: no empty match right after one
    with pytest.raises(ValueError, match="names no group"):
        regex.template("$2x", path)
    with pytest.raises(ValueError, match="refers to group 2"):
        regex.template("${2}", path)


# --- the Python form gives RE2's results -------------------------------------------------------------------

_ATOMS = st.sampled_from(["a", "b", " ", ".", r"\d", r"\S", r"\s", "[ab]", "[^a]", "[^ ]", "1", r"\w", r"\b"])


def _regexes() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, st.sampled_from(["*", "+", "?", "*?", "+?", "??", "{2}", "{1,3}", "{0,2}?"]))
            .map("".join),
            st.lists(inner, min_size=2, max_size=4).map("".join),
            st.lists(inner, min_size=2, max_size=3).map(lambda parts: "(?:" + "|".join(parts) + ")"),
            inner.map(lambda part: f"({part})"),
        )
    return st.tuples(st.sampled_from(["", "^"]), st.recursive(_ATOMS, extend, max_leaves=8),
                     st.sampled_from(["", "$"])).map("".join)


def _spans(found, groups: int):
    return None if found is None else [found.span(index) for index in range(groups + 1)]


@settings(max_examples=examples(4), deadline=None)
@given(_regexes(), st.lists(st.text(alphabet="ab .1\t\x0b\xe9", max_size=12), min_size=1, max_size=4))
def test_python_form_matches_exactly_what_re2_matches(pattern, lines):
    try:
        reference = re2.compile(pattern)
    except re2.error:
        assert _translate(pattern, lines=False) is None  # RE2 refuses it: no Python form may accept it
        return
    compiled = regex.compile(pattern)
    for line in lines:
        assert _spans(compiled.match(line), compiled.groups) == _spans(reference.match(line), compiled.groups), \
            (pattern, _translate(pattern, lines=False), line)
        assert _spans(compiled.fullmatch(line), compiled.groups) == \
            _spans(reference.fullmatch(line), compiled.groups), (pattern, compiled.fullmatches_in_python, line)
    names = list(compiled.groupindex)
    scanner = compiled.line_scanner(names)
    if scanner is None:
        return
    found = scanner.findall("".join(line + "\n" for line in lines))
    if len(found) != len(lines):
        return  # a match ran past a line's end: the pipeline sees it and takes these lines one by one
    expected = []
    for line in lines:
        matched = reference.match(line)
        groups = tuple((matched.group(name) or "") for name in names) if matched else ("",) * len(names)
        expected.append((*groups, "\n" if matched else ""))
    assert [tuple(item) if isinstance(item, tuple) else (item,) for item in found] == expected, pattern
    if names:  # unmarked: the same groups without the marker
        unmarked = compiled.line_scanner(names, marked=False).findall("".join(line + "\n" for line in lines))
        assert [tuple(item) if isinstance(item, tuple) else (item,) for item in unmarked] == \
            [groups[:-1] for groups in expected], pattern


def test_named_groups_in_a_pattern_with_a_scan_point():
    compiled = regex.compile(r"(?P<msg>.*) (?P<rt>\d+)$")
    assert compiled.runs_in_python
    assert compiled.line_scanner(["rt"]).findall("a b 12\nx\nq 7 8\n") == [("12", "\n"), ("", ""), ("8", "\n")]


def test_text_with_a_lone_surrogate_is_searched_not_fatal():
    """JSON's "\\ud800" in a log field or a discovered label is a lone surrogate, which RE2's UTF-8 cannot take:
    it is read as U+FFFD, and positions still index the original text."""
    text = "x\ud800500y"
    found = regex.compile(r"\d+").search(text)
    assert found is not None and text[found.start():found.end()] == "500"
    assert regex.compile(r"x.500y").fullmatch(text) is not None
    assert regex.compile(r"(?:a|x)").match(text) is not None
    assert [m.start() for m in regex.compile("0").finditer(text)] == [3, 4]
    assert regex.compile("5").sub(regex.template("$0$0", regex.compile("5")), text) == "x\ud8005500y"


def test_a_regex_used_only_to_match_never_builds_its_search_or_whole_match_form():
    """A log ``pattern`` only matches: the proofs and compiled forms for search() and fullmatch() (most of what
    compiling a long pattern costs) are made on their first use, once."""
    compiled = regex.compile(NGINX)
    assert compiled.match('10.0.0.1 - - [24/Nov/2026:10:00:00 +0000] "GET /a HTTP/1.1" 200 512 "-" "b/1" 0.042')
    assert compiled._searcher is regex._NOT_YET and compiled._whole is regex._NOT_YET
    assert compiled.fullmatch("nope") is None and compiled.search("nope") is None
    searcher, whole = compiled._searcher, compiled._whole
    assert compiled.fullmatch("nope") is None and compiled.search("nope") is None
    assert (compiled._searcher, compiled._whole) == (searcher, whole)  # decided once
