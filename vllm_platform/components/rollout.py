"""Rollouts: the wait `pulumi up` does for the models' Deployments, failing as soon as one cannot finish.

pulumi-kubernetes' own Deployment await logs a stalled rollout and waits on until `pulumi.com/timeoutSeconds`
(provider/pkg/await/deployment.go): a model Karpenter cannot get a node for would hold `pulumi up` for all the
`replicas.max` waves its timeout allows. So a model's Deployment asks Pulumi only that it exist
(`pulumi.com/waitFor`, k8s/workload.py), and this resource waits for every changed model at once, judging each
look at the cluster with k8s/rollout.judge: it succeeds when all are rolled out, and fails with Kubernetes' or
Karpenter's reason as soon as one cannot finish, or at that model's own timeout.

One resource for all models, not one each: Pulumi's Python dynamic provider serves its calls from 4 threads
(pulumi/dynamic/__main__.py), so a fifth model's wait would queue behind the first four.

A staged model's copy is waited for the same way, by a Staging resource of its own between its staging Job and its
Deployment (the Job itself asks Pulumi for no wait, `pulumi.com/skipAwait`): pulumi-kubernetes' Job await fails only
on BackoffLimitExceeded or DeadlineExceeded (provider/pkg/await/checker/job), so a Job the podFailurePolicy failed
would hold `pulumi up` to its timeout, and it reports no pod's termination message. This wait fails as soon as the Job
does, with the copy's own one-line reason. One each, since each model's rollout waits for its own copy only; a wait
queued behind four others still sees its Job, which runs regardless.

The provider runs in Pulumi's dynamic-provider host, which imports this module by name from the project
directory; it talks to the cluster with the kubeconfig the `kubernetes` provider uses (secret in the state,
never in this resource's outputs) and waits on `pulumi up` only: a preview shows which models it waits for.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Optional

import pulumi
import pulumi.dynamic
import yaml
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.config.config_exception import ConfigException

from vllm_platform.contract import GPU_POOL_LABEL, NODE_CLASS, NODE_POOL
from vllm_platform.k8s.rollout import (
    INSUFFICIENT_CAPACITY,
    KUBE_ERRORS,
    Observation,
    Outcome,
    Verdict,
    judge,
    node_class_name,
    staging_verdict,
)
from vllm_platform.names import GPU_POOL_PREFIX

# Often enough to report Karpenter's verdict within seconds of it; six list calls a look, whatever the model count.
POLL_SECONDS = 10.0
# A cluster that cannot be read for a minute (credentials, network) will not start answering within the timeout.
MAX_UNREADABLE_LOOKS = 6
REQUEST_TIMEOUT_SECONDS = 30.0


class ReadError(Exception):
    """A list call that failed or answered with something other than a list of API objects."""


class RolloutFailed(Exception):
    """A model's rollout cannot finish, or did not within its timeout: fails `pulumi up` with the reason."""


@dataclass(frozen=True)
class Watched:
    """One model's rollout, as the resource's inputs give it; `pool` is its GPU pool where Karpenter runs it; `job`
    its staging Job, where what is waited for is the copy."""

    name: str
    namespace: str
    timeout_seconds: int
    pool: Optional[str] = None
    job: Optional[str] = None

    @property
    def node_pool(self) -> Optional[str]:
        return f"{GPU_POOL_PREFIX}{self.pool}" if self.pool else None

    @classmethod
    def from_input(cls, name: str, value: Mapping[str, Any]) -> "Watched":
        return cls(name, value["namespace"], int(value["timeoutSeconds"]), value.get("pool"))


