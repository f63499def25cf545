"""Fit math, size parsing, default resources and probe budgets."""

from __future__ import annotations

import pytest

from vllm_platform.catalog import INSTANCE_TYPES, allocatable_cpu_millis, allocatable_memory_mib
from vllm_platform.config import quantities
from vllm_platform.config.models import Quantization
from vllm_platform.plan import sizing


@pytest.mark.parametrize(
    "model_id, billions",
    [
        ("meta-llama/Llama-3.1-8B-Instruct", 8),
        ("meta-llama/Llama-3.3-70B-Instruct", 70),
        ("Qwen/Qwen2.5-0.5B-Instruct", 0.5),
        ("google/gemma-2-9b-it", 9),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", 56),
        ("Qwen/Qwen3-30B-A3B", 30),
        ("s3://models/llama-3.1-8b/", 8),
        ("acme/house-model", None),
        ("acme/bert-base-v2", None),
    ],
)
def test_parameters_are_read_from_the_id(model_id: str, billions: float | None) -> None:
    assert sizing.parameters_from_model_id(model_id) == billions


def test_weights_per_gpu_follow_bytes_and_tensor_parallel() -> None:
    assert sizing.weights_per_gpu_gb(8, None, 1) == 16
    assert sizing.weights_per_gpu_gb(70, None, 8) == 17.5
    assert sizing.weights_per_gpu_gb(8, "fp8", 1) == 8
    assert sizing.weights_per_gpu_gb(70, "awq", 4) == pytest.approx(70 * 0.6 / 4)


def test_gpu_fit_keeps_room_for_runtime_and_kv_cache() -> None:
    eight_b = sizing.gpu_fit(8, None, 1, gpu_memory_gb=24, utilization=0.9)
    assert eight_b.fits and eight_b.required_per_gpu_gb == pytest.approx(18.5)
    # 19.5 GB of weights alone is below 21.6 GB, but leaves no room for KV cache.
    tight = sizing.gpu_fit(9.75, None, 1, gpu_memory_gb=24, utilization=0.9)
    assert not tight.fits
    assert sizing.gpu_fit(70, None, 8, gpu_memory_gb=40, utilization=0.9).fits


def test_kv_cache_per_token_follows_the_reference_architectures() -> None:
    # Llama-3.1-8B: 32 layers x 8 KV heads x 128 dims, a key and a value of 2 bytes each.
    assert sizing.kv_cache_bytes_per_token(32, 8, 128) == 128 * 1024
    assert sizing.default_kv_cache_bytes_per_token(8) == 128 * 1024
    assert sizing.default_kv_cache_bytes_per_token(70) == 320 * 1024
    # Between references the next larger one counts: a 9B is estimated as a 14B (48 layers).
    assert sizing.default_kv_cache_bytes_per_token(9) == 192 * 1024
    assert sizing.default_kv_cache_bytes_per_token(0.5) == 128 * 1024
    assert sizing.default_kv_cache_bytes_per_token(1000) == sizing.default_kv_cache_bytes_per_token(405) == 504 * 1024


def test_gpu_fit_holds_one_full_sequence_of_kv_cache_per_gpu() -> None:
    full_context = sizing.sequence_kv_cache_gb(128 * 1024, 131072)
    assert full_context == pytest.approx(17.18, abs=0.01)
    one_a10g = sizing.gpu_fit(8, None, 1, gpu_memory_gb=24, utilization=0.9, sequence_kv_gb=full_context)
    assert one_a10g.weights_fit and not one_a10g.fits
    assert one_a10g.kv_room_per_gpu_gb == pytest.approx(4.1)
    # Tensor parallel splits the weights and the KV heads alike.
    two_a10g = sizing.gpu_fit(8, None, 2, gpu_memory_gb=24, utilization=0.9, sequence_kv_gb=full_context)
    assert two_a10g.fits and two_a10g.kv_cache_per_gpu_gb == pytest.approx(full_context / 2)
    # A short sequence still leaves the minimum KV cache to the weights.
    short = sizing.gpu_fit(9.75, None, 1, gpu_memory_gb=24, utilization=0.9, sequence_kv_gb=0.1)
    assert not short.fits and not short.weights_fit


