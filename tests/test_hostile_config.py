"""Stack configs written as a careless or hostile user would: each refused with one line naming its key,
beside a near-identical config that is accepted, so that no refusal is wider than its reason."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pulumi
import pytest

from tests.conftest import plan_of, render_document
from tests.test_config import base, problems
from tools import mocks, render
from vllm_platform.config import stack_yaml
from vllm_platform.config.errors import ConfigError
from vllm_platform.config import quantities
from vllm_platform.config.loader import read_stack_file, stack_config
from vllm_platform.config.platform import parse_config
from vllm_platform.program import load_plan

EXISTING_EXAMPLE = Path(__file__).parent / "data" / "existing-cluster.yaml"
CYRILLIC_E = "\u0435"  # looks like "e"


def setting(path: str, value: Any) -> dict[str, Any]:
    """base() with the dotted path (`models.0.name`) set to value."""
    raw = base()
    *parents, last = path.split(".")
    node: Any = raw
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[int(last) if last.isdigit() else last] = value
    return raw


# (case, dotted path, refused value, accepted value, what the refusal says)
REFUSED_BESIDE_ACCEPTED = [
    # Lax types: YAML's `true` is not 1, "yes" is not a boolean, a quoted number is a string.
    ("true as a size", "models.0.tensorParallelSize", True, 1, "tensorParallelSize: must be an integer, not the boolean true"),
    ("true as maxSize", "cluster.gpuNodePools.0.maxSize", True, 1, "gpuNodePools[g5].maxSize: must be an integer, not the boolean true"),
    ("yes as a bool", "models.0.simulate", "yes", True, 'simulate: must be true or false, not the string "yes"'),
    ("1 as a bool", "simulateAccelerators", 1, False, "simulateAccelerators: must be true or false, not the number 1"),
    ("quoted integer", "models.0.replicas.min", "1", 1, 'replicas.min: must be an integer, not the string "1"'),
    ("quoted number", "models.0.gpuMemoryUtilization", "0.85", 0.85, 'gpuMemoryUtilization: must be a number, not the string "0.85"'),
    ("float as integer", "models.0.shutdownTimeoutSeconds", 60.0, 60, "shutdownTimeoutSeconds: must be an integer, not the number 60.0"),
    ("infinite size", "models.0.parametersBillions", float("inf"), 8.0, "parametersBillions: Input should be a finite number"),
    ("number as a name", "namespace", 7, "inference", "namespace: must be a string, not the number 7"),
    # Patterns that must match all of the value, in ASCII.
    ("name with a newline", "models.0.name", "llama-8b\n", "llama-8b", "'llama-8b\\n' is not a DNS-1035 label"),
    ("look-alike in a name", "models.0.name", f"llama-8b-t{CYRILLIC_E}st", "llama-8b-test", "is not a DNS-1035 label"),
    ("id with a newline", "models.0.model", "meta-llama/Llama-3.1-8B-Instruct\n", "meta-llama/Llama-3.1-8B-Instruct", "is neither a Hugging Face id"),
    ("look-alike in an id", "models.0.model", f"m{CYRILLIC_E}ta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct", "is neither a Hugging Face id"),
    ("id with --", "models.0.model", "meta-llama/Llama--3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct", "is neither a Hugging Face id"),
    ("id of three parts", "models.0.model", "meta-llama/Llama-3.1-8B/Instruct", "meta-llama/Llama-3.1-8B-Instruct", "is neither"),
    ("id too long", "models.0.model", "org/" + "m" * 97 + "-8B", "org/" + "m" * 92 + "-8B", "is neither a Hugging Face id"),
    ("wildcard in an S3 prefix", "models.0.model", "s3://acme-models/llama-8b*", "s3://acme-models/llama-8b", "is neither"),
    ("S3 prefix climbing out", "models.0.model", "s3://acme-models/../llama-8b", "s3://acme-models/llama-8b", "is neither"),
    ("served name with a newline", "models.0.servedModelName", "chat\n", "chat", "servedModelName: 'chat\\n' must be letters"),
    ("namespace with a newline", "namespace", "inference\n", "inference", "namespace: 'inference\\n' is not a DNS-1123 label"),
    ("cluster name with a newline", "cluster.name", "llm-test\n", "llm-test", "cluster.name: 'llm-test\\n' is not a DNS-1123 label"),
    ("zone with a newline", "cluster.vpc.zones", ["us-west-2a\n", "us-west-2b"], ["us-west-2a", "us-west-2b"], "is not an availability zone name"),
    ("system type with a shell", "cluster.systemNodes.instanceType", "m6i.xlarge;id", "m6i.xlarge", "is not an EC2 instance type"),
    ("storage class with a space", "observability.prometheus.storageClassName", "gp3 ", "gp3", "is not a StorageClass name"),
    ("quantization vLLM dropped", "models.0.quantization", "bitsandbytes", "awq", "quantization: Input should be 'awq'"),
    # Image references, by the grammar of a reference.
    ("command after an image", "models.0.image", "vllm/vllm-openai:v0.31.0 && curl x.sh", "vllm/vllm-openai:v0.31.0", "is not an image reference"),
    ("image with a newline", "models.0.image", "vllm/vllm-openai:v0.31.0\n", "vllm/vllm-openai:v0.31.0", "is not an image reference"),
    ("image path in capitals", "models.0.image", "VLLM/vllm-openai:v0.31.0", "vllm/vllm-openai:v0.31.0", "is not an image reference"),
    # extraArgs that would change what runs, or cannot work.
    ("positional model", "models.0.extraArgs", ["meta-llama/Llama-3.3-70B-Instruct"], ["--enable-prefix-caching"], "is not a flag: vLLM would read it as the model to serve"),
    ("positional after a flag", "models.0.extraArgs", ["--enforce-eager", "Qwen/Qwen2.5-72B"], ["--enforce-eager"], "'Qwen/Qwen2.5-72B' is not a flag"),
    ("word after a switch", "models.0.extraArgs", ["--enforce-eager", "128"], ["--max-num-seqs", "128"], "'128' is not a flag: vLLM would read it as the model to serve"),
    ("flags from a file", "models.0.extraArgs", ["--config=/etc/vllm.yaml"], ["--max-num-seqs=128"], "--config cannot work here: vLLM reads further flags"),
    ("api key", "models.0.extraArgs", ["--api-key=abc"], ["--enable-prefix-caching"], "--api-key takes a secret"),
    ("end of flags", "models.0.extraArgs", ["--enforce-eager", "--"], ["--enforce-eager"], "'--' ends vLLM's flags"),
    ("newline in a value", "models.0.extraArgs", ["--max-num-seqs=128\n"], ["--max-num-seqs=128"], "outside printable ASCII"),
    ("NUL in a value", "models.0.extraArgs", ["--max-num-seqs=128\x00"], ["--max-num-seqs=128"], "outside printable ASCII"),
    ("shell in a value", "models.0.extraArgs", ["--max-num-seqs=128;curl x"], ["--max-num-seqs=128"], "invalid int value: '128;curl x'"),
    ("two flags in one entry", "models.0.extraArgs", ["--max-num-seqs=128 --enforce-eager"], ["--max-num-seqs=128"], "invalid int value: '128 --enforce-eager'"),
    ("broken JSON", "models.0.extraArgs", ['--hf-overrides={"rope_theta": }'], ['--hf-overrides={"rope_theta": 500000}'], "argument --hf-overrides: invalid JSON value"),
    ("empty value", "models.0.extraArgs", ["--max-num-seqs="], ["--max-num-seqs=1"], "argument --max-num-seqs: invalid int value: ''"),
    ("dash look-alike", "models.0.extraArgs", ["\u2014enforce-eager"], ["--enforce-eager"], "outside printable ASCII"),
    ("upper-case flag", "models.0.extraArgs", ["--Enforce-Eager"], ["--enforce-eager"], "is not a flag name vLLM has"),
    # extraArgs that change what the fit checks size, beside values of the same flags that leave it as it is.
    ("32-bit weights", "models.0.extraArgs", ["--dtype=float32"], ["--dtype=bfloat16"], "--dtype float32: vLLM would hold the weights at 4 bytes a parameter"),
    ("random weights", "models.0.extraArgs", ["--load-format=dummy"], ["--load-format=safetensors"], "--load-format dummy: vLLM would serve random weights"),
    ("draft model", "models.0.extraArgs", ['--speculative-config={"model": "other/big", "num_speculative_tokens": 5}'],
     ['--speculative-config={"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 4}'], "names the draft model 'other/big'"),
    ("fewer layers", "models.0.extraArgs", ['--hf-overrides={"num_hidden_layers": 2}'], ['--hf-overrides={"rope_theta": 500000}'],
     "--hf-overrides sets num_hidden_layers=2: that changes the model's size or shape"),
    # What the pinned release's own parser refuses at start, read from its table (abbreviations it takes pass).
    ("misspelt flag", "models.0.extraArgs", ["--max-num-seqz=8"], ["--max-num-seq=8"], "unrecognized argument --max-num-seqz=8 (did you mean --max-num-seqs?)"),
    ("word for a number", "models.0.extraArgs", ["--max-num-seqs=lots"], ["--max-num-seqs=8"], "argument --max-num-seqs: invalid int value: 'lots'"),
    ("flag vLLM removed", "models.0.extraArgs", ["--swap-space=4"], ["--cpu-offload-gb=0"], "unrecognized argument --swap-space=4"),
    ("value for a switch", "models.0.extraArgs", ["--enable-prefix-caching=true"], ["--enable-prefix-caching"], "ignored explicit argument 'true'"),
    ("switch turned off", "models.0.extraArgs", ["--no-enable-prefix-caching=1"], ["--no-enable-prefix-caching"], "ignored explicit argument '1'"),
    ("number below its bound", "models.0.extraArgs", ["--max-num-seqs=0"], ["--max-num-seqs=1"], "--max-num-seqs 0: vLLM's SchedulerConfig.max_num_seqs must be >= 1"),
    ("fraction at its bound", "models.0.extraArgs", ["--watermark=1.0"], ["--watermark=0.99"], "--watermark 1: vLLM's SchedulerConfig.watermark must be < 1"),
    ("choice vLLM lacks", "models.0.extraArgs", ["--kv-cache-dtype=fp9"], ["--kv-cache-dtype=fp8"], "argument --kv-cache-dtype: invalid choice: 'fp9'"),
    ("rank vLLM lacks", "models.0.extraArgs", ["--max-lora-rank=7"], ["--max-lora-rank=8"], "argument --max-lora-rank: invalid choice: 7"),
    ("ambiguous prefix", "models.0.extraArgs", ["--max-num=8"], ["--max-num-se=8"], "ambiguous option: --max-num=8 could match"),
    ("dotted key without a value", "models.0.extraArgs", ["--compilation-config.mode"], ["--compilation-config.mode=3"], "--compilation-config.mode needs a value"),
    ("gRPC server", "models.0.extraArgs", ["--grpc"], ["--enable-log-requests"], "--grpc cannot work here: vLLM then serves gRPC"),
    ("Unix socket", "models.0.extraArgs", ["--uds=/tmp/vllm.sock"], ["--root-path=/v1"], "--uds cannot work here"),
    ("no API server", "models.0.extraArgs", ["--headless"], ["--enforce-eager"], "--headless cannot work here"),
    ("help", "models.0.extraArgs", ["-h"], ["-O3"], "-h cannot work here: vLLM then prints its help and exits"),
    ("prefill context parallel", "models.0.extraArgs", ["-pcp=2"], ["-pcp=1"], "-pcp (vLLM's --prefill-context-parallel-size) 2: vLLM would need 2 x"),
    ("no pipeline at all", "models.0.extraArgs", ["-pp=0"], ["-pp=1"], "--pipeline-parallel-size 0: vLLM's ParallelConfig.pipeline_parallel_size must be >= 1"),
    # The model cache's key and where images come from.
    ("revision a branch", "models.0.revision", "main", "0" * 40, "a branch or tag such as main moves"),
    ("revision in upper case", "models.0.revision", "A" * 40, "a" * 40, "is not a commit of the repository (40 hex digits)"),
    ("revision one short", "models.0.revision", "0" * 39, "0" * 40, "is not a commit of the repository"),
    ("revision with a newline", "models.0.revision", "0" * 40 + "\n", "0" * 40, "is not a commit of the repository"),
    ("bucket with an underscore", "modelCache.bucket", "model_cache", "model-cache", "is not an S3 bucket name"),
    ("bucket as an IP address", "modelCache.bucket", "192.168.10.1", "192-168-10-1", "is not an S3 bucket name"),
    ("bucket with two dots", "modelCache.bucket", "model..cache", "model.cache", "is not an S3 bucket name"),
    ("registry with a scheme", "images.registry", "https://registry.example.com/hub", "registry.example.com/hub", "is not a registry host and path"),
    ("registry with a tag", "images.registry", "registry.example.com/hub:v1", "registry.example.com/hub", "is not a registry host and path"),
    ("warm nodes past maxSize", "cluster.gpuNodePools.0.warmNodes", 5, 1, "warmNodes 5 is above maxSize 4"),
    ("true as warm nodes", "cluster.gpuNodePools.0.warmNodes", True, 1, "warmNodes: must be an integer, not the boolean true"),
    # Kubernetes quantities, by Kubernetes' grammar and not Python's Decimal's.
    *(
        (f"cpu {name}", "models.0.resources", {"cpu": cpu, "memory": "12Gi"}, {"cpu": "2", "memory": "12Gi"}, "is not a CPU quantity")
        for name, cpu in (("with a newline", "2\n"), ("NaN", "NaN"), ("Infinity", "Infinity"), ("with an underscore", "2_0"),
                          ("in Arabic-Indic digits", "\u0662"), ("beyond int64", "1e400"))
    ),
    ("memory with a space", "models.0.resources", {"cpu": "2", "memory": " 12Gi"}, {"cpu": "2", "memory": "12Gi"}, "is not a memory quantity"),
]


@pytest.mark.parametrize("suffix", ["?access_token=s3cr3t", "#frag", "/?x=1"])
def test_an_external_prometheus_url_with_a_query_is_refused_without_repeating_it(suffix: str) -> None:
    observability = {"enabled": False, "externalPrometheusUrl": f"http://prom.example.com:9090/prometheus{suffix}"}
    (problem,) = problems(setting("observability", observability))
    assert "is followed by a query or fragment, where KEDA appends /api/v1/query" in problem
    assert suffix not in problem
    plan_of(setting("observability", observability | {"externalPrometheusUrl": "http://prom.example.com:9090/prometheus"}))


def test_an_external_prometheus_url_with_a_port_beyond_65535_is_refused() -> None:
    observability = {"enabled": False, "externalPrometheusUrl": "http://127.0.0.1:99999"}
    (problem,) = problems(setting("observability", observability))
    assert problem.startswith("observability.externalPrometheusUrl: 'http://127.0.0.1:99999' is not an http(s) URL")
    plan_of(setting("observability", observability | {"externalPrometheusUrl": "http://127.0.0.1:9090"}))


@pytest.mark.parametrize("url", ["https://admin:hunter2@prom.example.com:9090", "http://admin:hun/ter@2@prom.example.com"])
def test_an_external_prometheus_url_with_a_password_is_refused_without_repeating_it(url: str) -> None:
    observability = {"enabled": False, "externalPrometheusUrl": url}
    (problem,) = problems(setting("observability", observability))
    assert problem.startswith("observability.externalPrometheusUrl: 'http")
    assert "***@prom.example.com" in problem and "hunter2" not in problem and "ter@2" not in problem and "admin" not in problem
    assert "in plain text" in problem
    plan_of(setting("observability", observability | {"externalPrometheusUrl": "https://prom.example.com:9090"}))


# --- secrets ------------------------------------------------------------------------------------

SECRETS = [
    ("hfToken", "hf_plain0123456789"),
    ("observability.grafanaAdminPassword", "plain-password-42"),
]


@pytest.mark.parametrize("path, value", SECRETS, ids=[p for p, _ in SECRETS])
def test_a_plaintext_secret_is_refused_with_the_command_that_fixes_it(path: str, value: str) -> None:
    raw = setting(path, value)
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    (problem,) = error.value.problems
    assert problem.startswith(f"{path}: is a secret written in plain text")
    assert "pulumi config set --secret" in problem and f"'vllm-platform:{path}'" in problem
    assert ("--path" in problem) == ("." in path)
    assert value not in str(error.value)
    parse_config(raw, secret_paths={path})
    parse_config(raw, secret_paths={path.split(".")[0]}), "the engine marks the whole top-level key secret"


def test_a_plaintext_kubeconfig_is_refused() -> None:
    document = stack_yaml.load(EXISTING_EXAMPLE.read_text())
    existing = {"kubeconfig": "apiVersion: v1\nkind: Config\n"}
    document["config"]["vllm-platform:cluster"]["existing"] = existing
    with pytest.raises(ConfigError) as error:
        stack_config(copy.deepcopy(document)).platform()
    (problem,) = error.value.problems
    assert problem.startswith("cluster.existing.kubeconfig: is a secret written in plain text")
    assert "pulumi config set --secret --path 'vllm-platform:cluster.existing.kubeconfig'" in problem
    existing["kubeconfig"] = {"secure": "AAABAkubeconfig"}
    stack_config(document).platform()


def test_a_secret_that_is_not_one_word_is_refused_without_repeating_it() -> None:
    raw = setting("hfToken", "hf_secret0123456789\n")
    with pytest.raises(ConfigError) as error:
        parse_config(raw, secret_paths={"hfToken"})
    assert error.value.problems == ["hfToken: is not a token of printable ASCII without spaces or a newline"]
    parse_config(setting("hfToken", "hf_secret0123456789"), secret_paths={"hfToken"})


def test_a_number_where_a_secret_belongs_is_refused_without_its_digits() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(setting("observability.grafanaAdminPassword", 12345678), secret_paths={"observability"})
    assert error.value.problems == ["observability.grafanaAdminPassword: must be a string, not a number"]


@pytest.mark.parametrize(
    "secure, says",
    [
        ({"secure": "AAABAtoken", "plain": "hf_x"}, "has other keys (plain)"),
        ({"secure": 12345}, "holds int, not ciphertext"),
        ({"secure": ""}, "holds str, not ciphertext"),
    ],
    ids=["extra key", "number", "empty"],
)
def test_a_malformed_secure_value_is_refused(secure: dict[str, Any], says: str) -> None:
    document = {"config": {"vllm-platform:hfToken": secure}}
    with pytest.raises(ConfigError) as error:
        stack_config(document)
    (problem,) = error.value.problems
    assert problem.startswith("hfToken: malformed secret: a `secure:` value is exactly `secure: <ciphertext>`")
    assert problem.endswith(says)
    assert stack_config({"config": {"vllm-platform:hfToken": {"secure": "AAABAtoken"}}}).secret_paths == {"vllm-platform:hfToken"}


def engine_values(raw: dict[str, Any]) -> dict[str, str]:
    """The config map as the engine hands it over: every value text, structured ones as JSON."""
    return {f"vllm-platform:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


def test_the_engine_refuses_a_plaintext_token_and_accepts_a_secret_one() -> None:
    config = engine_values(setting("hfToken", "hf_plain0123456789"))
    mocks.install("vllm-platform", "test", config, [])
    with pytest.raises(pulumi.RunError) as error:
        load_plan()
    assert "hfToken: is a secret written in plain text" in str(error.value)
    assert "hf_plain0123456789" not in str(error.value)
    mocks.install("vllm-platform", "test", config, ["vllm-platform:hfToken"])
    assert load_plan().config.hf_token == "hf_plain0123456789"


def engine_gateway(tmp_path: Path, second_secure: bool) -> dict[str, str]:
    """Pulumi.test.yaml with two gateway clients, the first's key `secure:`, written where the engine runs the
    program; and the config map the engine hands over for it, each secret decrypted."""
    second = "\n          secure: AAABAbatchKey" if second_secure else " " + "b" * 40
    text = STACK_FILE + (
        "  vllm-platform:gateway:\n    enabled: true\n    clients:\n"
        "      - name: chat\n        apiKey:\n          secure: AAABAchatKey\n        models: [llama-8b]\n"
        f"        tokensPerMinute: 1000\n      - name: batch\n        apiKey:{second}\n        models: [llama-8b]\n"
        "        tokensPerMinute: 1000\n"
    )
    (tmp_path / "Pulumi.test.yaml").write_text(text)
    return stack_config(stack_yaml.load(text), {"AAABAchatKey": "a" * 40, "AAABAbatchKey": "b" * 40}.__getitem__).values


def test_the_engine_refuses_a_plaintext_key_beside_a_secret_one_in_the_same_top_level_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One `secure:` key makes the engine mark all of `gateway` secret; the stack file says which values are."""
    monkeypatch.chdir(tmp_path)
    mocks.install("vllm-platform", "test", engine_gateway(tmp_path, second_secure=False), ["vllm-platform:gateway"])
    with pytest.raises(pulumi.RunError) as error:
        load_plan()
    assert "gateway.clients[1].apiKey: is a secret written in plain text" in str(error.value)
    assert "pulumi config set --secret --path 'vllm-platform:gateway.clients[1].apiKey'" in str(error.value)
    assert "clients[0]" not in str(error.value) and "b" * 40 not in str(error.value)
    mocks.install("vllm-platform", "test", engine_gateway(tmp_path, second_secure=True), ["vllm-platform:gateway"])
    assert [c.api_key for c in load_plan().config.gateway.clients] == ["a" * 40, "b" * 40]


