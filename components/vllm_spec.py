"""Pure builders: one validated model config in, the Kubernetes manifests that serve it out.

Every function returns a plain, apply-ready manifest dict with camelCase keys. Pulumi resources are
made from these in `vllm_model.py`; tests and the policy pack read them without Pulumi.
"""

from __future__ import annotations

import math
import shlex
from typing import Any

from components import sizing
from components import vllm_args as vllm_flags
from components.config import (
    BACKEND_SERVICE_SUFFIX,
    KEDA_NAMESPACE,
    MONITORING_NAMESPACE,
    SERVING_PORT,
    Model,
    PlatformConfig,
)

PART_OF = "vllm-platform"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_POOL_LABEL = "gpu-pool"
# Every node of a GPU pool carries this label too; the GPU DaemonSets select on it.
NODE_TYPE_LABEL = "node-type"
GPU_NODE_SELECTOR = {NODE_TYPE_LABEL: "gpu"}
HF_TOKEN_SECRET = "hf-token"
HF_TOKEN_SECRET_KEY = "token"
HF_TOKEN_DIR = "/var/run/secrets/huggingface"

# Prometheus selects ServiceMonitors and PodMonitors carrying this label; see observability.py.
MONITOR_SELECTOR_LABELS = {"app.kubernetes.io/part-of": PART_OF}

# kube-prometheus-stack's release; fullnameOverride makes it the prefix of the Prometheus Service's name.
PROMETHEUS_RELEASE = "kube-prometheus-stack"
PROMETHEUS_PORT = 9090

MODEL_CACHE_PATH = "/models-cache"
HOME_PATH = "/home/vllm"
SHM_PATH = "/dev/shm"
SHM_SIZE = sizing.format_memory(sizing.SHM_MIB)
# Any UID without a passwd entry works once USER and HOME are set; above 10000 to stay clear of host users.
RUN_AS_UID = 10001

# Long enough for the endpoints controller and kube-proxy on every node to stop routing to the pod
# before vLLM stops accepting connections.
PRESTOP_SLEEP_SECONDS = 10
TERMINATION_MARGIN_SECONDS = 5

READINESS_PERIOD_SECONDS = 5
LIVENESS_PERIOD_SECONDS = 10
PROBE_TIMEOUT_SECONDS = 5
# /health fails once the engine process is dead, but an API server busy with a burst can also answer it
# late; a restart costs a full reload, so only a minute of failures counts.
LIVENESS_FAILURE_THRESHOLD = 6

# Serving is expensive to start: add capacity at once, give it back slowly.
SCALE_UP_BEHAVIOR = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 60},
        {"type": "Percent", "value": 100, "periodSeconds": 60},
    ],
}
SCALE_DOWN_BEHAVIOR = {
    "stabilizationWindowSeconds": 600,
    "selectPolicy": "Min",
    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}],
}
KEDA_POLLING_INTERVAL_SECONDS = 15
# What OpenAI clients wait by default: a long non-streamed generation must not be cut off sooner.
INTERCEPTOR_RESPONSE_HEADER_TIMEOUT = "600s"

# llm-d's vLLM simulator: the same OpenAI API, probes and vllm: metrics, without a GPU.
SIMULATOR_IMAGE = "ghcr.io/llm-d/llm-d-inference-sim:v0.10.2"
SIMULATOR_BINARY = "/app/llm-d-inference-sim"
SIMULATOR_CPU = "250m"
SIMULATOR_MEMORY = "256Mi"


def prometheus_url(release: str = PROMETHEUS_RELEASE, namespace: str = MONITORING_NAMESPACE) -> str:
    """The in-cluster address of kube-prometheus-stack's Prometheus Service, `<fullname>-prometheus`."""
    return f"http://{release}-prometheus.{namespace}.svc.cluster.local:{PROMETHEUS_PORT}"


def labels(model: Model, component: str = "inference") -> dict[str, str]:
    return {
        **selector_labels(model),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": "pulumi",
    }


def selector_labels(model: Model) -> dict[str, str]:
    return {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": model.name}


def _metadata(cfg: PlatformConfig, model: Model, **extra: Any) -> dict[str, Any]:
    return {"name": model.name, "namespace": cfg.namespace, "labels": labels(model), **extra}


def namespace(cfg: PlatformConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": cfg.namespace,
            "labels": {
                "app.kubernetes.io/part-of": PART_OF,
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }


def network_policies(cfg: PlatformConfig) -> list[dict[str, Any]]:
    """Deny all ingress in the namespace, then open the serving port to clients and to Prometheus only."""
    metadata = {"namespace": cfg.namespace, "labels": {"app.kubernetes.io/part-of": PART_OF}}
    interceptor = [KEDA_NAMESPACE] if cfg.any_scales_to_zero else []
    allowed = sorted({*cfg.client_namespaces, *cfg.observability.scraper_namespaces, *interceptor})
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {**metadata, "name": "default-deny-ingress"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {**metadata, "name": "allow-serving-port"},
            "spec": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "vllm"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchExpressions": [
                                        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": allowed}
                                    ]
                                }
                            }
                        ],
                        "ports": [{"port": SERVING_PORT, "protocol": "TCP"}],
                    }
                ],
            },
        },
    ]


