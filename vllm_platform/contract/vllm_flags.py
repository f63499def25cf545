"""vLLM's command-line flags read the way vLLM's own parser reads them.

The stack config's extraArgs check and the policy pack both ask what a vLLM command line sets; a
spelling one of them missed would let a flag past it. Which flags there are, and what values they take,
is vllm_parser's to say, from the table of the release the default image pins. Part of the contract
package: it imports nothing outside the standard library.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Optional

from vllm_platform.contract import vllm_parser

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
    "--ssl-keyfile": "vLLM then speaks HTTPS, where the probes, the Service and the interceptor speak HTTP",
    "--ssl-certfile": "vLLM then speaks HTTPS, where the probes, the Service and the interceptor speak HTTP",
    "--grpc": "vLLM then serves gRPC, where the probes, the Service and the interceptor speak HTTP",
    "--uds": "vLLM then listens on a Unix socket instead of its port, which the probes never reach",
    "--headless": "vLLM then starts the engine without its API server, so the port never opens",
    "--help": "vLLM then prints its help and exits, and the pod restarts forever",
    # vLLM's Prometheus stat logger is one of the stat loggers this flag turns off: /metrics then has no vllm:*
    # series, so KEDA's trigger reads nothing and every model alert and dashboard goes blind, without an error.
    "--disable-log-stats": (
        "vLLM then stops its vllm:* metrics, which KEDA scales on and every model alert and dashboard reads"
    ),
}
# Flags whose value is a secret (the table's only ones; --ssl-keyfile and its like take paths): in extraArgs it
# would sit in plain text in the committed stack file and in the Deployment's argv, which anyone who may read
# the Deployment reads. Each with where that secret belongs. The command is config.secrets' set_command, written
# out because this package imports nothing from config.
SECRET_FLAGS = {
    "--hf-token": (
        "the platform hands vLLM the token from a Kubernetes Secret; store it with "
        "pulumi config set --secret 'vllm-platform:hfToken'"
    ),
    "--api-key": (
        "callers' keys are the gateway's to check (and with one vLLM answers the readiness probe only with the key); "
        "store each with pulumi config set --secret --path 'vllm-platform:gateway.clients[N].apiKey'"
    ),
}
# A flag that replaces what the fit checks size, whatever its value: vLLM's KV cache is what gpuMemoryUtilization
# leaves after the weights, and maxModelLen is checked against that. A byte count instead sizes the cache past
# the checks (more than the GPU holds fails at start; 1 leaves no KV blocks, and the pod crash-loops).
KV_CACHE_MEMORY_BYTES = "--kv-cache-memory-bytes"
# Flags that move GiB of weights or KV cache into the pod's host memory: neither the pod's memory limit (3/4 of a
# node's share, or `resources.memory`) nor the fit checks count them, so past the limit the pod is OOM-killed.
# Their 0 (and the KV offload's none) is vLLM's default, which keeps all on the GPUs.
HOST_MEMORY_FLAGS = ("--cpu-offload-gb", "--kv-offloading-size")
# Flags whose values change what the fit checks size, which read the weights from the model's parameter count
# at 2 bytes each (16-bit; less with `quantization`): those values are refused, the flags' others pass.
DTYPE = "--dtype"
SPECULATIVE_CONFIG = "--speculative-config"
HF_OVERRIDES = "--hf-overrides"
# vLLM then reads the model's architecture from another config than the checkpoint's own.
HF_CONFIG_PATH = "--hf-config-path"
WIDE_DTYPES = ("float", "float32")
# The one load format that loads no weights: vLLM fills the model with random values, for profiling.
RANDOM_WEIGHTS = "dummy"
# Keys of a checkpoint's config that set how many weights it has, how they are stored, or which class loads
# them (in the spellings of the families that alias them, as transformers' attribute maps do), at any depth,
# since vLLM applies a nested object to the sub-config of that name (text_config, vision_config). Keys that
# change the context alone (rope_scaling, max_position_embeddings) leave the weights as they are.
RESHAPING_KEYS = frozenset({
    "architectures", "quantization_config", "torch_dtype", "dtype",
    "num_hidden_layers", "num_layers", "n_layer", "hidden_size", "n_embd", "d_model",
    "intermediate_size", "ffn_dim", "n_inner", "moe_intermediate_size",
    "num_attention_heads", "n_head", "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings",
    "num_experts", "num_local_experts", "n_routed_experts", "n_shared_experts",
})  # fmt: skip
# vLLM's config-class flags: its parser converts their value with pydantic's TypeAdapter(cls).validate_json
# (engine/arg_utils.py, parse_dataclass), which the table names "any", as it names every converter of vLLM's own.
# Their value is JSON or vLLM refuses it at start, as it does a dotted key the class has not; which keys a class
# has is vLLM's to say, that a value written as JSON (from `{` or `[`) parses is checked here. The dotted form
# (`-cc.mode=3`) is JSON as vLLM's parser folds it. tests/test_vllm_parser.py holds the list to vLLM's own
# answers: each of these takes `{}` and refuses broken JSON and a word, and no other "any" flag does.
JSON_CONFIG_FLAGS = frozenset({
    "--attention-config", "--aux-output-config", "--compilation-config", "--ec-manager-config",
    "--ec-transfer-config", "--engram-config", "--eplb-config", "--fault-tolerance-config", "--ir-op-priority",
    "--kernel-config", "--kv-events-config", "--kv-transfer-config", "--logging-config", "--pooler-config",
    "--profiler-config", "--quantization-config", "--reasoning-config", "--structured-outputs-config",
    "--weight-transfer-config",
})  # fmt: skip
# A flag as vLLM's parser names them: `--max-num-seqs`, `-tp`, `-O3`, `--compilation-config.mode`, and a
# dotted key's list element, `--compilation-config.cudagraph_capture_sizes+`.
FLAG_NAME = re.compile(r"(?:--[a-z0-9][a-z0-9_-]*|-[A-Za-z][A-Za-z0-9]*)(?:(?:\.[A-Za-z0-9_-]+)+\+?)?", re.ASCII)
PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
# In a value that is not JSON, for a release whose flags are not known here: whitespace, quotes and shell
# syntax. No shell reads argv, so vLLM would get them literally; few of its flags take such a value.
NOT_IN_A_VALUE = re.compile(r"[\s\"'`$;&|<>\\]")
READ_AS_THE_MODEL = "is not a flag: vLLM would read it as the model to serve"
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
        return vllm_parser.short_aliases().get(flag, flag)
    return vllm_parser.dashed(flag)


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


def extra_args_problems(words: Sequence[str], pinned: bool) -> list[str]:
    """Why an extraArgs list cannot work as written, one line each. `pinned`: the image runs the release the
    table is read from, whose own parser then reads the entries as vLLM will."""
    problems, refused = secret_problems(words), []
    # A secret's run (the flag and its values) is not read again, so no other message repeats the secret.
    words = [word for run in _runs(words) if _secret_flag(run[0]) is None for word in run]
    parallel = tuple(flag for flag in PARALLEL_FLAGS if flag != TENSOR_PARALLEL)
    for flag in flags(words):
        read_as = next((name for name in (*MANAGED_FLAGS, *parallel) if names(flag, name)), None)
        spelled = _spelled(flag.written, read_as)
        size = _whole(flag.value)
        if read_as in MANAGED_FLAGS:
            refused.append(flag.written)
            problems.append(f"{spelled} is set by the platform itself; remove it from extraArgs")
        # vLLM starts size x tensorParallelSize workers, one GPU each, in a pod that has
        # tensorParallelSize GPUs: it cannot start, and the pod crash-loops. A size below 1 is the parser's.
        elif read_as in parallel and size is not None and size > 1:
            refused.append(flag.written)
            problems.append(
                f"{spelled} {flag.value}: vLLM would need {size} x tensorParallelSize GPUs and the pod gets "
                "tensorParallelSize; scale with tensorParallelSize and replicas, remove it from extraArgs"
            )
    for run in _runs(words):
        change = _model_change(run)
        if change is not None:
            written, (read_as, why) = _joined_with_space(run[0].partition("=")[0]), change
            refused.append(written)
            problems.append(f"{_spelled(written, read_as)} {why}")
    problems += word_problems(words, refused, pinned)
    if pinned:
        problems += parser_problems(words, refused)
    return problems


def secret_flags(words: Sequence[str]) -> list[tuple[str, str]]:
    """Each flag of `words` that carries a secret, in any spelling vLLM reads: (as written, without its value;
    the SECRET_FLAGS name vLLM reads it as)."""
    return [
        (written, name)
        for written, name in ((_joined_with_space(run[0].partition("=")[0]), _secret_flag(run[0])) for run in _runs(words))
        if name is not None
    ]


def secret_problems(words: Sequence[str]) -> list[str]:
    """One line per flag of `words` that carries a secret; its value is never repeated."""
    return [
        f"{_spelled(written, name)} takes a secret, which extraArgs would keep in plain text in the stack file and the "
        f"Deployment's argv; remove it from extraArgs: {SECRET_FLAGS[name]}"
        for written, name in secret_flags(words)
    ]


def _secret_flag(word: str) -> Optional[str]:
    """The secret-bearing flag vLLM reads `word` as (`--hf_token`, `--hf-tok=x`, `--api-key k`), or None."""
    if not is_flag(word):
        return None
    written = long_form(_joined_with_space(word.partition("=")[0])).partition(".")[0]
    return next((name for name in SECRET_FLAGS if names(Flag(written, None, word), name)), None)


def _spelled(written: str, read_as: Optional[str]) -> str:
    return written if written == read_as else f"{written} (vLLM's {read_as})"


def _model_change(run: Sequence[str]) -> Optional[tuple[str, str]]:
    """What a run of entries (a flag and its values, as `_runs` groups them) would change of the model the fit
    checks size: the flag as vLLM names it and why, or None. Read as vLLM's parser reads them, dotted keys
    (`--hf-overrides.num_hidden_layers=2`) folded into their flag's JSON and a prefix taken for its flag."""
    try:
        read = flags(vllm_parser.as_vllm_reads(run))
    except vllm_parser.Refused:
        return None  # the parser's to refuse
    if not read or (given := read[0].value) is None or (entry := vllm_parser.entry(read[0].name)) is None:
        return None
    name = next(n for n in entry["names"] if n.startswith("--"))
    if name == DTYPE and given in WIDE_DTYPES:
        return name, (
            f"{given}: vLLM would hold the weights at 4 bytes a parameter, twice the 2 (16-bit) the fit checks size them "
            "at; give auto, bfloat16 or float16, or the model's quantization key for smaller weights"
        )
    if name == LOAD_FORMAT and given == RANDOM_WEIGHTS:
        return name, (
            f"{given}: vLLM would serve random weights in place of the model's; remove it from extraArgs (for an "
            "s3:// model the platform sets the load format itself)"
        )
    spec = _json_object(given) if name == SPECULATIVE_CONFIG else None
    if spec is not None and spec.get("model") is not None:
        return name, (
            f"names the draft model {spec['model']!r}: it would load onto the GPUs beside the model served, which is all "
            "the fit checks size; use a method with no model of its own, such as ngram"
        )
    if name == KV_CACHE_MEMORY_BYTES:
        return name, (
            f"{given}: vLLM would size its KV cache to that, not to what gpuMemoryUtilization leaves after the weights, "
            "which is what the fit checks hold maxModelLen to (too little leaves no KV blocks, and the pod crash-loops); "
            "size it with gpuMemoryUtilization, remove it from extraArgs"
        )
    # NaN is refused too (`not <= 0`): it is no size, and only 0 is known to keep everything on the GPUs.
    if name in HOST_MEMORY_FLAGS and (gib := _number(given)) is not None and not gib <= 0:
        moved = "of each GPU's weights" if name == HOST_MEMORY_FLAGS[0] else "of KV cache"
        return name, (
            f"{given}: vLLM would hold {given} GiB {moved} in the pod's host memory, which neither the pod's memory limit "
            "nor the fit checks count, and past the limit the pod is OOM-killed; keep it on the GPUs (quantization, a "
            "larger tensorParallelSize or a shorter maxModelLen), remove it from extraArgs"
        )
    if name == HF_CONFIG_PATH:
        return name, (
            f"{given}: vLLM would build the model from that config, not the checkpoint's own, which is what the fit "
            "checks size; remove it from extraArgs"
        )
    reshaped = _reshaping(_json_object(given)) if name == HF_OVERRIDES else []
    if reshaped:
        return name, (
            f"sets {', '.join(reshaped)}: that changes the model's size or shape, which the fit checks read from its "
            "parameter count, and the checkpoint's weights would not match it; keep to overrides that leave the "
            "weights as they are, such as rope_scaling or max_position_embeddings"
        )
    return None


