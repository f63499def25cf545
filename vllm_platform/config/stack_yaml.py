"""A `Pulumi.<stack>.yaml` read as plain data, the way the Pulumi CLI reads it, or refused.

ruamel.yaml reads YAML 1.2 as Pulumi's Go parser does: `yes`, `on` and `1:20` stay strings, where
PyYAML's YAML 1.1 would make them a bool and a number the engine never sees. Before any value is built,
the document's node graph is checked for what plain data never has: a key given twice (the last would
silently win), a key that is not a string, a value of a type plain data has no place for (`!!binary`,
`!!set`, an ordered map), and aliases that expand it beyond any stack file's size (a billion-laughs file),
or into itself. The checks walk the graph once, so a hostile file is refused in milliseconds; a file larger than
any stack file, or of more nodes, is refused before it is parsed, or as soon as the parser passes the bound. A date such as
`2024-01-01` stays the string it is, as Pulumi's parser (yaml.v3) keeps it.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer
from ruamel.yaml.constructor import SafeConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

# Nodes of the document with every alias expanded. The committed prod stack has about 250; this leaves
# room for a hundred models, and none for a file that expands a few lines into millions of values. The
# document's own nodes, before any alias is expanded, are held to it as they are parsed: the pure-Python
# parser takes some 25 µs a node, so the half a million values of 1 MiB of `1,` would take ten seconds to refuse.
MAX_EXPANDED_NODES = 20_000
# The committed stack files are a few kilobytes (prod, the largest, under 6 KiB); a hundred models with their
# comments stay under 100 KiB. Past this the file is refused unread, before the parser spends seconds on it.
MAX_FILE_BYTES = 1 << 20


# The longest number a stack config holds: an int64 has 19 digits, a float's shortest exact form about 25 characters.
# Python reads no int of more than 4300 digits (a ValueError, not a YAML error), and a long one costs time to read.
MAX_NUMBER_CHARS = 32


TAG = "tag:yaml.org,2002:"
# What plain data holds, as YAML's core schema tags it: a timestamp is read as its text (see the module's doc),
# and `<<` is a merge key.
PLAIN_SCALARS = {f"{TAG}{name}" for name in ("str", "int", "float", "bool", "null", "timestamp", "merge")}
PLAIN_COLLECTIONS = {MappingNode: f"{TAG}map", SequenceNode: f"{TAG}seq"}


class StackFileError(ValueError):
    """A stack file that is not plain YAML data; the message is one line."""


class _PlainConstructor(SafeConstructor):
    """The safe constructor, with a timestamp built as the string it is written as."""


_PlainConstructor.add_constructor(f"{TAG}timestamp", SafeConstructor.construct_yaml_str)


def _line(node: Node) -> int:
    return node.start_mark.line + 1


class _BoundedComposer(Composer):
    """The composer, refusing a document as soon as it holds more nodes than any stack config, aliases aside."""

    def compose_document(self) -> Any:
        self.nodes = 0  # the YAML object keeps its composer from compose() to load()
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        if not self.parser.check_event(AliasEvent):
            self.nodes += 1
            if self.nodes > MAX_EXPANDED_NODES:
                line = self.parser.peek_event().start_mark.line + 1
                raise StackFileError(
                    f"line {line}: the document holds more than {MAX_EXPANDED_NODES} values, more than any stack "
                    "config holds (the committed ones hold a few hundred)"
                )
        return super().compose_node(parent, index)


class _Walk:
    """Counts the nodes of the expanded document and finds duplicate keys, visiting each node once."""

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}
        self.open: set[int] = set()

    def size(self, node: Node) -> int:
        key = id(node)
        if key in self.sizes:
            return self.sizes[key]
        if key in self.open:
            raise StackFileError(f"line {_line(node)}: an alias refers to the node that contains it, which never ends")
        self.open.add(key)
        _plain_type(node)
        if isinstance(node, MappingNode):
            self._string_keys_given_once(node)
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, SequenceNode):
            children = list(node.value)
        else:
            children = []
        total = 1
        for child in children:
            total += self.size(child)
            if total > MAX_EXPANDED_NODES:
                # The document's own nodes are fewer (the composer counted them): it is its aliases that expand it.
                raise StackFileError(
                    f"line {_line(node)}: its aliases expand the document beyond {MAX_EXPANDED_NODES} values, "
                    "more than any stack config holds"
                )
        self.open.discard(key)
        self.sizes[key] = total
        return total

    @staticmethod
    def _string_keys_given_once(node: MappingNode) -> None:
        seen: dict[str, int] = {}
        for key, _ in node.value:
            if isinstance(key, ScalarNode) and key.tag == f"{TAG}merge":
                continue  # `<<: *base`, a merge key, which Pulumi's yaml.v3 takes too
            if not isinstance(key, ScalarNode) or key.tag != f"{TAG}str":
                raise StackFileError(f"line {_line(key)}: a key must be a string; quote it if it is one")
            if key.value in seen:
                raise StackFileError(
                    f"line {_line(key)}: key {key.value!r} is given twice (first on line {seen[key.value]}); "
                    "the last would silently win, so keep one"
                )
            seen[key.value] = _line(key)


def _plain_type(node: Node) -> None:
    allowed = {PLAIN_COLLECTIONS[type(node)]} if type(node) in PLAIN_COLLECTIONS else PLAIN_SCALARS
    if node.tag not in allowed:
        raise StackFileError(
            f"line {_line(node)}: {node.tag.removeprefix(TAG)!r} is no type a stack config holds; "
            "write a string, a number, true or false, a list or a mapping"
        )
    if node.tag in (f"{TAG}int", f"{TAG}float") and len(node.value) > MAX_NUMBER_CHARS:
        raise StackFileError(
            f"line {_line(node)}: a number of {len(node.value)} characters, longer than any a stack config holds "
            f"({MAX_NUMBER_CHARS}); quote it if it is a string"
        )


def _where(error: YAMLError) -> str:
    mark = error.problem_mark if isinstance(error, MarkedYAMLError) else None
    problem = error.problem if isinstance(error, MarkedYAMLError) and error.problem else str(error).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def size_problem(size: int) -> str | None:
    """Why a stack file of `size` bytes is not read, or None."""
    if size <= MAX_FILE_BYTES:
        return None
    return (
        f"is larger than {MAX_FILE_BYTES // (1 << 20)} MiB ({MAX_FILE_BYTES} bytes), where a stack file is a few "
        "kilobytes; it is refused unread"
    )


def load(text: str) -> Any:
    """The document as plain data (dicts, lists, scalars); raises StackFileError with one line."""
    if problem := size_problem(len(text.encode("utf-8", "replace"))):
        raise StackFileError(problem)
    yaml = YAML(typ="safe", pure=True)
    yaml.Constructor = _PlainConstructor
    yaml.Composer = _BoundedComposer
    try:
        node = yaml.compose(text)
        if node is None:
            return None
        _Walk().size(node)
        return yaml.load(text)
    except YAMLError as error:
        raise StackFileError(f"not valid YAML at {_where(error)}") from None
    except RecursionError:
        raise StackFileError("nested deeper than the parser follows, which no stack config is") from None