def test_tokens_fitting_rounds_down_to_whole_thousands() -> None:
    assert sizing.tokens_fitting(4.1, 128 * 1024, 1) == 30720
    assert sizing.tokens_fitting(4.1, 128 * 1024, 2) == 62464
    assert sizing.sequence_kv_cache_gb(128 * 1024, 30720) <= 4.1 < sizing.sequence_kv_cache_gb(128 * 1024, 30720 + 1024)


def test_allocatable_is_below_capacity_and_holds_the_default_request() -> None:
    for instance in INSTANCE_TYPES.values():
        assert 0 < allocatable_cpu_millis(instance) < instance.vcpu * 1000
        assert 0 < allocatable_memory_mib(instance) < instance.memory_gib * 1024
        for tp in (1, 2, 4, 8):
            if tp <= instance.gpu_count:
                pod = sizing.default_resources(instance, tp)
                assert pod.cpu_millis <= allocatable_cpu_millis(instance)
                assert pod.memory_mib <= allocatable_memory_mib(instance)


def test_default_memory_holds_shm_wherever_tensor_parallel_is_possible() -> None:
    for instance in INSTANCE_TYPES.values():
        for tp in (tp for tp in (2, 4, 8) if tp <= instance.gpu_count):
            floor = sizing.tensor_parallel_memory_floor_mib(tp)
            assert sizing.default_resources(instance, tp).memory_mib >= floor, (instance.name, tp)
    assert sizing.tensor_parallel_memory_floor_mib(2) == 16 * 1024


def test_default_requests_pack_like_the_gpus() -> None:
    for instance in INSTANCE_TYPES.values():
        for tp in (tp for tp in (1, 2, 4, 8) if tp <= instance.gpu_count):
            pod = sizing.default_resources(instance, tp)
            assert sizing.replicas_per_node(instance, tp, pod) == instance.gpu_count // tp, (instance.name, tp)


def test_own_requests_can_leave_gpus_of_a_node_unused() -> None:
    g5_12 = INSTANCE_TYPES["g5.12xlarge"]
    assert sizing.replicas_per_node(g5_12, 1, sizing.PodResources(cpu_millis=4000, memory_mib=16 * 1024)) == 4
    assert sizing.replicas_per_node(g5_12, 1, sizing.PodResources(cpu_millis=4000, memory_mib=100 * 1024)) == 1
    assert sizing.replicas_per_node(g5_12, 1, sizing.PodResources(cpu_millis=20000, memory_mib=16 * 1024)) == 2
    assert sizing.nodes_for_replicas(5, 4) == 2 and sizing.nodes_for_replicas(0, 4) == 0


def test_default_resources_for_a_g5_xlarge() -> None:
    pod = sizing.default_resources(INSTANCE_TYPES["g5.xlarge"], 1)
    assert (pod.cpu_millis, pod.memory_mib) == (3000, 12 * 1024)


@pytest.mark.parametrize("text, millis", [("3", 3000), ("500m", 500), ("2.5", 2500)])
def test_cpu_quantities(text: str, millis: int) -> None:
    assert quantities.cpu_millis(text) == millis


@pytest.mark.parametrize("text, mib", [("12Gi", 12288), ("512Mi", 512), ("1G", 954), ("1073741824", 1024)])
def test_memory_quantities(text: str, mib: int) -> None:
    assert quantities.memory_mib(text) == mib


@pytest.mark.parametrize("bad", ["3 cores", "-1", "12GB", ""])
def test_bad_memory_quantities_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a memory quantity"):
        quantities.memory_mib(bad)


@pytest.mark.parametrize("bad", ["3 cores", "-1", "2Gi", "500u", "1.5.0", ""])
def test_bad_cpu_quantities_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a CPU quantity"):
        quantities.cpu_millis(bad)


def test_every_quantization_has_its_bytes_per_parameter() -> None:
    """A new quantization in the config must come with its size, or every fit check of it would raise."""
    assert set(sizing.BYTES_PER_PARAMETER) == {None, *Quantization}
