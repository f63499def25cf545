"""Pure builders of a model's staging: the ConfigMap that carries the copy script, and the Job that runs it once
per model revision on the system nodes, from the Hugging Face hub into the stack's model cache.

The script is the package `vllm_platform/staging/` (stage_model.py and the sibling modules it imports), the
project's own tested modules, placed in the ConfigMap as they are and mounted as the package `staging`: the Job runs
nothing fetched at run time. `bucket` is a str or a Pulumi Output: placed, never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from vllm_platform.contract import HF_TOKEN_DIR, HF_TOKEN_PATH_VARIABLE, HF_TOKEN_SECRET_KEY, SYSTEM_NODE_SELECTOR
from vllm_platform.k8s.workload import PULL_POLICY_SKIP, app_labels, container_security_context, hf_token_volume, pod_security_context
from vllm_platform.pins import STAGING_IMAGE
from vllm_platform.plan.delivery import STAGING_BACKOFF_LIMIT, StagingPlan
from vllm_platform.plan.plans import ModelPlan
from vllm_platform.plan.system import STAGING_JOB

STAGING_PACKAGE = Path(__file__).resolve().parent.parent / "staging"
SCRIPT_DIR = "/opt/stage"
# The package's name in the pod: the ConfigMap's files sit in SCRIPT_DIR/staging/, so that stage_model's relative
# imports of its siblings resolve there as they do in the project.
POD_PACKAGE = "staging"
COMMAND = ["python3", "-m", f"{POD_PACKAGE}.stage_model"]
# Streaming a part at a time (64 MiB) through boto3 needs little; the hub and S3 are the bottleneck. The CPU
# limit leaves room for TLS and the sha256 of every byte, and keeps a copy from starving the system nodes.
RESOURCES = {"requests": STAGING_JOB.resources(), "limits": {"cpu": "2", "memory": "1Gi"}}
# The program's own wait for the Job (components/rollout.Staging) lasts past the Job's deadline, so that the Job's
# failure, with its reason, is what `pulumi up` reports.
AWAIT_MARGIN_SECONDS = 120
# stage_model.py's exit code for a failure that running again cannot cure (its EXIT_PERMANENT).
PERMANENT_EXIT = 2
# Not the model's `app.kubernetes.io/name: vllm`: its Service, PDB and NetworkPolicy select pods by that.
STAGING_APP = "vllm-staging"


def staging_labels(model: ModelPlan) -> dict[str, str]:
    return app_labels(STAGING_APP, model.name, "staging")


def _metadata(model: ModelPlan, staging: StagingPlan, **extra: Any) -> dict[str, Any]:
    return {"name": staging.job_name, "namespace": model.namespace, "labels": staging_labels(model), **extra}


def script_files() -> dict[str, str]:
    """Every module of the staging package, by file name: whatever stage_model imports of its siblings is there."""
    return {path.name: path.read_text() for path in sorted(STAGING_PACKAGE.glob("*.py"))}


def config_map_key(file_name: str) -> str:
    """The ConfigMap key that carries `file_name`: the package's name before it, so that no key starts with "__",
    which Pulumi treats as an internal property and leaves out (`__init__.py` would never reach the cluster, and
    the kubelet refuses a volume item whose key is missing)."""
    return f"{POD_PACKAGE}.{file_name}"


def script_config_map(model: ModelPlan, staging: StagingPlan) -> dict[str, Any]:
    data = {config_map_key(name): text for name, text in script_files().items()}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(model, staging), "data": data}


def wait_seconds(staging: StagingPlan) -> int:
    return staging.deadline_seconds + AWAIT_MARGIN_SECONDS


def service_account(model: ModelPlan, staging: StagingPlan) -> dict[str, Any]:
    """The Job's own identity: its Pod Identity role may write this revision's prefix, the model's may only read."""
    meta = {**_metadata(model, staging), "name": staging.service_account}
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "automountServiceAccountToken": False}


