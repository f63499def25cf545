"""vLLM's command-line flags read the way vLLM's own parser reads them.

The stack config's extraArgs check and the policy pack both ask what a vLLM command line sets; a
spelling one of them missed would let a flag past it. Part of the contract package: it imports nothing
outside the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Optional

TENSOR_PARALLEL = "--tensor-parallel-size"
PIPELINE_PARALLEL = "--pipeline-parallel-size"
DATA_PARALLEL = "--data-parallel-size"
# vLLM starts one GPU worker per rank of each, multiplied.
PARALLEL_FLAGS = (TENSOR_PARALLEL, PIPELINE_PARALLEL, DATA_PARALLEL)
SHUTDOWN_TIMEOUT = "--shutdown-timeout"
PORT = "--port"
LOAD_FORMAT = "--load-format"
# Flags the platform sets itself from other keys; passing them again through extraArgs would
# silently override the fit checks or break the probes.
MANAGED_FLAGS = (
    "--model",
    "--served-model-name",
    PORT,
    "--host",
    TENSOR_PARALLEL,
    "--quantization",
    "--max-model-len",
    "--gpu-memory-utilization",
    "--download-dir",
    SHUTDOWN_TIMEOUT,
)
# vLLM's single-dash spellings of the flags the platform cares about.
SHORT_ALIASES = {
    "-tp": TENSOR_PARALLEL,
    "-pp": PIPELINE_PARALLEL,
    "-dp": DATA_PARALLEL,
    "-q": "--quantization",
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
