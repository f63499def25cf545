"""`vllm serve`'s own parser, rebuilt from its table, at the release the default image pins.

vllm_serve_flags.json holds the parser as vLLM declares it: every flag, how many values it takes, what they
convert to, their choices, and the bounds of the config field each number sets where the engine checks
them. tools/vllm_cli_table.py writes it from vLLM itself, never by hand, and records vLLM's own answers to
a few thousand entries, which the tests hold `refusal` to. Part of the contract package: it imports nothing
outside the standard library.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional

from vllm_platform.contract import images

SERVE_FLAGS_TABLE = Path(__file__).with_name("vllm_serve_flags.json")
# vLLM's parser reads `-O3`, `-O=3` and `-O 3` as --optimization-level (utils/argparse_utils.py).
OPTIMIZATION_LEVEL = "--optimization-level"
_OPTIMIZATION_LEVELS = ("0", "1", "2", "3")
# What vLLM's parser turns from underscores into dashes: a long flag's name up to its first dot.
_LONG_NAME = re.compile(r"(?<=--)[^.]*")
_BOUNDS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "ge": (">=", lambda value, bound: value >= bound),
    "gt": (">", lambda value, bound: value > bound),
    "le": ("<=", lambda value, bound: value <= bound),
    "lt": ("<", lambda value, bound: value < bound),
}


@lru_cache(maxsize=None)
def serve_table() -> dict[str, Any]:
    return json.loads(SERVE_FLAGS_TABLE.read_text())


def table_release() -> str:
    """The vLLM release the table is read from, as vLLM's images tag it: v0.31.0."""
    return f"v{serve_table()['vllm']}"


def checks_image(image: str) -> bool:
    """Whether the table is this image's vLLM: the image carries the release's tag, on any registry or mirror."""
    reference = images.parse(image)
    return reference is not None and reference.tag == table_release()


@lru_cache(maxsize=None)
def short_aliases() -> dict[str, str]:
    """vLLM's single-dash spellings, each with the long flag it stands for: -tp, -pp, -q, ..."""
    aliases = {}
    for entry in serve_table()["flags"]:
        long = next(name for name in entry["names"] if name.startswith("--"))
        aliases.update({name: long for name in entry["names"] if not name.startswith("--")})
    return aliases


def dashed(flag: str) -> str:
    """A long flag as vLLM's parser names it: underscores in its name, up to the first dot, as dashes (what
    follows a dot is a key of a JSON flag)."""
    return _LONG_NAME.sub(lambda match: match[0].replace("_", "-"), flag, count=1)


@lru_cache(maxsize=None)
def entry(flag: str) -> Optional[dict[str, Any]]:
    """The table's entry of a flag as written (underscores, a dotted key or `=value` after it), by argparse's
    rule: the flag of that exact name, else the one flag that name is the start of; None for no such flag."""
    name = dashed(flag.partition("=")[0]).partition(".")[0]
    entries = serve_table()["flags"]
    exact = [e for e in entries if name in e["names"]]
    started = [e for e in entries if name.startswith("--") and any(n.startswith(name) for n in e["names"])]
    found = exact or started
    return found[0] if len(found) == 1 else None


class Refused(Exception):
    """What vLLM would print before it exits."""


class _RefusingParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise Refused(message)


class _Exits(argparse.Action):
    """--help and its like: vLLM prints and exits before it serves."""

    def __init__(self, option_strings: Sequence[str], dest: str, **_: Any) -> None:
        super().__init__(option_strings, dest, nargs=0)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Optional[str] = None) -> None:
        raise Refused(f"{option_string} prints and exits")


def _json(text: str) -> Any:
    # Nesting past the interpreter's recursion limit is no value vLLM can start with either: refused, not a traceback.
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


_json.__name__ = "JSON"
_BRACED = re.compile(r"\s*{.*}\s*", re.DOTALL)


def _braced_json_or_text(text: str) -> Any:
    return _json(text) if _BRACED.fullmatch(text) else text


_braced_json_or_text.__name__ = "JSON"


def _converter(kind: str, none: bool) -> Optional[Callable[[str], Any]]:
    """The conversion the table names, under the name argparse prints when it fails; None takes any text."""
    plain: Optional[Callable[[str], Any]] = {
        "int": int, "float": float, "text": str, "json": _json, "braced json or text": _braced_json_or_text,
    }.get(kind)  # fmt: skip
    if plain is None or not none:
        return plain
    base = plain

    def convert(text: str) -> Any:
        return None if text in ("", "None") else base(text)

    convert.__name__ = base.__name__
    return convert


