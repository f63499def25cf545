"""The stack config model: what it accepts, and a clear message for each thing it must refuse."""

from __future__ import annotations

import copy
import json
from typing import Any

import pulumi
import pytest

from tests.conftest import ADMIN, plan_of
from tools import mocks
from vllm_platform.config.errors import ConfigError
from vllm_platform.config.platform import parse_config
from vllm_platform.plan.notes import token_notes
from vllm_platform.plan.plans import Plan
from vllm_platform.program import load_plan


def base() -> dict[str, Any]:
    return {
        "cluster": {
            "name": "llm-test",
            "adminPrincipalArns": [ADMIN],
            "gpuNodePools": [
                {"name": "g5", "instanceTypes": ["g5.xlarge"], "minSize": 0, "maxSize": 4},
                {"name": "g5x4", "instanceTypes": ["g5.12xlarge"], "minSize": 0, "maxSize": 2},
                {"name": "p4d", "instanceTypes": ["p4d.24xlarge"], "minSize": 0, "maxSize": 2, "rootVolumeGiB": 300},
            ],
        },
        "models": [
            {"name": "llama-8b", "model": "meta-llama/Llama-3.1-8B-Instruct", "gpuPool": "g5"},
        ],
    }


def with_model(**fields: Any) -> dict[str, Any]:
    raw = base()
    raw["models"][0].update(fields)
    return raw


def with_pool(**fields: Any) -> dict[str, Any]:
    raw = base()
    raw["cluster"]["gpuNodePools"][0].update(fields)
    return raw


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as error:
        plan_of(raw)
    return error.value.problems


def test_minimal_config_gets_defaults() -> None:
    plan = plan_of(base())
    model = plan.models[0]
    assert plan.namespace == "inference"
    assert model.served_name == "meta-llama/Llama-3.1-8B-Instruct"
    assert model.parameters_billions == 8
    assert model.replicas.min == 1 and model.autoscaling.mode == "keda"
    assert model.image.startswith("vllm/vllm-openai:v")


def test_prod_shape_70b_on_p4d_fits() -> None:
    raw = base()
    raw["models"].append(
        {"name": "llama-70b", "model": "meta-llama/Llama-3.3-70B-Instruct", "gpuPool": "p4d", "tensorParallelSize": 8}
    )
    assert isinstance(plan_of(raw), Plan)


def test_quantization_makes_a_13b_fit_one_a10g() -> None:
    plan_of(with_model(model="TheBloke/Llama-2-13B-chat-AWQ", quantization="awq"))


def test_fp8_on_ampere_is_accepted_as_weight_only() -> None:
    plan = plan_of(with_model(model="neuralmagic/Meta-Llama-3.1-8B-Instruct-FP8", quantization="fp8"))
    assert list(plan.notes) == [
        "models[llama-8b]: fp8 on A10G (Ampere) runs weight-only (FP8 Marlin): weights take 1 byte per parameter, "
        "activations and compute stay 16-bit"
    ]


def test_fp8_on_hopper_needs_no_note() -> None:
    raw = with_model(model="neuralmagic/Meta-Llama-3.1-8B-Instruct-FP8", quantization="fp8", gpuPool="h100")
    raw["cluster"]["gpuNodePools"].append({"name": "h100", "instanceTypes": ["p5.48xlarge"], "maxSize": 1, "rootVolumeGiB": 300})
    assert plan_of(raw).notes == ()


def test_max_model_len_fits_what_the_weights_leave() -> None:
    plan_of(with_model(maxModelLen=30720))
    assert problems(with_model(maxModelLen=31744))[0].startswith("models[llama-8b].maxModelLen: one 31744-token")
    # 70B on 8 A100-40GB: 32k tokens of 320 KiB are 1.3 GB per GPU, well within what 17.5 GB of weights leave.
    raw = base()
    raw["models"].append(
        {"name": "llama-70b", "model": "meta-llama/Llama-3.3-70B-Instruct", "gpuPool": "p4d", "tensorParallelSize": 8, "maxModelLen": 32768}
    )
    plan_of(raw)


def test_kv_cache_bytes_per_token_overrides_the_estimate() -> None:
    long_context = {"model": "acme/hybrid-8b", "maxModelLen": 65536}
    assert problems(with_model(**long_context))[0].startswith("models[llama-8b].maxModelLen:")
    # A model with few KV heads, or an fp8 KV cache, holds the same context in less.
    plan_of(with_model(**long_context, kvCacheBytesPerToken=32768))


