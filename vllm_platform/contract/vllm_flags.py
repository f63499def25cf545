"""vLLM's command-line flags read the way vLLM's own parser reads them.

The stack config's extraArgs check and the policy pack both ask what a vLLM command line sets; a
spelling one of them missed would let a flag past it. Part of the contract package: it imports nothing
outside the standard library.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Optional

TENSOR_PARALLEL = "--tensor-parallel-size"
PIPELINE_PARALLEL = "--pipeline-parallel-size"
DATA_PARALLEL = "--data-parallel-size"
# vLLM starts one GPU worker per rank of each, multiplied.
PARALLEL_FLAGS = (TENSOR_PARALLEL, PIPELINE_PARALLEL, DATA_PARALLEL)
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
}
# A flag as vLLM's parser names them: `--max-num-seqs`, `-tp`, `-O3`, `--compilation-config.level`.
FLAG_NAME = re.compile(r"(?:--[a-z0-9][a-z0-9_-]*|-[A-Za-z][A-Za-z0-9]*)(?:\.[A-Za-z0-9_-]+)*", re.ASCII)
PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
# In a value that is not JSON: whitespace, quotes and shell syntax. No shell reads argv, so vLLM would get
# them literally, and no flag of vLLM's takes such a value.
NOT_IN_A_VALUE = re.compile(r"[\s\"'`$;&|<>\\]")
# vLLM's single-dash spellings of the flags the platform cares about.
SHORT_ALIASES = {
    "-tp": TENSOR_PARALLEL,
    "-pp": PIPELINE_PARALLEL,
    "-dp": DATA_PARALLEL,
    "-q": QUANTIZATION,
}
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
    if flag in SHORT_ALIASES:
        return SHORT_ALIASES[flag]
    if not flag.startswith("--"):
        return flag
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
    meant as the value of the flag before it: vLLM reads a word after a flag that takes no value as the
    positional model to serve, over `--model`, and only vLLM's own table of flags tells the two apart."""
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