def test_where_the_stack_file_cannot_say_the_engine_marks_a_key_secret_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No file for the stack, or one holding another value (the key set in Pulumi ESC): the engine's mark is all there is."""
    monkeypatch.chdir(tmp_path)
    config = engine_gateway(tmp_path, second_secure=False)
    (tmp_path / "Pulumi.test.yaml").unlink()
    mocks.install("vllm-platform", "test", config, ["vllm-platform:gateway"])
    assert load_plan().config.gateway is not None
    engine_gateway(tmp_path, second_secure=False)
    esc = json.loads(config["vllm-platform:gateway"])
    esc["clients"][1]["tokensPerMinute"] = 2000
    mocks.install("vllm-platform", "test", config | {"vllm-platform:gateway": json.dumps(esc)}, ["vllm-platform:gateway"])
    assert load_plan().config.gateway.clients[1].tokens_per_minute == 2000


def test_the_engine_reads_yes_as_the_string_it_is() -> None:
    config = engine_values(base())
    mocks.install("vllm-platform", "test", config | {"vllm-platform:simulateAccelerators": "yes"}, [])
    with pytest.raises(pulumi.RunError) as error:
        load_plan()
    assert 'simulateAccelerators: must be true or false, not the string "yes"' in str(error.value)
    mocks.install("vllm-platform", "test", config | {"vllm-platform:simulateAccelerators": "true"}, [])
    assert load_plan().config.simulate_accelerators is True