@pytest.mark.parametrize(
    "fields, offered, ways",
    [
        (
            {"model": "meta-llama/Llama-2-13b-chat-hf"},
            "use tensorParallelSize 2 on a pool of g5.12xlarge (4x A10G), "
            "or use an FP8 or AWQ checkpoint (quantization fp8 or awq_marlin)",
            [{"gpuPool": "g5x4", "tensorParallelSize": 2}, {"quantization": "fp8"}, {"quantization": "awq_marlin"}],
        ),
        (
            {"model": "meta-llama/Llama-3.3-70B-Instruct"},
            "use tensorParallelSize 8 on a pool of g5.48xlarge (8x A10G)",
            [{"gpuPool": "g5x8", "tensorParallelSize": 8}],
        ),
        (
            {"maxModelLen": 131072},
            "lower maxModelLen to 30720 or less, or use tensorParallelSize 2 on a pool of g5.12xlarge (4x A10G)",
            [{"maxModelLen": 30720}, {"gpuPool": "g5x4", "tensorParallelSize": 2}],
        ),
        (
            {"model": "meta-llama/Llama-3.3-70B-Instruct", "maxModelLen": 131072},
            "move to a pool of p4d.24xlarge (8x A100-40GB) with tensorParallelSize 8",
            [{"gpuPool": "p4d", "tensorParallelSize": 8}],
        ),
        (
            {"model": "meta-llama/Llama-3.1-405B-Instruct", "gpuPool": "p4d", "tensorParallelSize": 8},
            "use an AWQ checkpoint (quantization awq_marlin)",
            [{"quantization": "awq_marlin"}],
        ),
    ],
)
def test_every_way_out_offered_would_fit(fields: dict[str, Any], offered: str, ways: list[dict[str, Any]]) -> None:
    raw = with_model(**fields)
    raw["cluster"]["gpuNodePools"].append({"name": "g5x8", "instanceTypes": ["g5.48xlarge"], "maxSize": 1, "rootVolumeGiB": 300})
    raw["cluster"]["gpuNodePools"][2]["rootVolumeGiB"] = 1000
    (problem,) = problems(raw)
    assert problem.endswith(f"; {offered}")
    for way in ways:
        fixed = copy.deepcopy(raw)
        fixed["models"][0].update(way)
        plan_of(fixed)


def on_one_pool(pool: dict[str, Any], *replicas: dict[str, int], **fields: Any) -> dict[str, Any]:
    """Models a, b, c, ... of an 8B each on one pool, with these replicas."""
    raw = base()
    raw["cluster"]["gpuNodePools"] = [{"name": "shared", "minSize": 0, **pool}]
    raw["models"] = [
        {"name": name, "model": "meta-llama/Llama-3.1-8B-Instruct", "servedModelName": name, "gpuPool": "shared", "replicas": r, **fields}
        for name, r in zip("abcdefgh", replicas)
    ]
    return raw


def test_a_pool_must_hold_all_its_models_at_replicas_min() -> None:
    raw = on_one_pool({"instanceTypes": ["g5.xlarge"], "maxSize": 2}, {"min": 2, "max": 2}, {"min": 2, "max": 2}, {"min": 1, "max": 1})
    assert problems(raw) == [
        "cluster.gpuNodePools[shared].maxSize: 2, but its models at replicas.min need 5 g5.xlarge nodes "
        "(a: 2 replica(s) on 2 node(s), b: 2 replica(s) on 2 node(s), c: 1 replica(s) on 1 node(s)), "
        "so some replicas would stay Pending; raise maxSize to 5 or lower the models' replicas.min"
    ]
    raw["cluster"]["gpuNodePools"][0]["maxSize"] = 5
    plan_of(raw)


def test_replicas_of_one_gpu_share_a_multi_gpu_node() -> None:
    # Four 1-GPU replicas to a g5.12xlarge: two models of four replicas each take a node apiece.
    plan_of(on_one_pool({"instanceTypes": ["g5.12xlarge"], "maxSize": 2}, {"min": 4, "max": 4}, {"min": 4, "max": 4}))
    found = problems(on_one_pool({"instanceTypes": ["g5.12xlarge"], "maxSize": 2}, {"min": 5, "max": 5}, {"min": 4, "max": 4}))
    assert found[0].startswith("cluster.gpuNodePools[shared].maxSize: 2, but its models at replicas.min need 3 g5.12xlarge nodes")