def _json_object(text: str) -> Optional[dict[str, Any]]:
    """The JSON object a flag's value is, as vLLM reads it; None for anything else, which is the parser's."""
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _reshaping(overrides: Optional[dict[str, Any]], path: str = "") -> list[str]:
    """`key=value` for each key of RESHAPING_KEYS that config overrides set, at any depth (`text_config.hidden_size`)."""
    found: list[str] = []
    for key, given in (overrides or {}).items():
        if key in RESHAPING_KEYS:
            found.append(f"{path}{key}={json.dumps(given)}")
        elif isinstance(given, dict):
            found += _reshaping(given, f"{path}{key}.")
    return found


def _whole(text: Optional[str]) -> Optional[int]:
    """A size as vLLM's int() reads it (`2`, `+2`, `02`); None for none, or for what is no whole number."""
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def word_problems(words: Sequence[str], refused: Iterable[str] = (), pinned: bool = False) -> list[str]:
    """Why entries of an extraArgs list cannot work as written, one line each; `refused` are the written
    flags already refused for what they set, whose entries are not examined again.

    Where the entries are of the release the table is read from (`pinned`), its own parser reads them next
    (`parser_problems`): a flag's value may be the entry after it, and what a value may be is the parser's to
    say. For another release each entry is one flag, `--name` or `--name=value`: a word of its own is refused
    even where it was meant as the value of the flag before it, since after a flag that takes no value vLLM
    reads the word as the model to serve and only the release's table tells the two apart; and a value is
    held to what a flag of vLLM's is known to take."""
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
            if pinned or after in skip:
                continue
            fix = f", such as {after}={word}" if after else ""
            problems.append(f"{word!r} {READ_AS_THE_MODEL}; write each flag with its value as one entry{fix}")
        elif flag in skip or _joined_with_space(word) in skip:
            continue
        elif (joined := _FLAG_AND_VALUE.fullmatch(word)) and "=" not in word:
            problems.append(f"{word!r} holds whitespace; write the flag and its value as one word, {joined[1]}={joined[2]}")
        elif not FLAG_NAME.fullmatch(flag):
            problems.append(f"{flag!r} is not a flag name vLLM has (--lower-case-words, or -tp and its like)")
        elif reason := next((why for name, why in UNWORKABLE_FLAGS.items() if names(Flag(long_form(flag), None, flag), name)), None):
            problems.append(f"{flag} cannot work here: {reason}")
        elif "=" in word and (value_problem := _value_problem(given, pinned)):
            problems.append(f"{word!r}: {value_problem}")
    return problems


