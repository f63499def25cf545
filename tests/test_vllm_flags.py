"""vllm_platform.contract.vllm_flags: vLLM's flags read as vLLM reads them, and the extraArgs check built on it."""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import plan_of
from tests.test_config import problems, with_model
from vllm_platform import contract
from vllm_platform.contract import vllm_flags as vllm_args
from vllm_platform.contract.vllm_flags import Flag
from vllm_platform.pins import DEFAULT_VLLM_IMAGE
from tools import vllm_cli_table


@pytest.mark.parametrize(
    "words, read",
    [
        (["--tensor-parallel-size", "4"], [Flag("--tensor-parallel-size", "4", "--tensor-parallel-size")]),
        (["--tensor-parallel-size=4"], [Flag("--tensor-parallel-size", "4", "--tensor-parallel-size")]),
        (["--tensor_parallel_size=4"], [Flag("--tensor-parallel-size", "4", "--tensor_parallel_size")]),
        (["-tp", "4"], [Flag("--tensor-parallel-size", "4", "-tp")]),
        (["-pp=2"], [Flag("--pipeline-parallel-size", "2", "-pp")]),
        (["-dp", "2"], [Flag("--data-parallel-size", "2", "-dp")]),
        (["-q", "awq"], [Flag("--quantization", "awq", "-q")]),
        (["--max-model-len 4096"], [Flag("--max-model-len", "4096", "--max-model-len")]),
        (["--compilation_config.cudagraph_mode", "x"], [Flag("--compilation-config.cudagraph_mode", "x", "--compilation_config.cudagraph_mode")]),
        (["--enable-prefix-caching", "--seed", "-1"],
         [Flag("--enable-prefix-caching", None, "--enable-prefix-caching"), Flag("--seed", "-1", "--seed")]),
        (["vllm", "serve", "--port", "8000", "--"], [Flag("--port", "8000", "--port")]),
    ],
)
def test_flags_are_read_as_vllm_reads_them(words: list[str], read: list[Flag]) -> None:
    assert vllm_args.flags(words) == read


def test_the_last_value_wins_and_a_prefix_is_the_flag() -> None:
    words = ["--tensor-parallel-size", "2", "--tensor-parallel", "8"]
    assert vllm_args.value(words, vllm_args.TENSOR_PARALLEL) == "8"
    assert vllm_args.value(["--tensor-parallel-size-x", "8"], vllm_args.TENSOR_PARALLEL) is None
    assert vllm_args.value(["--port", "8000"], vllm_args.TENSOR_PARALLEL) is None