def test_memory_requests_limit_how_many_replicas_share_a_node() -> None:
    # 100Gi of a g5.12xlarge's ~185Gi allocatable: one replica per node, whatever its free GPUs.
    raw = on_one_pool({"instanceTypes": ["g5.12xlarge"], "maxSize": 2}, {"min": 1, "max": 3}, resources={"cpu": "8", "memory": "100Gi"})
    assert problems(raw) == [
        "models[a].replicas.max: 3 replicas of 1 GPU(s) need 3 g5.12xlarge nodes, but pool shared has maxSize 2; "
        "lower replicas.max or raise the pool's maxSize"
    ]


def test_models_that_cannot_all_reach_replicas_max_are_warned_about() -> None:
    plan = plan_of(on_one_pool({"instanceTypes": ["g5.xlarge"], "maxSize": 3}, {"min": 1, "max": 2}, {"min": 1, "max": 2}))
    assert plan.notes[-1] == (
        "cluster.gpuNodePools[shared]: its models at replicas.max need 4 g5.xlarge nodes "
        "(a: 2 replica(s) on 2 node(s), b: 2 replica(s) on 2 node(s)) but maxSize is 3; they cannot all be at "
        "replicas.max at once, and a model may stay below it while the others hold the nodes; raise maxSize to 4 if they must"
    )
    assert not any(n.startswith("cluster.") for n in plan_of(base()).notes)


def test_surge_room_counts_every_model_of_the_pool_at_replicas_max() -> None:
    # Alone, a model at max 2 on a pool of 3 has a node to surge into; beside another at max 1 it has none.
    alone = plan_of(on_one_pool({"instanceTypes": ["g5.xlarge"], "maxSize": 3}, {"min": 1, "max": 2}))
    assert alone.models[0].surge_room
    shared = plan_of(on_one_pool({"instanceTypes": ["g5.xlarge"], "maxSize": 3}, {"min": 1, "max": 2}, {"min": 1, "max": 1}))
    assert not shared.models[0].surge_room and not shared.models[1].surge_room
    assert shared.notes[0] == (
        "models[a]: pool shared (maxSize 3) has no node left for an extra replica at replicas.max 2 beside b at "
        "theirs, so a rollout replaces one replica at a time; raise the pool's maxSize for surge rollouts"
    )
    crowded = plan_of(on_one_pool({"instanceTypes": ["g5.xlarge"], "maxSize": 5}, *[{"min": 1, "max": 1}] * 5))
    assert "at replicas.max 1 beside 4 other models at theirs" in crowded.notes[0]
    # On 4-GPU nodes a surge replica shares a node its model already has, until that node is full.
    multi = plan_of(on_one_pool({"instanceTypes": ["g5.12xlarge"], "maxSize": 2}, {"min": 1, "max": 4}, {"min": 1, "max": 3}))
    assert not multi.models[0].surge_room and multi.models[1].surge_room
    # The plan holds each model's nodes at replicas.max, and the pool's sum of them.
    assert [m.nodes_at_max for m in shared.models] == [2, 1] and shared.models[0].pool.nodes_at_max == 3
    assert [m.nodes_at_max for m in multi.models] == [1, 1] and multi.models[0].pool.nodes_at_max == 2
    assert multi.models[0].rolling_update.manifest() == {"maxSurge": 0, "maxUnavailable": 1}


def test_tensor_parallel_memory_holds_shm_and_processes() -> None:
    plan_of(with_model(gpuPool="g5x4", tensorParallelSize=2, resources={"cpu": "8", "memory": "16Gi"}))
    (found,) = problems(with_model(gpuPool="g5x4", tensorParallelSize=2, resources={"cpu": "8", "memory": "15Gi"}))
    assert found.startswith("models[llama-8b].resources.memory: 15Gi is below the 16Gi tensorParallelSize 2 needs")
    # One GPU mounts no /dev/shm of its own.
    plan_of(with_model(resources={"cpu": "3", "memory": "8Gi"}))


def test_explicit_parameters_override_the_name() -> None:
    assert plan_of(with_model(model="acme/house-model", parametersBillions=3)).models[0].parameters_billions == 3


