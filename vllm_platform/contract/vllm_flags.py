"""vLLM's command-line flags read the way vLLM's own parser reads them.

The stack config's extraArgs check and the policy pack both ask what a vLLM command line sets; a
spelling one of them missed would let a flag past it. Which flags there are, and what values they take,
comes from vllm_serve_flags.json: `vllm serve`'s parser as vLLM declares it at the release the default
image pins, written by tools/vllm_cli_table.py. Part of the contract package: it imports nothing outside
the standard library.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

from vllm_platform.contract import images

TENSOR_PARALLEL = "--tensor-parallel-size"
PIPELINE_PARALLEL = "--pipeline-parallel-size"
DATA_PARALLEL = "--data-parallel-size"
PREFILL_CONTEXT_PARALLEL = "--prefill-context-parallel-size"
# vLLM starts one GPU worker per rank of each, multiplied (its world size is pipeline x tensor x prefill
# context parallel, once per data-parallel rank). Decode context parallelism shares the tensor-parallel GPUs.
PARALLEL_FLAGS = (TENSOR_PARALLEL, PIPELINE_PARALLEL, DATA_PARALLEL, PREFILL_CONTEXT_PARALLEL)
SHUTDOWN_TIMEOUT = "--shutdown-timeout"
MODEL = "--model"
SERVED_MODEL_NAME = "--served-model-name"
PORT = "--port"
HOST = "--host"
QUANTIZATION = "--quantization"
MAX_MODEL_LEN = "--max-model-len"
GPU_MEMORY_UTILIZATION = "--gpu-memory-utilization"
DOWNLOAD_DIR = "--download-dir"
LOAD_FORMAT = "--load-format"
MODEL_LOADER_EXTRA_CONFIG = "--model-loader-extra-config"
REVISION = "--revision"
# Not managed: `--tokenizer` is a prefix of it, and extraArgs may name another tokenizer with its own revision
# (argparse keeps the last, extraArgs' own).
TOKENIZER = "--tokenizer"
TOKENIZER_REVISION = "--tokenizer-revision"
# Flags the platform sets itself from other keys; passing them again through extraArgs would
# silently override the fit checks or break the probes.
MANAGED_FLAGS = (
    MODEL,
    SERVED_MODEL_NAME,
    PORT,
    HOST,
    TENSOR_PARALLEL,
    QUANTIZATION,
    MAX_MODEL_LEN,
    GPU_MEMORY_UTILIZATION,
    DOWNLOAD_DIR,
    SHUTDOWN_TIMEOUT,
    REVISION,
)
# Flags that would make the pod serve something no check here sees, or never pass its probes.
UNWORKABLE_FLAGS = {
    "--config": "vLLM reads further flags from that file, which no check here sees",
    "--api-key": (
        "vLLM then answers /v1/models only with the key, so the readiness probe never passes; callers' keys "
        "belong in front of the Service"
    ),
    "--ssl-keyfile": "vLLM then speaks HTTPS, where the probes, the Service and the interceptor speak HTTP",
    "--ssl-certfile": "vLLM then speaks HTTPS, where the probes, the Service and the interceptor speak HTTP",
    "--grpc": "vLLM then serves gRPC, where the probes, the Service and the interceptor speak HTTP",
    "--uds": "vLLM then listens on a Unix socket instead of its port, which the probes never reach",
    "--headless": "vLLM then starts the engine without its API server, so the port never opens",
    "--help": "vLLM then prints its help and exits, and the pod restarts forever",
}
# A flag as vLLM's parser names them: `--max-num-seqs`, `-tp`, `-O3`, `--compilation-config.level`.
FLAG_NAME = re.compile(r"(?:--[a-z0-9][a-z0-9_-]*|-[A-Za-z][A-Za-z0-9]*)(?:\.[A-Za-z0-9_-]+)*", re.ASCII)
PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
# In a value that is not JSON: whitespace, quotes and shell syntax. No shell reads argv, so vLLM would get
# them literally, and no flag of vLLM's takes such a value.
NOT_IN_A_VALUE = re.compile(r"[\s\"'`$;&|<>\\]")
SERVE_FLAGS_TABLE = Path(__file__).with_name("vllm_serve_flags.json")
# vLLM's parser reads `-O3`, `-O=3` and `-O 3` as --optimization-level (utils/argparse_utils.py).
OPTIMIZATION_LEVEL = "--optimization-level"
_OPTIMIZATION_LEVELS = ("0", "1", "2", "3")
# A flag and what follows it: `--flag=value`, or `--flag value` given as one word.
_FLAG_AND_VALUE = re.compile(r"(-[^\s=]+)(?:=|\s+)(.*)", re.DOTALL)
_NUMBER = re.compile(r"-\d+(\.\d+)?")


class Flag(NamedTuple):
    name: str  # the long form vLLM reads, e.g. --tensor-parallel-size for -tp or --tensor_parallel_size
    value: Optional[str]
    written: str  # as given, for messages


def is_flag(word: str) -> bool:
    return word.startswith("-") and word != "--" and not _NUMBER.fullmatch(word)


def long_form(flag: str) -> str:
    if not flag.startswith("--"):
        return short_aliases().get(flag, flag)
    # vLLM turns underscores into dashes up to the first dot; what follows a dot is a key of a JSON flag.
    name, dot, key = flag[2:].partition(".")
    return "--" + name.replace("_", "-") + dot + key


def flags(words: Iterable[str]) -> list[Flag]:
    """Every flag of a command line in order, with the word that gives its value, if one does."""
    found: list[Flag] = []
    pending: Optional[tuple[str, str]] = None
    for word in words:
        if pending is not None:
            name, written = pending
            pending = None
            if not is_flag(word):
                found.append(Flag(name, word, written))
                continue
            found.append(Flag(name, None, written))
        if not is_flag(word):
            continue
        joined = _FLAG_AND_VALUE.fullmatch(word)
        if joined:
            found.append(Flag(long_form(joined[1]), joined[2].strip(), joined[1]))
        else:
            pending = (long_form(word), word)
    if pending is not None:
        found.append(Flag(pending[0], None, pending[1]))
    return found


def names(flag: Flag, name: str) -> bool:
    """Whether vLLM reads the flag as `name`: argparse takes any unambiguous prefix of a long flag for it."""
    return flag.name == name or (flag.name.startswith("--") and len(flag.name) > 2 and name.startswith(flag.name))


def value(words: Sequence[str], name: str) -> Optional[str]:
    """The value of the last flag vLLM reads as `name`, the one argparse keeps; None when it is not given."""
    given = [flag.value for flag in flags(words) if names(flag, name)]
    return given[-1] if given else None


def parallel_sizes(words: Sequence[str]) -> dict[str, Optional[float]]:
    """Each parallelism flag's size, 1 where it is not given, None where it is not a number."""
    return {flag: _number(value(words, flag) or "1") for flag in PARALLEL_FLAGS}