# --- the stack file as YAML --------------------------------------------------------------------

STACK_FILE = """\
config:
  aws:region: us-west-2
  vllm-platform:cluster:
    name: llm-test
    adminPrincipalArns: [arn:aws:iam::123456789012:role/deploy]
    gpuNodePools:
      - &g5 {name: g5, instanceTypes: [g5.xlarge], minSize: 0, maxSize: 4}
  vllm-platform:models:
    - {name: llama-8b, model: meta-llama/Llama-3.1-8B-Instruct, gpuPool: g5, simulate: false}
"""


def stack_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "Pulumi.hostile.yaml"
    path.write_text(text)
    return path


def refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as error:
        read_stack_file(stack_file(tmp_path, text)).platform()
    (problem,) = error.value.problems
    return problem


def test_the_plain_stack_file_is_accepted(tmp_path: Path) -> None:
    assert read_stack_file(stack_file(tmp_path, STACK_FILE)).platform().models[0].name == "llama-8b"


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    twice = STACK_FILE.replace("    name: llm-test\n", "    name: llm-test\n    name: llm-prod\n")
    assert refusal(tmp_path, twice) == (
        "Pulumi.hostile.yaml: line 5: key 'name' is given twice (first on line 4); the last would silently win, so keep one"
    )


def test_a_top_level_key_given_twice_is_refused(tmp_path: Path) -> None:
    twice = STACK_FILE + "  aws:region: eu-west-1\n"
    assert "key 'aws:region' is given twice (first on line 2)" in refusal(tmp_path, twice)