def hf_token_secret_metadata(cfg: PlatformConfig) -> dict[str, Any]:
    return {"name": HF_TOKEN_SECRET, "namespace": cfg.namespace, "labels": {"app.kubernetes.io/part-of": PART_OF}}


def vllm_args(cfg: PlatformConfig, model: Model) -> list[str]:
    args = [
        "--model", model.model,
        "--served-model-name", model.effective_served_name,
        "--port", str(SERVING_PORT),
        "--tensor-parallel-size", str(model.tensor_parallel_size),
        "--download-dir", MODEL_CACHE_PATH,
        "--shutdown-timeout", str(model.shutdown_timeout_seconds),
    ]  # fmt: skip
    if model.quantization:
        args += ["--quantization", model.quantization]
    # Unset, vLLM would take the checkpoint's full context (128k for Llama 3.1), refuse to start when one
    # such sequence does not fit the KV cache, and crash-loop; `auto` fits the context to the memory there is.
    args += ["--max-model-len", str(model.max_model_len) if model.max_model_len else "auto"]
    if model.gpu_memory_utilization:
        args += ["--gpu-memory-utilization", f"{model.gpu_memory_utilization:g}"]
    if model.model.startswith("s3://") and vllm_flags.value(model.extra_args, "--load-format") is None:
        args += ["--load-format", "runai_streamer"]
    return args + list(model.extra_args)


def container_resources(cfg: PlatformConfig, model: Model) -> dict[str, Any]:
    pod = cfg.pod_resources(model)
    params = model.effective_parameters_billions or 0
    cache_gib = sizing.model_cache_gib(params, model.quantization)
    compute = {"cpu": sizing.format_cpu(pod.cpu_millis), "memory": sizing.format_memory(pod.memory_mib)}
    gpus = {GPU_RESOURCE: str(model.tensor_parallel_size)}
    # Limits equal requests: a Guaranteed pod is the last to be evicted under node pressure.
    return {
        "requests": {**compute, **gpus, "ephemeral-storage": f"{cache_gib}Gi"},
        "limits": {**compute, **gpus},
    }


def startup_probe(cfg: PlatformConfig, model: Model) -> dict[str, Any]:
    budget = cfg.startup_budget_seconds(model)
    period = sizing.STARTUP_PROBE_PERIOD_SECONDS
    return {
        "httpGet": {"path": "/v1/models", "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
        "failureThreshold": math.ceil(budget / period),
    }


def readiness_probe() -> dict[str, Any]:
    return {
        "httpGet": {"path": "/v1/models", "port": "http"},
        "periodSeconds": READINESS_PERIOD_SECONDS,
        "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
        "failureThreshold": 3,
    }


def liveness_probe() -> dict[str, Any]:
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": LIVENESS_PERIOD_SECONDS,
        "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
        "failureThreshold": LIVENESS_FAILURE_THRESHOLD,
    }


def termination_grace_seconds(model: Model) -> int:
    return PRESTOP_SLEEP_SECONDS + model.shutdown_timeout_seconds + TERMINATION_MARGIN_SECONDS


def cold_start_seconds(cfg: PlatformConfig, model: Model) -> int:
    """How long one new pod may take to serve: a GPU node from zero, then the model's startup budget."""
    return sizing.NODE_PROVISIONING_SECONDS + cfg.startup_budget_seconds(model)


def rollout_wave_seconds(cfg: PlatformConfig, model: Model) -> int:
    """One step of a rolling update: an old replica drains and frees its GPU, a new one cold-starts."""
    return termination_grace_seconds(model) + cold_start_seconds(cfg, model)


def rollout_timeout_seconds(cfg: PlatformConfig, model: Model) -> int:
    """How long `pulumi up` waits for the Deployment: every wave of the rolling update, one after another.

    At replicas.max, since the autoscaler may hold the model there when a rollout comes.
    """
    step = rolling_update(cfg, model)
    waves = math.ceil(model.replicas.max / max(step["maxSurge"], step["maxUnavailable"]))
    return waves * rollout_wave_seconds(cfg, model)


