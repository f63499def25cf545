"""The rollout watch of `pulumi up`: the pure verdicts, the bounded wait, the reader against a stand-in API server
on loopback, the dynamic provider's diff and outputs, and its wiring into the program."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.parse import parse_qs, urlparse

import pulumi.dynamic.dynamic
import pytest

from tests.conftest import rendered_stack, resources_of
from vllm_platform.components import rollout as watch
from vllm_platform.k8s.rollout import (
    KARPENTER_SETTLE,
    NOT_READY_GRACE,
    Observation,
    Outcome,
    capacity_reasons,
    claim_of,
    judge,
    rollout_state,
)

ROOT = Path(__file__).resolve().parent.parent
SELECTOR = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": "llama-70b"}
READY_AT = "2026-12-01T10:00:00Z"
GAVE_UP = {
    "metadata": {"name": "llama-70b-abc.1"},
    "reason": "FailedScheduling",
    "involvedObject": {"kind": "Pod", "name": "llama-70b-abc", "uid": "u-1"},
    "message": "Failed to schedule pod, no instance type which had enough resources and the required offering met the "
    "scheduling requirements, requirements=karpenter.sh/nodepool In [gpu-p4d], resources={\"nvidia.com/gpu\":\"8\"}",
    "lastTimestamp": "2026-12-01T10:05:00Z",
}
NOMINATED = {
    "metadata": {"name": "llama-70b-abc.2"},
    "reason": "Nominated",
    "involvedObject": {"kind": "Pod", "name": "llama-70b-abc", "uid": "u-1"},
    "message": "Pod should schedule on: nodeclaim/gpu-p4d-x7k2q",
    "lastTimestamp": "2026-12-01T10:02:00Z",
}
SCHEDULER = {**GAVE_UP, "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.", "lastTimestamp": "2026-12-01T10:06:00Z"}
ICE = {
    "metadata": {"name": "gpu-p4d-x7k2q.1"},
    "reason": "InsufficientCapacityError",
    "involvedObject": {"kind": "NodeClaim", "name": "gpu-p4d-x7k2q"},
    "message": "NodeClaim gpu-p4d-x7k2q event: all requested instance types were unavailable during launch",
    "count": 2,
    "lastTimestamp": "2026-12-01T10:04:00Z",
}


def deployment(generation: int = 2, observed: int = 2, replicas: int = 1, updated: int = 0, total: int = 1,
               available: int = 0, stalled: bool = False) -> dict[str, Any]:  # fmt: skip
    progressing = {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}
    if stalled:
        progressing = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    return {
        "metadata": {"name": "llama-70b", "generation": generation},
        "spec": {"replicas": replicas, "selector": {"matchLabels": SELECTOR}, "progressDeadlineSeconds": 1089},
        "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                   "availableReplicas": available, "conditions": [progressing]},  # fmt: skip
    }


def pending_pod(name: str = "llama-70b-abc", uid: str = "u-1", **status: Any) -> dict[str, Any]:
    scheduled = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}
    return {
        "metadata": {"name": name, "uid": uid, "labels": dict(SELECTOR)},
        "spec": {"nodeSelector": {"gpu-pool": "p4d"}},
        "status": {"phase": "Pending", "conditions": [scheduled], **status},
    }


def karpenter_object(name: str, ready: str, since: str, *unmet: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    """A NodePool or EC2NodeClass as Karpenter leaves it: Ready, and the dependent conditions that are not True,
    each observed at generation 1."""
    conditions = [{"type": "Ready", "status": ready, "lastTransitionTime": since, "observedGeneration": 1,
                   "reason": "Ready" if ready == "True" else "UnhealthyDependents", "message": ""}, *unmet]  # fmt: skip
    return {"metadata": {"name": name, "generation": generation, "creationTimestamp": "2026-12-01T09:00:00Z"},
            "spec": {"template": {"spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu-p4d"}}}},
            "status": {"conditions": conditions}}  # fmt: skip


def unmet(type_: str, reason: str, message: str, status: str = "False") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": READY_AT, "observedGeneration": 1}


def node_pool(ready: str = "True", since: str = READY_AT) -> dict[str, Any]:
    return karpenter_object("gpu-p4d", ready, since)


# Karpenter v1.14.1's words for an alias that resolves to no image (karpenter-provider-aws pkg/controllers/nodeclass/ami.go),
# relayed to the NodePool by its readiness controller (sigs.k8s.io/karpenter pkg/controllers/nodepool/readiness).
NO_AMI = unmet("AMIsReady", "AMINotFound", "AMISelector did not match any AMIs")
POOL_WITHOUT_CLASS = karpenter_object("gpu-p4d", "False", READY_AT, unmet("NodeClassReady", "UnhealthyDependents", "AMIsReady=False"))
CLASS_WITHOUT_AMI = karpenter_object("gpu-p4d", "False", READY_AT, NO_AMI)


def stranded_look(**changes: Any) -> Observation:
    seen = {"deployment": deployment(), "pods": [pending_pod()], "pod_events": [NOMINATED, GAVE_UP], "claim_events": [ICE],
            "node_pool": node_pool(), "pool_draining": False}  # fmt: skip
    return Observation(**{**seen, **changes})


# --- the pure verdicts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state, done",
    [
        (deployment(observed=1, updated=1, available=1), False),  # the controller has not seen the change
        (deployment(replicas=2, updated=1, total=2, available=2), False),  # one replica still to update
        (deployment(updated=1, total=2, available=1), False),  # an old replica still terminating
        (deployment(updated=1, available=0), False),  # the new replica not yet available
        (deployment(updated=1, available=1), True),
        (deployment(replicas=0, updated=0, total=0), True),  # a model the autoscaler holds at zero
    ],
)
def test_a_rollout_is_done_as_kubectl_rollout_status_has_it(state: dict[str, Any], done: bool) -> None:
    assert rollout_state(state)[0] is done


def test_a_rollout_past_its_progress_deadline_fails_with_what_its_pods_wait_for() -> None:
    stalled = Observation(deployment(stalled=True), [pending_pod()], [])
    verdict = judge(stalled, None)
    assert verdict.outcome is Outcome.FAILED
    assert "no progress in 1089 s (ProgressDeadlineExceeded)" in verdict.detail and "Unschedulable" in verdict.detail
    assert judge(Observation(deployment(), [pending_pod()], []), None).outcome is Outcome.WAITING


def test_karpenter_giving_up_on_a_pod_fails_the_rollout_with_its_reasons() -> None:
    verdict = judge(stranded_look(), "gpu-p4d")
    assert verdict.outcome is Outcome.FAILED
    assert verdict.detail.startswith("Karpenter cannot launch a node of NodePool gpu-p4d for 1 pod(s) (llama-70b-abc): ")
    assert "no instance type which had enough resources and the required offering" in verdict.detail
    assert "EC2 refused 2 launch(es) for capacity" in verdict.detail


@pytest.mark.parametrize(
    "changes, why",
    [
        ({"pod_events": [GAVE_UP, {**NOMINATED, "lastTimestamp": "2026-12-01T10:05:30Z"}]}, "nominated again since"),
        ({"pod_events": [GAVE_UP, {**NOMINATED, "lastTimestamp": GAVE_UP["lastTimestamp"]}]}, "a tie is no verdict"),
        ({"pod_events": [NOMINATED, SCHEDULER]}, "only the default scheduler says no running node fits"),
        ({"pod_events": [{**GAVE_UP, "involvedObject": {**GAVE_UP["involvedObject"], "uid": "u-0"}}]}, "said of an older pod"),
        ({"node_pool": node_pool(ready="False")}, "the NodePool is not Ready yet"),
        ({"node_pool": node_pool(since="2026-12-01T10:05:10Z")}, "said before the NodePool became Ready"),
        ({"node_pool": None}, "no NodePool to judge by"),
        ({"pool_draining": True}, "a draining pod may free a node"),
        ({"pods": [pending_pod(nominatedNodeName="ip-10-0-1-2")]}, "the pod preempts its way onto a node"),
    ],
)
def test_karpenters_word_is_a_verdict_only_when_it_is_its_last_on_a_ready_pool(changes: dict[str, Any], why: str) -> None:
    assert judge(stranded_look(**changes), "gpu-p4d").outcome is Outcome.WAITING, why


def test_without_karpenter_no_capacity_verdict_is_drawn() -> None:
    assert judge(stranded_look(), None).outcome is Outcome.WAITING


def test_karpenters_verdicts_must_settle_and_kubernetes_is_final_at_once() -> None:
    assert judge(stranded_look(), "gpu-p4d").settle == KARPENTER_SETTLE
    assert judge(not_ready_look(NOT_READY_GRACE), "gpu-p4d").settle == KARPENTER_SETTLE
    assert judge(stranded_look(deployment=deployment(stalled=True)), "gpu-p4d").settle == timedelta(0)


def refused(claim: str, count: int) -> dict[str, Any]:
    return {**ICE, "involvedObject": {"kind": "NodeClaim", "name": claim}, "message": f"NodeClaim {claim} event: all requested "
            "instance types were unavailable during launch", "count": count}  # fmt: skip


def test_a_node_pool_counts_only_its_own_claims_refusals_not_those_of_a_pool_its_name_begins() -> None:
    claims = [refused("gpu-g5-big-x7k2q", 2), refused("gpu-g5-b4n8z", 1)]
    assert capacity_reasons([], claims, "gpu-g5") == [f"EC2 refused 1 launch(es) for capacity, the last: {claims[1]['message']}"]
    assert capacity_reasons([], claims, "gpu-g5-big") == [f"EC2 refused 2 launch(es) for capacity, the last: {claims[0]['message']}"]


LONGEST_NODE_POOL = "gpu-" + "p" * 59


@pytest.mark.parametrize(
    "claim, node_pool, mine",
    [
        ("gpu-g5-x7k2q", "gpu-g5", True),
        ("gpu-g5-big-x7k2q", "gpu-g5", False),  # gpu-g5-big's
        ("gpu-g5-x7k2", "gpu-g5", False),  # a suffix the API server does not make: 4 characters
        ("gpu-g5-x7k2a", "gpu-g5", False),  # nor with a vowel
        ("gpu-g5-x7k2q", "gpu-g5-big", False),
        # A 63-character NodePool: the API server cuts "<NodePool>-" to 58 characters before its suffix.
        (LONGEST_NODE_POOL[:58] + "x7k2q", LONGEST_NODE_POOL, True),
        (LONGEST_NODE_POOL + "-x7k2q", LONGEST_NODE_POOL, False),
    ],
)
def test_a_claim_is_a_node_pools_only_in_the_shape_the_api_server_names_it(claim: str, node_pool: str, mine: bool) -> None:
    assert claim_of(claim, node_pool) is mine


def not_ready_look(elapsed: timedelta, **changes: Any) -> Observation:
    """The model's pod waits, Karpenter has said nothing on it, and its NodePool and EC2NodeClass have been not Ready
    since READY_AT; the look is made `elapsed` after that."""
    seen = {"pod_events": [], "claim_events": [], "node_pool": POOL_WITHOUT_CLASS, "node_class": CLASS_WITHOUT_AMI,
            "now": datetime.fromisoformat(READY_AT) + elapsed}  # fmt: skip
    return stranded_look(**{**seen, **changes})


def test_a_node_pool_not_ready_for_longer_than_the_grace_fails_the_rollout_with_its_conditions() -> None:
    verdict = judge(not_ready_look(NOT_READY_GRACE), "gpu-p4d")
    assert verdict.outcome is Outcome.FAILED
    assert verdict.detail == (
        "Karpenter launches no node of NodePool gpu-p4d for 1 pod(s) (llama-70b-abc) while it is not Ready: "
        "NodePool gpu-p4d not Ready since 2026-12-01T10:00:00+00:00: NodeClassReady False (UnhealthyDependents: AMIsReady=False); "
        "EC2NodeClass gpu-p4d not Ready since 2026-12-01T10:00:00+00:00: AMIsReady False (AMINotFound: AMISelector did not match any AMIs)"
    )


def test_a_node_pool_not_ready_within_the_grace_keeps_the_rollout_waiting() -> None:
    assert judge(not_ready_look(NOT_READY_GRACE - timedelta(seconds=1)), "gpu-p4d").outcome is Outcome.WAITING


def test_a_ready_node_pool_and_class_leave_the_verdict_to_karpenters_word_on_the_pod() -> None:
    ready = {"node_pool": node_pool(), "node_class": karpenter_object("gpu-p4d", "True", READY_AT)}
    assert judge(not_ready_look(timedelta(hours=1), **ready, pod_events=[NOMINATED]), "gpu-p4d").outcome is Outcome.WAITING
    verdict = judge(not_ready_look(timedelta(hours=1), **ready, pod_events=[NOMINATED, GAVE_UP]), "gpu-p4d")
    assert verdict.outcome is Outcome.FAILED and verdict.detail.startswith("Karpenter cannot launch a node of NodePool gpu-p4d")


@pytest.mark.parametrize(
    "changes, says",
    [
        # An instance profile IAM refuses leaves its condition Unknown: the reconcile errs before setting it.
        ({"node_pool": node_pool(), "node_class": karpenter_object(
            "gpu-p4d", "Unknown", READY_AT, unmet("InstanceProfileReady", "AwaitingReconciliation", "object is awaiting reconciliation", "Unknown"))},
         "EC2NodeClass gpu-p4d not Ready since 2026-12-01T10:00:00+00:00: InstanceProfileReady Unknown (AwaitingReconciliation: "),
        ({"node_class": karpenter_object("gpu-p4d", "False", READY_AT, unmet(
            "ValidationSucceeded", "CreateFleetAuthCheckFailed", "Controller isn't authorized to call ec2:CreateFleet"))},
         "ValidationSucceeded False (CreateFleetAuthCheckFailed: Controller isn't authorized to call ec2:CreateFleet)"),
        ({"node_pool": node_pool(), "node_class": {**CLASS_WITHOUT_AMI, "status": {}}},
         "EC2NodeClass gpu-p4d not Ready since 2026-12-01T09:00:00+00:00: no status conditions (Karpenter has not reconciled it)"),
        ({"node_pool": karpenter_object("gpu-p4d", "False", READY_AT, unmet("NodeClassReady", "NodeClassNotFound", "NodeClass not found on cluster")),
          "node_class": None},
         "NodePool gpu-p4d not Ready since 2026-12-01T10:00:00+00:00: NodeClassReady False (NodeClassNotFound: NodeClass not found on cluster)"),
    ],
)
def test_each_way_a_node_class_stays_not_ready_is_reported_in_its_own_words(changes: dict[str, Any], says: str) -> None:
    verdict = judge(not_ready_look(NOT_READY_GRACE, **changes), "gpu-p4d")
    assert verdict.outcome is Outcome.FAILED and says in verdict.detail


@pytest.mark.parametrize(
    "changes, why",
    [
        ({"node_class": {**CLASS_WITHOUT_AMI, "metadata": {**CLASS_WITHOUT_AMI["metadata"], "generation": 2}}},
         "Karpenter has yet to judge the class this update changed: the NodePool still copies the old verdict"),
        ({"pool_draining": True}, "a draining pod may free a node"),
        ({"pods": [pending_pod(nominatedNodeName="ip-10-0-1-2")]}, "the pod preempts its way onto a node"),
        ({"pods": [{**pending_pod(), "status": {"phase": "Running", "conditions": []}}]}, "no pod waits for a node"),
        ({"now": None}, "a look without a clock times nothing"),
        ({"node_pool": None}, "no NodePool to judge by"),
    ],
)
def test_a_node_pool_long_not_ready_decides_nothing_where_a_launch_is_not_what_waits(changes: dict[str, Any], why: str) -> None:
    assert judge(not_ready_look(timedelta(hours=1), **changes), "gpu-p4d").outcome is Outcome.WAITING, why


# --- the bounded wait -------------------------------------------------------------------------------


class SteppedClock:
    """The wait's clock and, READY_AT at its start, the wall clock that Karpenter's conditions are timed against."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return datetime.fromisoformat(READY_AT) + timedelta(seconds=self.now)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedReader:
    """Answers each look from the next of `looks` (the last repeats); a look that is an exception raises it."""

    def __init__(self, *looks: Any, karpenter: Optional[dict[str, Any]] = None):
        self.looks, self.count = list(looks), 0
        self.karpenter = karpenter or {"claims": [], "pools": []}

    def _now(self) -> Any:
        current = self.looks[min(self.count, len(self.looks) - 1)]
        if isinstance(current, Exception):
            self.count += 1
            raise current
        return current

    def claim_events(self) -> list[dict[str, Any]]:
        return self._now().get("claims", [])

    def node_pools(self) -> list[dict[str, Any]]:
        return self._now().get("pools", [])

    def node_classes(self) -> list[dict[str, Any]]:
        return self._now().get("classes", [])

    def deployments(self, namespace: str) -> list[dict[str, Any]]:
        return self._now()["deployments"]

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        return self._now().get("pods", [])

    def pod_events(self, namespace: str) -> list[dict[str, Any]]:
        answer = self._now().get("events", [])
        self.count += 1  # the last call of a look
        return answer