def test_yes_is_a_string_as_the_pulumi_cli_reads_it(tmp_path: Path) -> None:
    problem = refusal(tmp_path, STACK_FILE.replace("simulate: false", "simulate: yes"))
    assert problem == 'models[llama-8b].simulate: must be true or false, not the string "yes"'


def test_an_alias_used_within_bounds_is_accepted(tmp_path: Path) -> None:
    text = STACK_FILE.replace("      - &g5 {", "      - &g5 {") + "  aws:defaultTags: {tags: {pool: *g5}}\n"
    assert read_stack_file(stack_file(tmp_path, text)).values["aws:defaultTags"]


@pytest.mark.parametrize(
    "tags, says",
    [
        pytest.param("{team: !!binary aGVsbG8=}", "'binary' is no type a stack config holds", id="binary"),
        pytest.param("{team: !!set {a, b}}", "'set' is no type a stack config holds", id="set"),
        pytest.param("{1: team}", "a key must be a string; quote it if it is one", id="number-as-key"),
        pytest.param("{? [a, b] : team}", "a key must be a string", id="list-as-key"),
    ],
)
def test_yaml_that_is_no_plain_data_is_refused_in_one_line(tmp_path: Path, tags: str, says: str) -> None:
    text = STACK_FILE + f"  aws:defaultTags: {{tags: {tags}}}\n"
    line = len(STACK_FILE.splitlines()) + 1
    assert refusal(tmp_path, text).startswith(f"Pulumi.hostile.yaml: line {line}: {says}")


def test_a_merge_key_is_read_as_yaml_and_pulumi_read_it(tmp_path: Path) -> None:
    text = STACK_FILE + "  aws:defaultTags: {tags: {<<: {team: llm}, owner: platform}}\n"
    tags = json.loads(read_stack_file(stack_file(tmp_path, text)).values["aws:defaultTags"])["tags"]
    assert tags == {"team": "llm", "owner": "platform"}


def test_plain_twins_of_those_are_read_and_a_date_stays_its_text_as_pulumi_reads_it(tmp_path: Path) -> None:
    text = STACK_FILE + "  aws:defaultTags: {tags: {team: aGVsbG8=, '1': team, since: 2024-01-01}}\n"
    tags = json.loads(read_stack_file(stack_file(tmp_path, text)).values["aws:defaultTags"])["tags"]
    assert tags == {"team": "aGVsbG8=", "1": "team", "since": "2024-01-01"}


BILLION_LAUGHS = "config:\n  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"  {b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")
)


def test_a_billion_laughs_is_refused_before_it_expands(tmp_path: Path) -> None:
    problem = refusal(tmp_path, BILLION_LAUGHS)
    assert problem.startswith("Pulumi.hostile.yaml: line ") and f"beyond {stack_yaml.MAX_EXPANDED_NODES} values" in problem


@pytest.mark.parametrize("digits, refused", [(5000, True), (stack_yaml.MAX_NUMBER_CHARS + 1, True), (stack_yaml.MAX_NUMBER_CHARS, False)])
def test_a_number_longer_than_any_a_stack_holds_is_refused_by_its_line(tmp_path: Path, digits: int, refused: bool) -> None:
    """Python reads no int of more than 4300 digits: that must be a refusal, not a traceback."""
    number = "9" * digits
    text = STACK_FILE + f"  aws:defaultTags: {{tags: {{team: llm}}, size: {number}}}\n"
    if not refused:
        assert json.loads(read_stack_file(stack_file(tmp_path, text)).values["aws:defaultTags"])["size"] == int(number)
        return
    line = len(STACK_FILE.splitlines()) + 1
    assert refusal(tmp_path, text) == (
        f"Pulumi.hostile.yaml: line {line}: a number of {digits} characters, longer than any a stack config holds "
        f"({stack_yaml.MAX_NUMBER_CHARS}); quote it if it is a string"
    )


