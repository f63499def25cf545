"""The staging Job as pulumi-kubernetes gets it: an update after a failed copy replaces the Job instead of waiting
on it again; and the program's own wait for it, which fails `pulumi up` with the copy's one-line reason. The rest
of the builder is tested with the model cache in tests/test_delivery.py, the script in tests/test_stage_model.py."""

from __future__ import annotations

import json
from typing import Any, Optional

import pytest

from tests.conftest import document_plan, minimal_document, objects_of, rendered_stack, resources_of
from tests.test_rollout import SteppedClock, api  # noqa: F401 (api: the stand-in API server, a fixture)
from vllm_platform.components import rollout as watch
from vllm_platform.k8s import staging
from vllm_platform.k8s.rollout import Outcome, staging_verdict

REVISION = "0e9e39f249a16976918f6564b8830bc894c89659"


def test_a_staging_job_that_is_not_ready_is_replaced_at_the_next_update() -> None:
    document = minimal_document()
    document["config"]["vllm-platform:models"][0]["revision"] = REVISION
    (model,) = document_plan(document).models
    plan = model.weights.staging
    assert plan is not None
    job = staging.job(model, plan, "model-cache", "us-west-2", hf_token=False)
    # pulumi-kubernetes reads the annotation's value as the string "true"; anything else leaves the default.
    assert job["metadata"]["annotations"]["pulumi.com/replaceUnready"] == "true"
    # The replacement is created under the same name right after the delete, which must not leave the old Job behind.
    assert job["metadata"]["annotations"]["pulumi.com/deletionPropagationPolicy"] == "background"
    # One name per revision, so the replacement is the same copy again, resuming, not a new prefix.
    assert job["metadata"]["name"] == plan.job_name and plan.job_name.endswith(REVISION[:12])


def test_every_committed_staging_job_carries_it_through_the_program() -> None:
    rendering = rendered_stack("prod")
    jobs = [j for j in objects_of(rendering, "Job") if j["metadata"]["labels"]["app.kubernetes.io/name"] == staging.STAGING_APP]
    assert len(jobs) == len(rendering.plan.models), "prod stages each of its models: one Job each"
    assert all(j["metadata"]["annotations"]["pulumi.com/replaceUnready"] == "true" for j in jobs)


# --- the wait for the copy: `pulumi up` fails with the copy's own reason ----------------------------------------

JOB = "stage-llama-8b-0e9e39f249a1"
GATED_REASON = (
    "meta-llama/Llama-3.1-8B-Instruct is gated and no token was given (HTTP 401): request access on "
    "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct while logged in, then set the stack's hfToken"
)


def job(*conditions: dict[str, Any], active: int = 0, failed: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": JOB, "namespace": "inference", "uid": "job-1"},
        "status": {"active": active, "failed": failed, "conditions": list(conditions)},
    }


def pod(name: str, exit_code: Optional[int], message: str = "", finished: str = "2026-12-01T10:05:00Z", owner: str = "job-1") -> dict[str, Any]:
    """A pod of the Job as the kubelet leaves it: its container running (exit_code None) or terminated."""
    state = {"running": {}} if exit_code is None else {
        "terminated": {"exitCode": exit_code, "reason": "Error" if exit_code else "Completed", "message": message, "finishedAt": finished}
    }  # fmt: skip
    return {
        "metadata": {"name": name, "ownerReferences": [{"kind": "Job", "name": JOB, "uid": owner}]},
        "status": {"containerStatuses": [{"name": "stage", "state": state}]},
    }


COMPLETE = {"type": "Complete", "status": "True", "reason": "CompletionsReached"}
FAILED_BY_POLICY = {"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                    "message": "Container stage for pod inference/stage-llama-8b-0e9e39f249a1-x2 failed with exit code 2 matching FailJob rule at index 0"}  # fmt: skip
BACKOFF = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}