WATCHED = {"llama-70b": watch.Watched("llama-70b", "inference", 600, "p4d")}


def test_the_wait_returns_once_the_rollout_is_done() -> None:
    clock = SteppedClock()
    rolling = {"deployments": [deployment(updated=1)], "pods": [pending_pod()]}
    done = {"deployments": [deployment(updated=1, available=1)]}
    reader = ScriptedReader(rolling, rolling, done)
    assert watch.wait_for_rollouts(reader, WATCHED, 10, clock, clock.sleep) == {"llama-70b": "1 of 1 replica(s) available"}
    assert clock.sleeps == [10, 10]


def test_the_wait_fails_once_karpenters_verdict_has_stood_on_every_look_for_the_settle() -> None:
    clock = SteppedClock()
    trying = {"deployments": [deployment()], "pods": [pending_pod()], "events": [NOMINATED], "pools": [node_pool()]}
    given_up = {**trying, "events": [NOMINATED, GAVE_UP], "claims": [ICE]}
    other = watch.Watched("llama-8b", "inference", 600, "g5")
    rolling_8b = {**deployment(updated=1), "metadata": {"name": "llama-8b", "generation": 2}}
    looks = [{**look, "deployments": [*look["deployments"], rolling_8b]} for look in (trying, trying, given_up)]
    with pytest.raises(watch.RolloutFailed) as failed:
        watch.wait_for_rollouts(ScriptedReader(*looks), {**WATCHED, "llama-8b": other}, 10, clock, clock.sleep)
    assert clock.now == 20 + KARPENTER_SETTLE.total_seconds(), "failed the settle after the third look, not at the timeout"
    lines = str(failed.value).splitlines()
    assert lines[0].startswith("model llama-70b: Karpenter cannot launch a node of NodePool gpu-p4d")
    assert lines[1].startswith("model llama-8b (still rolling out): 0 of 1 updated replica(s) available")