def test_an_alias_into_itself_is_refused(tmp_path: Path) -> None:
    assert "an alias refers to the node that contains it" in refusal(tmp_path, "config:\n  a: &a [x, *a]\n")


def test_a_stack_file_past_the_size_bound_is_refused_unread_and_one_at_it_is_read(tmp_path: Path) -> None:
    padding = stack_yaml.MAX_FILE_BYTES - len(STACK_FILE.encode())
    at_bound = STACK_FILE + ("#" * 999 + "\n") * (padding // 1000) + "#" * (padding % 1000)
    assert len(at_bound.encode()) == stack_yaml.MAX_FILE_BYTES
    assert read_stack_file(stack_file(tmp_path, at_bound)).platform().models[0].name == "llama-8b"
    assert refusal(tmp_path, at_bound + "#") == (
        "Pulumi.hostile.yaml: is larger than 1 MiB (1048576 bytes), where a stack file is a few kilobytes; it is refused unread"
    )


def test_a_document_of_too_many_values_is_refused_for_them_not_for_aliases(tmp_path: Path) -> None:
    def listing(count: int) -> str:
        return STACK_FILE + f"  aws:defaultTags: {{tags: {{team: llm}}, list: [{', '.join(['1'] * count)}]}}\n"

    problem = refusal(tmp_path, listing(stack_yaml.MAX_EXPANDED_NODES))
    line = len(STACK_FILE.splitlines()) + 1
    assert problem.startswith(f"Pulumi.hostile.yaml: line {line}: the document holds more than 20000 values"), problem
    assert "alias" not in problem
    assert read_stack_file(stack_file(tmp_path, listing(1000))).values["aws:defaultTags"]


def test_an_entry_named_with_a_newline_is_named_by_its_index_and_a_plain_name_by_itself() -> None:
    """The refusal stays one line: a name that cannot stand in a key's path gives way to the entry's index."""
    (problem,) = problems(setting("models.0.name", "llama-8b\n[x]"))
    assert problem.startswith("models[0].name: ") and "\n" not in problem
    (problem,) = problems(setting("models.0.tensorParallelSize", 0))
    assert problem.startswith("models[llama-8b].tensorParallelSize: ")
    (problem,) = problems(setting("models.0.max\nLen", 1))
    assert problem == "models[llama-8b].'max\\nLen': is not a known key (check its spelling against the README's config reference)"


def test_a_stack_file_not_in_utf8_is_refused_and_the_same_text_in_utf8_accepted(tmp_path: Path) -> None:
    """Latin-1's é (0xe9) where UTF-8 would have two bytes: no traceback, the byte and where it is."""
    text = STACK_FILE.replace("name: llm-test", "name: llm-test  # café")
    path = tmp_path / "Pulumi.hostile.yaml"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError) as error:
        read_stack_file(path)
    offset = text.encode("latin-1").index(b"\xe9")
    assert error.value.problems == [f"Pulumi.hostile.yaml: byte 0xe9 at offset {offset} is not UTF-8; save the file as UTF-8"]
    path.write_bytes(text.encode("utf-8"))
    assert read_stack_file(path).platform().models[0].name == "llama-8b"


def test_a_stack_file_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        read_stack_file(tmp_path / "Pulumi.missing.yaml")
    assert error.value.problems == ["Pulumi.missing.yaml: cannot be read (No such file or directory)"]


