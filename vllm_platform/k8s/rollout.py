"""Whether a model's rollout is done, still on its way, or cannot finish, judged from what the API server shows.

Pure functions of API JSON (the camelCase objects `kubectl get -o json` prints); `pulumi up`'s rollout
watch (components/rollout.py) and verify both read with them, so the two say the same thing in the same words.
A model's staging Job is judged here too (staging_verdict), for the wait that comes before its rollout.

A rollout is done as `kubectl rollout status` has it: the controller has seen the new generation, every
replica runs the new template, none of the old is left, and all the new are available. It cannot finish
when Kubernetes says so (the Progressing condition's ProgressDeadlineExceeded, after one wave without
progress) or, sooner, when Karpenter says so for a pod that waits for a GPU node, or when the pod's NodePool or
its EC2NodeClass has not been Ready for NOT_READY_GRACE (Karpenter then launches nothing and says nothing).

Karpenter's words (sigs.k8s.io/karpenter v1.14.1): `Nominated` on a pod it launches a NodeClaim for
(provisioning/scheduling/events.go); an EC2 launch refused for capacity is an `InsufficientCapacityError` on the
NodeClaim (nodeclaim/lifecycle/events.go; the claim is then deleted, so its event's name is all that says whose
it was: claim_of), and the refused offering is cached as unavailable for 3 minutes (pkg/cache,
UnavailableOfferingsTTL); once no offering of a Ready NodePool can take the pod, whether all were refused or the
NodePool's limits are reached, the pod gets `FailedScheduling` "Failed to schedule pod, ...". The newer of Nominated and that is Karpenter's current
word on the pod: the second means it has tried every offering. Karpenter does not repeat FailedScheduling on a
pod within 5 minutes, nor Nominated within 2 (pkg/events/recorder.go), so a pod it gave up on before its NodePool
was Ready is judged on its next word. Its word can be stale: it counts a terminating pod on its node until the pod
is terminal (state/cluster.go), so a pod that waits for the node a drain frees may get FailedScheduling, and a look
can fall after the drained pod has left the API and before the scheduler binds the new one. So Karpenter's verdicts
must stand for KARPENTER_SETTLE on every look before they are final (Verdict.settle: the wait keeps the count).
The default scheduler's own FailedScheduling ("0/3 nodes are available: ...") says only that no running node fits.
A NodeClaim leaves no condition to read here: one refused for capacity is deleted at once, and one whose launch
failed otherwise keeps `Launched` Unknown (LaunchFailed) while Karpenter retries it (nodeclaim/lifecycle/launch.go);
that rollout fails at its progress deadline.

Karpenter launches for Ready NodePools only (provisioning/provisioner.go), and says nothing on the pods of one
that is not: a NodePool is Ready when its ValidationSucceeded and NodeClassReady are (apis/v1/nodepool_status.go),
and NodeClassReady copies its EC2NodeClass's Ready, which needs AMIsReady, SubnetsReady, SecurityGroupsReady,
InstanceProfileReady, ValidationSucceeded and PlacementGroupReady, and CapacityReservationsReady where the class
selects reservations (karpenter-provider-aws pkg/apis/v1/ec2nodeclass_status.go). A failed condition is False
with its reason and message (an alias without an image: AMIsReady False AMINotFound; subnets or security groups
without the discovery tag: SubnetsNotFound, SecurityGroupsNotFound; a policy without ec2:CreateFleet:
ValidationSucceeded False CreateFleetAuthCheckFailed); one whose reconcile fails on an error, such as an instance
profile IAM refuses, stays Unknown. Ready itself only lists them ("AMIsReady=False"), and its lastTransitionTime
moves whenever its status or that list changes (awslabs/operatorpkg status/condition_set.go).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Optional, Sequence

import urllib3
from kubernetes.client.exceptions import OpenApiException

KARPENTER_SCHEDULING_PREFIX = "Failed to schedule pod, "
FAILED_SCHEDULING = "FailedScheduling"
NOMINATED = "Nominated"
INSUFFICIENT_CAPACITY = "InsufficientCapacityError"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
# How long a NodePool or its EC2NodeClass may stay not Ready while the model's pods wait before the rollout fails
# with its conditions. Karpenter retries a class's AMIs, subnets and security groups every minute after a failed
# resolution (pkg/controllers/nodeclass: ami.go, subnet.go, securitygroup.go), and the NodePool follows its class
# at once, so three minutes is two retries that found nothing: no longer a class resolving what this same update
# has just created (the subnets' discovery tags, the node role), nor IAM's eventual consistency, which is seconds.
NOT_READY_GRACE = timedelta(minutes=3)
# How long a verdict of Karpenter's must stand, on every look, before the rollout fails with it: long enough for
# what a drain that just ended sets going to contradict a stale one. Karpenter judges a pending pod again within a
# batch window (at most 10 s, BATCH_MAX_DURATION: pkg/operator/options) and nominates it for the freed node, and the
# scheduler retries an unschedulable pod when a pod leaves a node, after at most its 10 s backoff
# (podMaxBackoffSeconds), and binds it there.
KARPENTER_SETTLE = timedelta(seconds=30)
# The API server names a NodeClaim from Karpenter's generateName, "<NodePool>-" (provisioning/scheduling/
# nodeclaimtemplate.go): that base cut to 58 characters, then 5 random characters of apimachinery's util/rand
# alphabet (k8s.io/apiserver pkg/storage/names: maxNameLength 63, randomLength 5).
CLAIM_NAME_BASE_MAX = 63 - 5
CLAIM_NAME_SUFFIX = re.compile(r"[bcdfghjklmnpqrstvwxz2456789]{5}")

# What reading the API server can raise, for the rollouts' wait and verify alike: its answers, the transport, the socket.
KUBE_ERRORS = (OpenApiException, urllib3.exceptions.HTTPError, OSError)


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or [] if isinstance(c, dict) and "type" in c}


def is_ready(pod: dict[str, Any]) -> bool:
    return conditions(pod).get("Ready", {}).get("status") == "True"


def live_pods(pods: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pods not on their way out: a terminating pod is neither a problem nor a place to send traffic."""
    return sorted((p for p in pods if not p["metadata"].get("deletionTimestamp")), key=lambda p: p["metadata"]["name"])