REJECTED: list[tuple[str, dict[str, Any], str]] = [
    (
        "too big for one A10G",
        with_model(model="meta-llama/Llama-2-13b-chat-hf"),
        "models[llama-8b]: needs ~26.0 GB of weights per GPU (13B parameters, bf16, tensorParallelSize 1) "
        "plus 2.5 GB for runtime and KV cache, but a g5.xlarge A10G holds 24 GB (x0.90 = 21.6 GB); "
        "use tensorParallelSize 2 on a pool of g5.12xlarge (4x A10G), or use an FP8 or AWQ checkpoint "
        "(quantization fp8 or awq_marlin)",
    ),
    (
        "70B on one A10G is told only what fits",
        with_model(model="meta-llama/Llama-3.3-70B-Instruct"),
        "(x0.90 = 21.6 GB); use tensorParallelSize 8 on a pool of g5.48xlarge (8x A10G)",
    ),
    (
        "a full 128k context on one A10G",
        with_model(maxModelLen=131072),
        "models[llama-8b].maxModelLen: one 131072-token sequence needs ~17.2 GB of KV cache per GPU "
        "(128 KiB per token, estimated for 8B, over tensorParallelSize 1), but only ~4.1 GB is left after "
        "16.0 GB of weights and 1.5 GB of runtime, where a g5.xlarge A10G holds 24 GB (x0.90 = 21.6 GB), "
        "so vLLM would refuse to start; lower maxModelLen to 30720 or less, "
        "or use tensorParallelSize 2 on a pool of g5.12xlarge (4x A10G)",
    ),
    (
        "a multi-head-attention model's KV cache",
        with_model(model="meta-llama/Llama-2-7b-chat-hf", maxModelLen=16384, kvCacheBytesPerToken=524288),
        "models[llama-8b].maxModelLen: one 16384-token sequence needs ~8.6 GB of KV cache per GPU "
        "(512 KiB per token, kvCacheBytesPerToken, over tensorParallelSize 1), but only ~6.1 GB is left",
    ),
    ("zero KV cache per token", with_model(kvCacheBytesPerToken=0), "models[llama-8b].kvCacheBytesPerToken: Input should be greater than 0"),
    (
        "70B on 4 A10G",
        with_model(model="meta-llama/Llama-3.3-70B-Instruct", gpuPool="g5x4", tensorParallelSize=4),
        "needs ~35.0 GB of weights per GPU",
    ),
    (
        "a tight utilisation makes an 8B miss",
        with_model(gpuMemoryUtilization=0.7),
        "holds 24 GB (x0.70 = 16.8 GB)",
    ),
    (
        "tensor parallel above the node's GPUs",
        with_model(tensorParallelSize=2),
        "models[llama-8b].tensorParallelSize: 2 exceeds the 1 GPU(s) per g5.xlarge node in pool g5",
    ),
    ("tensor parallel not a power of two", with_model(tensorParallelSize=3), "models[llama-8b].tensorParallelSize: 3 is not a power of two"),
    ("tensor parallel above 8", with_model(tensorParallelSize=16), "16 is not a power of two from 1 to 8"),
    ("unknown pool", with_model(gpuPool="h100"), "models[llama-8b].gpuPool: 'h100' is not a pool in cluster.gpuNodePools (g5, g5x4, p4d)"),
    ("size not in the name", with_model(model="acme/house-model"), "models[llama-8b].parametersBillions: cannot read the size from 'acme/house-model'"),
    ("replicas min above max", with_model(replicas={"min": 3, "max": 2}), "models[llama-8b].replicas: min 3 is above max 2"),
    ("negative min replicas", with_model(replicas={"min": -1, "max": 2}), "models[llama-8b].replicas.min: Input should be greater than or equal to 0"),
    ("zero max model length", with_model(maxModelLen=0), "models[llama-8b].maxModelLen: Input should be greater than 0"),
    ("utilisation of 1", with_model(gpuMemoryUtilization=1.0), "models[llama-8b].gpuMemoryUtilization: Input should be less than 1, not the number 1.0"),
    ("model name not DNS-1035", with_model(name="Llama_8B"), "models[Llama_8B].name: 'Llama_8B' is not a DNS-1035 label"),
    ("model name starting with a digit", with_model(name="8b"), "'8b' is not a DNS-1035 label"),
    ("pool name not DNS-1123", with_pool(name="G5"), "cluster.gpuNodePools[G5].name: 'G5' is not a DNS-1123 label"),
    ("unknown instance type", with_pool(instanceTypes=["g6.xlarge"]), "unknown GPU instance type 'g6.xlarge'"),
    (
        "mixed GPU shapes in a pool",
        with_pool(instanceTypes=["g5.xlarge", "g5.12xlarge"]),
        "all types in one pool need the same GPU model and count, got g5.xlarge (1x A10G), g5.12xlarge (4x A10G)",
    ),
    ("pool minimum on Karpenter", with_pool(minSize=1), "cluster: gpuNodePools[g5].minSize 1: Karpenter keeps no idle minimum here"),
    ("image without tag", with_model(image="vllm/vllm-openai"), "models[llama-8b].image: 'vllm/vllm-openai' has no tag"),
    ("floating image", with_model(image="vllm/vllm-openai:latest"), "models[llama-8b].image: 'vllm/vllm-openai:latest' floats"),
    ("unknown quantization", with_model(quantization="int3"), "models[llama-8b].quantization: Input should be 'awq'"),
    ("misspelt key", with_model(tensorParalelSize=1), "models[llama-8b].tensorParalelSize: is not a known key"),
    ("missing model id", with_model(model=None), "models[llama-8b].model: must be a string, not null"),
    ("bad model source", with_model(model="llama"), "models[llama-8b].model: 'llama' is neither a Hugging Face id"),
    ("managed flag in extraArgs", with_model(extraArgs=["--port=9000"]), "models[llama-8b].extraArgs: --port is set by the platform"),
    ("--host in extraArgs", with_model(extraArgs=["--host", "0.0.0.0"]), "models[llama-8b].extraArgs: --host is set by the platform itself; remove it"),
    (
        "memory request above the node",
        with_model(resources={"cpu": "3", "memory": "64Gi"}),
        "models[llama-8b].resources.memory: 64Gi exceeds the 14367Mi a g5.xlarge in pool g5 can allocate",
    ),
    (
        "CPU request above the node",
        with_model(resources={"cpu": "8", "memory": "8Gi"}),
        "models[llama-8b].resources.cpu: 8 exceeds the 3320m CPU a g5.xlarge in pool g5 can allocate",
    ),
    (
        "tensor parallel memory below its /dev/shm",
        with_model(gpuPool="g5x4", tensorParallelSize=4, resources={"cpu": "8", "memory": "8Gi"}),
        "models[llama-8b].resources.memory: 8Gi is below the 20Gi tensorParallelSize 4 needs: the 8Gi memory-backed "
        "/dev/shm counts against the limit, and vLLM's 6 processes take 2Gi each; raise it to 20Gi or more",
    ),
    ("bad memory quantity", with_model(resources={"cpu": "3", "memory": "12GB"}), "'12GB' is not a memory quantity"),
    (
        "models of one pool above its maxSize at replicas.min",
        on_one_pool({"instanceTypes": ["g5.xlarge"], "maxSize": 2}, {"min": 1, "max": 2}, {"min": 2, "max": 2}),
        "cluster.gpuNodePools[shared].maxSize: 2, but its models at replicas.min need 3 g5.xlarge nodes",
    ),
    (
        "more replicas than the pool holds",
        with_model(replicas={"min": 1, "max": 6}),
        "models[llama-8b].replicas.max: 6 replicas of 1 GPU(s) need 6 g5.xlarge nodes, but pool g5 has maxSize 4",
    ),
    ("no autoscaler", with_model(autoscaling={"mode": "none"}), "models[llama-8b].autoscaling.mode: none is refused: the platform's policy gives every model an autoscaler"),
    ("quoted served name", with_model(servedModelName="team's llama"), "models[llama-8b].servedModelName: \"team's llama\" must be letters, digits"),
    ("platform namespace", base() | {"namespace": "keda"}, "namespace: 'keda' is where the platform runs"),
    ("HPA cannot reach zero", with_model(autoscaling={"mode": "hpa-cpu"}, replicas={"min": 0, "max": 2}), "an HPA cannot scale to 0"),
    ("unknown autoscaling mode", with_model(autoscaling={"mode": "vpa"}), "models[llama-8b].autoscaling.mode: Input should be 'keda' or 'hpa-cpu'"),
    ("bad namespace", base() | {"namespace": "Inference"}, "namespace: 'Inference' is not a DNS-1123 label"),
    ("no models", base() | {"models": []}, "models: List should have at least 1 item"),
    ("no cluster", {"models": base()["models"]}, "cluster: is required"),
    ("unsupported Kubernetes version", base() | {"cluster": base()["cluster"] | {"kubernetesVersion": "1.21"}}, "'1.21' is not a Kubernetes minor version"),
]


