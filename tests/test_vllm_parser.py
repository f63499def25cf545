"""vllm_platform.contract.vllm_parser: `vllm serve`'s own parser rebuilt from its table, held to vLLM's own answers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import plan_of
from tests.test_config import problems, with_model
from tools import vllm_cli_table
from vllm_platform.config.models import Model
from vllm_platform.contract import vllm_flags, vllm_parser
from vllm_platform.pins import DEFAULT_VLLM_IMAGE

VERDICTS = json.loads((Path(__file__).parent / "data" / "vllm_serve_verdicts.json").read_text())
# What the platform refuses for reasons of its own, whatever vLLM takes: flags it sets, flags that cannot work
# behind its probes, parallelism it gives no GPUs for, a word read as the model, the end of the flags.
# Refused whatever their value: the flags the platform sets, those that cannot work behind its probes, the
# parallelism it gives no GPUs for, and another config than the checkpoint's.
PLATFORMS_OWN = (
    *vllm_flags.MANAGED_FLAGS, *vllm_flags.UNWORKABLE_FLAGS, *vllm_flags.SECRET_FLAGS, *vllm_flags.PARALLEL_FLAGS,
    vllm_flags.HF_CONFIG_PATH, vllm_flags.KV_CACHE_MEMORY_BYTES,
)


JSON_KINDS = ("json", "braced json or text")
MODEL_WORD = vllm_flags.READ_AS_THE_MODEL


def platforms_own(words: list[str]) -> bool:
    flag = vllm_flags.long_form(words[0].partition("=")[0]).partition(".")[0]
    return not vllm_flags.is_flag(words[0]) or any(vllm_flags.names(vllm_flags.Flag(flag, None, flag), name) for name in PLATFORMS_OWN)


def test_the_table_and_its_verdicts_are_of_the_release_the_default_image_pins() -> None:
    assert vllm_parser.checks_image(DEFAULT_VLLM_IMAGE)
    assert VERDICTS["vllm"] == vllm_parser.serve_table()["vllm"]
    assert len(VERDICTS["verdicts"]) > 8000


def test_the_rebuilt_parser_refuses_nothing_vllm_takes() -> None:
    """Each entry was put to vLLM by tools/vllm_cli_table.py: every spelling of every flag, with and without
    values of each kind, abbreviations, underscores and dotted keys, and numbers about each bound."""
    wrongly_refused = [(words, vllm_parser.refusal(words)) for words, taken in VERDICTS["verdicts"] if taken and vllm_parser.refusal(words)]
    assert wrongly_refused == []


def test_the_extra_args_check_refuses_nothing_vllm_takes_but_what_the_platform_refuses_of_its_own() -> None:
    """The platform's own refusals aside: the flags of PLATFORMS_OWN, a word vLLM would read as the model, which
    makes the fit checks check another one, and the values that change what they size (of the verdicts' values,
    32-bit weights and GiB offloaded to host memory; tests/test_vllm_flags.py has each such refusal beside a value
    it takes)."""
    taken = [words for words, takes in VERDICTS["verdicts"] if takes and not platforms_own(words)]
    refused = {
        tuple(words): found for words in taken
        if (found := vllm_flags.extra_args_problems(words, pinned=True)) and MODEL_WORD not in found[0]
    }  # fmt: skip
    wide = {words: found for words, found in refused.items() if words[0].startswith("--dtype")}
    assert len(taken) > 2000 and list(wide) == [("--dtype=float",), ("--dtype=float32",)]
    assert all("4 bytes a parameter" in found[0] for found in wide.values())
    # The rest: GiB held in host memory, which the pod's limit and the fit checks do not count.
    offloaded = {vllm_flags.long_form(words[0].partition("=")[0]) for words in refused if words not in wide}
    assert offloaded and all(any(name.startswith(flag) for name in vllm_flags.HOST_MEMORY_FLAGS) for flag in offloaded)
    assert all("in the pod's host memory" in found[0] for words, found in refused.items() if words not in wide)


def long_name(entry: dict[str, Any]) -> str:
    return next(name for name in entry["names"] if name.startswith("--"))


def reads_json(words: list[str]) -> bool:
    """Whether vLLM reads the flag's value as JSON: by json.loads (the table's JSON kinds), or by its config class's
    JSON reader (vllm_flags.JSON_CONFIG_FLAGS)."""
    entry = vllm_parser.entry(words[0]) or {}
    return bool(entry) and (entry["takes"] in JSON_KINDS or long_name(entry) in vllm_flags.JSON_CONFIG_FLAGS)


def broken_json(words: list[str]) -> bool:
    """A value written as JSON (from `{` or `[`) that does not parse, after `=` or as the next word."""
    given = words[0].partition("=")[2] if "=" in words[0] else (words[1] if len(words) > 1 else "")
    if not given.lstrip().startswith(("{", "[")):
        return False
    try:
        json.loads(given)
    except ValueError:
        return True
    return False


def explained(words: list[str]) -> bool:
    """Why the extraArgs check may let past what vLLM refuses: the flag's converter is vLLM's own (sizes,
    lower-casing choices, its actions; a config class's keys and types, where the value is JSON or is not written
    as JSON), which the table does not rebuild; or the engine refused a number within the field's bounds for what
    it weighs besides them (the model's heads for --tensor-parallel-size 8, other nodes for --nnodes 2). Passing
    one such value beats refusing one vLLM takes. Broken JSON where vLLM reads JSON is never excused."""
    entry = vllm_parser.entry(words[0]) or {}
    if reads_json(words) and broken_json(words):
        return False
    return entry.get("takes") == "any" or "field" in entry


def test_the_extra_args_check_passes_only_what_the_table_cannot_know_vllm_refuses() -> None:
    missed = [words for words, taken in VERDICTS["verdicts"] if not taken and not vllm_flags.extra_args_problems(words, pinned=True)]
    assert missed and [words for words in missed if not explained(words)] == []


def test_broken_json_is_refused_where_vllm_reads_json() -> None:
    broken = [words for words, taken in VERDICTS["verdicts"] if not taken and reads_json(words) and broken_json(words)]
    passed = [words for words in broken if not vllm_flags.extra_args_problems(words, pinned=True)]
    assert {vllm_flags.long_form(words[0].partition("=")[0]) for words in broken} >= {"--compilation-config", "--kv-transfer-config"}
    assert passed == []


def test_the_config_flags_read_as_json_are_those_vllm_reads_so() -> None:
    """A config-class flag takes `{}` and refuses broken JSON and a word, as vLLM answered; no other flag whose
    converter the table names "any" does both. A table bump that adds or drops one fails here."""
    answers: dict[str, dict[str, bool]] = {}
    for words, taken in VERDICTS["verdicts"]:
        if len(words) == 1 and "=" in words[0]:
            flag, _, given = words[0].partition("=")
            answers.setdefault(flag, {})[given] = taken
    read_as_json = {
        long_name(entry) for entry in vllm_parser.serve_table()["flags"]
        if entry["takes"] == "any" and (said := answers.get(long_name(entry), {})).get("{}")
        and not said.get('{"a": }', True) and not said.get("[1,", True) and not said.get("lots", True)
    }  # fmt: skip
    assert read_as_json == vllm_flags.JSON_CONFIG_FLAGS


@pytest.mark.parametrize(
    "refused, accepted",
    [
        (["--compilation-config", "{bad"], ["--compilation-config", '{"cudagraph_mode": "FULL"}']),
        (['--compilation-config={"a": }'], ['--compilation-config={"a": 1}']),
        (['-cc=[1,'], ["-cc.mode=3"]),
        (['--kv-transfer-config={"kv_connector": "LMCacheConnectorV1"'], ['--kv-transfer-config={"kv_connector": "LMCacheConnectorV1"}']),
    ],
)
def test_broken_json_for_a_config_flag_is_refused_beside_json_it_takes(refused: list[str], accepted: list[str]) -> None:
    """vLLM reads these flags' values with its config class's JSON reader: broken JSON stops it at start."""
    [problem] = problems(with_model(extraArgs=refused))
    assert "is not valid JSON" in problem and "and vLLM reads its value as JSON" in problem and "crash-loop" in problem, problem
    plan_of(with_model(extraArgs=accepted))


@pytest.mark.parametrize(
    "words, read",
    [
        (["-O3"], ["--optimization-level", "3"]),
        (["-O=2"], ["--optimization-level", "2"]),
        (["-O", "1"], ["--optimization-level", "1"]),
        (["--max_num_seqs=8"], ["--max-num-seqs=8"]),
        (["--compilation_config.cudagraph_mode=FULL", "-cc.mode", "3"], ["--compilation-config", '{"cudagraph_mode": "FULL"}', "-cc", '{"mode": "3"}']),
        (["--compilation-config.pass_config.a=1", "--compilation-config.pass_config.b=2"], ["--compilation-config", '{"pass_config": {"a": "1", "b": "2"}}']),
        (["--compilation-config.sizes+=1,2", "--compilation-config.sizes+=4"], ["--compilation-config", '{"sizes": ["1", "2", "4"]}']),
        (["--served-model-name=a.b"], ["--served-model-name=a.b"]),
        # A dotted flag takes its value from what the first pass made of the next word.
        (["--tool-server.a", "-O3"], ["3", "--tool-server", '{"a": "--optimization-level"}']),
    ],
)
def test_words_are_handed_on_as_vllms_parser_hands_them_to_argparse(words: list[str], read: list[str]) -> None:
    assert vllm_parser.as_vllm_reads(words) == read


@pytest.mark.parametrize(
    "words, says",
    [
        (["-O-1.5"], "-1.5 needs a value: vLLM stops at start with an IndexError"),
        (["--compilation-config.mode"], "--compilation-config.mode needs a value: vLLM stops at start with an IndexError"),
    ],
)
def test_what_vllm_refuses_as_it_reads_the_words(words: list[str], says: str) -> None:
    assert vllm_parser.refusal(words) == says


@pytest.mark.parametrize(
    "words, model",
    [
        (["--max-num-seqs", "8", "Qwen/Qwen2.5-7B"], "Qwen/Qwen2.5-7B"),
        (["--enforce-eager", "Qwen/Qwen2.5-7B"], "Qwen/Qwen2.5-7B"),
        (["--max-num-seqs", "8"], None),
        (["--max-num-seqs", "lots", "x"], None),  # refused before any model is read
    ],
)
def test_the_word_vllm_reads_as_the_model_is_the_platforms_to_refuse(words: list[str], model: str | None) -> None:
    assert vllm_parser.model_word(words) == model
    if model is not None:
        assert vllm_parser.refusal(words) is None


def test_entries_vllm_takes_together_are_not_refused_run_by_run() -> None:
    """A value such as -1.5 is a dotted flag to vLLM, which takes the entry after it as its value: read
    together, vLLM takes these; read flag by flag, the last would lack its value."""
    words = ["--enable-server-load-tracking", "-1.5", "--master-port=1", "--kv-cache-memory-bytes"]
    assert vllm_parser.refusal(words) is None
    assert vllm_flags.parser_problems(words) == [f"'{{\"5\": \"--master-port=1\"}}' {vllm_flags.READ_AS_THE_MODEL}, which the fit checks never see"]


def test_the_table_is_read_as_vllms_parser_declares_it() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--switch", action=argparse.BooleanOptionalAction)
    parser.add_argument("--count", type=int, choices=[1, 8])
    parser.add_argument("--level", type=optional_type(float))
    parser.add_argument("--backend", type=lambda s: s.lower(), choices=["auto"])
    parser.add_argument("--middleware", action="append")
    parser.add_argument("--names", nargs="+")
    parser.add_argument("--modules", action=OwnAction, nargs="+")
    parser.add_argument("--overrides", type=json.loads)
    parser.add_argument("--speculative-config", type=optional_type(parse_type(json.loads)))
    parser.add_argument("--hf-overrides", type=union_dict_and_str)
    scheduler = parser.add_argument_group("SchedulerConfig")
    scheduler.add_argument("--max-num-seqs", type=int)
    scheduler.add_argument("--sizes", type=int, nargs="+")
    scheduler.add_argument("--policy", choices=["fcfs"])

    def bounds_of(title: str, dest: str) -> Any:
        return (f"{title}.{dest}", {"ge": 1}) if title == "SchedulerConfig" else None

    assert vllm_cli_table.describe(parser, bounds_of) == [
        {"names": ["-h", "--help"], "takes": "nothing", "exits": True},
        {"names": ["--switch", "--no-switch"], "takes": "nothing"},
        {"names": ["--count"], "takes": "int", "choices": [1, 8]},
        {"names": ["--level"], "takes": "float", "none": True},
        # Choices compared after a conversion of vLLM's own are not the table's to check.
        {"names": ["--backend"], "takes": "any"},
        {"names": ["--middleware"], "takes": "text", "repeats": True},
        {"names": ["--names"], "takes": "text", "nargs": "+"},
        # An action of vLLM's own checks its values in its own code.
        {"names": ["--modules"], "takes": "any", "nargs": "+"},
        {"names": ["--overrides"], "takes": "json"},
        {"names": ["--speculative-config"], "takes": "json", "none": True},
        {"names": ["--hf-overrides"], "takes": "braced json or text", "none": True},
        # Bounds of the config field a flag of the group sets, where the flag's value is one number.
        {"names": ["--max-num-seqs"], "takes": "int", "field": "SchedulerConfig.max_num_seqs", "bounds": {"ge": 1}},
        {"names": ["--sizes"], "takes": "int", "nargs": "+"},
        {"names": ["--policy"], "takes": "text", "choices": ["fcfs"]},
    ]


def test_only_the_bounds_the_engine_refuses_a_number_past_are_kept() -> None:
    flags = [
        {"names": ["--max-num-seqs"], "takes": "int", "field": "SchedulerConfig.max_num_seqs", "bounds": {"ge": 1}},
        {"names": ["--max-loras"], "takes": "int", "field": "LoRAConfig.max_loras", "bounds": {"ge": 1}},
        {"names": ["--watermark"], "takes": "float", "field": "SchedulerConfig.watermark", "bounds": {"ge": 0.0, "lt": 1.0}},
    ]
    asked: list[list[str]] = []

    def takes(words: list[str]) -> bool:
        asked.append(words)
        return words[0] not in ("--max-num-seqs=0", "--watermark=1.0")

    assert vllm_cli_table.enforced(flags, takes) == [
        {"names": ["--max-num-seqs"], "takes": "int", "field": "SchedulerConfig.max_num_seqs", "bounds": {"ge": 1}},
        {"names": ["--max-loras"], "takes": "int"},
        {"names": ["--watermark"], "takes": "float", "field": "SchedulerConfig.watermark", "bounds": {"lt": 1.0}},
    ]
    assert asked == [["--max-num-seqs=0"], ["--max-loras=0"], ["--watermark=-0.001"], ["--watermark=1.0"]]


class OwnAction(argparse.Action):
    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, values)


def optional_type(convert: Any) -> Any:
    """A wrapper shaped as vLLM's `optional_type`: a closure named _optional_type over the converter."""

    def _optional_type(value: str) -> Any:
        return None if value in ("", "None") else convert(value)

    return _optional_type


def parse_type(convert: Any) -> Any:
    """Shaped as vLLM's `parse_type`: a closure named _parse_type over the converter."""

    def _parse_type(value: str) -> Any:
        return convert(value)

    return _parse_type


def union_dict_and_str(value: str) -> Any:
    """Named as vLLM's reader of braced JSON or text."""
    return value


def test_the_table_is_written_one_flag_per_line() -> None:
    table = vllm_parser.serve_table()
    head = {key: value for key, value in table.items() if key != "flags"}
    assert vllm_parser.SERVE_FLAGS_TABLE.read_text() == vllm_cli_table.dumps(head, "flags", table["flags"])


def test_short_spellings_come_from_the_table() -> None:
    assert vllm_flags.long_form("-pcp") == vllm_flags.PREFILL_CONTEXT_PARALLEL
    assert vllm_flags.long_form("-tp") == vllm_flags.TENSOR_PARALLEL
    assert vllm_flags.long_form("-x") == "-x"


def test_the_image_is_validated_before_the_extra_args_it_decides_the_reading_of() -> None:
    fields = list(Model.model_fields)
    assert fields.index("image") < fields.index("extra_args")


# --- extraArgs of another release ---------------------------------------------------------------

OTHER_RELEASE = "vllm/vllm-openai:v0.30.0"


def test_another_release_is_not_checked_against_the_table_and_the_preview_says_so() -> None:
    plan = plan_of(with_model(extraArgs=["--max-num-seqs=lots"], image=OTHER_RELEASE))
    assert any(f"extraArgs are checked against vLLM {vllm_parser.table_release()}'s own flags, and {OTHER_RELEASE} is not" in n for n in plan.notes)
    assert not [n for n in plan_of(with_model(extraArgs=["--max-num-seqs=8"])).notes if "extraArgs" in n]
    mirrored = "123456789012.dkr.ecr.us-west-2.amazonaws.com/docker-hub/vllm/vllm-openai:" + vllm_parser.table_release()
    assert problems(with_model(extraArgs=["--max-num-seqs=lots"], image=mirrored))


@pytest.mark.parametrize(
    "extra_args, other_release, pinned_release",
    [
        # The pinned release's parser tells a value from the model; without it, each entry must be one flag.
        (["--max-num-seqs", "128"], "'128' is not a flag: vLLM would read it as the model to serve; write each flag "
         "with its value as one entry, such as --max-num-seqs=128", None),
        # The pinned release's parser says what a value may be; without it, no value holds shell syntax.
        (["--max-num-seqs=128;curl x"], "holds whitespace, a quote or shell syntax", "invalid int value: '128;curl x'"),
        (["--max-num-seqs="], "has no value after '='", "invalid int value: ''"),
        (["--chat-template={% for m in messages %}{{ m.content }}{% endfor %}"], "is not valid JSON", None),
        (["--tool-call-parser="], "has no value after '='", None),
    ],
)
def test_entries_are_read_by_the_pinned_releases_parser_and_otherwise_one_flag_each_with_plain_values(
    extra_args: list[str], other_release: str, pinned_release: str | None
) -> None:
    [problem] = problems(with_model(extraArgs=extra_args, image=OTHER_RELEASE))
    assert other_release in problem
    if pinned_release is None:
        plan_of(with_model(extraArgs=extra_args))
    else:
        [problem] = problems(with_model(extraArgs=extra_args))
        assert pinned_release in problem