def test_a_failed_copy_is_reported_in_its_own_words_beside_the_jobs_reason() -> None:
    failed = staging_verdict(job(FAILED_BY_POLICY, failed=1), [pod(f"{JOB}-x2", 2, GATED_REASON + "\n")])
    assert failed.outcome is Outcome.FAILED
    assert failed.detail == (
        f"staging Job inference/{JOB} failed (PodFailurePolicy: {FAILED_BY_POLICY['message']}); "
        f"pod {JOB}-x2 exited 2: {GATED_REASON}"
    )
    # The newest of the failed pods speaks; a pod of another Job (a replaced one's) does not.
    pods = [pod(f"{JOB}-a", 1, "listing: HTTP 503 from the hub", "2026-12-01T10:01:00Z"), pod(f"{JOB}-b", 1, "S3 SlowDown"),
            pod("other", 1, "not this Job's", "2026-12-01T11:00:00Z", owner="job-0")]  # fmt: skip
    assert staging_verdict(job(BACKOFF, failed=2), pods).detail.endswith(f"; pod {JOB}-b exited 1: S3 SlowDown")
    # No message (a pod killed at the deadline): the kubelet's reason stands in.
    assert staging_verdict(job(BACKOFF), [pod(f"{JOB}-c", 137)]).detail.endswith(f"pod {JOB}-c exited 137: Error")


def test_a_copy_still_going_or_done_is_no_failure() -> None:
    retrying = staging_verdict(job(active=1, failed=1), [pod(f"{JOB}-a", 1, "listing: HTTP 503 from the hub"), pod(f"{JOB}-b", None)])
    assert retrying.outcome is Outcome.WAITING
    assert retrying.detail == f"staging Job inference/{JOB}: 1 active, 1 failed pod(s); the last pod {JOB}-a exited 1: listing: HTTP 503 from the hub"
    done = staging_verdict(job(COMPLETE), [pod(f"{JOB}-a", 1, "listing: HTTP 503"), pod(f"{JOB}-b", 0)])
    assert done.outcome is Outcome.DONE
    # Kubernetes' FailureTarget comes before Failed while the last pod terminates: already the verdict.
    target = {**FAILED_BY_POLICY, "type": "FailureTarget"}
    assert staging_verdict(job(target), [pod(f"{JOB}-x2", 2, GATED_REASON)]).outcome is Outcome.FAILED


class JobReader:
    """Answers each look (jobs, then pods) from the next of `looks`, the last repeating."""

    def __init__(self, *looks: dict[str, Any]):
        self.looks, self.count = list(looks), 0

    def jobs(self, namespace: str) -> list[dict[str, Any]]:
        return self.looks[min(self.count, len(self.looks) - 1)]["jobs"]

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        answer = self.looks[min(self.count, len(self.looks) - 1)].get("pods", [])
        self.count += 1  # the last call of a look
        return answer


WATCHED = {"llama-8b": watch.Watched("llama-8b", "inference", 600, job=JOB)}


def test_the_wait_fails_at_the_first_look_where_the_job_has_failed_with_the_copys_reason() -> None:
    clock = SteppedClock()
    running = {"jobs": [job(active=1)], "pods": [pod(f"{JOB}-x2", None)]}
    failed = {"jobs": [job(FAILED_BY_POLICY, failed=1)], "pods": [pod(f"{JOB}-x2", 2, GATED_REASON)]}
    with pytest.raises(watch.RolloutFailed) as raised:
        watch.wait_for_rollouts(JobReader(running, failed), WATCHED, 10, clock, clock.sleep, wait=watch.STAGING)
    assert clock.now == 10, "failed at the second look, not at the timeout"
    assert str(raised.value) == f"model llama-8b: staging Job inference/{JOB} failed (PodFailurePolicy: {FAILED_BY_POLICY['message']}); pod {JOB}-x2 exited 2: {GATED_REASON}"
    done = {"jobs": [job(COMPLETE)], "pods": [pod(f"{JOB}-x2", 0)]}
    assert watch.wait_for_rollouts(JobReader(running, done), WATCHED, 10, clock, clock.sleep, wait=watch.STAGING) == {
        "llama-8b": f"staging Job inference/{JOB} complete"
    }