@pytest.mark.parametrize("raw, expected", [(raw, expected) for _, raw, expected in REJECTED], ids=[c for c, _, _ in REJECTED])
def test_rejected_config_names_key_and_numbers(raw: dict[str, Any], expected: str) -> None:
    found = problems(raw)
    assert any(expected in p for p in found), found


def test_duplicate_names_are_refused() -> None:
    raw = base()
    raw["models"].append(copy.deepcopy(raw["models"][0]))
    raw["cluster"]["gpuNodePools"].append(copy.deepcopy(raw["cluster"]["gpuNodePools"][0]))
    found = problems(raw)
    assert "models: name 'llama-8b' is used more than once" in found
    assert "cluster.gpuNodePools: name 'g5' is used more than once" in found
    assert any("servedModelName 'meta-llama/Llama-3.1-8B-Instruct' is served twice" in p for p in found)


def test_every_problem_is_reported_at_once() -> None:
    raw = with_model(tensorParallelSize=3, maxModelLen=-1, image="x:latest")
    assert len(problems(raw)) == 3


def test_error_text_is_one_block_without_traceback_noise() -> None:
    with pytest.raises(ConfigError) as error:
        plan_of(with_model(model="meta-llama/Llama-2-13b-chat-hf"))
    text = str(error.value)
    assert text.startswith("invalid vllm-platform stack config (1 problem):\n  - models[llama-8b]: needs ~26.0 GB")
    assert "Traceback" not in text and "pydantic" not in text


