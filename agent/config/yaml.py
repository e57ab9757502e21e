"""YAML loading that remembers where every value came from (the line of each mapping, key and item), with bounds
on nesting and alias expansion, and every failure as a ``file:line`` problem.

The agent config, the web config, target files and the KPI specs are all read through this module, so every
error a user sees has the same shape and points at the same kind of place.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from agent.config.files import read_text
from agent.config.problems import ConfigError, Problem
from agent.formatting import cut, excerpt

T = TypeVar("T")

MAX_DEPTH = 64  # nesting of mappings and sequences; real configs use fewer than 10
MAX_VALUES = 200_000  # values in a document once aliases are expanded (a "billion laughs" has 10^9)


class LocatedMap(dict):
    """A mapping from YAML that knows the line of itself and of each key (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]


class LocatedList(list):
    """A sequence from YAML that knows the line of itself and of each item (1-based)."""

    line: int = 0
    item_lines: list[int]


def _event_parser() -> Any:
    """libyaml's parser when PyYAML has it (it scans and parses about four times faster: a config of ten
    thousand targets loads in 0.3 s), else PyYAML's own."""
    try:
        from yaml._yaml import CParser
    except ImportError:
        from yaml.parser import Parser
        from yaml.reader import Reader
        from yaml.scanner import Scanner

        class PythonParser(Reader, Scanner, Parser):
            def __init__(self, stream: str) -> None:
                Reader.__init__(self, stream)
                Scanner.__init__(self)
                Parser.__init__(self)

        return PythonParser
    return CParser


_Parser: Any = _event_parser()


class _Loader(Composer, _Parser, SafeConstructor, Resolver):
    """A safe loader with bounds: nesting depth, values after alias expansion, and clear errors (with a line)
    for what SafeLoader would raise as a bare Python exception. Events come from the parser (libyaml's when
    PyYAML has it); nodes are composed here, in Python, so every bound applies to either parser."""

    _depth = 0

    def __init__(self, stream: str) -> None:
        _Parser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        """Every document, of a single- or a multi-document file, is sized before anything is built of it."""
        node = super().compose_document()
        if node is not None:
            sizes: dict[int, int] = {}
            if _expanded_size(node, sizes) > MAX_VALUES:
                raise yaml.composer.ComposerError(None, None, f"holds more than {MAX_VALUES} values once its "
                                                  "aliases are expanded", node.start_mark)
        return node

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise yaml.constructor.ConstructorError(None, None, "integer with too many digits",
                                                    node.start_mark) from None

    def construct_yaml_str(self, node: yaml.ScalarNode) -> str:
        value = self.construct_scalar(node)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise yaml.constructor.ConstructorError(None, None, "a string holds a lone surrogate (an escape such as "
                                                    "\\ud800), which is not text", node.start_mark) from None
        return value


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values under ``node``, counting an aliased node each time it is referenced (computed once per node)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = 1  # a node reached again while being sized: recursive aliases count once
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    else:
        size = 1
    sizes[id(node)] = size
    return size


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LocatedMap:
    loader.flatten_mapping(node)
    result = LocatedMap()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(None, None, "a key must be a plain value, not a list or a "
                                                    "mapping", key_node.start_mark)
        if key in result.key_lines:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {excerpt(key)} (first on line {result.key_lines[key]})",
                key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LocatedList:
    result = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:str", _Loader.construct_yaml_str)


def load_text(text: str, file: str) -> Any:
    """Parse YAML text into Located containers; every failure becomes a ConfigError, with the line if known."""
    return _parsed(text, file, lambda loader: loader.get_single_data())


def load_file(path: str | Path) -> Any:
    return load_text(read_text(path), str(path))


def load_file_documents(path: str | Path) -> list[Any]:
    """Every document of a multi-document YAML file (``---`` separated, as Kubernetes manifests are)."""
    def every(loader: _Loader) -> list[Any]:
        documents = []
        while loader.check_data():
            documents.append(loader.get_data())
        return documents

    return [document for document in _parsed(read_text(path), str(path), every) if document is not None]


def _parsed(text: str, file: str, parse: Callable[[_Loader], T]) -> T:
    loader = None
    try:
        loader = _Loader(text)
        return parse(loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = _LIBYAML_PROBLEMS.get(exc.problem or "", exc.problem or str(exc))
        if mark is not None and _indented_with_a_tab(text, mark.line):  # YAML's own words for it are cryptic
            problem = "this line is indented with a tab; YAML indents with spaces only"
        raise ConfigError([Problem(file, line, "", f"invalid YAML: {cut(problem)}")]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow: it has a position, not a line
        line = text.count("\n", 0, exc.position) + 1
        code = ord(exc.character) if isinstance(exc.character, str) else exc.character
        raise ConfigError([Problem(file, line, "", f"invalid YAML: character U+{code:04X} is not allowed")]) from None
    except UnicodeEncodeError as exc:  # libyaml reads UTF-8: text holding a lone surrogate cannot become that
        line = text.count("\n", 0, exc.start) + 1
        code = ord(text[exc.start])
        raise ConfigError([Problem(file, line, "", f"invalid YAML: character U+{code:04X} is not text")]) from None
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as exc:
        raise ConfigError([Problem(file, None, "", f"invalid YAML: {cut(str(exc))}")]) from None
    finally:
        if loader is not None:
            loader.dispose()


def _indented_with_a_tab(text: str, index: int) -> bool:
    lines = text.split("\n")
    if index >= len(lines):
        return False
    line = lines[index]
    return "\t" in line[:len(line) - len(line.lstrip(" \t"))]


# libyaml refuses these itself, before the composer's bounds see them: the same bound, the same words.
_LIBYAML_PROBLEMS = {
    "exceeded maximum nesting depth": f"nested more than {MAX_DEPTH} levels deep",
    "found invalid Unicode character escape code": "a string holds a lone surrogate (an escape such as \\ud800) "
                                                   "or another invalid escape",
}
