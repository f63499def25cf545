"""Weights and images near the GPUs: the model cache, its staging Job, the ECR pull-through cache and the warm
nodes, from the config's refusals through the plan and the builders to the rendered AWS resources."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import document_plan, minimal_document, objects_of, plan_of, render_document, rendered_stack
from tests.test_config import base, problems
from tools import mocks
from vllm_platform import pins
from vllm_platform.aws import delivery as documents
from vllm_platform.components.delivery import repository_prefix
from vllm_platform.contract import GPU_POOL_LABEL, GPU_RESOURCE, SYSTEM_NODE_SELECTOR, images
from vllm_platform.k8s import staging, warm
from vllm_platform.plan import sizing
from vllm_platform.plan.delivery import ImageRoute, WeightsSource
from vllm_platform.plan.notes import delivery_notes
from vllm_platform.plan.plans import Plan
from vllm_platform.staging import stage_model

REVISION = "0e9e39f249a16976918f6564b8830bc894c89659"
SECRET = {"secure": "AAABAdockerHubToken"}
# ECR's ecrRepositoryPrefix (CreatePullThroughCacheRule): 2 to 30 characters of this grammar.
ECR_PREFIX = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")


def cached(**platform: Any) -> dict[str, Any]:
    """The minimal stack with its model pinned to a revision, so that the cache applies."""
    document = minimal_document(**platform)
    document["config"]["vllm-platform:models"][0]["revision"] = REVISION
    return document


def existing(document: dict[str, Any]) -> dict[str, Any]:
    document["config"]["vllm-platform:cluster"] = {
        "name": "shared-gpu",
        "existing": {"context": "team-a"},
        "gpuNodePools": [{"name": "g5", "instanceTypes": ["g5.xlarge"], "maxSize": 4}],
    }
    return document


def raw_with(**top: Any) -> dict[str, Any]:
    raw = base()
    raw["models"][0]["revision"] = REVISION
    raw.update(top)
    return raw


# --- refusals, each beside the near-identical config it accepts ----------------------------------------------


def test_a_revision_is_refused_for_an_s3_model_and_taken_for_a_hub_one() -> None:
    raw = raw_with()
    raw["models"][0] |= {"model": "s3://acme-models/llama-3.1-8b/", "parametersBillions": 8}
    (problem,) = problems(raw)
    assert "models[llama-8b].revision" in problem and "an s3:// model is served from its prefix as it is" in problem
    raw["models"][0].pop("revision")
    plan_of(raw)


def test_docker_hub_credentials_are_refused_on_an_existing_cluster_and_taken_on_a_created_one() -> None:
    hub = {"dockerHub": {"username": "acmeplatform", "accessToken": SECRET}}
    with pytest.raises(Exception, match=r"images\.dockerHub: an existing cluster gets no ECR pull-through cache"):
        document_plan(existing(cached(images=hub)))
    assert document_plan(cached(images=hub)).models[0].image_plan.route is ImageRoute.ECR_CACHE
    assert document_plan(existing(cached(images={"registry": "registry.example.com/hub"}))).models[0].image_plan.route is ImageRoute.MIRROR


def test_a_registry_and_docker_hub_credentials_together_are_refused() -> None:
    both = {"registry": "registry.example.com/hub", "dockerHub": {"username": "acmeplatform", "accessToken": SECRET}}
    with pytest.raises(Exception, match="registry and dockerHub are two ways to the same images: keep one"):
        document_plan(cached(images=both))
    document_plan(cached(images={"registry": "registry.example.com/hub"}))


def test_a_docker_hub_user_name_is_refused_unless_lower_case() -> None:
    with pytest.raises(Exception, match="is not a Docker Hub user name"):
        document_plan(cached(images={"dockerHub": {"username": "AcmePlatform", "accessToken": SECRET}}))
    document_plan(cached(images={"dockerHub": {"username": "acmeplatform", "accessToken": SECRET}}))


def test_a_plaintext_docker_hub_token_is_refused_with_the_command_that_fixes_it() -> None:
    with pytest.raises(Exception) as refused:
        render_document(cached(images={"dockerHub": {"username": "acmeplatform", "accessToken": "dckr_pat_plain"}}))
    assert "images.dockerHub.accessToken: is a secret written in plain text" in str(refused.value)
    assert "dckr_pat_plain" not in str(refused.value)
    assert "pulumi config set --secret --path 'vllm-platform:images.dockerHub.accessToken'" in str(refused.value)


def test_the_cache_on_an_existing_cluster_needs_a_bucket() -> None:
    with pytest.raises(Exception, match="modelCache.enabled: an existing cluster gets no bucket of the stack's own"):
        document_plan(existing(cached(modelCache={"enabled": True})))
    (model,) = document_plan(existing(cached(modelCache={"enabled": True, "bucket": "acme-model-cache"}))).models
    assert model.weights.source is WeightsSource.CACHE
    assert model.weights.model == f"s3://acme-model-cache/models/meta-llama/Llama-3.1-8B-Instruct/{REVISION}/"


def test_a_bucket_for_a_cache_turned_off_is_refused() -> None:
    assert problems(raw_with(modelCache={"enabled": False, "bucket": "acme-model-cache"})) == [
        "modelCache: bucket names the cache's bucket, and enabled false turns the cache off: keep one"
    ]
    assert plan_of(raw_with(modelCache={"enabled": False})).models[0].weights.staging is None, "the same without the bucket"


def test_warm_nodes_on_a_pool_no_model_uses_are_refused() -> None:
    raw = raw_with()
    raw["cluster"]["gpuNodePools"][1]["warmNodes"] = 1  # g5x4: no model on it
    (problem,) = problems(raw)
    assert problem.startswith("cluster.gpuNodePools[g5x4].warmNodes: 1, but no model runs on the pool")
    raw["cluster"]["gpuNodePools"][1]["warmNodes"] = 0
    raw["cluster"]["gpuNodePools"][0]["warmNodes"] = 1
    assert {p.name: p.warm_nodes for p in plan_of(raw).pools}["g5"] == 1


def test_warm_nodes_beyond_what_the_models_leave_of_max_size_are_refused() -> None:
    raw = raw_with()
    raw["models"][0]["replicas"] = {"min": 2, "max": 2}
    raw["cluster"]["gpuNodePools"][0] |= {"maxSize": 3, "warmNodes": 2}
    (problem,) = problems(raw)
    assert problem.startswith("cluster.gpuNodePools[g5].warmNodes: 2 warm node(s) and the 2 its models hold at replicas.min make 4, above maxSize 3")
    raw["cluster"]["gpuNodePools"][0]["warmNodes"] = 1
    plan_of(raw)


# --- the plan -------------------------------------------------------------------------------------------------


def test_a_revision_on_a_created_cluster_streams_from_the_cache_after_staging() -> None:
    (model,) = document_plan(cached()).models
    weights = model.weights
    assert weights.source is WeightsSource.CACHE and weights.streams
    assert weights.prefix == f"models/meta-llama/Llama-3.1-8B-Instruct/{REVISION}/"
    assert weights.staging is not None and weights.staging.marker_key == f"models/meta-llama/Llama-3.1-8B-Instruct/{REVISION}.staged.json"
    assert weights.staging.job_name == f"stage-llama-8b-{REVISION[:12]}"
    assert weights.model is None, "the stack's own bucket is named only once it exists"
    assert model.ephemeral_storage_gib == sizing.STREAMED_DISK_GIB
    args = list(model.args)
    assert args[args.index("--load-format") + 1] == "runai_streamer" and "--download-dir" not in args
    streamer = json.loads(args[args.index("--model-loader-extra-config") + 1])
    assert set(streamer) == {"concurrency", "distributed", "memory_limit"}
    assert streamer["distributed"] is False and streamer["memory_limit"] == model.resources.memory_mib * 2**20 // 4
    assert args[args.index("--served-model-name") + 1] == "meta-llama/Llama-3.1-8B-Instruct"


def test_tensor_parallel_streams_distributed_each_worker_its_share_of_memory() -> None:
    document = cached()
    document["config"]["vllm-platform:cluster"]["gpuNodePools"][0]["instanceTypes"] = ["g5.12xlarge"]
    document["config"]["vllm-platform:models"][0]["tensorParallelSize"] = 4
    (model,) = document_plan(document).models
    streamer = json.loads(model.args[list(model.args).index("--model-loader-extra-config") + 1])
    assert streamer["distributed"] is True and streamer["memory_limit"] == model.resources.memory_mib * 2**20 // 16


def test_without_a_revision_or_a_cache_the_model_downloads_from_the_hub_and_says_what_it_costs() -> None:
    (unpinned,) = document_plan(minimal_document()).models
    assert unpinned.weights.source is WeightsSource.HUB and unpinned.weights.staging is None
    assert "--download-dir" in unpinned.args and "--load-format" not in unpinned.args
    notes = delivery_notes(document_plan(minimal_document()))
    assert any("models[llama-8b].revision: not set" in n and "/api/models/meta-llama/Llama-3.1-8B-Instruct/revision/main" in n for n in notes)
    plan = document_plan(existing(cached()))
    (model,) = plan.models
    assert model.weights.source is WeightsSource.HUB
    assert any("no model cache on this cluster, so every start downloads the checkpoint from the hub" in n for n in delivery_notes(plan))


def test_an_unpinned_model_on_a_cluster_without_a_cache_hears_both_what_it_costs_and_how_to_pin_it() -> None:
    costs = "no model cache on this cluster, so every start downloads the checkpoint from the hub"
    unpinned = delivery_notes(document_plan(existing(minimal_document())))
    assert any("models[llama-8b].revision: not set" in n for n in unpinned) and any(costs in n for n in unpinned)
    named_bucket = existing(minimal_document(modelCache={"bucket": "team-models"}))
    assert not any(costs in n for n in delivery_notes(document_plan(named_bucket))), "a cache, if not for this model"


@pytest.mark.parametrize(("image", "warned"), [("ghcr.io/acme/vllm-openai:v0.31.0", "ghcr.io"), ("docker.io/acme/vllm-openai:v0.31.0", None)])
def test_an_image_from_a_registry_the_stack_cannot_cache_is_named_at_preview(image: str, warned: str | None) -> None:
    document = cached(images={"dockerHub": {"username": "acmeplatform", "accessToken": SECRET}})
    document["config"]["vllm-platform:models"][0]["image"] = image
    notes = [n for n in delivery_notes(document_plan(document)) if n.startswith("models[llama-8b].image:")]
    assert [warned in n for n in notes] == ([True] if warned else [])


def test_a_pinned_model_from_the_hub_downloads_its_revision_and_one_from_the_cache_its_prefix() -> None:
    """Without a cache vLLM downloads from the hub itself, which takes main unless told the revision."""
    (from_hub,) = document_plan(existing(cached())).models
    args = list(from_hub.args)
    assert args[args.index("--revision") + 1] == REVISION and args[args.index("--tokenizer-revision") + 1] == REVISION
    (unpinned,) = document_plan(minimal_document()).models
    (streamed,) = document_plan(cached()).models
    assert "--revision" not in unpinned.args, "the hub's main, as the preview note says"
    assert "--revision" not in streamed.args, "the cache's prefix is that revision's files"
    other_tokenizer = existing(cached())
    other_tokenizer["config"]["vllm-platform:models"][0]["extraArgs"] = ["--tokenizer=meta-llama/Llama-3.1-8B"]
    (model,) = document_plan(other_tokenizer).models
    assert "--revision" in model.args and "--tokenizer-revision" not in model.args, "that commit is not the other repo's"


def test_an_s3_model_streams_as_it_is_without_staging() -> None:
    document = minimal_document()
    document["config"]["vllm-platform:models"][0] |= {"model": "s3://acme-models/llama-3.1-8b/", "parametersBillions": 8}
    (model,) = document_plan(document).models
    assert model.weights.source is WeightsSource.S3 and model.weights.staging is None
    assert model.weights.model == "s3://acme-models/llama-3.1-8b/"


def test_a_new_revision_is_a_new_job() -> None:
    first = document_plan(cached()).models[0].weights.staging
    document = cached()
    document["config"]["vllm-platform:models"][0]["revision"] = "f" * 40
    second = document_plan(document).models[0].weights.staging
    assert first is not None and second is not None and first.job_name != second.job_name
    assert first.service_account == second.service_account


# --- the builders ---------------------------------------------------------------------------------------------


def staged(plan: Plan) -> tuple[Any, Any]:
    (model,) = plan.models
    assert model.weights.staging is not None
    return model, model.weights.staging


def test_the_staging_job_runs_the_projects_script_once_on_a_system_node() -> None:
    model, plan = staged(document_plan(cached()))
    job = staging.job(model, plan, "model-cache", "us-west-2", hf_token=True)
    spec = job["spec"]["template"]["spec"]
    assert job["apiVersion"] == "batch/v1" and spec["restartPolicy"] == "Never"
    assert spec["nodeSelector"] == dict(SYSTEM_NODE_SELECTOR) and "tolerations" not in spec
    (container,) = spec["containers"]
    assert container["image"] == pins.STAGING_IMAGE and ":latest" not in container["image"]
    assert GPU_RESOURCE not in json.dumps(container["resources"])
    # The package as the ConfigMap mounts it, run from the directory that holds it (tests/test_stage_model.py runs it so).
    assert container["command"] == ["python3", "-m", "staging.stage_model"] and container["workingDir"] == "/opt/stage"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["HF_REPO"] == "meta-llama/Llama-3.1-8B-Instruct" and env["HF_REVISION"] == REVISION
    assert env["CACHE_BUCKET"] == "model-cache" and env["CACHE_PREFIX"] == plan.prefix and env["AWS_REGION"] == "us-west-2"
    assert env["AWS_DEFAULT_REGION"] == "us-west-2", "the region botocore reads"
    assert env["HF_TOKEN_PATH"].startswith("/") and any(m["mountPath"] == env["HF_TOKEN_PATH"].rpartition("/")[0] for m in container["volumeMounts"])
    assert spec["serviceAccountName"] == plan.service_account
    assert job["spec"]["activeDeadlineSeconds"] == plan.deadline_seconds
    assert job["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true", "the program's own wait, not pulumi-kubernetes'"
    assert staging.wait_seconds(plan) > plan.deadline_seconds, "the Job's reason, not the wait's timeout"
    # What the script reads of its environment is what the Job gives it.
    settings = stage_model.Settings.from_env(env | {"HF_TOKEN_PATH": ""})
    assert (settings.prefix, settings.marker_key) == (plan.prefix, plan.marker_key)
    public = staging.job(model, plan, "model-cache", "us-west-2", hf_token=False)["spec"]["template"]["spec"]
    assert "HF_TOKEN_PATH" not in json.dumps(public) and len(public["volumes"]) == len(spec["volumes"]) - 1


def test_a_permanent_failure_fails_the_job_at_once_and_a_disruption_costs_no_retry() -> None:
    model, plan = staged(document_plan(cached()))
    spec = staging.job(model, plan, "model-cache", None, hf_token=False)["spec"]
    fail, ignore = spec["podFailurePolicy"]["rules"]
    assert fail["action"] == "FailJob" and fail["onExitCodes"]["values"] == [stage_model.EXIT_PERMANENT]
    assert fail["onExitCodes"]["containerName"] == spec["template"]["spec"]["containers"][0]["name"]
    assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert "AWS_REGION" not in json.dumps(spec), "no region named: S3 redirects boto3 to the bucket's"


def test_the_script_is_the_projects_own_package_in_its_config_map() -> None:
    model, plan = staged(document_plan(cached()))
    config_map = staging.script_config_map(model, plan)
    package = Path(stage_model.__file__).parent
    assert config_map["data"] == {f"staging.{p.name}": p.read_text() for p in package.glob("*.py")}
    assert {"staging.stage_model.py", "staging.hub.py", "staging.retry.py", "staging.__init__.py"} <= set(config_map["data"])
    (volume,) = [v for v in staging.job(model, plan, "model-cache", None, hf_token=False)["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
    assert {i["key"]: i["path"] for i in volume["configMap"]["items"]} == {
        f"staging.{p.name}": f"staging/{p.name}" for p in package.glob("*.py")}


def test_the_warm_placeholder_yields_to_any_model_and_holds_a_whole_node() -> None:
    document = cached()
    document["config"]["vllm-platform:cluster"]["gpuNodePools"][0]["warmNodes"] = 2
    plan = document_plan(document)
    (pool,) = plan.pools
    priority = warm.priority_class()
    assert priority["value"] < 0 and priority["preemptionPolicy"] == "Never" and priority["globalDefault"] is False
    placeholder = warm.placeholder(plan, pool, ["registry.example.com/hub/vllm/vllm-openai:v0.31.0"])
    assert placeholder["spec"]["replicas"] == 2
    spec = placeholder["spec"]["template"]["spec"]
    assert spec["priorityClassName"] == warm.PRIORITY_CLASS and spec["nodeSelector"] == {GPU_POOL_LABEL: pool.name}
    (container,) = spec["containers"]
    assert container["image"] == "registry.example.com/hub/vllm/vllm-openai:v0.31.0" and container["command"] == ["sleep", "infinity"]
    assert container["resources"]["requests"][GPU_RESOURCE] == str(pool.gpus_per_node)
    assert placeholder["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"


def test_prod_holds_its_warm_node_and_counts_its_cost() -> None:
    rendering = rendered_stack("prod")
    (placeholder,) = [d for d in objects_of(rendering, "Deployment") if d["metadata"]["name"].startswith("warm-")]
    pool = rendering.outputs["gpuPools"]["g5"]
    assert placeholder["spec"]["replicas"] == pool["warmNodes"] == 1
    assert pool["idleHourlyCostUsd"] >= pool["warmNodes"] * 1.212 - 0.01
    assert rendering.outputs["idleHourlyGpuCostUsd"] == pytest.approx(sum(p["idleHourlyCostUsd"] for p in rendering.outputs["gpuPools"].values()))
    (priority,) = objects_of(rendering, "PriorityClass")
    assert priority["value"] < 0


# --- the committed stacks and their AWS resources -------------------------------------------------------------


def inputs_of(rendering: Any, type_: str, name: str) -> dict[str, Any]:
    (found,) = [r.inputs for r in rendering.resources if r.type == type_ and r.name == name]
    return found


def test_prod_streams_both_models_from_its_cache_after_their_staging_jobs() -> None:
    rendering = rendered_stack("prod")
    bucket = rendering.outputs["modelCacheBucket"]
    jobs = {j["metadata"]["labels"]["app.kubernetes.io/instance"]: j for j in objects_of(rendering, "Job")}
    for model in rendering.plan.models:
        assert model.weights.source is WeightsSource.CACHE and model.weights.prefix is not None
        (deployment,) = [d for d in objects_of(rendering, "Deployment") if d["metadata"]["name"] == model.name]
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[:2] == ["--model", f"s3://{bucket}/{model.weights.prefix}"]
        assert rendering.outputs["models"][model.name]["weights"] == {"source": "cache", "uri": f"s3://{bucket}/{model.weights.prefix}"}
        assert jobs[model.name]["spec"]["template"]["spec"]["containers"][0]["env"][2] == {"name": "CACHE_BUCKET", "value": bucket}
        (record,) = [r for r in rendering.resources if r.type == "kubernetes:apps/v1:Deployment" and r.name == model.name]
        assert any(d.endswith(f"Job::{model.weights.staging.job_name}") for d in record.dependencies), "the rollout waits for the copy"  # type: ignore[union-attr]


def test_prod_pulls_the_vllm_image_from_its_ecr_cache() -> None:
    rendering = rendered_stack("prod")
    registry = rendering.outputs["imageRegistry"]
    assert registry == "123456789012.dkr.ecr.us-west-2.amazonaws.com/llm-prod/docker-hub"
    models = [d for d in objects_of(rendering, "Deployment") if d["metadata"]["namespace"] == rendering.config.namespace]
    images = {c["image"] for d in models for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {f"{registry}/vllm/vllm-openai:{pins.DEFAULT_VLLM_IMAGE.rpartition(':')[2]}"}
    rule = inputs_of(rendering, "aws:ecr/pullThroughCacheRule:PullThroughCacheRule", "docker-hub")
    assert rule["upstreamRegistryUrl"] == "registry-1.docker.io" and rule["ecrRepositoryPrefix"] == "llm-prod/docker-hub"
    secret = inputs_of(rendering, "aws:secretsmanager/secret:Secret", "docker-hub")
    assert secret["namePrefix"].startswith(documents.PULL_THROUGH_SECRET_PREFIX) and "name" not in secret
    assert rule["credentialArn"].startswith(f"arn:aws:secretsmanager:us-west-2:123456789012:secret:{secret['namePrefix']}")
    assert inputs_of(rendering, "aws:secretsmanager/secretVersion:SecretVersion", "docker-hub")["secretString"] == mocks.SECRET_PLACEHOLDER
    grant = json.loads(inputs_of(rendering, "aws:iam/rolePolicy:RolePolicy", "gpu-node-pull-through")["policy"])
    (statement,) = grant["Statement"]
    assert statement["Resource"] == "arn:aws:ecr:us-west-2:123456789012:repository/llm-prod/docker-hub/*"


def test_both_node_roles_may_make_a_first_pull_through_the_cache() -> None:
    """The GPU nodes pull the models' images through it, the system nodes the platform's own (Grafana, the gateway)."""
    rendering = rendered_stack("prod")
    for grant, role in (("gpu-node-pull-through", "karpenter-node"), ("system-node-pull-through", "node")):
        inputs = inputs_of(rendering, "aws:iam/rolePolicy:RolePolicy", grant)
        assert inputs["role"] == f"{role}-id"
        (statement,) = json.loads(inputs["policy"])["Statement"]
        assert statement["Action"] == ["ecr:BatchImportUpstreamImage", "ecr:CreateRepository"]


def test_a_mirror_on_a_created_cluster_serves_every_docker_hub_image() -> None:
    """`images.registry` on a cluster the stack creates: the models and Grafana pull from it, and no cache is made."""
    mirror = "mirror.example.com/hub"
    rendering = render_document(minimal_document(images={"registry": mirror}), "mirror")
    assert rendering.outputs["imageRegistry"] == mirror
    (model,) = [d for d in objects_of(rendering, "Deployment") if d["metadata"]["namespace"] == rendering.config.namespace]
    assert model["spec"]["template"]["spec"]["containers"][0]["image"] == f"{mirror}/{images.docker_hub_path(pins.DEFAULT_VLLM_IMAGE)}"
    stack = inputs_of(rendering, "kubernetes:helm.sh/v3:Release", pins.KUBE_PROMETHEUS_STACK.release)
    assert stack["values"]["grafana"]["image"] == {"registry": mirror}
    assert not [r for r in rendering.resources if r.type.startswith("aws:ecr/")]
    upstream = render_document(minimal_document(), "upstream")
    assert upstream.outputs["imageRegistry"] is None
    assert "image" not in inputs_of(upstream, "kubernetes:helm.sh/v3:Release", pins.KUBE_PROMETHEUS_STACK.release)["values"]["grafana"]


def test_the_cache_bucket_is_encrypted_private_tls_only_unversioned_and_cleans_up_uploads() -> None:
    rendering = rendered_stack("prod")
    key_arn = mocks.FAKE_STATE["aws:kms/key:Key"]("secrets", {})["arn"]
    (sse,) = inputs_of(rendering, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "model-cache")["rules"]
    assert sse == {"applyServerSideEncryptionByDefault": {"kmsMasterKeyId": key_arn, "sseAlgorithm": "aws:kms"}, "bucketKeyEnabled": True}
    blocked = inputs_of(rendering, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "model-cache")
    assert all(blocked[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
    (rule,) = inputs_of(rendering, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "model-cache")["rules"]
    assert rule["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": documents.INCOMPLETE_UPLOAD_DAYS} and rule["status"] == "Enabled"
    assert not [r for r in rendering.resources if "bucketVersioning" in r.type], "no versioning: a revision is written once"
    (deny,) = json.loads(inputs_of(rendering, "aws:s3/bucketPolicy:BucketPolicy", "model-cache")["policy"])["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Resource"] == [f"arn:aws:s3:::{rendering.outputs['modelCacheBucket']}", f"arn:aws:s3:::{rendering.outputs['modelCacheBucket']}/*"]


def test_the_staging_role_writes_its_prefix_only_and_the_serving_role_only_reads() -> None:
    key = "arn:aws:kms:us-west-2:123456789012:key/k"
    prefix, marker = f"models/o/m/{REVISION}/", f"models/o/m/{REVISION}.staged.json"
    writes = documents.staging_policy("aws", "amazonaws.com", "cache", prefix, marker, key)
    objects = [s for s in writes["Statement"] if s["Sid"] == "WriteOwnPrefix"][0]
    assert objects["Resource"] == [f"arn:aws:s3:::cache/{prefix}*", f"arn:aws:s3:::cache/{marker}"]
    assert "s3:*" not in json.dumps(writes)
    # Every S3 call the script makes is granted, on its own prefix and marker only.
    called = {"put_object": "s3:PutObject", "get_object": "s3:GetObject", "head_object": "s3:GetObject", "delete_object": "s3:DeleteObject",
              "create_multipart_upload": "s3:PutObject", "upload_part": "s3:PutObject", "complete_multipart_upload": "s3:PutObject",
              "abort_multipart_upload": "s3:AbortMultipartUpload", "list_parts": "s3:ListMultipartUploadParts",
              "list_multipart_uploads": "s3:ListBucketMultipartUploads"}  # fmt: skip
    script = open(stage_model.__file__).read()
    used = {operation for operation in called if f'"{operation}"' in script}
    assert used == set(called), "the script calls an S3 operation this table does not know"
    granted = {a for s in writes["Statement"] for a in s["Action"]}
    assert {called[o] for o in used} <= granted
    reads = documents.reader_policy("aws", "amazonaws.com", "cache", prefix, key)
    granted = {a for s in reads["Statement"] for a in s["Action"]}
    assert granted == {"s3:GetObject", "s3:ListBucket", "kms:Decrypt"}
    (via,) = [s for s in reads["Statement"] if s["Action"] == ["kms:Decrypt"]]
    assert via["Resource"] == key and via["Condition"] == {"StringLike": {"kms:ViaService": "s3.*.amazonaws.com"}}


@pytest.mark.parametrize("cluster", ["llm-prod", "llm--prod", "c" + "l" * 61 + "x"])
def test_the_repository_prefix_is_one_ecr_takes(cluster: str) -> None:
    prefix = repository_prefix(cluster)
    assert ECR_PREFIX.fullmatch(prefix) and 2 <= len(prefix) <= 30 and prefix.endswith("/docker-hub")


def test_a_simulated_stack_makes_no_cache_and_says_so() -> None:
    simulated = render_document(cached(simulateAccelerators=True), "simulated")
    assert simulated.outputs["modelCacheBucket"] is None
    assert not [r for r in simulated.resources if r.type.startswith("aws:s3/")]
    assert not objects_of(simulated, "Job")
    assert any("the model cache and its staging are skipped" in note for note in simulated.plan.notes)
    on_gpus = render_document(cached(simulateAccelerators=False), "on-gpus")
    assert on_gpus.outputs["modelCacheBucket"] and objects_of(on_gpus, "Job"), "the same stack on GPUs caches its model"


def test_without_docker_hub_credentials_the_image_comes_from_docker_hub_with_a_warning() -> None:
    rendering = render_document(cached())
    assert rendering.outputs["imageRegistry"] is None and rendering.outputs["modelCacheBucket"]
    (model,) = rendering.plan.models
    assert model.image_plan.route is ImageRoute.UPSTREAM
    assert any("pull the vLLM image straight from Docker Hub, which allows 100 anonymous pulls per 6 hours" in n for n in delivery_notes(rendering.plan))