def test_the_wait_fails_once_the_node_pool_has_been_not_ready_for_the_grace() -> None:
    clock = SteppedClock()
    look = {"deployments": [deployment()], "pods": [pending_pod()], "pools": [POOL_WITHOUT_CLASS], "classes": [CLASS_WITHOUT_AMI]}
    with pytest.raises(watch.RolloutFailed, match=r"model llama-70b: Karpenter launches no node of NodePool gpu-p4d .*\(AMINotFound: "):
        watch.wait_for_rollouts(ScriptedReader(look), WATCHED, 10, clock, clock.sleep, clock.wall)
    assert clock.now == (NOT_READY_GRACE + KARPENTER_SETTLE).total_seconds(), "failed the settle after the grace, not at the model's timeout"


# A rollout without surge on a full pool: the old pod drains while its replacement waits, and Karpenter, which counts
# the old pod on its node until it is terminal, says the pool's limits leave no room.
AT_LIMIT = {**GAVE_UP, "message": "Failed to schedule pod, all available instance types exceed limits for nodepool"}
DRAINING = {
    "metadata": {"name": "llama-70b-old", "uid": "u-0", "labels": dict(SELECTOR), "deletionTimestamp": "2026-12-01T10:04:30Z"},
    "spec": {"nodeSelector": {"gpu-pool": "p4d"}, "nodeName": "ip-10-0-1-2"},
    "status": {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}]},
}
REPLACING = {"deployments": [deployment(updated=1)], "pods": [DRAINING, pending_pod()], "events": [NOMINATED, AT_LIMIT], "pools": [node_pool()]}
# The drained pod has left the API and the scheduler has yet to bind its replacement: Karpenter's word is stale.
BETWEEN = {**REPLACING, "pods": [pending_pod()]}
BOUND = {**BETWEEN, "pods": [{**pending_pod(), "spec": {"nodeSelector": {"gpu-pool": "p4d"}, "nodeName": "ip-10-0-1-2"}, "status": {
    "phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
    "containerStatuses": [{"name": "vllm", "state": {"waiting": {"reason": "ContainerCreating"}}}]}}]}  # fmt: skip
