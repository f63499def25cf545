"""The pure builders of a model's manifests, from its plan, without Pulumi."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from tests.conftest import plan_of
from tests.test_config import base
from vllm_platform.contract import MONITOR_SELECTOR_LABELS
from vllm_platform.k8s import autoscaling, monitoring, network, probes, workload
from vllm_platform.pins import SIMULATOR_IMAGE
from vllm_platform.plan import coldstart, resolve, sizing
from vllm_platform.plan.plans import ModelPlan, Plan
from vllm_platform.plan.serving import MODEL_CACHE_PATH


def config(**model_fields: Any) -> tuple[Plan, ModelPlan]:
    raw = base()
    raw["models"][0].update(model_fields)
    plan = plan_of(raw)
    return plan, plan.models[0]


def container(cfg: Plan, model: ModelPlan, hf_token: bool = True) -> dict[str, Any]:
    return workload.deployment(model, hf_token)["spec"]["template"]["spec"]["containers"][0]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_args_carry_the_model_and_serving_flags() -> None:
    cfg, model = config(quantization="awq", model="hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4",
                        maxModelLen=8192, gpuMemoryUtilization=0.85, extraArgs=["--enable-prefix-caching"])
    args = container(cfg, model)["args"]
    assert args[:2] == ["--model", "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"]
    assert flag(args, "--served-model-name") == model.source
    assert flag(args, "--port") == "8000"
    assert flag(args, "--tensor-parallel-size") == "1"
    assert flag(args, "--quantization") == "awq"
    assert flag(args, "--max-model-len") == "8192"
    assert flag(args, "--gpu-memory-utilization") == "0.85"
    assert flag(args, "--download-dir") == MODEL_CACHE_PATH
    assert flag(args, "--shutdown-timeout") == "60"
    assert args[-1] == "--enable-prefix-caching"


def test_optional_flags_are_left_to_vllm_when_unset() -> None:
    cfg, model = config()
    args = list(model.args)
    for absent in ("--quantization", "--gpu-memory-utilization", "--load-format"):
        assert absent not in args


def test_an_unset_context_length_is_fitted_to_the_kv_cache() -> None:
    """An 8B model's own 128k context needs ~16 GB of KV cache: on an A10G vLLM would refuse to start."""
    cfg, model = config()
    assert flag(list(model.args), "--max-model-len") == "auto"


def test_s3_models_stream_with_run_ai() -> None:
    cfg, model = config(model="s3://acme-models/llama-3.1-8b-instruct")
    assert flag(list(model.args), "--load-format") == "runai_streamer"
    # A format of the user's own, in any spelling vLLM reads, is theirs alone.
    cfg, model = config(model="s3://acme-models/llama-3.1-8b-instruct", extraArgs=["--load_format=safetensors"])
    assert "runai_streamer" not in list(model.args)


