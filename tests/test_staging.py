"""The staging Job as pulumi-kubernetes gets it: an update after a failed copy replaces the Job instead of waiting
on it again. The rest of the builder is tested with the model cache in tests/test_delivery.py."""

from __future__ import annotations

from tests.conftest import document_plan, minimal_document, objects_of, rendered_stack
from vllm_platform.k8s import staging

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
    # One name per revision, so the replacement is the same copy again, resuming, not a new prefix.
    assert job["metadata"]["name"] == plan.job_name and plan.job_name.endswith(REVISION[:12])


def test_every_committed_staging_job_carries_it_through_the_program() -> None:
    rendering = rendered_stack("prod")
    jobs = [j for j in objects_of(rendering, "Job") if j["metadata"]["labels"]["app.kubernetes.io/name"] == staging.STAGING_APP]
    assert len(jobs) == len(rendering.plan.models), "prod stages each of its models: one Job each"
    assert all(j["metadata"]["annotations"]["pulumi.com/replaceUnready"] == "true" for j in jobs)
