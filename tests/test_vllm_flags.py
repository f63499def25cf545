"""vllm_platform.contract.vllm_flags: vLLM's flags read as vLLM reads them, and the extraArgs check built on it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import plan_of
from tests.test_config import problems, with_model
from vllm_platform import contract
from tools import render
from vllm_platform.config.loader import read_stack_file
from vllm_platform.contract import vllm_flags as vllm_args
from vllm_platform.contract import vllm_parser
from vllm_platform.contract.vllm_flags import Flag


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
        standard = {"__future__", "argparse", "collections", "difflib", "functools", "ipaddress", "json", "pathlib", "re", "typing"}
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


@pytest.mark.parametrize(
    "extra_args", [["--pipeline-parallel-size=1"], ["-dp=1"], ["-pp=+1"], ["-pcp", "01"], ["--enable-prefix-caching", "--seed=7"]]
)
def test_extra_args_that_leave_one_gpu_worker_per_tensor_parallel_rank_pass(extra_args: list[str]) -> None:
    assert plan_of(with_model(extraArgs=extra_args)).models[0].args[-len(extra_args):] == tuple(extra_args)


DRAFT = '{"model": "meta-llama/Llama-3.2-1B-Instruct", "num_speculative_tokens": 5}'
NGRAM = '{"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 4}'
YARN = '"rope_scaling": {"rope_type": "yarn", "factor": 4.0}'


@pytest.mark.parametrize(
    "refused, accepted, says",
    [
        (["--dtype=float32"], ["--dtype=bfloat16"], "--dtype float32: vLLM would hold the weights at 4 bytes a parameter, twice the 2"),
        (["--dtype", "float"], ["--dtype", "half"], "--dtype float: vLLM would hold the weights at 4 bytes a parameter"),
        (["--dtyp=float32"], ["--dtyp=float16"], "--dtyp (vLLM's --dtype) float32: vLLM would hold the weights at 4 bytes"),
        (["--load-format=dummy"], ["--load-format=auto"], "--load-format dummy: vLLM would serve random weights in place of the model's"),
        (["--load_format", "dummy"], ["--load_format", "safetensors"], "--load_format (vLLM's --load-format) dummy: vLLM would serve random"),
        (["-sc", DRAFT], ["-sc", NGRAM], "-sc (vLLM's --speculative-config) names the draft model 'meta-llama/Llama-3.2-1B-Instruct': it would load"),
        (['--speculative-config={"method": "eagle", "model": "yuhuili/EAGLE-LLaMA3.1-Instruct-8B", "num_speculative_tokens": 3}'],
         ['--speculative-config={"method": "ngram", "model": null, "num_speculative_tokens": 3}'],
         "--speculative-config names the draft model 'yuhuili/EAGLE-LLaMA3.1-Instruct-8B'"),
        (["--speculative_config.model=other/big", "--speculative_config.num_speculative_tokens=3"],
         ["--speculative_config.method=ngram", "--speculative_config.num_speculative_tokens=3"],
         "--speculative_config.model (vLLM's --speculative-config) names the draft model 'other/big'"),
        (['--hf-overrides={"num_hidden_layers": 2}'], ['--hf-overrides={"rope_theta": 500000}'],
         "--hf-overrides sets num_hidden_layers=2: that changes the model's size or shape"),
        (["--hf_overrides.num_local_experts", "4"], ["--hf_overrides.rope_theta", "500000"],
         "--hf_overrides.num_local_experts (vLLM's --hf-overrides) sets num_local_experts=\"4\": that changes"),
        (['--hf-overrides={"text_config": {"vocab_size": 1000}}'], ['--hf-overrides={"text_config": {"max_position_embeddings": 65536}}'],
         "--hf-overrides sets text_config.vocab_size=1000"),
        (["--hf-config-path=other/model"], ["--tokenizer=other/model"],
         "--hf-config-path other/model: vLLM would build the model from that config, not the checkpoint's own"),
        (["--hf_config_path", "other/model"], ["--tokenizer", "other/model"],
         "--hf_config_path (vLLM's --hf-config-path) other/model: vLLM would build the model from that config"),
        ([f'--hf-override={{{YARN}, "torch_dtype": "float32"}}'], [f"--hf-override={{{YARN}}}"],
         "--hf-override (vLLM's --hf-overrides) sets torch_dtype=\"float32\""),
    ],
)
def test_extra_args_that_change_what_the_fit_checks_size_are_refused_beside_values_that_do_not(
    refused: list[str], accepted: list[str], says: str
) -> None:
    [problem] = problems(with_model(extraArgs=refused))
    assert problem.startswith(EXTRA_ARGS + says)
    assert plan_of(with_model(extraArgs=accepted)).models[0].args[-len(accepted):] == tuple(accepted)


def test_each_change_to_the_model_is_named_on_the_one_line_and_another_release_is_held_to_the_same() -> None:
    changes = ["--dtype=float", "--load-format=dummy", f"--speculative-config={DRAFT}", '--hf-overrides={"hidden_size": 512}']
    for image in (None, "vllm/vllm-openai:v0.30.0"):
        [problem] = problems(with_model(extraArgs=changes, **({"image": image} if image else {})))
        said = ("--dtype float:", "--load-format dummy:", "names the draft model", "sets hidden_size=512")
        assert all(part in problem for part in said), problem


SECRET = "hf_plainSecret0123456789"


@pytest.mark.parametrize(
    "refused, accepted, says",
    [
        (["--hf-token", SECRET], ["--hf-overrides", '{"rope_theta": 500000}'], "--hf-token takes a secret"),
        ([f"--hf-token={SECRET}"], ["--hf-overrides={}"], "--hf-token takes a secret"),
        ([f"--hf_token={SECRET}"], ["--tokenizer_mode=hf"], "--hf_token (vLLM's --hf-token) takes a secret"),
        # One word with a space, which the whitespace check would otherwise repeat.
        ([f"--hf-tok {SECRET}"], ["--tokenizer-mode=hf"], "--hf-tok (vLLM's --hf-token) takes a secret"),
        (["--hf-token"], ["--trust-remote-code"], "--hf-token takes a secret"),
        (["--api-key", SECRET, SECRET + "2"], ["--api-server-count", "2"], "--api-key takes a secret"),
        ([f"--api_key={SECRET}"], ["--api_server_count=2"], "--api_key (vLLM's --api-key) takes a secret"),
    ],
)
def test_a_flag_that_carries_a_secret_is_refused_in_every_spelling_without_repeating_it(
    refused: list[str], accepted: list[str], says: str
) -> None:
    for image in (None, "vllm/vllm-openai:v0.30.0"):  # the pinned release's parser, and another release's check
        [problem] = problems(with_model(extraArgs=refused, **({"image": image} if image else {})))
        assert problem.startswith(EXTRA_ARGS + says) and SECRET not in problem, problem
        assert "remove it from extraArgs" in problem and "pulumi config set --secret" in problem
    assert plan_of(with_model(extraArgs=accepted)).models[0].args[-len(accepted):] == tuple(accepted)


def test_each_secret_flag_names_where_its_secret_belongs() -> None:
    [problem] = problems(with_model(extraArgs=["--enforce-eager", "--hf-token", SECRET, "--api-key", SECRET]))
    assert "pulumi config set --secret 'vllm-platform:hfToken'" in problem
    assert "pulumi config set --secret --path 'vllm-platform:gateway.clients[N].apiKey'" in problem


def test_the_render_cli_refuses_a_token_in_extra_args_with_exit_2_one_line_and_no_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_hostile_config import STACK_FILE, stack_file

    def given(extra_args: str) -> Path:
        text = STACK_FILE.replace("simulate: false}", f"simulate: false, extraArgs: [{extra_args}]}}")
        assert text != STACK_FILE
        return stack_file(tmp_path, text)

    assert render.main(["--config", str(given(f"--hf-token, {SECRET}")), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if line.startswith("  - ")]
    assert line.startswith("  - " + EXTRA_ARGS + "--hf-token takes a secret") and SECRET not in err and "Traceback" not in err
    assert read_stack_file(given("--hf-overrides, '{}'")).platform().models[0].extra_args == ["--hf-overrides", "{}"]


@pytest.mark.parametrize(
    "refused, accepted, says",
    [
        # The KV cache is what gpuMemoryUtilization leaves: a byte count sizes it past the fit checks.
        (["--kv-cache-memory-bytes=1"], ["--kv-cache-metrics"], "--kv-cache-memory-bytes 1: vLLM would size its KV cache to that"),
        (["--kv_cache_memory", "8G"], ["--kv_cache_dtype", "fp8"], "--kv_cache_memory (vLLM's --kv-cache-memory-bytes) 8G: vLLM would size"),
        # Host memory neither the pod's limit nor the fit checks count; 0 is vLLM's default.
        (["--cpu-offload-gb=4"], ["--cpu-offload-gb=0"], "--cpu-offload-gb 4: vLLM would hold 4 GiB of each GPU's weights in the pod's host"),
        (["--cpu_offload_gb", "0.5"], ["--cpu_offload_gb", "0"], "--cpu_offload_gb (vLLM's --cpu-offload-gb) 0.5: vLLM would hold"),
        (["--kv-offloading-size=16"], ["--kv-offloading-size=0"], "--kv-offloading-size 16: vLLM would hold 16 GiB of KV cache in"),
        # No vllm:* metrics: KEDA and every alert go blind.
        (["--disable-log-stats"], ["--enable-log-requests"], "--disable-log-stats cannot work here: vLLM then stops its vllm:* metrics"),
        (["--disable_log_stats"], ["--enable_log_requests"], "--disable_log_stats cannot work here"),
    ],
)
def test_extra_args_that_break_what_the_platform_sizes_or_watches_are_refused_beside_values_that_do_not(
    refused: list[str], accepted: list[str], says: str
) -> None:
    [problem] = problems(with_model(extraArgs=refused))
    assert problem.startswith(EXTRA_ARGS + says), problem
    assert plan_of(with_model(extraArgs=accepted)).models[0].args[-len(accepted):] == tuple(accepted)


def test_the_flags_refused_by_name_are_flags_of_the_pinned_release() -> None:
    """A name the table lacks would refuse nothing vLLM reads, and hide the check's gap."""
    named = (*vllm_args.UNWORKABLE_FLAGS, *vllm_args.SECRET_FLAGS, vllm_args.KV_CACHE_MEMORY_BYTES, *vllm_args.HOST_MEMORY_FLAGS)
    assert [name for name in named if vllm_parser.entry(name) is None] == []
