"""A model's workload: its Deployment (vLLM's container, or the simulator's), ServiceAccount, Services and budget."""

from __future__ import annotations

import shlex
from typing import Any, Optional

from vllm_platform.config.quantities import format_cpu, format_memory
from vllm_platform.contract import (
    COMPONENT_LABEL,
    GPU_POOL_LABEL,
    GPU_RESOURCE,
    GPU_TAINT,
    HF_TOKEN_DIR,
    HF_TOKEN_PATH_VARIABLE,
    HF_TOKEN_SECRET,
    HF_TOKEN_SECRET_KEY,
    HOSTNAME_LABEL,
    INSTANCE_LABEL,
    MANAGED_BY_LABEL,
    MODEL_APP,
    NAME_LABEL,
    PART_OF,
    PART_OF_LABEL,
    SERVE_COMMAND,
    SERVING_CONTAINER,
    SERVING_PORT,
    SERVING_PORT_NAME,
    SHM_PATH,
    ZONE_LABEL,
    vllm_flags,
)
from vllm_platform.k8s.probes import probes
from vllm_platform.pins import SIMULATOR_IMAGE
from vllm_platform.plan.plans import ModelPlan, Plan
from vllm_platform.plan.serving import MODEL_CACHE_PATH
from vllm_platform.plan.sizing import SHM_MIB

HOME_PATH = "/home/vllm"
SHM_SIZE = format_memory(SHM_MIB)
# Any UID without a passwd entry works once USER and HOME are set; above 10000 to stay clear of host users.
RUN_AS_UID = 10001
# Past the pods' grace period, for the API server to remove the ReplicaSet and the Deployment after them.
DELETE_MARGIN_SECONDS = 60
SIMULATOR_BINARY = "/app/llm-d-inference-sim"
CLUSTER_AUTOSCALER_SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
PULL_POLICY_SKIP = (
    "CKV_K8S_15=IfNotPresent on an image pinned to one release (validated): a node that holds it starts the pod "
    "without a registry round-trip, and an unreachable registry or a pull-through cache's upstream stops no start"
)


def selector_labels(model: ModelPlan) -> dict[str, str]:
    return {NAME_LABEL: MODEL_APP, INSTANCE_LABEL: model.name}


def app_labels(app: str, instance: str, component: str) -> dict[str, str]:
    """The recommended labels of every object of the platform's own: the app, which one, and its part."""
    return {NAME_LABEL: app, INSTANCE_LABEL: instance, COMPONENT_LABEL: component, PART_OF_LABEL: PART_OF, MANAGED_BY_LABEL: "pulumi"}


def labels(model: ModelPlan, component: str = "inference") -> dict[str, str]:
    return app_labels(MODEL_APP, model.name, component)


def metadata(model: ModelPlan, **extra: Any) -> dict[str, Any]:
    return {"name": model.name, "namespace": model.namespace, "labels": labels(model), **extra}


def hf_token_secret_metadata(plan: Plan) -> dict[str, Any]:
    return {"name": HF_TOKEN_SECRET, "namespace": plan.namespace, "labels": {PART_OF_LABEL: PART_OF}}


def container_resources(model: ModelPlan) -> dict[str, Any]:
    compute = {"cpu": format_cpu(model.resources.cpu_millis), "memory": format_memory(model.resources.memory_mib)}
    gpus = {GPU_RESOURCE: str(model.gpus)} if model.gpus else {}
    storage = {"ephemeral-storage": f"{model.ephemeral_storage_gib}Gi"} if model.ephemeral_storage_gib is not None else {}
    # Limits equal requests: a Guaranteed pod is the last to be evicted under node pressure.
    return {"requests": {**compute, **gpus, **storage}, "limits": {**compute, **gpus}}