def pod_problem(pod: dict[str, Any]) -> str:
    """The most telling reason a pod is not Ready: a waiting container, unschedulable, or the condition."""
    status = pod.get("status", {})
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting:
            return f"{container['name']} {waiting.get('reason', 'waiting')}"
    scheduled = conditions(pod).get("PodScheduled", {})
    if scheduled.get("status") == "False":
        reason, message = scheduled.get("reason", "Unscheduled"), scheduled.get("message")
        return f"{reason}: {message}" if message else reason
    ready = conditions(pod).get("Ready", {})
    return ready.get("reason") or status.get("phase", "unknown phase")


def unscheduled(pods: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Live pods the scheduler has not placed: they wait for a node."""
    return [p for p in live_pods(pods) if conditions(p).get("PodScheduled", {}).get("status") == "False"]


def _stamp(event: dict[str, Any]) -> str:
    # RFC 3339 in UTC from the API server, so the strings order as the times do.
    return str(event.get("lastTimestamp") or event.get("eventTime") or "")


def newest(events: Sequence[dict[str, Any]]) -> Optional[dict[str, Any]]:
    return max((e for e in events if isinstance(e, dict)), key=_stamp, default=None)


def karpenter_gave_up(event: dict[str, Any]) -> bool:
    return event.get("reason") == FAILED_SCHEDULING and str(event.get("message", "")).startswith(KARPENTER_SCHEDULING_PREFIX)


def claim_of(claim: str, node_pool: str) -> bool:
    """Whether a NodeClaim of this name is one Karpenter made for `node_pool`: the pool's generated shape exactly, so
    that `gpu-g5-big-x7k2q` is not taken for a claim of `gpu-g5`."""
    base = f"{node_pool}-"[:CLAIM_NAME_BASE_MAX]
    return claim.startswith(base) and CLAIM_NAME_SUFFIX.fullmatch(claim[len(base):]) is not None


def capacity_reasons(pod_events: Sequence[dict[str, Any]], claim_events: Sequence[dict[str, Any]], node_pool: str) -> list[str]:
    """Why pods wait for a GPU node, in Karpenter's words: its newest scheduling failure for them, and the
    NodePool's launches EC2 refused for capacity, with how often that happened."""
    reasons = []
    if (given_up := newest([e for e in pod_events if karpenter_gave_up(e)])) is not None:
        reasons.append(str(given_up["message"]).removeprefix(KARPENTER_SCHEDULING_PREFIX))
    refused = [
        e for e in claim_events
        if e.get("reason") == INSUFFICIENT_CAPACITY and claim_of(str((e.get("involvedObject") or {}).get("name", "")), node_pool)
    ]  # fmt: skip
    if (last := newest(refused)) is not None:
        count = sum(int(e.get("count") or 1) for e in refused)
        reasons.append(f"EC2 refused {count} launch(es) for capacity, the last: {last.get('message', '')}")
    return reasons


def rollout_state(deployment: dict[str, Any]) -> tuple[bool, str]:
    """(done, what it waits for), as `kubectl rollout status` reads a Deployment."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation", 0)
    if status.get("observedGeneration", 0) < generation:
        return False, f"the Deployment controller has not yet seen generation {generation}"
    desired = spec.get("replicas", 1)
    updated, total = status.get("updatedReplicas", 0), status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < desired:
        return False, f"{updated} of {desired} replica(s) updated"
    if total > updated:
        return False, f"{total - updated} old replica(s) pending termination"
    if available < updated:
        return False, f"{available} of {updated} updated replica(s) available"
    return True, f"{available} of {desired} replica(s) available"


class Outcome(enum.Enum):
    DONE = "done"
    WAITING = "waiting"
    FAILED = "failed"


@dataclass(frozen=True)
class Verdict:
    """`settle`: how long a FAILED verdict must be drawn on every look before it is final (zero: at once)."""

    outcome: Outcome
    detail: str
    settle: timedelta = timedelta(0)


@dataclass(frozen=True)
class Observation:
    """What the watch read for one model in one look. `node_pool` is its Karpenter NodePool object (None where
    Karpenter does not run the model's nodes, or the NodePool is not there), `node_class` the EC2NodeClass that
    NodePool names (None where it is not there); `pool_draining` says a pod on that pool is terminating, so a node
    may free up without Karpenter. `now` is when the look was made, in UTC, which the NodePool's and the class's
    conditions are timed against (None: they are not timed, and their not being Ready decides nothing)."""

    deployment: dict[str, Any]
    pods: Sequence[dict[str, Any]]
    pod_events: Sequence[dict[str, Any]]
    claim_events: Sequence[dict[str, Any]] = ()
    node_pool: Optional[dict[str, Any]] = None
    pool_draining: bool = False
    node_class: Optional[dict[str, Any]] = None
    now: Optional[datetime] = None


def _events_about(pod: dict[str, Any], events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    meta = pod["metadata"]
    return [
        e for e in events
        if (about := e.get("involvedObject") or {}).get("kind", "Pod") == "Pod" and about.get("name") == meta["name"]
        and about.get("uid", meta.get("uid")) == meta.get("uid")
    ]  # fmt: skip


def _ready_since(node_pool: dict[str, Any]) -> Optional[str]:
    ready = conditions(node_pool).get("Ready", {})
    return str(ready.get("lastTransitionTime") or "") if ready.get("status") == "True" else None


def node_class_name(node_pool: dict[str, Any]) -> Optional[str]:
    """The EC2NodeClass a NodePool launches with (spec.template.spec.nodeClassRef)."""
    ref = (((node_pool.get("spec") or {}).get("template") or {}).get("spec") or {}).get("nodeClassRef") or {}
    return str(ref["name"]) if ref.get("name") else None


def parse_time(value: str) -> datetime:
    """An API server's RFC 3339 stamp (2026-12-01T10:00:00Z); ValueError for anything else."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _time(stamp: Any) -> Optional[datetime]:
    try:
        when = parse_time(str(stamp))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _judged(obj: dict[str, Any]) -> bool:
    """Whether Karpenter's Ready is about the spec the object has now, not one this update replaced."""
    ready = conditions(obj).get("Ready")
    return ready is None or int(ready.get("observedGeneration") or 0) >= int((obj.get("metadata") or {}).get("generation") or 0)


def not_ready_since(obj: dict[str, Any]) -> Optional[datetime]:
    """Since when Karpenter has held a NodePool or an EC2NodeClass not Ready; None while it is Ready. One that
    Karpenter has never reconciled has no conditions: not Ready since it was created."""
    ready = conditions(obj).get("Ready")
    if ready is None:
        return _time((obj.get("metadata") or {}).get("creationTimestamp"))
    return None if ready.get("status") == "True" else _time(ready.get("lastTransitionTime"))


def _said(condition: dict[str, Any]) -> str:
    words = ": ".join(str(w) for w in (condition.get("reason"), condition.get("message")) if w)
    return f"{condition['type']} {condition.get('status', 'Unknown')}" + (f" ({words})" if words else "")


def _unmet(kind: str, obj: dict[str, Any], since: datetime) -> str:
    """An object's conditions that are not True, in Karpenter's words; Ready only where it is all there is."""
    found = [c for c in conditions(obj).values() if c.get("status") != "True"]
    found = sorted((c for c in found if c["type"] != "Ready"), key=lambda c: c["type"]) or found
    said = ", ".join(_said(c) for c in found) or "no status conditions (Karpenter has not reconciled it)"
    return f"{kind} {(obj.get('metadata') or {}).get('name')} not Ready since {since.isoformat()}: {said}"


def _waiting_for_a_launch(pods: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Unscheduled pods that are not preempting their way onto a running node: only a launch places them."""
    return [p for p in unscheduled(pods) if not (p.get("status") or {}).get("nominatedNodeName")]


def not_ready_reasons(observed: Observation) -> list[str]:
    """Why Karpenter launches nothing for the model: its NodePool or the EC2NodeClass it names has been not Ready
    for NOT_READY_GRACE or longer, in their conditions' words. None while that is shorter, or no pod waits for a
    launch, or one on the pool drains (its node may take the pod), or Karpenter has yet to judge a spec this
    update changed (the NodePool's may still copy a class's old verdict)."""
    if observed.node_pool is None or observed.now is None or observed.pool_draining:
        return []
    held = [(kind, obj) for kind, obj in (("NodePool", observed.node_pool), ("EC2NodeClass", observed.node_class)) if obj is not None]
    if not _waiting_for_a_launch(observed.pods) or not all(_judged(obj) for _, obj in held):
        return []
    since = {kind: when for kind, obj in held if (when := not_ready_since(obj)) is not None}
    if not any(observed.now - when >= NOT_READY_GRACE for when in since.values()):
        return []
    return [_unmet(kind, obj, since[kind]) for kind, obj in held if kind in since]


def stranded(observed: Observation) -> list[dict[str, Any]]:
    """The model's pods that Karpenter has given up on: unscheduled, not preempting their way onto a node, with
    Karpenter's newest word on them a scheduling failure made while the NodePool was Ready; none while a pod
    on the pool drains, since its node may take the pod without a launch."""
    if observed.node_pool is None or observed.pool_draining:
        return []
    ready_since = _ready_since(observed.node_pool)
    if ready_since is None:
        return []  # Karpenter launches for Ready NodePools only: not_ready_reasons judges this one.
    found = []
    for pod in _waiting_for_a_launch(observed.pods):
        words = [e for e in _events_about(pod, observed.pod_events) if e.get("reason") == NOMINATED or karpenter_gave_up(e)]
        last = newest(words)
        # A tie in the second-resolution stamps is no verdict: Karpenter may have nominated again.
        if last is not None and karpenter_gave_up(last) and _stamp(last) >= ready_since and not any(
            e.get("reason") == NOMINATED and _stamp(e) == _stamp(last) for e in words
        ):
            found.append(pod)
    return found


def judge(observed: Observation, node_pool_name: Optional[str]) -> Verdict:
    """One model's rollout, from one look at the cluster."""
    done, progress = rollout_state(observed.deployment)
    if done:
        return Verdict(Outcome.DONE, progress)
    not_ready = [p for p in live_pods(observed.pods) if not is_ready(p)]
    pods = "; ".join(f"{p['metadata']['name']}: {pod_problem(p)}" for p in not_ready[:3])
    reasons = capacity_reasons(observed.pod_events, observed.claim_events, node_pool_name) if node_pool_name else []
    detail = "; ".join(part for part in (progress, pods, *reasons) if part)
    progressing = conditions(observed.deployment).get("Progressing", {})
    if progressing.get("status") == "False" and progressing.get("reason") == PROGRESS_DEADLINE_EXCEEDED:
        deadline = (observed.deployment.get("spec") or {}).get("progressDeadlineSeconds")
        return Verdict(Outcome.FAILED, f"no progress in {deadline} s ({PROGRESS_DEADLINE_EXCEEDED}): {detail}")
    if node_pool_name and (given_up := stranded(observed)):
        names = ", ".join(p["metadata"]["name"] for p in given_up)
        return Verdict(
            Outcome.FAILED,
            f"Karpenter cannot launch a node of NodePool {node_pool_name} for {len(given_up)} pod(s) ({names}): "
            + "; ".join(reasons),
            KARPENTER_SETTLE,
        )
    if node_pool_name and (held := not_ready_reasons(observed)):
        waiting = [p["metadata"]["name"] for p in _waiting_for_a_launch(observed.pods)]
        return Verdict(
            Outcome.FAILED,
            f"Karpenter launches no node of NodePool {node_pool_name} for {len(waiting)} pod(s) ({', '.join(waiting)}) while "
            f"it is not Ready: " + "; ".join(held),
            KARPENTER_SETTLE,
        )
    return Verdict(Outcome.WAITING, detail)


def _owned_by(job: dict[str, Any], pod: dict[str, Any]) -> bool:
    uid = (job.get("metadata") or {}).get("uid")
    return bool(uid) and any(ref.get("uid") == uid for ref in pod["metadata"].get("ownerReferences") or [])


def _terminated(pod: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The pod's container that ended in failure (restartPolicy Never: one, once), as its status shows it."""
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        ended = (container.get("state") or {}).get("terminated")
        if ended and ended.get("exitCode", 0) != 0:
            return {"container": container.get("name"), **ended}
    return None


def last_words(job: dict[str, Any], pods: Sequence[dict[str, Any]]) -> Optional[str]:
    """The newest failed pod of `job` in its container's own words: its termination message (what the staging script
    writes to /dev/termination-log, or its log's tail under FallbackToLogsOnError), else the reason Kubernetes gives,
    with the exit code. None while no pod of the Job has failed."""
    failed = [(p, ended) for p in pods if _owned_by(job, p) and (ended := _terminated(p)) is not None]
    if not failed:
        return None
    pod, ended = max(failed, key=lambda found: (str(found[1].get("finishedAt") or ""), found[0]["metadata"]["name"]))
    said = " ".join(str(ended.get("message") or "").split()) or str(ended.get("reason") or "no message")
    return f"pod {pod['metadata']['name']} exited {ended.get('exitCode')}: {said}"


def staging_verdict(job: dict[str, Any], pods: Sequence[dict[str, Any]]) -> Verdict:
    """A staging Job, from one look: done once Complete; failed once Kubernetes says it will not complete (Failed,
    or the FailureTarget that comes first where its pods still terminate), with the failed pod's last words beside
    the Job's reason, since the Job's own (BackoffLimitExceeded, PodFailurePolicy) names no cause."""
    meta, status = job.get("metadata") or {}, job.get("status") or {}
    name = f"{meta.get('namespace')}/{meta.get('name')}"
    found = conditions(job)
    words = last_words(job, pods)
    if found.get("Complete", {}).get("status") == "True":
        return Verdict(Outcome.DONE, f"staging Job {name} complete")
    ended = next((found[t] for t in ("Failed", "FailureTarget") if found.get(t, {}).get("status") == "True"), None)
    if ended is not None:
        why = ": ".join(str(w) for w in (ended.get("reason"), ended.get("message")) if w) or ended["type"]
        return Verdict(Outcome.FAILED, f"staging Job {name} failed ({why})" + (f"; {words}" if words else ""))
    progress = f"staging Job {name}: {status.get('active', 0)} active, {status.get('failed', 0)} failed pod(s)"
    return Verdict(Outcome.WAITING, progress + (f"; the last {words}" if words else ""))