def test_the_vocabulary_needs_nothing_the_policy_packs_virtualenv_lacks() -> None:
    for module in Path(contract.__file__).parent.glob("*.py"):
        tree = ast.parse(module.read_text())
        imported = {alias.name.partition(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module.partition(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        standard = {"__future__", "argparse", "collections", "difflib", "functools", "json", "pathlib", "re", "typing"}
        assert imported <= standard | {"vllm_platform"}, module.name


EXTRA_ARGS = "models[llama-8b].extraArgs: "


@pytest.mark.parametrize(
    "extra_args, says",
    [
        (["--port=9000"], "--port is set by the platform itself"),
        (["-tp", "4"], "-tp (vLLM's --tensor-parallel-size) is set by the platform itself"),
        (["--tensor_parallel_size=4"], "--tensor_parallel_size (vLLM's --tensor-parallel-size) is set by the platform"),
        (["--tensor-parallel", "4"], "--tensor-parallel (vLLM's --tensor-parallel-size) is set by the platform"),
        (["--max-model-len 4096"], "--max-model-len is set by the platform itself"),
        (["-q", "awq"], "-q (vLLM's --quantization) is set by the platform"),
        (["--pipeline-parallel-size", "2"],
         "--pipeline-parallel-size 2: vLLM would need 2 x tensorParallelSize GPUs and the pod gets tensorParallelSize"),
        (["-pp=2"], "-pp (vLLM's --pipeline-parallel-size) 2: vLLM would need 2 x tensorParallelSize GPUs"),
        (["--data_parallel_size", "4"], "--data_parallel_size (vLLM's --data-parallel-size) 4: vLLM would need 4 x"),
        (["-dp", "2"], "-dp (vLLM's --data-parallel-size) 2: vLLM would need 2 x tensorParallelSize GPUs"),
    ],
)
def test_extra_args_refuse_managed_flags_and_parallelism_in_every_spelling(extra_args: list[str], says: str) -> None:
    [problem] = problems(with_model(extraArgs=extra_args))
    assert problem.startswith(EXTRA_ARGS + says)
    assert problem.endswith("remove it from extraArgs")


def test_every_refused_flag_is_named() -> None:
    [problem] = problems(with_model(extraArgs=["-tp", "4", "--enable-prefix-caching", "-dp", "2"]))
    assert "-tp (vLLM's --tensor-parallel-size)" in problem and "-dp (vLLM's --data-parallel-size) 2" in problem


@pytest.mark.parametrize("extra_args", [["--pipeline-parallel-size=1"], ["-dp=1"], ["--enable-prefix-caching", "--seed=7"]])
def test_extra_args_that_leave_one_gpu_worker_per_tensor_parallel_rank_pass(extra_args: list[str]) -> None:
    assert plan_of(with_model(extraArgs=extra_args)).models[0].args[-len(extra_args):] == tuple(extra_args)


# --- the pinned release's own parser ------------------------------------------------------------

VERDICTS = json.loads((Path(__file__).parent / "data" / "vllm_serve_verdicts.json").read_text())


def test_the_table_and_its_verdicts_are_of_the_release_the_default_image_pins() -> None:
    assert vllm_args.checks_image(DEFAULT_VLLM_IMAGE)
    assert VERDICTS["vllm"] == vllm_args.serve_table()["vllm"]
    assert len(VERDICTS["verdicts"]) > 5000


def test_the_rebuilt_parser_refuses_nothing_vllms_own_parser_takes() -> None:
    """Each entry was put to vLLM's own parser by tools/vllm_cli_table.py: every spelling of every flag, with
    and without values of each kind, abbreviations, underscores and dotted keys."""
    wrongly_refused = [(words, vllm_args.refusal(words)) for words, taken in VERDICTS["verdicts"] if taken and vllm_args.refusal(words)]
    assert wrongly_refused == []


def read_as(word: str) -> dict[str, Any]:
    """The table's entry an entry's flag stands for, by argparse's rule: its exact name, or the one it prefixes."""
    name = vllm_args.long_form(word.partition("=")[0]).partition(".")[0]
    entries = vllm_args.serve_table()["flags"]
    exact = [entry for entry in entries if name in entry["names"]]
    return (exact or [entry for entry in entries if any(n.startswith(name) for n in entry["names"])])[0]


def test_the_rebuilt_parser_passes_only_values_vllm_converts_with_its_own_code() -> None:
    """What it lets past that vLLM refuses are values of flags whose converter is vLLM's own (JSON, sizes, lower-
    casing choices), which the table does not rebuild: passing one such value beats refusing one vLLM takes."""
    missed = [words for words, taken in VERDICTS["verdicts"] if not taken and vllm_args.refusal(words) is None]
    unexplained = [words for words in missed if read_as(words[0])["takes"] != "any"]
    assert missed and unexplained == []


@pytest.mark.parametrize(
    "words, read",
    [
        (["-O3"], ["--optimization-level", "3"]),
        (["-O=2"], ["--optimization-level", "2"]),
        (["-O", "1"], ["--optimization-level", "1"]),
        (["--max_num_seqs=8"], ["--max-num-seqs=8"]),
        (["--compilation_config.cudagraph_mode=FULL", "-cc.mode", "3"], ["--compilation-config", '{"cudagraph_mode": "FULL"}', "-cc", '{"mode": "3"}']),
        (["--compilation-config.pass_config.fuse_norm_quant=true"], ["--compilation-config", '{"pass_config": {"fuse_norm_quant": "true"}}']),
        (["--compilation-config.cudagraph_capture_sizes+=1,2"], ["--compilation-config", '{"cudagraph_capture_sizes": ["1", "2"]}']),
        (["--served-model-name=a.b"], ["--served-model-name=a.b"]),
    ],
)
def test_words_are_handed_on_as_vllms_parser_hands_them_to_argparse(words: list[str], read: list[str]) -> None:
    assert vllm_args.as_vllm_reads(words) == read


def test_the_table_is_read_as_vllms_parser_declares_it() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--switch", action=argparse.BooleanOptionalAction)
    parser.add_argument("--count", type=int, choices=[1, 8])
    parser.add_argument("--level", type=vllm_cli_table_optional(float))
    parser.add_argument("--backend", type=lambda s: s.lower(), choices=["auto"])
    parser.add_argument("--middleware", action="append")
    parser.add_argument("--names", nargs="+")
    parser.add_argument("--modules", action=OwnAction, nargs="+")
    scheduler = parser.add_argument_group("SchedulerConfig")
    scheduler.add_argument("--max-num-seqs", type=int)
    scheduler.add_argument("--policy", choices=["fcfs"])

    def bounds_of(title: str, dest: str) -> Any:
        return (f"{title}.{dest}", {"ge": 1}) if (title, dest) in {("SchedulerConfig", "max_num_seqs"), ("SchedulerConfig", "policy")} else None

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
        # Bounds of the config field a flag of the group sets, where the flag's value is a number.
        {"names": ["--max-num-seqs"], "takes": "int", "field": "SchedulerConfig.max_num_seqs", "bounds": {"ge": 1}},
        {"names": ["--policy"], "takes": "text", "choices": ["fcfs"]},
    ]


class OwnAction(argparse.Action):
    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, values)


def vllm_cli_table_optional(convert: Any) -> Any:
    """A wrapper shaped as vLLM's `optional_type`: a closure named _optional_type over the converter."""

    def _optional_type(value: str) -> Any:
        return None if value in ("", "None") else convert(value)

    return _optional_type


def test_the_table_is_written_one_flag_per_line() -> None:
    text = vllm_args.SERVE_FLAGS_TABLE.read_text()
    assert json.loads(text)["flags"] == vllm_args.serve_table()["flags"]
    assert text == vllm_cli_table.dumps({k: v for k, v in vllm_args.serve_table().items() if k != "flags"}, "flags", vllm_args.serve_table()["flags"])


def test_short_spellings_come_from_the_table() -> None:
    assert vllm_args.long_form("-pcp") == vllm_args.PREFILL_CONTEXT_PARALLEL
    assert vllm_args.long_form("-tp") == vllm_args.TENSOR_PARALLEL
    assert vllm_args.long_form("-x") == "-x"


def test_another_release_is_not_checked_against_the_table_and_the_preview_says_so() -> None:
    other = "vllm/vllm-openai:v0.30.0"
    plan = plan_of(with_model(extraArgs=["--max-num-seqs=lots"], image=other))
    assert any(f"extraArgs are checked against vLLM {vllm_args.table_release()}'s own flags, and {other} is not" in n for n in plan.notes)
    assert not [n for n in plan_of(with_model(extraArgs=["--max-num-seqs=8"])).notes if "extraArgs" in n]
    mirrored = "123456789012.dkr.ecr.us-west-2.amazonaws.com/docker-hub/vllm/vllm-openai:" + vllm_args.table_release()
    assert problems(with_model(extraArgs=["--max-num-seqs=lots"], image=mirrored))