@lru_cache(maxsize=None)
def _rebuilt() -> tuple[argparse.ArgumentParser, dict[str, dict[str, Any]]]:
    """`vllm serve`'s parser rebuilt with the standard library's argparse, which vLLM's is; and the table's
    entry of each flag that takes a value, by the dest argparse gives it."""
    parser = _RefusingParser(prog="vllm serve", add_help=False)
    parser.add_argument("model_tag", nargs="?")
    entries: dict[str, dict[str, Any]] = {}
    for flag in serve_table()["flags"]:
        if flag["takes"] == "nothing":
            parser.add_argument(*flag["names"], action=_Exits if flag.get("exits") else "store_true")
            continue
        action = parser.add_argument(
            *flag["names"],
            action="append" if flag.get("repeats") else "store",
            type=_converter(flag["takes"], flag.get("none", False)),
            nargs=flag.get("nargs"),
            choices=flag.get("choices"),
        )
        entries[action.dest] = flag
    return parser, entries


def as_vllm_reads(words: Sequence[str]) -> list[str]:
    """The words as vLLM's parser hands them to argparse (utils/argparse_utils.py), in its two passes: first
    underscores in a long flag's name become dashes and `-O3`, `-O=3` or `-O 3` becomes --optimization-level;
    then each dotted flag (`--compilation-config.mode=3`, or its value as the next word) is folded into one
    JSON value of the flag before its first dot. Values stay as they are written."""
    processed: list[str] = []
    for index, word in enumerate(words):
        if word.startswith("--"):
            name, equals, given = word.partition("=")
            processed.append(dashed(name) + equals + given)
        elif word.startswith("-O") and word != "-O":
            processed += [OPTIMIZATION_LEVEL, word[3:] if word[2] == "=" else word[2:]]
        elif word == "-O" and index + 1 < len(words) and words[index + 1] in _OPTIMIZATION_LEVELS:
            processed.append(OPTIMIZATION_LEVEL)
        else:
            processed.append(word)
    read: list[str] = []
    dotted: dict[str, dict[str, Any]] = {}
    taken_as_value: set[int] = set()
    for index, word in enumerate(processed):
        if index in taken_as_value:
            continue
        if not (word.startswith("-") and "." in word):
            read.append(word)
            continue
        name, equals, given = word.partition("=")
        if equals and "." not in name:
            read.append(word)  # the dot is in the value
            continue
        if not equals:
            if index + 1 == len(processed):
                raise Refused(f"{word} needs a value: vLLM stops at start with an IndexError")
            given = processed[index + 1]
            taken_as_value.add(index + 1)
        key, *keys = name.removesuffix("+").split(".")
        nested: Any = given.split(",") if name.endswith("+") else given
        for part in reversed(keys):
            nested = {part: nested}
        _merge(dotted.setdefault(key, {}), nested)
    for key, value in dotted.items():
        read += [key, json.dumps(value)]
    return read


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    """vLLM's merge of dotted keys: nested keys merged, lists joined, the last of anything else kept."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif isinstance(value, list) and isinstance(into.get(key), list):
            into[key] += value
        else:
            into[key] = value


def _out_of_bounds(parsed: argparse.Namespace) -> Optional[str]:
    """A number outside the bounds of the config field its flag sets, which the engine refuses as it starts."""
    for dest, flag in _rebuilt()[1].items():
        value = getattr(parsed, dest)
        if value is None or "bounds" not in flag:
            continue
        for name, bound in flag["bounds"].items():
            sign, holds = _BOUNDS[name]
            if not holds(value, bound):
                return f"{flag['names'][0]} {value:g}: vLLM's {flag['field']} must be {sign} {bound:g}, checked as the engine starts"
    return None


def refusal(words: Sequence[str]) -> Optional[str]:
    """What vLLM, at the table's release, says when it refuses these words after `vllm serve`; None when it
    takes them. Its parser refuses them before it loads anything, the engine a number outside its config
    field's bounds just after: either way the pod exits at start, and crash-loops."""
    try:
        parsed, unknown = _rebuilt()[0].parse_known_args(as_vllm_reads(words))
    except Refused as refused:
        return str(refused)
    if unknown:
        word = unknown[0]
        known = [name for flag in serve_table()["flags"] for name in flag["names"]]
        close = difflib.get_close_matches(word.partition("=")[0], known, n=1)
        return f"unrecognized argument {word}" + (f" (did you mean {close[0]}?)" if close else "")
    return _out_of_bounds(parsed)


def model_word(words: Sequence[str]) -> Optional[str]:
    """The word vLLM reads as the model to serve, where it takes the words and one of them is read so."""
    try:
        parsed, unknown = _rebuilt()[0].parse_known_args(as_vllm_reads(words))
    except Refused:
        return None
    return None if unknown else parsed.model_tag