ROLLED_OUT = {**BOUND, "deployments": [deployment(updated=1, available=1)]}


def test_a_look_between_a_drain_and_the_bind_does_not_fail_the_rollout_on_karpenters_stale_word() -> None:
    clock = SteppedClock()
    assert watch.look(ScriptedReader(BETWEEN), WATCHED, clock.wall())["llama-70b"].outcome is Outcome.FAILED, "that look alone says failed"
    done = watch.wait_for_rollouts(ScriptedReader(REPLACING, BETWEEN, BOUND, ROLLED_OUT), WATCHED, 10, clock, clock.sleep, clock.wall)
    assert done == {"llama-70b": "1 of 1 replica(s) available"}


@pytest.mark.parametrize(
    "looks, failed_at",
    [
        ([REPLACING, BETWEEN], 10),  # the pod is never bound: the pool really is full
        ([REPLACING, BETWEEN, BETWEEN, REPLACING, BETWEEN], 40),  # a drain in between starts the count again
        ([BETWEEN, watch.ReadError("listing pods in inference: 503 Service Unavailable"), BETWEEN], 20),  # so does a look not made
    ],
)
def test_a_pool_that_stays_full_after_the_drain_fails_the_rollout_with_karpenters_reason(looks: list[Any], failed_at: int) -> None:
    clock = SteppedClock()
    with pytest.raises(watch.RolloutFailed, match="Karpenter cannot launch a node of NodePool gpu-p4d for 1 pod.*exceed limits for nodepool"):
        watch.wait_for_rollouts(ScriptedReader(*looks), WATCHED, 10, clock, clock.sleep, clock.wall)
    assert clock.now == failed_at + KARPENTER_SETTLE.total_seconds()