def _number(text: str) -> Optional[float]:
    try:
        return float(text)
    except ValueError:
        return None


def word_problems(words: Sequence[str], refused: Iterable[str] = ()) -> list[str]:
    """Why entries of an extraArgs list cannot work as written, one line each; `refused` are the written
    flags already refused for what they set, whose entries are not examined again.

    Each entry is one flag, `--name` or `--name=value`. A word of its own is refused even where it was
    meant as the value of the flag before it: after a flag that takes no value vLLM reads the word as the
    positional model to serve, over `--model`, and only the release's own table of flags tells the two
    apart. One flag per entry keeps each entry readable on its own, whatever the release."""
    problems: list[str] = []
    skip = set(refused)
    previous: Optional[str] = None
    for word in words:
        flag, _, given = word.partition("=")
        after, previous = previous, (flag if is_flag(word) and "=" not in word else None)
        if not PRINTABLE_ASCII.fullmatch(word):
            problems.append(f"{word!r} holds a character outside printable ASCII (a newline, NUL or look-alike)")
        elif word == "--":
            problems.append("'--' ends vLLM's flags: every word after it is a positional, read as the model to serve")
        elif not is_flag(word):
            if after in skip:
                continue
            fix = f", such as {after}={word}" if after else ""
            problems.append(
                f"{word!r} is not a flag: vLLM would read it as the model to serve; write each flag with its value "
                f"as one entry{fix}"
            )
        elif flag in skip or _joined_with_space(word) in skip:
            continue
        elif (joined := _FLAG_AND_VALUE.fullmatch(word)) and "=" not in word:
            problems.append(f"{word!r} holds whitespace; write the flag and its value as one word, {joined[1]}={joined[2]}")
        elif not FLAG_NAME.fullmatch(flag):
            problems.append(f"{flag!r} is not a flag name vLLM has (--lower-case-words, or -tp and its like)")
        elif reason := next((why for name, why in UNWORKABLE_FLAGS.items() if names(Flag(long_form(flag), None, flag), name)), None):
            problems.append(f"{flag} cannot work here: {reason}")
        elif "=" in word and (value_problem := _value_problem(given)):
            problems.append(f"{word!r}: {value_problem}")
    return problems


def _joined_with_space(word: str) -> str:
    joined = _FLAG_AND_VALUE.fullmatch(word)
    return joined[1] if joined else word


def _value_problem(value: str) -> Optional[str]:
    if not value:
        return "has no value after '='"
    if value[0] in "{[":
        try:
            json.loads(value)
        except ValueError as error:
            return f"is not valid JSON ({error.msg} at column {error.colno}), which vLLM would refuse at start"
        return None
    if NOT_IN_A_VALUE.search(value):
        return (
            "holds whitespace, a quote or shell syntax: no shell reads it, so vLLM would get it literally and refuse "
            "it at start; give one flag per entry, and JSON values as JSON"
        )
    return None


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


class Refused(Exception):
    """What vLLM's parser would print before it exits."""


class _RefusingParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise Refused(message)