def parser_problems(words: Sequence[str], refused: Iterable[str] = ()) -> list[str]:
    """Why the table's release would refuse the entries at start, one line per flag with the entries that are
    its values; entries already refused (`refused`, or with a problem of their own) are not read again. The
    entries are read together first, as vLLM reads them: where it takes them all, no run of them is refused."""
    skip = set(refused)
    runs = [
        run for run in _runs(words)
        if not (run[0].partition("=")[0] in skip or _joined_with_space(run[0]) in skip or any(word_problems([w], (), True) for w in run))
    ]  # fmt: skip
    read = [word for run in runs for word in run]
    if (whole := _refusal(read)) is None:
        model = vllm_parser.model_word(read)
        return [] if model is None else [f"{model!r} {READ_AS_THE_MODEL}, which the fit checks never see"]
    refusals = [(run, because) for run in runs if (because := _refusal(run))]
    return [_refused_at_start(run, because) for run, because in refusals or [(read, whole)]]


def _refusal(words: Sequence[str]) -> Optional[str]:
    """What the table's release says as it refuses the words: its parser's refusal, or broken JSON given to a
    config-class flag (JSON_CONFIG_FLAGS), which the table cannot know."""
    return vllm_parser.refusal(words) or _broken_config_json(words)


def _broken_config_json(words: Sequence[str]) -> Optional[str]:
    """The first value written as JSON (from `{` or `[`) of a JSON_CONFIG_FLAGS flag that does not parse, as vLLM
    reads the words (every occurrence of a flag is converted, not only the last); None where none is."""
    try:
        read = flags(vllm_parser.as_vllm_reads(words))
    except vllm_parser.Refused:
        return None  # the parser's to refuse
    for flag in read:
        entry = vllm_parser.entry(flag.name)
        if entry is None or flag.value is None or not flag.value.lstrip().startswith(("{", "[")):
            continue
        if next(n for n in entry["names"] if n.startswith("--")) in JSON_CONFIG_FLAGS and (error := _json_error(flag.value)):
            return f"argument {'/'.join(entry['names'])}: {flag.value!r} is {error}, and vLLM reads its value as JSON"
    return None