def test_a_model_not_rolled_out_within_its_timeout_fails_then_and_the_looks_are_bounded() -> None:
    clock = SteppedClock()
    reader = ScriptedReader({"deployments": [deployment()], "pods": [pending_pod()]})
    short = {"llama-70b": watch.Watched("llama-70b", "inference", 60, None)}
    with pytest.raises(watch.RolloutFailed, match="not rolled out within its 60 s: 0 of 1 replica"):
        watch.wait_for_rollouts(reader, short, 10, clock, clock.sleep)
    assert clock.now == 60
    frozen = SteppedClock()  # a clock that never moves still ends, after the looks the timeout allows
    with pytest.raises(watch.RolloutFailed, match="not rolled out within its 60 s"):
        watch.wait_for_rollouts(reader, short, 10, frozen, lambda _: None)
    assert reader.count == 7 + 8


def test_a_cluster_unreadable_for_a_minute_fails_the_wait_and_a_brief_outage_does_not() -> None:
    clock = SteppedClock()
    done = {"deployments": [deployment(updated=1, available=1)]}
    outage = [watch.ReadError("listing pods in inference: 503 Service Unavailable")] * (watch.MAX_UNREADABLE_LOOKS - 1)
    assert watch.wait_for_rollouts(ScriptedReader(*outage, done), WATCHED, 10, clock, clock.sleep)
    down = [watch.ReadError("listing pods in inference: 401 Unauthorized")] * watch.MAX_UNREADABLE_LOOKS
    with pytest.raises(watch.RolloutFailed, match="cannot read the cluster .6 looks in a row.: listing pods in inference: 401"):
        watch.wait_for_rollouts(ScriptedReader(*down, done), WATCHED, 10, clock, clock.sleep)