def _env(model: ModelPlan, staging: StagingPlan, bucket: Any, region: Optional[str], hf_token: bool) -> list[dict[str, Any]]:
    env = [
        {"name": "HF_REPO", "value": staging.repo},
        {"name": "HF_REVISION", "value": staging.revision},
        {"name": "CACHE_BUCKET", "value": bucket},
        {"name": "CACHE_PREFIX", "value": staging.prefix},
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        # Where Lambda's Python images keep the runtime's boto3; a python3 started outside Lambda's bootstrap
        # finds it there as the bootstrap would.
        {"name": "PYTHONPATH", "value": "/var/runtime"},
    ]
    if region is not None:
        # The script's client in the bucket's region from the start; without it (an existing cluster's stack that
        # names no aws:region) S3 redirects it there. botocore reads AWS_DEFAULT_REGION only (configprovider's
        # `region`), the other AWS SDKs AWS_REGION: both, so that neither reading is wrong.
        env += [{"name": "AWS_REGION", "value": region}, {"name": "AWS_DEFAULT_REGION", "value": region}]
    if hf_token:
        env.append({"name": HF_TOKEN_PATH_VARIABLE, "value": f"{HF_TOKEN_DIR}/{HF_TOKEN_SECRET_KEY}"})
    return env


def job(model: ModelPlan, staging: StagingPlan, bucket: Any, region: Optional[str], hf_token: bool) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [
        {
            "name": "script",
            "configMap": {
                "name": staging.job_name,
                "defaultMode": 0o444,
                "items": [{"key": config_map_key(name), "path": f"{POD_PACKAGE}/{name}"} for name in script_files()],
            },
        },
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "script", "mountPath": SCRIPT_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if hf_token:
        volume, mount = hf_token_volume()
        volumes.append(volume)
        mounts.append(mount)
    container = {
        "name": "stage",
        "image": STAGING_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        # The image's entrypoint is Lambda's bootstrap; the Job runs the script with the image's Python, from the
        # directory that holds the package (`-m` puts the working directory first on sys.path).
        "command": list(COMMAND),
        "workingDir": SCRIPT_DIR,
        "env": _env(model, staging, bucket, region, hf_token),
        "resources": RESOURCES,
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        # The script writes its one-line reason here; Kubernetes shows it as the pod's termination message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    annotations = {
        # The program waits for the Job itself (components/rollout.Staging), failing with the copy's own reason as
        # soon as the Job fails: pulumi-kubernetes' await would wait out its timeout on a podFailurePolicy failure.
        "pulumi.com/skipAwait": "true",
        # The name is fixed per revision: without this, the update after a failed copy keeps that same failed Job,
        # and the wait fails on it again. With it, the provider replaces a Job that is not ready (it reads the live
        # Job at the diff, whatever skipAwait says), deleting it first as the name stays; the new pod resumes the copy.
        "pulumi.com/replaceUnready": "true",
        # ... and with skipAwait the provider does not wait for that delete: under the default foreground deletion
        # the old Job lingers until its pods are gone, and creating its namesake fails ("object is being
        # deleted"). Deleted in the background, the Job goes at once and the garbage collector takes its pods.
        "pulumi.com/deletionPropagationPolicy": "background",
        "checkov.io/skip1": (
            f"CKV_K8S_43=the staging image is pinned to release tag {STAGING_IMAGE.rpartition(':')[2]}, a dated "
            "AWS base image release; it runs once per model revision"
        ),
        "checkov.io/skip2": PULL_POLICY_SKIP,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(model, staging, annotations=annotations),
        "spec": {
            "backoffLimit": STAGING_BACKOFF_LIMIT,
            "podFailurePolicy": {
                "rules": [
                    # Exit 2: bad input or a refusal (a gated repo, no access): another pod cannot help.
                    {"action": "FailJob", "onExitCodes": {"containerName": "stage", "operator": "In", "values": [PERMANENT_EXIT]}},
                    # A pod evicted or preempted off its node did not fail: it resumes in the next one, uncounted.
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                ]
            },
            "activeDeadlineSeconds": staging.deadline_seconds,
            "template": {
                "metadata": {"labels": staging_labels(model)},
                "spec": {
                    "serviceAccountName": staging.service_account,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "restartPolicy": "Never",
                    "nodeSelector": dict(SYSTEM_NODE_SELECTOR),
                    "securityContext": pod_security_context(),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