def spec_digest(spec: Any) -> str:
    """What a Deployment's rollout depends on, as one value: a new digest is a new rollout to wait for."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def watched_input(namespace: str, spec: pulumi.Input[Any], timeout_seconds: int, pool: Optional[str]) -> pulumi.Output[Any]:
    return pulumi.Output.from_input(spec).apply(
        lambda resolved: {"namespace": namespace, "timeoutSeconds": timeout_seconds, "pool": pool, "spec": spec_digest(resolved)}
    )


class ClusterReader:
    """The list calls a look makes, as raw API JSON (what k8s/rollout reads); every failure is a ReadError.

    It reads as the identity `pulumi up` runs as. Karpenter's NodePools and EC2NodeClasses are read only for
    models on Karpenter, so on a created cluster, whose access entries admit that identity as cluster admin
    (adminPrincipalArns, AmazonEKSClusterAdminPolicy: every verb on every resource, cluster-scoped custom ones
    included); no RBAC of the program's own is needed."""

    def __init__(self, kubeconfig: Optional[str], context: Optional[str]):
        try:
            if kubeconfig:
                api = kube_config.new_client_from_config_dict(yaml.safe_load(kubeconfig), context=context)
            else:
                api = kube_config.new_client_from_config(context=context)
        except (ConfigException, OSError, yaml.YAMLError, TypeError, AttributeError) as exc:
            raise RolloutFailed(f"cannot load the kubeconfig: {exc}") from exc
        self._core, self._apps = kube_client.CoreV1Api(api), kube_client.AppsV1Api(api)
        self._custom, self._batch = kube_client.CustomObjectsApi(api), kube_client.BatchV1Api(api)

    def _items(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        try:
            raw = method(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_SECONDS, **kwargs)
            items = json.loads(raw.data)["items"]
        except KUBE_ERRORS as exc:
            raise ReadError(f"listing {what}: {getattr(exc, 'status', None) or type(exc).__name__} {getattr(exc, 'reason', '') or exc}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise ReadError(f"listing {what}: the answer is not an API list") from exc
        if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("metadata"), dict) for i in items):
            raise ReadError(f"listing {what}: the answer is not a list of API objects")
        return items

    def deployments(self, namespace: str) -> list[dict[str, Any]]:
        return self._items(f"Deployments in {namespace}", self._apps.list_namespaced_deployment, namespace)

    def jobs(self, namespace: str) -> list[dict[str, Any]]:
        return self._items(f"Jobs in {namespace}", self._batch.list_namespaced_job, namespace)

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        return self._items(f"pods in {namespace}", self._core.list_namespaced_pod, namespace)

    def pod_events(self, namespace: str) -> list[dict[str, Any]]:
        return self._items(
            f"pod events in {namespace}", self._core.list_namespaced_event, namespace, field_selector="involvedObject.kind=Pod"
        )

    def claim_events(self) -> list[dict[str, Any]]:
        # A NodeClaim is cluster-scoped: its events land in the default namespace.
        return self._items(
            "NodeClaim events", self._core.list_namespaced_event, "default", field_selector=f"reason={INSUFFICIENT_CAPACITY}"
        )

    def node_pools(self) -> list[dict[str, Any]]:
        return self._items("NodePools", self._custom.list_cluster_custom_object, NODE_POOL.group, NODE_POOL.version, "nodepools")

    def node_classes(self) -> list[dict[str, Any]]:
        return self._items(
            "EC2NodeClasses", self._custom.list_cluster_custom_object, NODE_CLASS.group, NODE_CLASS.version, "ec2nodeclasses"
        )