def test_a_copy_not_done_within_its_timeout_fails_then_and_a_missing_job_at_once() -> None:
    clock = SteppedClock()
    short = {"llama-8b": watch.Watched("llama-8b", "inference", 60, job=JOB)}
    running = {"jobs": [job(active=1)], "pods": [pod(f"{JOB}-x2", None)]}
    with pytest.raises(watch.RolloutFailed, match=rf"^model llama-8b: not staged within its 60 s: staging Job inference/{JOB}: 1 active"):
        watch.wait_for_rollouts(JobReader(running), short, 10, clock, clock.sleep, wait=watch.STAGING)
    assert clock.now == 60
    with pytest.raises(watch.RolloutFailed, match=f"Job inference/{JOB} is not in the cluster"):
        watch.wait_for_rollouts(JobReader({"jobs": []}), WATCHED, 10, clock, clock.sleep, wait=watch.STAGING)


def test_the_reader_lists_the_namespaces_jobs(api) -> None:
    handler, kubeconfig = api
    handler.answers = {"/apis/batch/v1/namespaces/inference/jobs": [job(COMPLETE)]}
    assert watch.ClusterReader(kubeconfig, None).jobs("inference")[0]["metadata"]["name"] == JOB


OLD = {"model": "llama-8b", "namespace": "inference", "job": JOB, "uid": "job-1", "timeoutSeconds": 900}


@pytest.mark.parametrize(
    "news, changed",
    [
        (OLD, False),
        ({**OLD, "timeoutSeconds": 1200}, False),  # a longer wait is no new copy
        ({**OLD, "uid": "job-2"}, True),  # the provider replaced a Job that was not ready
        ({**OLD, "job": "stage-llama-8b-ffffffffffff", "uid": "job-3"}, True),  # a new revision
        ({**OLD, "uid": "04da6b54-80e4-46f7-96ec-b56ff0331ba9"}, True),  # unknown at preview
    ],
)
def test_only_a_new_job_is_waited_for_again(news: dict[str, Any], changed: bool) -> None:
    assert watch.StagingProvider().diff("stage", OLD, news).changes is changed


def test_the_wait_never_outputs_the_kubeconfig(monkeypatch) -> None:
    waited: list[tuple[dict[str, Any], Any]] = []
    monkeypatch.setattr(watch, "ClusterReader", lambda kubeconfig, context: (kubeconfig, context))
    monkeypatch.setattr(watch, "wait_for_rollouts", lambda reader, watched, wait: waited.append((watched, wait)) or {})
    result = watch.StagingProvider().create({**OLD, "kubeconfig": "secret", "context": None})
    assert result.outs == OLD and "kubeconfig" not in json.dumps(result.outs)
    ((watched, wait),) = waited
    assert wait is watch.STAGING and watched == {"llama-8b": watch.Watched("llama-8b", "inference", 900, job=JOB)}


def test_each_staged_model_rolls_after_the_wait_for_its_own_copy() -> None:
    rendering = rendered_stack("prod")
    waits = {r.inputs["model"]: r for r in resources_of(rendering, "pulumi-python:dynamic/vllm-platform:Staging")}
    assert set(waits) == {m.name for m in rendering.plan.models}
    for model in rendering.plan.models:
        plan, wait = model.weights.staging, waits[model.name]
        assert plan is not None
        assert (wait.inputs["job"], wait.inputs["namespace"]) == (plan.job_name, model.namespace)
        assert wait.inputs["timeoutSeconds"] == staging.wait_seconds(plan) and wait.inputs["kubeconfig"] == "[secret]"
        assert f"kubernetes:batch/v1:Job::{plan.job_name}" in wait.dependencies
        (deployment,) = [r for r in rendering.resources if r.type == "kubernetes:apps/v1:Deployment" and r.name == model.name]
        assert f"pulumi-python:dynamic/vllm-platform:Staging::{plan.job_name}" in deployment.dependencies
        (job_object,) = [j for j in objects_of(rendering, "Job") if j["metadata"]["name"] == plan.job_name]
        assert job_object["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true", "pulumi-kubernetes waits no more"