class _Exits(argparse.Action):
    """--help and its like: vLLM prints and exits before it serves."""

    def __init__(self, option_strings: Sequence[str], dest: str, **_: Any) -> None:
        super().__init__(option_strings, dest, nargs=0)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Optional[str] = None) -> None:
        raise Refused(f"{option_string} prints and exits")


def _converter(kind: str, none: bool) -> Optional[Callable[[str], Any]]:
    """The conversion the table names, under the name argparse prints when it fails; None takes any text."""
    plain: Optional[Callable[[str], Any]] = {"int": int, "float": float, "text": str}.get(kind)
    if plain is None or not none:
        return plain

    def convert(text: str) -> Any:
        return None if text in ("", "None") else plain(text)

    convert.__name__ = plain.__name__
    return convert


def serve_parser() -> argparse.ArgumentParser:
    """`vllm serve`'s parser rebuilt from the table with the standard library's argparse, which vLLM's is."""
    return _rebuilt()[0]


@lru_cache(maxsize=None)
def _rebuilt() -> tuple[argparse.ArgumentParser, dict[str, dict[str, Any]]]:
    """The parser, and the table's entry of each of its flags by the dest argparse gives it."""
    parser = _RefusingParser(prog="vllm serve", add_help=False)
    parser.add_argument("model_tag", nargs="?")
    entries: dict[str, dict[str, Any]] = {}
    for entry in serve_table()["flags"]:
        if entry["takes"] == "nothing":
            parser.add_argument(*entry["names"], action=_Exits if entry.get("exits") else "store_true")
            continue
        entries[parser.add_argument(
            *entry["names"],
            action="append" if entry.get("repeats") else "store",
            type=_converter(entry["takes"], entry.get("none", False)),
            nargs=entry.get("nargs"),
            choices=entry.get("choices"),
        ).dest] = entry
    return parser, entries


def as_vllm_reads(words: Sequence[str]) -> list[str]:
    """The words as vLLM's parser hands them to argparse: underscores in a flag's name as dashes, -O3 as
    --optimization-level 3, and each dotted flag (`--compilation-config.mode=3`) folded into a JSON value
    of the flag before its first dot."""
    read: list[str] = []
    dotted: dict[str, dict[str, Any]] = {}
    remaining = list(words)
    while remaining:
        word = remaining.pop(0)
        if word.startswith("--"):
            name, equals, given = word.partition("=")
            word = long_form(name) + equals + given
        elif word.startswith("-O") and word != "-O":
            read += [OPTIMIZATION_LEVEL, word[3:] if word[2] == "=" else word[2:]]
            continue
        elif word == "-O" and remaining[:1] and remaining[0] in _OPTIMIZATION_LEVELS:
            read.append(OPTIMIZATION_LEVEL)
            continue
        name, equals, given = word.partition("=")
        if not (word.startswith("-") and "." in name):
            read.append(word)
            continue
        if not equals:
            if not remaining:
                raise Refused(f"{word} needs a value: vLLM stops at start with an IndexError")
            given = remaining.pop(0)
        key, *keys = name.removesuffix("+").split(".")
        nested: Any = given.split(",") if name.endswith("+") else given
        for part in reversed(keys):
            nested = {part: nested}
        dotted.setdefault(key, {}).update(nested)
    for key, value in dotted.items():
        read += [key, json.dumps(value)]
    return read


_BOUNDS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "ge": (">=", lambda value, bound: value >= bound),
    "gt": (">", lambda value, bound: value > bound),
    "le": ("<=", lambda value, bound: value <= bound),
    "lt": ("<", lambda value, bound: value < bound),
}


def _out_of_bounds(parsed: argparse.Namespace) -> Optional[str]:
    """A value outside the bounds of the config field its flag sets: pydantic refuses it as the engine starts."""
    for dest, entry in _rebuilt()[1].items():
        value = getattr(parsed, dest)
        if value is None or "bounds" not in entry:
            continue
        for name, bound in entry["bounds"].items():
            sign, holds = _BOUNDS[name]
            if not holds(value, bound):
                return f"{entry['names'][0]} {value:g}: vLLM's {entry['field']} must be {sign} {bound:g}, checked as the engine starts"
    return None


def refusal(words: Sequence[str]) -> Optional[str]:
    """What vLLM, at the table's release, says when it refuses these words after `vllm serve`; None when it
    takes them. Its parser refuses them before it loads anything, the engine a value outside its config
    field's bounds just after: either way the pod exits at start, and crash-loops."""
    try:
        parsed, unknown = serve_parser().parse_known_args(as_vllm_reads(words))
    except Refused as refused:
        return str(refused)
    if not unknown:
        return _out_of_bounds(parsed)
    word = unknown[0]
    known = [name for action in serve_parser()._actions for name in action.option_strings]
    close = difflib.get_close_matches(word.partition("=")[0], known, n=1)
    return f"unrecognized argument {word}" + (f" (did you mean {close[0]}?)" if close else "")