def test_the_render_cli_refuses_a_hostile_file_with_exit_2_and_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = stack_file(tmp_path, BILLION_LAUGHS)
    assert render.main(["--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len([line for line in err.splitlines() if line.startswith("  - ")]) == 1


def test_a_secure_value_renders_as_the_placeholder_and_its_plain_twin_is_refused(tmp_path: Path) -> None:
    secret = STACK_FILE + "  vllm-platform:hfToken:\n    secure: AAABAtoken\n"
    assert read_stack_file(stack_file(tmp_path, secret)).platform().hf_token == "[secret]"
    plain = STACK_FILE + "  vllm-platform:hfToken: hf_plain0123456789\n"
    assert refusal(tmp_path, plain).startswith("hfToken: is a secret written in plain text")


def test_a_rendered_token_never_leaves_the_secret() -> None:
    document = {"config": {**stack_yaml.load(STACK_FILE)["config"], "vllm-platform:hfToken": {"secure": "AAABAtoken"}}}
    rendering = render_document(document, secrets={"AAABAtoken": "hf_sentinel0123456789"})
    assert "hf_sentinel0123456789" not in json.dumps([rendering.manifests(), rendering.plan_document()])


# --- observability.alertmanager -------------------------------------------------------------------

PAGER = {"name": "pager", "pagerduty": {"routingKey": "key"}}
CHAT = {"name": "chat", "slack": {"apiUrl": "https://hooks.slack.com/services/T/B/x", "channel": "#llm"}}
TOPIC = {"name": "topic", "sns": {"topicArn": "arn:aws:sns:us-west-2:123456789012:llm-alerts"}}
ROUTED = {"receivers": [PAGER, CHAT, TOPIC], "critical": ["pager", "chat"], "warning": ["chat"]}
RECEIVER_SECRETS = {
    "observability.alertmanager.receivers[0].pagerduty.routingKey",
    "observability.alertmanager.receivers[1].slack.apiUrl",
}


def alerting_config(**alerting: Any) -> dict[str, Any]:
    return setting("observability", {"alertmanager": {**copy.deepcopy(ROUTED), **alerting}})


@pytest.mark.parametrize(
    "refused, accepted, says",
    [
        ({"critical": ["pagr"]}, {"critical": ["pager"]}, "critical names pagr, not a receiver (receivers: pager, chat, topic)"),
        ({"critical": []}, {"critical": ["topic"]}, "critical is empty: name the receiver that pages"),
        ({"watchdog": "beat"}, {"watchdog": "topic"}, "watchdog names beat, not a receiver"),
        ({"receivers": [PAGER, PAGER, CHAT, TOPIC]}, {"receivers": [PAGER, CHAT, TOPIC]}, "receiver pager is named more than once"),
        ({"receivers": [{**PAGER, "slack": CHAT["slack"]}, CHAT, TOPIC]}, {"receivers": [PAGER, CHAT, TOPIC]},
         "a receiver is exactly one of pagerduty, slack, sns, webhook; pager has pagerduty, slack"),
        ({"receivers": [PAGER, CHAT, {"name": "topic", "sns": {"topicArn": "arn:aws:sqs:us-west-2:123456789012:q"}}]},
         {"receivers": [PAGER, CHAT, TOPIC]}, "is not an SNS topic ARN"),
    ],
    ids=["unknown critical", "nothing pages", "unknown watchdog", "name twice", "two kinds", "not SNS"],
)
def test_alert_routing_refusals(refused: dict[str, Any], accepted: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(alerting_config(**refused), secret_paths={"observability"})
    assert any(says in p for p in error.value.problems), error.value.problems
    parse_config(alerting_config(**accepted), secret_paths={"observability"})


def test_a_receivers_key_in_plain_text_is_refused_and_named_by_its_index() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(alerting_config(), secret_paths=set())
    problems = error.value.problems
    assert [p.split(":")[0] for p in problems] == sorted(RECEIVER_SECRETS)
    assert "pulumi config set --secret --path 'vllm-platform:observability.alertmanager.receivers[0].pagerduty.routingKey'" in problems[0]
    assert "hooks.slack.com" not in str(error.value)
    parse_config(alerting_config(), secret_paths=RECEIVER_SECRETS)


def test_routing_needs_the_alertmanager_it_routes() -> None:
    raw = alerting_config()
    raw["observability"]["alertmanagerEnabled"] = False
    with pytest.raises(ConfigError) as error:
        parse_config(raw, secret_paths={"observability"})
    assert "alertmanager routes this stack's Alertmanager" in str(error.value)


@pytest.mark.parametrize(
    "key, refused, accepted",
    [
        ("timeToFirstTokenSloSeconds", 2.0, 2.5),
        ("interTokenLatencySloSeconds", 0.12, 0.15),
        ("requestLatencySloSeconds", 45.0, 50.0),
    ],
)
def test_a_latency_slo_off_vllms_bucket_bounds_is_refused(key: str, refused: float, accepted: float) -> None:
    (problem,) = problems(setting("observability", {key: refused}))
    assert problem.startswith(f"observability.{key}: {refused:g} is not a bucket bound of vllm:")
    assert "only interpolated; use" in problem
    plan_of(setting("observability", {key: accepted}))


# --- GPU pools on Karpenter ------------------------------------------------------------------------

POOL = "cluster.gpuNodePools.0"
RESERVATION = [{"id": "cr-0123456789abcdef0"}]


@pytest.mark.parametrize(
    "key, refused, accepted, says",
    [
        ("capacityTypes", ["on-demand", "spot"], ["spot", "on-demand"], "is not the order Karpenter tries them in"),
        ("capacityTypes", ["spot", "spot"], ["spot"], "names a capacity type twice"),
        ("capacityTypes", ["reserved", "on-demand"], ["on-demand"], "capacityTypes has reserved but capacityReservations is empty"),
        ("capacityTypes", [], ["on-demand"], "List should have at least 1 item"),
        ("capacityTypes", ["ondemand"], ["on-demand"], "Input should be 'reserved', 'spot' or 'on-demand'"),
        ("capacityReservations", [{"id": "odcr-1"}], [], "is not a capacity reservation id"),
        ("capacityReservations", [{"id": "cr-0123456789abcdef0", "tags": {"team": "llm"}}], [], "by id or by tags, exactly one"),
        ("capacityReservations", RESERVATION, [], "capacityReservations are used only with reserved in capacityTypes"),
        ("consolidateAfter", "20 minutes", "20m", "is not a duration such as 20m, 720h or 1h30m, or Never"),
        ("expireAfter", "30d", "720h", "is not a duration"),
        ("minSize", 2, 0, "Karpenter keeps no idle minimum"),
    ],
    ids=["order", "twice", "reserved-without-reservations", "empty", "misspelt", "bad-id", "id-and-tags",
         "reservations-unused", "consolidate-words", "expire-days", "min-size"],  # fmt: skip
)
def test_pool_capacity_refusals(key: str, refused: Any, accepted: Any, says: str) -> None:
    found = problems(setting(f"{POOL}.{key}", refused))
    assert len(found) == 1 and says in found[0], found
    plan_of(setting(f"{POOL}.{key}", accepted))


@pytest.mark.parametrize(
    "refused, accepted, says",
    [
        ([{"tags": {"team": ""}}], [{"tags": {"team": "*"}}], "tag 'team' has an empty key or value"),
        ([{"tags": {f"k{n}": "v" for n in range(21)}}], [{"tags": {f"k{n}": "v" for n in range(20)}}], "selects by 21 tags"),
        ([{"tags": {"k" * 129: "v"}}], [{"tags": {"k" * 128: "v"}}], "EC2 takes keys of at most 128"),
        ([{"tags": {"team": "v" * 257}}], [{"tags": {"team": "v" * 256}}], "values of at most 256"),
        ([{"id": f"cr-{n:017x}"} for n in range(31)], [{"id": f"cr-{n:017x}"} for n in range(30)], "at most 30 items"),
    ],
    ids=["empty-value", "too-many-tags", "long-key", "long-value", "too-many-terms"],
)
def test_reservation_selectors_beyond_the_node_class_are_refused(refused: Any, accepted: Any, says: str) -> None:
    def reserving(reservations: Any) -> dict[str, Any]:
        raw = setting(f"{POOL}.capacityTypes", ["reserved", "on-demand"])
        raw["cluster"]["gpuNodePools"][0]["capacityReservations"] = reservations
        return raw

    found = problems(reserving(refused))
    assert len(found) == 1 and says in found[0], found
    plan_of(reserving(accepted))


def test_reserved_capacity_needs_its_reservations_and_then_renders() -> None:
    raw = setting(f"{POOL}.capacityTypes", ["reserved", "spot", "on-demand"])
    raw["cluster"]["gpuNodePools"][0]["capacityReservations"] = [*RESERVATION, {"tags": {"purpose": "capacity-block"}}]
    (pool,) = [p for p in plan_of(raw).pools if p.name == "g5"]
    assert pool.capacity_types == ("reserved", "spot", "on-demand")
    assert pool.capacity_reservations == ({"id": "cr-0123456789abcdef0"}, {"tags": {"purpose": "capacity-block"}})


def test_the_old_capacity_type_is_refused_naming_the_new_key() -> None:
    (problem,) = problems(setting(f"{POOL}.capacityType", "SPOT"))
    assert "capacityType is replaced by capacityTypes" in problem and "SPOT is [spot]" in problem


@pytest.mark.parametrize("alias, pinned", [("al2023@latest", False), ("al2023@v2026714", False), ("bottlerocket@v1.10.0", False), ("al2023@v20260714", True)])
def test_the_gpu_ami_is_an_al2023_release(alias: str, pinned: bool) -> None:
    raw = setting("cluster.gpuAmiAlias", alias)
    if pinned:
        plan_of(raw)
    else:
        (problem,) = problems(raw)
        assert problem.startswith(f"cluster.gpuAmiAlias: '{alias}' is not an AL2023 release alias")


def test_quantities_up_to_what_the_api_server_keeps_are_read() -> None:
    """An int64 of bytes for memory, of millicores for a CPU: 1Ei of memory is a quantity, 1Ei of CPU is not."""
    assert quantities.memory_mib("1Ei") == 2**40 and quantities.memory_mib(".5Gi") == 512
    assert quantities.cpu_millis("1.5") == 1500 and quantities.cpu_millis("9223372036854775") == 9223372036854775000
    with pytest.raises(ValueError):
        quantities.cpu_millis("9223372036854776")


# --- bounds a hostile tester found open ------------------------------------------------------------

INTERNET_GATEWAY = {
    "enabled": True, "exposure": "internet", "hostname": "llm.example.com",
    "tls": {"certificateArn": "arn:aws:acm:us-west-2:123456789012:certificate/00000000-0000-0000-0000-000000000000"},
    "clients": [{"name": "app", "apiKey": "k" * 40, "models": ["llama-8b"], "tokensPerMinute": 1000}],
}  # fmt: skip


@pytest.mark.parametrize(
    "refused, accepted, says",
    [
        (["0.0.0.0/1", "128.0.0.0/1"], ["0.0.0.0/2", "128.0.0.0/8"], "together cover 100% of the IPv4 addresses"),
        (["0.0.0.0/2", "64.0.0.0/2"], ["0.0.0.0/2", "64.0.0.0/3"], "together cover 50% of the IPv4 addresses"),
        (["203.0.113.0/24", "::/0"], ["203.0.113.0/24", "2001:db8::/32"], "::/0 admits every address"),
        (["0.0.0.0/00"], ["0.0.0.0/8"], "'0.0.0.0/00' is not in canonical CIDR form: write '0.0.0.0/0'"),
        (["0.0.0.0/0.0.0.0"], ["203.0.113.0/24"], "'0.0.0.0/0.0.0.0' is not in canonical CIDR form: write '0.0.0.0/0'"),
        (["0::/0"], ["2001:db8::/32"], "'0::/0' is not in canonical CIDR form: write '::/0'"),
        (["203.0.113.0/0.0.0.255"], ["203.0.113.0/24"], "write '203.0.113.0/24'"),
        (["203.0.113.7"], ["203.0.113.7/32"], "write '203.0.113.7/32'"),
        (["010.0.0.0/8"], ["10.0.0.0/8"], "no leading zeros"),
    ],
    ids=["two halves", "one half", "v6 whole", "/00", "netmask zero", "0::/0", "hostmask", "bare address", "leading zero"],
)
def test_an_internet_allowlist_is_refused_by_what_it_covers_and_spelt_one_way(refused: list[str], accepted: list[str], says: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(setting("gateway", INTERNET_GATEWAY | {"allowedSourceCidrs": refused}), secret_paths={"gateway"})
    (problem,) = error.value.problems
    assert problem.startswith("gateway") and says in problem, problem
    parse_config(setting("gateway", INTERNET_GATEWAY | {"allowedSourceCidrs": accepted}), secret_paths={"gateway"})


BOUNDS_BESIDE_ACCEPTED = [
    ("cidr netmask", "cluster.vpc.cidr", "10.0.0.0/255.255.0.0", "10.0.0.0/16", "cluster.vpc.cidr: '10.0.0.0/255.255.0.0' is not in canonical CIDR form: write '10.0.0.0/16'"),
    ("vpc loopback", "cluster.vpc.cidr", "127.0.0.0/16", "10.0.0.0/16", "'127.0.0.0/16' is in a loopback range"),
    ("vpc link-local", "cluster.vpc.cidr", "169.254.0.0/16", "172.16.0.0/16", "is in a link-local range"),
    ("vpc multicast", "cluster.vpc.cidr", "224.0.0.0/16", "192.168.0.0/16", "is in a multicast range"),
    ("vpc reserved", "cluster.vpc.cidr", "240.0.0.0/16", "100.64.0.0/16", "is in a reserved range"),
    ("vpc this network", "cluster.vpc.cidr", "0.0.0.0/16", "10.1.0.0/16", '"this network" (0.0.0.0/8)'),
    ("endpoint netmask", "cluster.endpoint.publicAccessCidrs", ["203.0.113.0/255.255.255.0"], ["203.0.113.0/24"], "write '203.0.113.0/24'"),
    ("size past overflow", "models.0.parametersBillions", 1e300, 8.0, "parametersBillions: Input should be less than or equal to 10000"),
    ("namespace default", "namespace", "default", "inference", "namespace: 'default' is every unnamespaced object's namespace"),
    ("namespace kube-", "namespace", "kube-llm", "kubellm", "namespace: 'kube-llm' is where"),
    ("scrape too fast", "observability.prometheus", {"scrapeInterval": "4s"}, {"scrapeInterval": "5s"}, "scrapeInterval: 4s is not between 5s and 5m"),
    ("scrape in ms", "observability.prometheus", {"scrapeInterval": "500ms"}, {"scrapeInterval": "5000ms"}, "500ms is not between 5s and 5m"),
    ("scrape too slow", "observability.prometheus", {"scrapeInterval": "6m"}, {"scrapeInterval": "5m"}, "6m is not between 5s and 5m"),
    ("retention past 10y", "observability.prometheus", {"retention": "11y"}, {"retention": "10y"}, "retention: 11y is more than 10y"),
    ("storage rounding to 0GB", "observability.prometheus", {"storageSize": "1Gi"}, {"storageSize": "2Gi"}, "storageSize: 1Gi is not between 2Gi and 16Ti"),
    ("storage past gp3", "observability.prometheus", {"storageSize": "17Ti"}, {"storageSize": "16Ti"}, "17Ti is not between 2Gi and 16Ti"),
    ("cpu too small", "models.0.resources", {"cpu": "99m", "memory": "12Gi"}, {"cpu": "100m", "memory": "12Gi"}, "'99m' is below 100m"),
    ("memory too small", "models.0.resources", {"cpu": "2", "memory": "255Mi"}, {"cpu": "2", "memory": "256Mi"}, "'255Mi' is below 256Mi"),
    ("startup past int32", "models.0.startupTimeoutSeconds", 2**31, 86400, "startupTimeoutSeconds: Input should be less than or equal to 86400"),
    ("replicas past int32", "models.0.replicas", {"min": 1, "max": 2**31}, {"min": 1, "max": 4}, "replicas.max: Input should be less than or equal to 1000"),
    ("concurrency past int32", "models.0.autoscaling", {"concurrencyPerReplica": 2**31}, {"concurrencyPerReplica": 100000}, "concurrencyPerReplica: Input should be less"),
    ("queue past int32", "models.0.autoscaling", {"queueDepthPerReplica": 2**31}, {"queueDepthPerReplica": 100000}, "queueDepthPerReplica: Input should be less"),
    ("context past int32", "models.0.maxModelLen", 2**31, 8192, "maxModelLen: Input should be less than or equal to 2147483647"),
    ("pool past int32", "cluster.gpuNodePools.0.maxSize", 2**31, 1000, "maxSize: Input should be less than or equal to 1000"),
    ("expire under 1h", "cluster.gpuNodePools.0.expireAfter", "59m", "1h", "expireAfter: 59m is under 1h"),
    ("expire in seconds", "cluster.gpuNodePools.0.expireAfter", "3599s", "3600s", "3599s is under 1h"),
    ("consolidate past 720h", "cluster.gpuNodePools.0.consolidateAfter", "720h1s", "720h", "consolidateAfter: 720h1s is over 720h"),
    ("type twice", "cluster.gpuNodePools.0.instanceTypes", ["g5.xlarge", "g5.xlarge"], ["g5.xlarge", "g5.2xlarge"], "instanceTypes: names g5.xlarge more than once"),
    *(
        (f"bucket {name}", "modelCache.bucket", refused, accepted, "is not an S3 bucket name")
        for name, refused, accepted in (("-.", "model-.cache", "model-cache"), (".-", "model.-cache", "model.cache"),
                                        ("xn--", "xn--models", "xn-models"), ("sthree-", "sthree-models", "three-models"),
                                        ("-s3alias", "models-s3alias", "models-s3"), ("--ol-s3", "models--ol-s3", "models-ol-s3"))
    ),
    ("uri bucket as an IP", "models.0.model", "s3://10.0.0.1/llama-8b", "s3://10-0-0-1/llama-8b", "is neither"),
    ("uri bucket -.", "models.0.model", "s3://acme-.models/llama-8b", "s3://acme.models/llama-8b", "is neither"),
    ("uri bucket alias", "models.0.model", "s3://acme-s3alias/llama-8b", "s3://acme-s3/llama-8b", "is neither"),
    ("registry port 0", "images.registry", "registry.example.com:0/hub", "registry.example.com:5000/hub", "has port 0, not one of 1 to 65535"),
    ("registry port past 65535", "images.registry", "registry.example.com:65536/hub", "registry.example.com:65535/hub", "has port 65536"),
]  # fmt: skip


# The tables above, each case a refused config beside the near-identical one accepted.
@pytest.mark.parametrize(
    "path, refused, accepted, says",
    [case[1:] for case in (*REFUSED_BESIDE_ACCEPTED, *BOUNDS_BESIDE_ACCEPTED)],
    ids=[case[0] for case in (*REFUSED_BESIDE_ACCEPTED, *BOUNDS_BESIDE_ACCEPTED)],
)
def test_each_refusal_beside_a_near_identical_config_it_accepts(path: str, refused: Any, accepted: Any, says: str) -> None:
    found = problems(setting(path, refused))
    assert len(found) == 1 and says in found[0], found
    plan_of(setting(path, accepted))


def test_a_receiver_named_as_the_platforms_own_null_is_refused() -> None:
    null = {"name": "null", "sns": TOPIC["sns"]}
    with pytest.raises(ConfigError) as error:
        parse_config(alerting_config(receivers=[PAGER, CHAT, null]), secret_paths={"observability"})
    (problem,) = error.value.problems
    assert "receivers[null].name: 'null' is the receiver the platform adds itself" in problem, problem
    parse_config(alerting_config(receivers=[PAGER, CHAT, {**null, "name": "nil"}]), secret_paths={"observability"})


@pytest.mark.parametrize("key", ["aws:accessKey", "aws:secretKey", "aws:token", "kubernetes:kubeconfig"])
def test_a_providers_credential_in_plain_text_is_refused_and_its_secret_twin_accepted(key: str) -> None:
    value = "apiVersion: v1\nkind: Config\n" if key == "kubernetes:kubeconfig" else "AKIAPLAINTEXT0123456789"
    document = stack_yaml.load(STACK_FILE)
    document["config"][key] = value
    with pytest.raises(ConfigError) as error:
        stack_config(copy.deepcopy(document)).platform()
    (problem,) = error.value.problems
    assert problem.startswith(f"{key}: is a secret written in plain text") and f"pulumi config set --secret {key} " in problem
    assert value not in str(error.value)
    document["config"][key] = {"secure": "AAABAciphertext"}
    stack_config(document).platform()


@pytest.mark.parametrize(
    "refused, accepted, says",
    [
        ({"hostname": "llm"}, {"hostname": "llm.example.com"}, "hostname: 'llm' is not a DNS name of a domain"),
        ({"hostname": "203.0.113.7"}, {"hostname": "203-0-113-7.example.com"}, "hostname: '203.0.113.7' is not a DNS name of a domain"),
        ({"clients": [{**INTERNET_GATEWAY["clients"][0], "models": ["llama-8b", "llama-8b"]}]}, {}, "models: names llama-8b more than once"),
    ],
    ids=["one label", "an address", "model twice"],
)
def test_gateway_names_refused_beside_their_twins(refused: dict[str, Any], accepted: dict[str, Any], says: str) -> None:
    gateway = INTERNET_GATEWAY | {"allowedSourceCidrs": ["203.0.113.0/24"]}
    with pytest.raises(ConfigError) as error:
        parse_config(setting("gateway", gateway | refused), secret_paths={"gateway"})
    (problem,) = error.value.problems
    assert says in problem, problem
    parse_config(setting("gateway", gateway | accepted), secret_paths={"gateway"})


def test_a_kubeconfig_path_is_no_secret_and_is_accepted() -> None:
    document = stack_yaml.load(STACK_FILE)
    document["config"]["kubernetes:kubeconfig"] = "~/.kube/config"
    stack_config(document).platform()


def test_an_unknown_instance_type_is_quoted_on_one_line_beside_the_known_one() -> None:
    (problem,) = problems(setting("cluster.gpuNodePools.0.instanceTypes", ["g5.xlarge\n"]))
    assert "unknown GPU instance type 'g5.xlarge\\n'; known: " in problem and "\n" not in problem, problem
    plan_of(setting("cluster.gpuNodePools.0.instanceTypes", ["g5.xlarge"]))


def test_a_clients_unknown_model_is_quoted_on_one_line_beside_the_known_one() -> None:
    gateway = INTERNET_GATEWAY | {"allowedSourceCidrs": ["203.0.113.0/24"]}
    client = INTERNET_GATEWAY["clients"][0]
    with pytest.raises(ConfigError) as error:
        parse_config(setting("gateway", gateway | {"clients": [{**client, "models": ["llama-8b\n"]}]}), secret_paths={"gateway"})
    (problem,) = error.value.problems
    assert problem == "gateway.clients[app].models: 'llama-8b\\n' is not in models (llama-8b)", problem
    parse_config(setting("gateway", gateway | {"clients": [{**client, "models": ["llama-8b"]}]}), secret_paths={"gateway"})


@pytest.mark.parametrize(
    "refused, accepted, says",
    [
        (["--max-num-seqs", "8"] * 101, ["--max-num-seqs", "8"] * 100, "202 entries; at most 200"),
        (["--speculative-config=" + "[" * 9000], ["--speculative-config=" + "[" * 8000], "is 9021 characters; at most 8192"),
    ],
    ids=["too-many", "too-long"],
)
def test_extra_args_beyond_any_flags_need_are_refused_in_a_line(refused: list[str], accepted: list[str], says: str) -> None:
    (problem,) = problems(setting("models.0.extraArgs", refused))
    assert says in problem and len(problem) < 200
    # Within the bounds: what vLLM's own parser says of it is another matter (the nested JSON is refused).
    try:
        plan_of(setting("models.0.extraArgs", accepted))
    except ConfigError as error:
        assert not any("at most" in p for p in error.problems) and all(len(p) < 20_000 for p in error.problems)