def test_gpus_placement_and_shm_follow_tensor_parallel() -> None:
    cfg, model = config(gpuPool="g5x4", tensorParallelSize=4, model="meta-llama/Llama-3.1-8B-Instruct")
    deployment = workload.deployment(model, hf_token=False)
    pod = deployment["spec"]["template"]["spec"]
    main = pod["containers"][0]
    assert main["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert main["resources"]["requests"]["nvidia.com/gpu"] == "4"
    assert pod["nodeSelector"] == {"gpu-pool": "g5x4"}
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in pod["tolerations"]
    shm = [v for v in pod["volumes"] if v["name"] == "dshm"]
    assert shm == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in main["volumeMounts"]


def test_single_gpu_needs_no_shared_memory_volume() -> None:
    cfg, model = config()
    assert all(v["name"] != "dshm" for v in workload.deployment(model, False)["spec"]["template"]["spec"]["volumes"])


def test_hf_token_is_a_mounted_secret_file_never_an_env_value() -> None:
    cfg, model = config()
    main = container(cfg, model)
    env = {e["name"]: e for e in main["env"]}
    assert env["HF_TOKEN_PATH"] == {"name": "HF_TOKEN_PATH", "value": "/var/run/secrets/huggingface/token"}
    assert "HF_TOKEN" not in env
    assert {"name": "hf-token", "mountPath": "/var/run/secrets/huggingface", "readOnly": True} in main["volumeMounts"]
    volumes = workload.deployment(model, hf_token=True)["spec"]["template"]["spec"]["volumes"]
    [token] = [v for v in volumes if v["name"] == "hf-token"]
    assert token["secret"]["secretName"] == "hf-token" and token["secret"]["items"] == [{"key": "token", "path": "token"}]
    without = container(cfg, model, hf_token=False)
    assert "HF_TOKEN_PATH" not in {e["name"] for e in without["env"]}
    assert "hf-token" not in {m["name"] for m in without["volumeMounts"]}


def test_probes_know_when_the_model_is_loaded() -> None:
    cfg, model = config()
    main = container(cfg, model)
    startup, ready, live = main["startupProbe"], main["readinessProbe"], main["livenessProbe"]
    assert startup["httpGet"] == {"path": "/v1/models", "port": "http"}
    assert ready["httpGet"] == {"path": "/v1/models", "port": "http"}
    assert live["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["periodSeconds"] <= 10 and ready["periodSeconds"] == 5
    assert startup["periodSeconds"] * startup["failureThreshold"] >= model.startup_budget_seconds
    assert main["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]


def test_startup_budget_override() -> None:
    cfg, model = config(startupTimeoutSeconds=1800)
    assert container(cfg, model)["startupProbe"]["failureThreshold"] == 180


def test_drain_covers_pre_stop_and_shutdown_timeout() -> None:
    cfg, model = config(shutdownTimeoutSeconds=120)
    pod = workload.deployment(model, False)["spec"]["template"]["spec"]
    main = pod["containers"][0]
    pre_stop = main["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert flag(main["args"], "--shutdown-timeout") == "120"
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + 120


def test_replicas_are_left_to_the_autoscaler() -> None:
    cfg, model = config()
    # The autoscaler sets them; a value here would undo its work on every `pulumi up`.
    assert "replicas" not in workload.deployment(model, False)["spec"]


def test_a_rollout_wave_is_a_drain_plus_a_node_scale_up_and_startup() -> None:
    cfg, model = config()
    deployment = workload.deployment(model, False)
    assert model.cold_start is not None
    assert model.cold_start_seconds == coldstart.with_safety(model.cold_start.cold_seconds) > model.startup_budget_seconds
    assert deployment["spec"]["progressDeadlineSeconds"] == model.termination_grace_seconds + model.cold_start_seconds


def test_pulumi_leaves_the_rollout_to_the_rollouts_resource_and_waits_for_the_drain_on_delete() -> None:
    cfg, model = config()
    annotations = workload.deployment(model, False)["metadata"]["annotations"]
    # Pulumi's own await would wait on a stalled rollout to its timeout; waitFor (unlike skipAwait) keeps the delete's.
    assert annotations["pulumi.com/waitFor"] == "jsonpath={.metadata.uid}"
    assert "pulumi.com/skipAwait" not in annotations
    assert int(annotations["pulumi.com/timeoutSeconds"]) > model.termination_grace_seconds


@pytest.mark.parametrize("max_replicas, surge", [(3, 1), (4, 0)])  # pool g5: maxSize 4, one GPU per node
def test_a_rollout_is_given_every_replica_in_turn(max_replicas: int, surge: int) -> None:
    cfg, model = config(replicas={"min": 1, "max": max_replicas})
    deployment = workload.deployment(model, False)
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == surge
    wave = model.termination_grace_seconds + model.cold_start_seconds
    assert model.rollout_timeout_seconds == max_replicas * wave
    # The deadline is for one wave: each replica made ready restarts it.
    assert deployment["spec"]["progressDeadlineSeconds"] == wave


def test_hardened_security_context() -> None:
    cfg, model = config()
    pod = workload.deployment(model, False)["spec"]["template"]["spec"]
    main = pod["containers"][0]["securityContext"]
    assert main["allowPrivilegeEscalation"] is False and main["readOnlyRootFilesystem"] is True
    assert main["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    writable = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {"/tmp", workload.HOME_PATH, MODEL_CACHE_PATH} <= writable


def test_resources_default_from_the_instance_and_limits_match() -> None:
    cfg, model = config()
    resources = container(cfg, model)["resources"]
    assert resources["requests"]["cpu"] == "3" and resources["requests"]["memory"] == "12Gi"
    assert resources["limits"]["cpu"] == "3" and resources["limits"]["memory"] == "12Gi"
    cfg, model = config(resources={"cpu": "2500m", "memory": "10Gi"})
    assert container(cfg, model)["resources"]["requests"]["cpu"] == "2500m"


def test_scaled_object_queries_the_served_name_queue() -> None:
    cfg, model = config(servedModelName="llama", replicas={"min": 1, "max": 4}, autoscaling={"queueDepthPerReplica": 7})
    spec = autoscaling.scaled_object(model, "http://prom:9090", "unused:9090")["spec"]
    trigger = spec["triggers"][0]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"] == {
        "serverAddress": "http://prom:9090",
        "query": 'sum(vllm:num_requests_waiting{namespace="inference",model_name="llama"})',
        "threshold": "7",
        # A model with replicas always has the series: an empty answer is a broken scrape, an error...
        "ignoreNullValues": "false",
    }
    # ... after which the fallback holds what it has, at least replicas.min, instead of shrinking.
    assert spec["fallback"] == {"failureThreshold": 4, "replicas": 1, "behavior": "currentReplicasIfHigher"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 4)
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] < behavior["scaleDown"]["stabilizationWindowSeconds"]


def test_a_model_at_zero_is_woken_by_the_interceptor_and_keeps_its_queue_trigger() -> None:
    cfg, model = config(replicas={"min": 0, "max": 4}, autoscaling={"scaleToZeroAfterSeconds": 1200, "concurrencyPerReplica": 16})
    spec = autoscaling.scaled_object(model, "http://prom:9090", "scaler.keda:9090")["spec"]
    assert [t["type"] for t in spec["triggers"]] == ["prometheus", "external-push"]
    assert spec["triggers"][1]["metadata"] == {"scalerAddress": "scaler.keda:9090", "interceptorRoute": "llama-8b"}
    assert (spec["minReplicaCount"], spec["cooldownPeriod"]) == (0, 1200)
    # At zero there is no series by design: an empty answer is a queue of 0, and no fallback holds it up.
    assert spec["triggers"][0]["metadata"]["ignoreNullValues"] == "true" and "fallback" not in spec
    route = autoscaling.interceptor_route(model)["spec"]
    assert route["scalingMetric"] == {"concurrency": {"targetValue": 16}}
    assert route["target"] == {"service": "llama-8b-backend", "port": 8000}
    assert route["rules"] == [{"hosts": [
        "llama-8b", "llama-8b.inference", "llama-8b.inference.svc", "llama-8b.inference.svc.cluster.local"
    ]}]  # fmt: skip
    assert workload.service(model)["metadata"]["name"] == "llama-8b-backend"
    entry = workload.interceptor_entry_service(model, "proxy.keda.svc.cluster.local")
    assert entry["metadata"]["name"] == "llama-8b" and entry["spec"]["externalName"] == "proxy.keda.svc.cluster.local"
    # The ServiceMonitor scrapes the pods' Service, never the entry point.
    selector = monitoring.service_monitor(cfg, model)["spec"]["selector"]["matchLabels"]
    assert selector.items() <= workload.service(model)["metadata"]["labels"].items()
    assert not selector.items() <= entry["metadata"]["labels"].items()


def test_a_model_with_replicas_keeps_its_own_service() -> None:
    cfg, model = config(replicas={"min": 1, "max": 4})
    assert workload.service(model)["metadata"]["name"] == "llama-8b"
    assert "cooldownPeriod" not in autoscaling.scaled_object(model, "u", "s")["spec"]


def test_rollouts_surge_only_where_the_pool_has_a_node_for_it() -> None:
    cfg, model = config(replicas={"min": 1, "max": 3})
    assert model.rolling_update.manifest() == {"maxSurge": 1, "maxUnavailable": 0}
    cfg, model = config(replicas={"min": 1, "max": 4})  # pool g5: maxSize 4, one GPU per node
    strategy = workload.deployment(model, False)["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert list(cfg.notes) == [
        "models[llama-8b]: pool g5 (maxSize 4) has no node left for an extra replica at replicas.max 4, so a "
        "rollout replaces one replica at a time; raise the pool's maxSize for surge rollouts"
    ]


def test_hpa_mode_targets_cpu() -> None:
    cfg, model = config(autoscaling={"mode": "hpa-cpu", "targetCpuUtilizationPercent": 60})
    spec = autoscaling.horizontal_pod_autoscaler(model)["spec"]
    assert spec["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-8b"}


def test_service_monitor_and_service_share_the_selector() -> None:
    cfg, model = config()
    service = workload.service(model)
    monitor = monitoring.service_monitor(cfg, model)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert MONITOR_SELECTOR_LABELS.items() <= monitor["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["port"] == 8000
    assert workload.service_url(model) == "http://llama-8b.inference.svc.cluster.local:8000"


def test_pdb_never_blocks_a_drain_on_an_unready_pod() -> None:
    cfg, model = config()
    spec = workload.pod_disruption_budget(model)["spec"]
    assert spec["maxUnavailable"] == 1 and spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def simulated(**model_fields: Any) -> tuple[Plan, ModelPlan]:
    raw = base()
    raw["models"][0].update(model_fields)
    raw["simulateAccelerators"] = True
    cfg = plan_of(raw)
    return cfg, cfg.models[0]


def test_simulated_model_has_no_gpu_and_no_gpu_placement() -> None:
    cfg, model = simulated(model="meta-llama/Llama-3.3-70B-Instruct", tensorParallelSize=8)
    pod = workload.deployment(model, hf_token=True)["spec"]["template"]["spec"]
    main = pod["containers"][0]
    assert main["image"] == SIMULATOR_IMAGE
    assert "nvidia.com/gpu" not in main["resources"]["limits"]
    assert "nvidia.com/gpu" not in main["resources"]["requests"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert all(v["name"] != "dshm" for v in pod["volumes"])


def test_simulated_model_keeps_the_serving_surface() -> None:
    cfg, model = simulated(servedModelName="llama")
    real_cfg, real_model = config(servedModelName="llama")
    sim, real = workload.deployment(model, False), workload.deployment(real_model, False)
    sim_main = sim["spec"]["template"]["spec"]["containers"][0]
    real_main = real["spec"]["template"]["spec"]["containers"][0]
    for key in ("name", "ports", "readinessProbe", "livenessProbe", "lifecycle", "securityContext"):
        assert sim_main[key] == real_main[key], key
    assert sim_main["startupProbe"]["httpGet"] == real_main["startupProbe"]["httpGet"]
    assert sim["metadata"]["labels"] == real["metadata"]["labels"]
    assert workload.service(model) == workload.service(real_model)
    assert monitoring.service_monitor(cfg, model) == monitoring.service_monitor(real_cfg, real_model)
    assert autoscaling.scaled_object(model, "u", "s") == autoscaling.scaled_object(real_model, "u", "s")


def test_simulator_mimics_the_configured_model() -> None:
    cfg, model = simulated(servedModelName="llama", maxModelLen=4096)
    command = workload.deployment(model, False)["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["/bin/sh", "-c"]
    wait, _, serve = command[2].partition("; exec ")
    # Closed port while "loading"; SIGTERM ends the wait at once; the simulator then replaces the shell.
    assert wait == "trap 'exit 143' TERM; sleep 9 & wait $!"
    argv = shlex.split(serve)
    assert argv == [workload.SIMULATOR_BINARY, *list(model.args)]
    for flag_, value in (("--served-model-name", "llama"), ("--port", "8000"), ("--max-model-len", "4096"), ("--time-to-first-token", "72ms")):
        assert argv[argv.index(flag_) + 1] == value
    startup = probes.startup_probe(model)
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 9


def test_simulation_per_model_skips_fit_checks_and_says_so() -> None:
    raw = base()
    raw["models"][0].update({"model": "meta-llama/Llama-3.3-70B-Instruct", "simulate": True, "revision": "6" * 40})
    raw["models"][0].pop("gpuPool")
    cfg = plan_of(raw)
    assert list(cfg.notes) == [
        "models[llama-8b]: simulated with llm-d-inference-sim, no GPU and no weights; the GPU and node fit checks, the "
        "model cache and its staging are skipped"
    ]
    (model,) = cfg.models
    assert model.weights.staging is None and not model.weights.streams and model.cold_start is None
    raw["models"][0].update({"simulate": False, "gpuPool": "p4d", "tensorParallelSize": 8})
    assert plan_of(raw).models[0].weights.staging is not None, "the same model on GPUs is staged"


def test_a_simulated_model_takes_the_resources_it_is_given() -> None:
    raw = base()
    raw["models"][0].update({"simulate": True})
    assert plan_of(raw).models[0].resources == resolve.SIMULATOR_RESOURCES, "the simulator's own needs, unless told"
    raw["models"][0]["resources"] = {"cpu": "2", "memory": "4Gi"}
    assert plan_of(raw).models[0].resources == sizing.PodResources(cpu_millis=2000, memory_mib=4096)


def test_network_policies_deny_by_default_and_open_only_the_serving_port() -> None:
    raw = base()
    raw["clientNamespaces"] = ["apps", "gateway"]
    cfg = plan_of(raw)
    deny, allow = network.network_policies(cfg)
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    rule = allow["spec"]["ingress"][0]
    assert rule["ports"] == [{"port": 8000, "protocol": "TCP"}]
    selector = rule["from"][0]["namespaceSelector"]["matchExpressions"][0]
    assert selector["values"] == ["apps", "gateway", "monitoring"]
    assert allow["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "vllm"}


def test_scanner_skips_are_specific_and_only_where_needed() -> None:
    cfg, model = config()
    annotations = workload.deployment(model, hf_token=True)["metadata"]["annotations"]
    assert annotations["checkov.io/skip1"].startswith("CKV_K8S_43=pinned to release tag v")
    assert annotations["checkov.io/skip2"] == workload.PULL_POLICY_SKIP
    # The token is a mounted file, so checkov's "secrets as environment variables" has nothing to skip.
    assert [k for k in annotations if k.startswith("checkov.io/")] == ["checkov.io/skip1", "checkov.io/skip2"]
    cfg, model = config(image="vllm/vllm-openai@sha256:" + "0" * 64)
    annotations = workload.deployment(model, hf_token=False)["metadata"]["annotations"]
    assert {k: v for k, v in annotations.items() if k.startswith("checkov.io/")} == {"checkov.io/skip1": workload.PULL_POLICY_SKIP}


def test_an_external_prometheus_is_admitted_from_the_namespace_its_url_names() -> None:
    raw = base()
    raw["observability"] = {"enabled": False, "externalPrometheusUrl": "http://prometheus.shared.svc:9090"}
    cfg = plan_of(raw)
    assert cfg.config.observability.scraper_namespaces == ["shared"]
    _, allow = network.network_policies(cfg)
    [peer] = allow["spec"]["ingress"][0]["from"]
    assert peer["namespaceSelector"]["matchExpressions"][0]["values"] == ["shared"]
    assert not cfg.config.observability.creates_service_monitors
    raw["observability"] |= {"scrapeNamespaces": ["agents"], "serviceMonitors": True}
    cfg = plan_of(raw)
    assert cfg.config.observability.scraper_namespaces == ["agents"] and cfg.config.observability.creates_service_monitors


def test_the_model_monitor_scrapes_at_the_configured_interval() -> None:
    raw = base()
    raw["observability"] = {"prometheus": {"scrapeInterval": "30s"}}
    cfg = plan_of(raw)
    [endpoint] = monitoring.service_monitor(cfg, cfg.models[0])["spec"]["endpoints"]
    assert endpoint["interval"] == "30s"