def test_pulumi_run_stops_with_one_clear_error() -> None:
    raw = with_model(model="meta-llama/Llama-2-13b-chat-hf")
    mocks.install("vllm-platform", "test", {f"vllm-platform:{k}": json.dumps(v) for k, v in raw.items()}, [])
    with pytest.raises(pulumi.RunError) as error:
        load_plan()
    assert str(error.value).startswith("invalid vllm-platform stack config (1 problem):\n  - models[llama-8b]: needs ~26.0 GB")


def test_pulumi_run_refuses_a_misspelt_top_level_key() -> None:
    # `clientNamespace` for `clientNamespaces`: silently ignored, it would deny every client.
    config = {f"vllm-platform:{k}": json.dumps(v) for k, v in base().items()}
    config["vllm-platform:clientNamespace"] = json.dumps(["apps"])
    config["vllm-platform:namespace"] = "inference"
    mocks.install("vllm-platform", "test", config, [])
    with pytest.raises(pulumi.RunError) as error:
        load_plan()
    assert "clientNamespace: is not a known key" in str(error.value)


def test_pulumi_run_reads_plain_and_structured_values() -> None:
    config = {f"vllm-platform:{k}": json.dumps(v) for k, v in base().items()}
    config |= {"vllm-platform:namespace": "serving", "vllm-platform:clientNamespaces": '["apps"]', "aws:region": "us-west-2"}
    mocks.install("vllm-platform", "test", config, [])
    plan = load_plan()
    assert plan.namespace == "serving" and plan.config.client_namespaces == ["apps"] and plan.config.hf_token is None


def test_hub_models_without_a_token_are_warned_about() -> None:
    cfg = plan_of(base()).config
    (note,) = token_notes(cfg)
    assert note.startswith("hfToken: not set, so meta-llama/Llama-3.1-8B-Instruct download anonymously")
    assert "pulumi config set --secret 'vllm-platform:hfToken'" in note
    with_token = parse_config({**base(), "hfToken": "hf_x"}, secret_paths={"hfToken"})
    assert token_notes(with_token) == []
    assert token_notes(plan_of(with_model(model="s3://acme-models/llama-8b/")).config) == []


def test_a_pool_of_several_types_holds_only_models_that_fit_the_smallest() -> None:
    """Karpenter may launch any type of the pool's list: a model that fits only the larger one is refused."""
    needs_more = {"cpu": "6", "memory": "24Gi"}
    mixed = with_model(resources=needs_more)
    mixed["cluster"]["gpuNodePools"][0]["instanceTypes"] = ["g5.xlarge", "g5.2xlarge"]
    assert problems(mixed) == [
        "models[llama-8b].resources.cpu: 6 exceeds the 3320m CPU a g5.xlarge in pool g5 can allocate to one pod; "
        "lower it or take g5.xlarge out of the pool's instanceTypes",
        "models[llama-8b].resources.memory: 24Gi exceeds the 14367Mi a g5.xlarge in pool g5 can allocate to one pod; "
        "lower it or take g5.xlarge out of the pool's instanceTypes",
    ]
    larger_only = copy.deepcopy(mixed)
    larger_only["cluster"]["gpuNodePools"][0]["instanceTypes"] = ["g5.2xlarge"]
    assert [p.instance_types for p in plan_of(larger_only).pools if p.name == "g5"] == [("g5.2xlarge",)]