def _env(hf_token: bool) -> list[dict[str, Any]]:
    env = [
        {"name": "HOME", "value": HOME_PATH},
        # torch and triton ask getpass for a user name, which fails for a UID without a passwd entry.
        {"name": "USER", "value": "vllm"},
        {"name": "HF_HOME", "value": f"{MODEL_CACHE_PATH}/huggingface"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        {"name": "DO_NOT_TRACK", "value": "1"},
    ]
    if hf_token:
        # huggingface_hub reads the token from this file: a mounted Secret stays out of the process
        # environment, which crash reports and `/proc/<pid>/environ` would show.
        env.append({"name": "HF_TOKEN_PATH", "value": f"{HF_TOKEN_DIR}/{HF_TOKEN_SECRET_KEY}"})
    return env


def _volumes(cfg: PlatformConfig, model: Model, hf_token: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if cfg.is_simulated(model):
        return [{"name": "tmp", "emptyDir": {}}], [{"name": "tmp", "mountPath": "/tmp"}]
    volumes = [
        {"name": "model-cache", "emptyDir": {}},
        {"name": "home", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts = [
        {"name": "model-cache", "mountPath": MODEL_CACHE_PATH},
        {"name": "home", "mountPath": HOME_PATH},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if model.tensor_parallel_size > 1:
        # NCCL exchanges tensors between the TP workers through shared memory; the runtime's 64 MiB is far too small.
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}})
        mounts.append({"name": "dshm", "mountPath": SHM_PATH})
    if hf_token:
        # Group-readable: the pod's fsGroup owns the projected file, not the user.
        items = [{"key": HF_TOKEN_SECRET_KEY, "path": HF_TOKEN_SECRET_KEY}]
        volumes.append({"name": "hf-token", "secret": {"secretName": HF_TOKEN_SECRET, "items": items, "defaultMode": 0o440}})
        mounts.append({"name": "hf-token", "mountPath": HF_TOKEN_DIR, "readOnly": True})
    return volumes, mounts


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_UID,
        "runAsGroup": RUN_AS_UID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_UID,
        "runAsGroup": RUN_AS_UID,
        "fsGroup": RUN_AS_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def vllm_container(cfg: PlatformConfig, model: Model, hf_token: bool) -> dict[str, Any]:
    _, mounts = _volumes(cfg, model, hf_token)
    return {
        "name": "vllm",
        "image": model.image,
        "imagePullPolicy": "Always",
        "command": ["vllm", "serve"],
        "args": vllm_args(cfg, model),
        "ports": [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
        "env": _env(hf_token),
        "resources": container_resources(cfg, model),
        "volumeMounts": mounts,
        "startupProbe": startup_probe(cfg, model),
        "readinessProbe": readiness_probe(),
        "livenessProbe": liveness_probe(),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "securityContext": container_security_context(),
    }


def simulator_args(cfg: PlatformConfig, model: Model) -> list[str]:
    """Flags that make the simulator answer like the configured model: its served name, context and latency."""
    timing = sizing.simulated_timing(model.effective_parameters_billions, model.tensor_parallel_size)
    # A name the simulator cannot find on the hub keeps it from downloading a tokenizer at start.
    args = [
        "--model", f"simulated-{model.name}",
        "--served-model-name", model.effective_served_name,
        "--port", str(SERVING_PORT),
        "--mode", "random",
        "--time-to-first-token", f"{timing.time_to_first_token_ms}ms",
        "--inter-token-latency", f"{timing.inter_token_latency_ms}ms",
    ]  # fmt: skip
    if model.max_model_len:
        args += ["--max-model-len", str(model.max_model_len)]
    return args


def simulator_container(cfg: PlatformConfig, model: Model) -> dict[str, Any]:
    timing = sizing.simulated_timing(model.effective_parameters_billions, model.tensor_parallel_size)
    # vLLM refuses connections until loaded; the simulator's --startup-duration only turns /health/ready
    # to 503 and leaves /health and /v1/models answering. Holding the port closed instead exercises the
    # startup probe and pulumi's await as vLLM would. The trap lets a pod deleted mid-load stop at once:
    # as PID 1, sh would otherwise ignore SIGTERM for the whole grace period.
    serve = shlex.join([SIMULATOR_BINARY, *simulator_args(cfg, model)])
    command = f"trap 'exit 143' TERM; sleep {timing.load_seconds} & wait $!; exec {serve}"
    _, mounts = _volumes(cfg, model, hf_token=False)
    compute = {"cpu": SIMULATOR_CPU, "memory": SIMULATOR_MEMORY}
    return {
        "name": "vllm",
        "image": SIMULATOR_IMAGE,
        "imagePullPolicy": "Always",
        "command": ["/bin/sh", "-c", command],
        "ports": [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
        "resources": {"requests": compute, "limits": compute},
        "volumeMounts": mounts,
        "startupProbe": startup_probe(cfg, model),
        "readinessProbe": readiness_probe(),
        "livenessProbe": liveness_probe(),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "securityContext": container_security_context(),
    }


def _topology_spread(model: Model) -> list[dict[str, Any]]:
    # ScheduleAnyway: a GPU pod that cannot be spread must still run rather than wait for a perfect node.
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector_labels(model)},
        }
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]


def _placement(cfg: PlatformConfig, model: Model) -> dict[str, Any]:
    if cfg.is_simulated(model):
        return {}
    return {
        "nodeSelector": {GPU_POOL_LABEL: cfg.pool_of(model).name},
        "tolerations": [{"key": GPU_TAINT_KEY, "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
    }


def deployment(cfg: PlatformConfig, model: Model, hf_token: bool) -> dict[str, Any]:
    volumes, _ = _volumes(cfg, model, hf_token)
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(model)},
        # Past this without progress (a replica ready, an old one gone) a rollout is reported failed.
        "progressDeadlineSeconds": rollout_wave_seconds(cfg, model),
        "revisionHistoryLimit": 3,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": rolling_update(cfg, model)},
        "template": {
            "metadata": {
                "labels": labels(model),
                # A serving pod is never evicted to consolidate nodes; the model's autoscaler alone removes it.
                "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
            },
            "spec": {
                "serviceAccountName": model.name,
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": termination_grace_seconds(model),
                "securityContext": pod_security_context(),
                "containers": [
                    simulator_container(cfg, model)
                    if cfg.is_simulated(model)
                    else vllm_container(cfg, model, hf_token)
                ],
                "volumes": volumes,
                "topologySpreadConstraints": _topology_spread(model),
                **_placement(cfg, model),
            },
        },
    }
    annotations = {"pulumi.com/timeoutSeconds": str(rollout_timeout_seconds(cfg, model)), **checkov_skips(cfg, model)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(cfg, model, annotations=annotations),
        "spec": spec,
    }


def rolling_update(cfg: PlatformConfig, model: Model) -> dict[str, int]:
    """A new replica before an old one goes, where the pool has a node for it; else one at a time in place.

    A surge pod the pool cannot place stays Pending and the rollout never finishes.
    """
    if cfg.has_surge_room(model):
        return {"maxSurge": 1, "maxUnavailable": 0}
    return {"maxSurge": 0, "maxUnavailable": 1}


def checkov_skips(cfg: PlatformConfig, model: Model) -> dict[str, str]:
    """The scanner findings this Deployment accepts, each with the reason, as checkov's per-object annotations."""
    reasons = []
    if cfg.is_simulated(model):
        reasons.append(
            f"CKV_K8S_43=the platform pins the simulator to release tag {SIMULATOR_IMAGE.rpartition(':')[2]}; "
            "it serves test traffic only, never a model"
        )
    elif "@sha256:" not in model.image:
        reasons.append(
            f"CKV_K8S_43=pinned to release tag {model.image.rpartition(':')[2]}, never latest (validated); "
            "set models[].image to name@sha256:... to pin by digest"
        )
    return {f"checkov.io/skip{i}": reason for i, reason in enumerate(reasons, start=1)}


def service_account(cfg: PlatformConfig, model: Model) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(cfg, model),
        "automountServiceAccountToken": False,
    }