def _env(model: ModelPlan, hf_token: bool, region: Optional[str]) -> list[dict[str, Any]]:
    env = [
        {"name": "HOME", "value": HOME_PATH},
        # torch and triton ask getpass for a user name, which fails for a UID without a passwd entry.
        {"name": "USER", "value": "vllm"},
        {"name": "HF_HOME", "value": f"{MODEL_CACHE_PATH}/huggingface"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        {"name": "DO_NOT_TRACK", "value": "1"},
    ]
    if model.weights.streams:
        # The streamer copies config and tokenizer files here (by default under ~/.cache) and streams only weights.
        env.append({"name": "VLLM_ASSETS_CACHE", "value": f"{MODEL_CACHE_PATH}/assets"})
        if region:
            # The streamer's AWS SDK would otherwise ask instance metadata, which the hop limit of 1 keeps from a pod.
            env.append({"name": "AWS_REGION", "value": region})
    if hf_token:
        # huggingface_hub reads the token from this file: a mounted Secret stays out of the process
        # environment, which crash reports and `/proc/<pid>/environ` would show.
        env.append({"name": HF_TOKEN_PATH_VARIABLE, "value": f"{HF_TOKEN_DIR}/{HF_TOKEN_SECRET_KEY}"})
    return env


def volumes(model: ModelPlan, hf_token: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's volumes and the serving container's mounts of them."""
    if model.simulated:
        return [{"name": "tmp", "emptyDir": {}}], [{"name": "tmp", "mountPath": "/tmp"}]
    pod_volumes = [
        {"name": "model-cache", "emptyDir": {}},
        {"name": "home", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts = [
        {"name": "model-cache", "mountPath": MODEL_CACHE_PATH},
        {"name": "home", "mountPath": HOME_PATH},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if model.shared_memory:
        # NCCL exchanges tensors between the TP workers through shared memory; the runtime's 64 MiB is far too small.
        pod_volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}})
        mounts.append({"name": "dshm", "mountPath": SHM_PATH})
    if hf_token:
        volume, mount = hf_token_volume()
        pod_volumes.append(volume)
        mounts.append(mount)
    return pod_volumes, mounts


def hf_token_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    """The `hf-token` Secret as a file, and its mount: the token stays out of the process environment."""
    # Group-readable: the pod's fsGroup owns the projected file, not the user.
    items = [{"key": HF_TOKEN_SECRET_KEY, "path": HF_TOKEN_SECRET_KEY}]
    volume = {"name": "hf-token", "secret": {"secretName": HF_TOKEN_SECRET, "items": items, "defaultMode": 0o440}}
    return volume, {"name": "hf-token", "mountPath": HF_TOKEN_DIR, "readOnly": True}


# Who the pod's processes run as, and under which seccomp profile: the pod and its container alike.
RESTRICTED_IDENTITY = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_UID,
    "runAsGroup": RUN_AS_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def container_security_context() -> dict[str, Any]:
    return {
        **RESTRICTED_IDENTITY,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_security_context() -> dict[str, Any]:
    return {**RESTRICTED_IDENTITY, "fsGroup": RUN_AS_UID}


def _serving_container(model: ModelPlan, image: Any, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """What vLLM's container and the simulator's share: the name, port, probes, drain and hardening."""
    return {
        "name": SERVING_CONTAINER,
        "image": image,
        # A pinned release (the config refuses anything else) does not change under its tag: a node that holds
        # it starts the pod without asking the registry, and a registry that is down stops no start.
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": SERVING_PORT_NAME, "containerPort": SERVING_PORT, "protocol": "TCP"}],
        "resources": container_resources(model),
        "volumeMounts": mounts,
        **probes(model),
        "lifecycle": {"preStop": {"sleep": {"seconds": model.prestop_seconds}}},
        "securityContext": container_security_context(),
    }


def vllm_container(
    model: ModelPlan, hf_token: bool, weights_uri: Any = None, image: Any = None, region: Optional[str] = None
) -> dict[str, Any]:
    """vLLM's container. `weights_uri` and `image` are what the plan cannot name (the stack's own cache bucket,
    the pull-through cache's registry), each a str or a Pulumi Output; by default the plan's own."""
    _, mounts = volumes(model, hf_token)
    weights = weights_uri if weights_uri is not None else model.weights.model
    assert weights is not None, "the stack's own cache is named only once created: pass weights_uri"
    return {
        **_serving_container(model, image if image is not None else model.image_plan.reference, mounts),
        "command": list(SERVE_COMMAND),
        "args": [vllm_flags.MODEL, weights, *model.args],
        "env": _env(model, hf_token, region),
    }


def simulator_container(model: ModelPlan) -> dict[str, Any]:
    # vLLM refuses connections until loaded; the simulator's --startup-duration only turns /health/ready
    # to 503 and leaves /health and /v1/models answering. Holding the port closed instead exercises the
    # startup probe and pulumi's await as vLLM would. The trap lets a pod deleted mid-load stop at once:
    # as PID 1, sh would otherwise ignore SIGTERM for the whole grace period.
    serve = shlex.join([SIMULATOR_BINARY, *model.args])
    command = f"trap 'exit 143' TERM; sleep {model.simulated_load_seconds} & wait $!; exec {serve}"
    _, mounts = volumes(model, hf_token=False)
    return {**_serving_container(model, SIMULATOR_IMAGE, mounts), "command": ["/bin/sh", "-c", command]}


def _topology_spread(model: ModelPlan) -> list[dict[str, Any]]:
    # ScheduleAnyway: a GPU pod that cannot be spread must still run rather than wait for a perfect node.
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector_labels(model)},
        }
        for key in (ZONE_LABEL, HOSTNAME_LABEL)
    ]


def _placement(model: ModelPlan) -> dict[str, Any]:
    if model.pool is None:
        return {}
    return {"nodeSelector": {GPU_POOL_LABEL: model.pool.name}, "tolerations": [GPU_TAINT.toleration()]}


def checkov_skips(model: ModelPlan) -> dict[str, str]:
    """The scanner findings this Deployment accepts, each with the reason, as checkov's per-object annotations."""
    reasons = []
    if model.simulated:
        reasons.append(
            f"CKV_K8S_43=the platform pins the simulator to release tag {SIMULATOR_IMAGE.rpartition(':')[2]}; "
            "it serves test traffic only, never a model"
        )
    elif "@sha256:" not in model.image:
        reasons.append(
            f"CKV_K8S_43=pinned to release tag {model.image.rpartition(':')[2]}, never latest (validated); "
            "set models[].image to name@sha256:... to pin by digest"
        )
    reasons.append(PULL_POLICY_SKIP)
    return {f"checkov.io/skip{i}": reason for i, reason in enumerate(reasons, start=1)}


def deployment(
    model: ModelPlan, hf_token: bool, weights_uri: Any = None, image: Any = None, region: Optional[str] = None
) -> dict[str, Any]:
    pod_volumes, _ = volumes(model, hf_token)
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(model)},
        # Past this without progress (a replica ready, an old one gone) a rollout is reported failed.
        "progressDeadlineSeconds": model.rollout_wave_seconds,
        "revisionHistoryLimit": 3,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": model.rolling_update.manifest()},
        "template": {
            "metadata": {
                "labels": labels(model),
                # A serving pod is never evicted to consolidate nodes; the model's autoscaler alone removes it.
                # This stack's Karpenter pools consolidate only empty nodes; on an existing cluster whose
                # nodes cluster-autoscaler scales, this annotation is what keeps it from repacking them.
                **({"annotations": {CLUSTER_AUTOSCALER_SAFE_TO_EVICT: "false"}} if model.guarded_from_cluster_autoscaler else {}),
            },
            "spec": {
                "serviceAccountName": model.name,
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": model.termination_grace_seconds,
                "securityContext": pod_security_context(),
                "containers": [
                    simulator_container(model) if model.simulated else vllm_container(model, hf_token, weights_uri, image, region)
                ],
                "volumes": pod_volumes,
                "topologySpreadConstraints": _topology_spread(model),
                **_placement(model),
            },
        },
    }
    annotations = {
        # The rollout is awaited by the Rollouts resource (components/rollout.py), which fails as soon as it cannot
        # finish; Pulumi's own await would wait on to its timeout. waitFor, not skipAwait: skipAwait would also
        # stop `pulumi destroy` waiting for the pods to drain (pulumi-kubernetes, allowsSkipAwaitWithDelete).
        "pulumi.com/waitFor": "jsonpath={.metadata.uid}",
        # The delete's wait: foreground deletion ends when the last pod has drained.
        "pulumi.com/timeoutSeconds": str(model.termination_grace_seconds + DELETE_MARGIN_SECONDS),
        **checkov_skips(model),
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(model, annotations=annotations), "spec": spec}


def service_account(model: ModelPlan) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(model), "automountServiceAccountToken": False}


def service(model: ModelPlan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {**metadata(model), "name": model.service_name},
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(model),
            "ports": [{"name": SERVING_PORT_NAME, "port": SERVING_PORT, "targetPort": SERVING_PORT_NAME, "protocol": "TCP"}],
        },
    }


def service_url(model: ModelPlan) -> str:
    return f"http://{model.service_host}:{SERVING_PORT}"


def interceptor_entry_service(model: ModelPlan, interceptor_host: Any) -> dict[str, Any]:
    """The model's name as a DNS alias of the interceptor, so clients keep the same URL when it scales to zero.

    The interceptor listens on the serving port too: an ExternalName Service renames, it cannot remap ports.
    `interceptor_host` is a str, or a Pulumi Output of one: it is placed, never read.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(model, labels=labels(model, component="interceptor-entry")),
        "spec": {
            "type": "ExternalName",
            "externalName": interceptor_host,
            "ports": [{"name": SERVING_PORT_NAME, "port": SERVING_PORT, "protocol": "TCP"}],
        },
    }


def pod_disruption_budget(model: ModelPlan) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(model),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(model)},
            # A pod that never became ready serves nobody; it must not block a node drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