def test_a_deployment_gone_from_the_cluster_fails_the_wait() -> None:
    clock = SteppedClock()
    with pytest.raises(watch.RolloutFailed, match="Deployment inference/llama-70b is not in the cluster"):
        watch.wait_for_rollouts(ScriptedReader({"deployments": []}), WATCHED, 10, clock, clock.sleep)


# --- the reader, against a stand-in API server ------------------------------------------------------


class StandInApi(BaseHTTPRequestHandler):
    answers: dict[str, Any] = {}
    asked: list[tuple[str, dict[str, list[str]]]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlparse(self.path)
        type(self).asked.append((url.path, parse_qs(url.query)))
        answer = type(self).answers.get(url.path)
        body = answer if isinstance(answer, bytes) else json.dumps({"items": answer if answer is not None else []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[tuple[type[StandInApi], str]]:
    handler = type("Api", (StandInApi,), {"answers": {}, "asked": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }  # fmt: skip
    yield handler, json.dumps(kubeconfig)
    server.shutdown()
    server.server_close()


def test_the_reader_asks_the_api_server_what_the_verdict_needs_and_reports_karpenters_reasons(api) -> None:
    handler, kubeconfig = api
    handler.answers = {
        "/apis/apps/v1/namespaces/inference/deployments": [deployment()],
        "/api/v1/namespaces/inference/pods": [pending_pod(), {**pending_pod("other", "u-9"), "metadata": {"name": "other", "uid": "u-9"}}],
        "/api/v1/namespaces/inference/events": [NOMINATED, GAVE_UP],
        "/api/v1/namespaces/default/events": [ICE],
        "/apis/karpenter.sh/v1/nodepools": [node_pool()],
    }
    clock = SteppedClock()
    with pytest.raises(watch.RolloutFailed, match="model llama-70b: Karpenter cannot launch a node of NodePool gpu-p4d for 1 pod"):
        watch.wait_for_rollouts(watch.ClusterReader(kubeconfig, None), WATCHED, 10, clock, clock.sleep)
    selectors = {path: query.get("fieldSelector") for path, query in handler.asked}
    assert selectors["/api/v1/namespaces/inference/events"] == ["involvedObject.kind=Pod"]
    assert selectors["/api/v1/namespaces/default/events"] == ["reason=InsufficientCapacityError"]


def test_the_reader_reads_the_node_class_the_node_pool_names_and_reports_its_conditions(api) -> None:
    handler, kubeconfig = api
    handler.answers = {
        "/apis/apps/v1/namespaces/inference/deployments": [deployment()],
        "/api/v1/namespaces/inference/pods": [pending_pod()],
        "/apis/karpenter.sh/v1/nodepools": [POOL_WITHOUT_CLASS],
        "/apis/karpenter.k8s.aws/v1/ec2nodeclasses": [{**CLASS_WITHOUT_AMI, "metadata": {**CLASS_WITHOUT_AMI["metadata"], "name": "other"}},
                                                      CLASS_WITHOUT_AMI],
    }  # fmt: skip
    clock = SteppedClock()
    clock.now = NOT_READY_GRACE.total_seconds()
    with pytest.raises(watch.RolloutFailed, match=r"EC2NodeClass gpu-p4d not Ready since .*: AMIsReady False \(AMINotFound"):
        watch.wait_for_rollouts(watch.ClusterReader(kubeconfig, None), WATCHED, 10, clock, clock.sleep, clock.wall)
    assert "/apis/karpenter.k8s.aws/v1/ec2nodeclasses" in {path for path, _ in handler.asked}


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b'{"kind": "Status"}', b'{"items": [1, 2]}'])
def test_an_answer_that_is_no_list_of_api_objects_is_a_read_error(api, body: bytes) -> None:
    handler, kubeconfig = api
    handler.answers = {"/apis/apps/v1/namespaces/inference/deployments": body}
    with pytest.raises(watch.ReadError, match="listing Deployments in inference: the answer is not"):
        watch.ClusterReader(kubeconfig, None).deployments("inference")
    handler.answers = {"/apis/apps/v1/namespaces/inference/deployments": [deployment()]}
    assert watch.ClusterReader(kubeconfig, None).deployments("inference")[0]["metadata"]["name"] == "llama-70b"


def test_an_unloadable_kubeconfig_fails_with_the_reason() -> None:
    with pytest.raises(watch.RolloutFailed, match="cannot load the kubeconfig"):
        watch.ClusterReader('{"apiVersion": "v1", "kind": "Config"}', "nowhere")


# --- the dynamic provider ---------------------------------------------------------------------------

OLD = {"llama-8b": {"namespace": "inference", "timeoutSeconds": 600, "pool": "g5", "spec": "a"}}


@pytest.mark.parametrize(
    "news, changed",
    [
        (OLD, []),
        ({"llama-8b": {**OLD["llama-8b"], "timeoutSeconds": 900}}, []),  # a longer wait is no new rollout
        ({"llama-8b": {**OLD["llama-8b"], "spec": "b"}}, ["llama-8b"]),
        ({**OLD, "llama-70b": {**OLD["llama-8b"], "spec": "c"}}, ["llama-70b"]),
        ({"llama-8b": "04da6b54-80e4-46f7-96ec-b56ff0331ba9"}, ["llama-8b"]),  # unknown at preview
    ],
)
def test_only_a_model_whose_deployment_spec_changed_is_waited_for(news: dict[str, Any], changed: list[str]) -> None:
    assert watch.changed_models(OLD, news) == changed
    diff = watch.RolloutsProvider().diff("rollouts", {"models": OLD}, {"models": news})
    assert diff.changes is bool(changed)


def test_an_update_waits_for_the_changed_models_and_never_outputs_the_kubeconfig(monkeypatch) -> None:
    waited: list[list[str]] = []
    monkeypatch.setattr(watch, "ClusterReader", lambda kubeconfig, context: (kubeconfig, context))
    monkeypatch.setattr(watch, "wait_for_rollouts", lambda reader, watched: waited.append(sorted(watched)) or {})
    news = {"models": {**OLD, "llama-70b": {**OLD["llama-8b"], "spec": "c"}}, "kubeconfig": "secret", "context": None}
    result = watch.RolloutsProvider().update("rollouts", {"models": OLD}, news)
    assert waited == [["llama-70b"]]
    assert result.outs == {"models": news["models"]}
    assert watch.RolloutsProvider().create(news).outs == {"models": news["models"]}
    assert waited[-1] == ["llama-70b", "llama-8b"]


def test_the_dynamic_provider_host_loads_the_provider_from_the_project_directory() -> None:
    """Pulumi stores the provider pickled in the state and its host unpickles it, started in the project directory."""
    serialized = pulumi.dynamic.dynamic.serialize_provider(watch.RolloutsProvider())
    script = "import base64, dill, sys; p = dill.loads(base64.b64decode(sys.stdin.read())); print(type(p).__module__, type(p).__name__)"
    loaded = subprocess.run([sys.executable, "-c", script], input=serialized, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert loaded.stdout.split() == ["vllm_platform.components.rollout", "RolloutsProvider"], loaded.stderr
    assert base64.b64decode(serialized)


# --- the wiring -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["prod", "local"])
def test_one_rollouts_resource_waits_for_every_model_after_its_deployment(stack: str) -> None:
    rendering = rendered_stack(stack)
    (rollouts,) = resources_of(rendering, "pulumi-python:dynamic/vllm-platform:Rollouts")
    assert set(rollouts.inputs["models"]) == {m.name for m in rendering.plan.models}
    assert {f"kubernetes:apps/v1:Deployment::{m.name}" for m in rendering.plan.models} <= set(rollouts.dependencies)
    for model in rendering.plan.models:
        watched = rollouts.inputs["models"][model.name]
        assert watched["timeoutSeconds"] == model.rollout_timeout_seconds
        assert watched.get("pool") == (model.pool.name if rendering.plan.runs_karpenter and model.pool else None)
        assert len(watched["spec"]) == 64
    if rendering.plan.config.cluster.existing is None:
        assert rollouts.inputs["kubeconfig"] == "[secret]"


@pytest.mark.parametrize("stack", ["prod", "local"])
def test_the_rollouts_wait_starts_after_every_other_resource(stack: str) -> None:
    """After its first failure `pulumi up` starts no other resource: a model that cannot get a node must fail the
    update only once the rest of the stack (other models, observability, the gateway) is in place."""
    rendering = rendered_stack(stack)
    (rollouts,) = resources_of(rendering, "pulumi-python:dynamic/vllm-platform:Rollouts")
    others = {f"{r.type}::{r.name}" for r in rendering.resources if r.custom and r is not rollouts}
    others = {o for o in others if not o.startswith("pulumi:providers:")}
    assert any(o.startswith("kubernetes:monitoring.coreos.com/v1:PrometheusRule::") for o in others)
    assert others - set(rollouts.dependencies) == set()