def serving_service_name(model: Model) -> str:
    """The Service in front of the pods: the model's own name, unless the interceptor's entry point holds it."""
    return model.name + BACKEND_SERVICE_SUFFIX if model.scales_to_zero else model.name


def service(cfg: PlatformConfig, model: Model) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {**_metadata(cfg, model), "name": serving_service_name(model)},
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(model),
            "ports": [{"name": "http", "port": SERVING_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def service_host(cfg: PlatformConfig, model: Model) -> str:
    return f"{model.name}.{cfg.namespace}.svc.cluster.local"


def service_url(cfg: PlatformConfig, model: Model) -> str:
    return f"http://{service_host(cfg, model)}:{SERVING_PORT}"


def interceptor_entry_service(cfg: PlatformConfig, model: Model, interceptor_host: Any) -> dict[str, Any]:
    """The model's name as a DNS alias of the interceptor, so clients keep the same URL when it scales to zero.

    The interceptor listens on the serving port too: an ExternalName Service renames, it cannot remap ports.
    `interceptor_host` is a str, or a Pulumi Output of one: it is placed, never read.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(cfg, model, labels=labels(model, component="interceptor-entry")),
        "spec": {
            "type": "ExternalName",
            "externalName": interceptor_host,
            "ports": [{"name": "http", "port": SERVING_PORT, "protocol": "TCP"}],
        },
    }


def route_hosts(cfg: PlatformConfig, model: Model) -> list[str]:
    """Every Host a client may send for the model's Service, from the same namespace or from another."""
    fqdn = service_host(cfg, model)
    return [model.name, f"{model.name}.{cfg.namespace}", f"{model.name}.{cfg.namespace}.svc", fqdn]


def interceptor_route(cfg: PlatformConfig, model: Model) -> dict[str, Any]:
    """Routes the model's hosts to its pods, holding each request while the model wakes from zero."""
    return {
        "apiVersion": "http.keda.sh/v1beta1",
        "kind": "InterceptorRoute",
        "metadata": _metadata(cfg, model),
        "spec": {
            "target": {"service": serving_service_name(model), "port": SERVING_PORT},
            "rules": [{"hosts": route_hosts(cfg, model)}],
            "scalingMetric": {"concurrency": {"targetValue": model.autoscaling.concurrency_per_replica}},
            "timeouts": {
                # A request that wakes the model waits for one pod's cold start: a node, then the load.
                "readiness": f"{cold_start_seconds(cfg, model)}s",
                "responseHeader": INTERCEPTOR_RESPONSE_HEADER_TIMEOUT,
            },
        },
    }


def service_monitor(cfg: PlatformConfig, model: Model) -> dict[str, Any]:
    metadata = _metadata(cfg, model)
    metadata["labels"] = {**metadata["labels"], **MONITOR_SELECTOR_LABELS}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": {**selector_labels(model), "app.kubernetes.io/component": "inference"}},
            "namespaceSelector": {"matchNames": [cfg.namespace]},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": cfg.observability.prometheus.scrape_interval}],
        },
    }