def _selects(deployment: dict[str, Any], pod: dict[str, Any]) -> bool:
    wanted = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    labels = pod["metadata"].get("labels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def _on_pool(pod: dict[str, Any], pool: str) -> bool:
    return ((pod.get("spec") or {}).get("nodeSelector") or {}).get(GPU_POOL_LABEL) == pool


def look(reader: ClusterReader, watched: Mapping[str, Watched], now: datetime) -> dict[str, Verdict]:
    """Every watched model's verdict from one round of list calls, made at `now` (UTC)."""
    karpenter = any(w.pool for w in watched.values())
    claim_events = reader.claim_events() if karpenter else []
    node_pools = {p["metadata"].get("name"): p for p in reader.node_pools()} if karpenter else {}
    node_classes = {c["metadata"].get("name"): c for c in reader.node_classes()} if karpenter else {}
    verdicts = {}
    for namespace in sorted({w.namespace for w in watched.values()}):
        deployments = {d["metadata"].get("name"): d for d in reader.deployments(namespace)}
        pods, events = reader.pods(namespace), reader.pod_events(namespace)
        for w in (w for w in watched.values() if w.namespace == namespace):
            deployment = deployments.get(w.name)
            if deployment is None:
                verdicts[w.name] = Verdict(Outcome.FAILED, f"Deployment {namespace}/{w.name} is not in the cluster")
                continue
            mine = [p for p in pods if _selects(deployment, p)]
            draining = bool(w.pool) and any(p["metadata"].get("deletionTimestamp") and _on_pool(p, w.pool) for p in pods)
            node_pool = node_pools.get(w.node_pool) if w.pool else None
            node_class = node_classes.get(node_class_name(node_pool)) if node_pool is not None else None
            observed = Observation(deployment, mine, events, claim_events, node_pool, draining, node_class, now)
            verdicts[w.name] = judge(observed, w.node_pool)
    return verdicts


def look_staging(reader: ClusterReader, watched: Mapping[str, Watched], _now: datetime) -> dict[str, Verdict]:
    """Every watched staging Job's verdict from one round of list calls."""
    verdicts = {}
    for namespace in sorted({w.namespace for w in watched.values()}):
        jobs = {j["metadata"].get("name"): j for j in reader.jobs(namespace)}
        pods = reader.pods(namespace)
        for w in (w for w in watched.values() if w.namespace == namespace):
            job = jobs.get(w.job)
            verdicts[w.name] = staging_verdict(job, pods) if job else Verdict(Outcome.FAILED, f"Job {namespace}/{w.job} is not in the cluster")
    return verdicts


@dataclass(frozen=True)
class Wait:
    """What a wait looks at and the words its report uses: a model's rollout, or its staging copy."""

    look: Callable[[ClusterReader, Mapping[str, Watched], datetime], dict[str, Verdict]]
    finished: str
    going: str


ROLLOUT = Wait(look, "rolled out", "still rolling out")
STAGING = Wait(look_staging, "staged", "still staging")


def _report(failed: Mapping[str, str], waiting: Mapping[str, str], wait: Wait = ROLLOUT) -> str:
    lines = [f"model {name}: {detail}" for name, detail in sorted(failed.items())]
    lines += [f"model {name} ({wait.going}): {detail}" for name, detail in sorted(waiting.items())]
    return "\n".join(lines)


def wait_for_rollouts(
    reader: ClusterReader,
    watched: Mapping[str, Watched],
    poll_seconds: float = POLL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    wall_clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    wait: Wait = ROLLOUT,
) -> dict[str, str]:
    """Until every watched model is rolled out (its final detail, by name); RolloutFailed as soon as one
    cannot be (a verdict that must settle, once it has been drawn on every look for that long), or is not within
    its timeout. Bounded in looks as in time: `clock` times the wait, `wall_clock` (UTC) the conditions Karpenter
    stamps with its own. `wait`: STAGING waits for the models' copies instead."""
    started, pending = clock(), dict(watched)
    done: dict[str, str] = {}
    last: dict[str, str] = {name: "not looked at yet" for name in watched}
    # Model -> when the unbroken run of looks that judged it FAILED began: a settling verdict is final once it is long enough.
    failing_since: dict[str, float] = {}
    unreadable = 0
    longest = max((w.timeout_seconds for w in watched.values()), default=0)
    for _ in range(int(longest // poll_seconds) + 2):
        if not pending:
            return done
        try:
            verdicts = wait.look(reader, pending, wall_clock())
            unreadable = 0
        except ReadError as exc:
            unreadable += 1
            if unreadable >= MAX_UNREADABLE_LOOKS:
                raise RolloutFailed(f"cannot read the cluster ({unreadable} looks in a row): {exc}") from exc
            verdicts = {}
            failing_since.clear()  # the look missed may have been the one that saw the pod placed, or a drain
        elapsed = clock() - started
        failed = {}
        for name, verdict in verdicts.items():
            last[name] = verdict.detail
            if verdict.outcome is not Outcome.FAILED:
                failing_since.pop(name, None)
            if verdict.outcome is Outcome.DONE:
                done[name] = verdict.detail
                del pending[name]
            elif verdict.outcome is Outcome.FAILED and elapsed - failing_since.setdefault(name, elapsed) >= verdict.settle.total_seconds():
                failed[name] = verdict.detail
            elif elapsed >= pending[name].timeout_seconds:
                failed[name] = f"not {wait.finished} within its {pending[name].timeout_seconds} s: {verdict.detail}"
        if failed:
            raise RolloutFailed(_report(failed, {n: last[n] for n in pending if n not in failed}, wait))
        if pending:
            sleep(poll_seconds)
    if pending:
        raise RolloutFailed(_report({n: f"not {wait.finished} within its {pending[n].timeout_seconds} s: {last[n]}" for n in pending}, {}, wait))
    return done


def changed_models(olds: Mapping[str, Any], news: Mapping[str, Any]) -> list[str]:
    """The models whose Deployment spec is new since the last wait (a value unknown at preview counts as new)."""
    return sorted(name for name, new in news.items() if not isinstance(new, dict) or (olds.get(name) or {}).get("spec") != new.get("spec"))


class RolloutsProvider(pulumi.dynamic.ResourceProvider):
    """Create and update wait for the models whose Deployment changed; delete has nothing to undo."""

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        old_models, new_models = olds.get("models") or {}, news.get("models")
        if not isinstance(new_models, dict):  # unknown at preview
            return pulumi.dynamic.DiffResult(changes=True, replaces=[])
        changes = bool(changed_models(old_models, new_models)) or set(new_models) != set(old_models)
        return pulumi.dynamic.DiffResult(changes=changes, replaces=[])

    def _wait(self, props: dict[str, Any], names: list[str]) -> dict[str, Any]:
        watched = {name: Watched.from_input(name, props["models"][name]) for name in names}
        if watched:
            wait_for_rollouts(ClusterReader(props.get("kubeconfig"), props.get("context")), watched)
        # Never the kubeconfig: the outputs are stored in plain text.
        return {"models": props["models"]}

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        return pulumi.dynamic.CreateResult("rollouts", self._wait(props, sorted(props["models"])))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
        return pulumi.dynamic.UpdateResult(self._wait(news, changed_models(olds.get("models") or {}, news["models"])))


class Rollouts(pulumi.dynamic.Resource, module="vllm-platform", name="Rollouts"):
    """Waits on `pulumi up` for the rollouts of `models` (name → watched_input), through the cluster that
    `kubeconfig` (secret) or `context` of the default kubeconfig reaches."""

    models: pulumi.Output[dict[str, Any]]

    def __init__(
        self,
        name: str,
        models: Mapping[str, pulumi.Input[Any]],
        kubeconfig: Optional[pulumi.Input[str]],
        context: Optional[str],
        opts: Optional[pulumi.ResourceOptions] = None,
    ):
        props = {"models": dict(models), "kubeconfig": kubeconfig, "context": context}
        super().__init__(RolloutsProvider(), name, props, opts)


class StagingProvider(pulumi.dynamic.ResourceProvider):
    """Create and update wait for the model's staging Job to complete; a new Job (its uid: the provider replaces one
    that was not ready) is a new copy to wait for. Delete has nothing to undo."""

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        keys = ("namespace", "job", "uid")
        return pulumi.dynamic.DiffResult(changes=any(olds.get(k) != news.get(k) for k in keys), replaces=[])

    def _wait(self, props: dict[str, Any]) -> dict[str, Any]:
        watched = {props["model"]: Watched(props["model"], props["namespace"], int(props["timeoutSeconds"]), job=props["job"])}
        wait_for_rollouts(ClusterReader(props.get("kubeconfig"), props.get("context")), watched, wait=STAGING)
        # Never the kubeconfig: the outputs are stored in plain text.
        return {k: props[k] for k in ("model", "namespace", "job", "uid", "timeoutSeconds")}

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        return pulumi.dynamic.CreateResult(f"staging-{props['model']}", self._wait(props))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
        return pulumi.dynamic.UpdateResult(self._wait(news))


class Staging(pulumi.dynamic.Resource, module="vllm-platform", name="Staging"):
    """Waits on `pulumi up` for `model`'s staging Job `job` (its `uid`) in `namespace` to complete, for at most
    `timeout_seconds`, through the cluster that `kubeconfig` (secret) or `context` of the default kubeconfig reaches."""

    job: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        model: str,
        namespace: str,
        job: str,
        uid: pulumi.Input[str],
        timeout_seconds: int,
        kubeconfig: Optional[pulumi.Input[str]],
        context: Optional[str],
        opts: Optional[pulumi.ResourceOptions] = None,
    ):
        props = {
            "model": model, "namespace": namespace, "job": job, "uid": uid, "timeoutSeconds": timeout_seconds,
            "kubeconfig": kubeconfig, "context": context,
        }  # fmt: skip
        super().__init__(StagingProvider(), name, props, opts)