def _refused_at_start(words: Sequence[str], because: str) -> str:
    shown = ", ".join(map(repr, words))
    return f"{shown}: vLLM {vllm_parser.table_release()} refuses it at start, and the pod would crash-loop: {because}"


def _runs(words: Sequence[str]) -> list[list[str]]:
    """The entries in the runs vLLM's parser reads together: a flag and the entries after it that are not flags
    (its values, or words read as the model); a word with a dot and no `=` that starts with '-' (a dotted flag,
    or a value such as -1.5, which vLLM reads as one too) takes the next entry, whatever it is."""
    runs: list[list[str]] = []
    for word in words:
        last = runs[-1] if runs else None
        if last is not None and (not is_flag(word) or _dotted_without_value(last[-1])):
            last.append(word)
        else:
            runs.append([word])
    return runs


def _dotted_without_value(word: str) -> bool:
    return word.startswith("-") and "." in word and "=" not in word


def _joined_with_space(word: str) -> str:
    joined = _FLAG_AND_VALUE.fullmatch(word)
    return joined[1] if joined else word


def _value_problem(value: str, pinned: bool) -> Optional[str]:
    if pinned:
        return None  # what a value may be is the parser's to say
    if not value:
        return "has no value after '='"
    if value[0] in "{[":
        return _json_problem(value)
    if NOT_IN_A_VALUE.search(value):
        return (
            "holds whitespace, a quote or shell syntax: no shell reads it, so vLLM would get it literally and refuse "
            "it at start; give one flag per entry, and JSON values as JSON"
        )
    return None


def _json_problem(value: str) -> Optional[str]:
    error = _json_error(value)
    return None if error is None else f"is {error}, which vLLM would refuse at start"


def _json_error(value: str) -> Optional[str]:
    """Why a value is no JSON, said after "is"; None where it is."""
    try:
        json.loads(value)
    except ValueError as error:
        return f"not valid JSON ({error.msg} at column {error.colno})"
    except RecursionError:
        return "JSON nested too deep to read"
    return None