def queue_depth_query(cfg: PlatformConfig, model: Model) -> str:
    return (
        f'sum(vllm:num_requests_waiting{{namespace="{cfg.namespace}",'
        f'model_name="{model.effective_served_name}"}})'
    )


def _behavior() -> dict[str, Any]:
    return {"scaleUp": SCALE_UP_BEHAVIOR, "scaleDown": SCALE_DOWN_BEHAVIOR}


def _scale_target(model: Model) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": model.name}


def scaled_object(cfg: PlatformConfig, model: Model, prometheus_url: Any, http_scaler_address: Any) -> dict[str, Any]:
    """Queue depth scales the replicas; a model that scales to zero is also woken by the interceptor's count.

    The addresses are strs, or Pulumi Outputs of them: they are placed, never read, so that a preview
    shows every other field of the spec even while the addresses are still unknown.

    With no pod there is no vllm:num_requests_waiting, so only the HTTP add-on, which holds the first
    request, can bring the first replica back. KEDA follows whichever trigger asks for more.
    """
    triggers: list[dict[str, Any]] = [
        {
            "type": "prometheus",
            "metadata": {
                "serverAddress": prometheus_url,
                "query": queue_depth_query(cfg, model),
                "threshold": str(model.autoscaling.queue_depth_per_replica),
            },
        }
    ]
    spec: dict[str, Any] = {
        "scaleTargetRef": _scale_target(model),
        "minReplicaCount": model.replicas.min,
        "maxReplicaCount": model.replicas.max,
        "pollingInterval": KEDA_POLLING_INTERVAL_SECONDS,
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior()}},
        "triggers": triggers,
    }
    if model.scales_to_zero:
        triggers.append(
            {
                "type": "external-push",
                "metadata": {"scalerAddress": http_scaler_address, "interceptorRoute": model.name},
            }
        )
        spec["cooldownPeriod"] = model.autoscaling.scale_to_zero_after_seconds
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": _metadata(cfg, model), "spec": spec}


def horizontal_pod_autoscaler(cfg: PlatformConfig, model: Model) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(cfg, model),
        "spec": {
            "scaleTargetRef": _scale_target(model),
            "minReplicas": model.replicas.min,
            "maxReplicas": model.replicas.max,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": model.autoscaling.target_cpu_utilization_percent,
                        },
                    },
                }
            ],
            "behavior": _behavior(),
        },
    }


def pod_disruption_budget(cfg: PlatformConfig, model: Model) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(cfg, model),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(model)},
            # A pod that never became ready serves nobody; it must not block a node drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
