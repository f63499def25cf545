"""ModelDelivery: on a created cluster, the AWS side of getting weights and images to the GPU nodes fast.

The model cache bucket (SSE-KMS with the platform key, public access blocked, TLS only, unversioned, incomplete
uploads aborted), each staging Job's Pod Identity role (write its revision's prefix only), each streamed model's
role (read its prefix only), and the ECR pull-through cache of Docker Hub with its credentials in Secrets
Manager, which the GPU nodes may import through. Wiring only: the documents are `aws.delivery`'s.
"""

from __future__ import annotations

import json
import re
from typing import Optional

import pulumi
import pulumi_aws as aws

from vllm_platform import names
from vllm_platform.aws import delivery as documents
from vllm_platform.aws import iam
from vllm_platform.aws.addons import pod_identity_role
from vllm_platform.plan.delivery import ImageRoute, WeightsSource
from vllm_platform.plan.plans import ModelPlan, Plan

BUCKET = "aws:s3/bucket:Bucket"
PULL_THROUGH_RULE = "aws:ecr/pullThroughCacheRule:PullThroughCacheRule"
SECRET = "aws:secretsmanager/secret:Secret"


def repository_prefix(cluster_name: str) -> str:
    """The cache's prefix in the account's registry, one per cluster: two stacks in a Region must not share a rule."""
    upstream = "/docker-hub"
    # ECR takes one separator between letters and digits; a DNS label allows "--".
    base = re.sub(r"-{2,}", "-", cluster_name)
    return names.shortened(base, names.AWS_NAME_LIMITS[PULL_THROUGH_RULE] - len(upstream)) + upstream


class ModelDelivery(pulumi.ComponentResource):
    """Contract: `bucket_name` names the cache's bucket (None with no cache), `registry` the registry path Docker
    Hub's images come through (the pull-through cache's or the user's mirror; None for Docker Hub itself),
    `roles` the Pod Identity roles by namespace/ServiceAccount, `ready` what must exist before a model's pods
    or staging Jobs start."""

    bucket_name: Optional[pulumi.Output[str]]
    registry: Optional[str]
    roles: dict[str, aws.iam.Role]
    ready: list[pulumi.Resource]

    def __init__(
        self,
        name: str,
        plan: Plan,
        partition: str,
        domain: str,
        region: str,
        account: str,
        cluster_name: pulumi.Input[str],
        key: aws.kms.Key,
        gpu_node_role: aws.iam.Role,
        system_node_role: aws.iam.Role,
        tags: dict[str, str],
        opts: Optional[pulumi.ResourceOptions] = None,
    ):
        super().__init__("vllm-platform:index:ModelDelivery", name, None, opts)
        self.roles, self.ready = {}, []
        self._partition, self._domain, self._cluster_name, self._key, self._tags = partition, domain, cluster_name, key, tags
        cache = plan.config.model_cache
        self.bucket_name = None
        if plan.caches_models:
            self.bucket_name = pulumi.Output.from_input(cache.bucket) if cache.bucket else self._bucket(plan).bucket
        for model in plan.models:
            self._model_access(model)
        self.registry = plan.config.images.registry if plan.docker_hub_route is ImageRoute.MIRROR else None
        if plan.docker_hub_route is ImageRoute.ECR_CACHE:
            roles = {"gpu-node": gpu_node_role, "system-node": system_node_role}
            self.registry = self._pull_through_cache(plan, partition, domain, region, account, roles)
        self.register_outputs({})

    def _bucket(self, plan: Plan) -> aws.s3.Bucket:
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(names.logical_name(BUCKET, "model-cache"), tags=self._tags, opts=child)
        aws.s3.BucketOwnershipControls(
            "model-cache",
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        public_access = aws.s3.BucketPublicAccessBlock(
            "model-cache",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            "model-cache",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="aws:kms", kms_master_key_id=self._key.arn
                    ),
                    # One data key per bucket, not per object: a 140 GB checkpoint in 64 MiB parts asks KMS once.
                    bucket_key_enabled=True,
                )
            ],
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            "model-cache",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="abort-incomplete-uploads",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=documents.INCOMPLETE_UPLOAD_DAYS
                    ),
                )
            ],
            opts=child,
        )
        # After the public access block, which a policy change must not race.
        aws.s3.BucketPolicy(
            "model-cache",
            bucket=bucket.id,
            policy=bucket.arn.apply(lambda arn: json.dumps(documents.bucket_policy(arn))),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access]),
        )
        return bucket

    def _role(self, name: str, model: ModelPlan, service_account: str, policy: pulumi.Output[str]) -> None:
        role, association = pod_identity_role(name, self._cluster_name, model.namespace, service_account, self._tags, self)
        grant = aws.iam.RolePolicy(
            names.logical_name(names.IAM_ROLE_POLICY, name), role=role.id, policy=policy, opts=pulumi.ResourceOptions(parent=self)
        )
        self.roles[f"{model.namespace}/{service_account}"] = role
        self.ready += [association, grant]

    def _model_access(self, model: ModelPlan) -> None:
        """A read-only role on its prefix for each streamed model; a write role on it for each staging Job."""
        weights, partition, domain = model.weights, self._partition, self._domain
        if not weights.streams or model.simulated:
            return
        assert weights.prefix is not None
        prefix = weights.prefix
        if weights.source is WeightsSource.S3:
            bucket = pulumi.Output.from_input(weights.bucket)
            policy = bucket.apply(lambda b: json.dumps(iam.model_weights_policy(partition, b, prefix)))
            self._role(f"model-{model.name}", model, model.name, policy)
            return
        assert self.bucket_name is not None and weights.staging is not None
        staging = weights.staging
        both = pulumi.Output.all(self.bucket_name, self._key.arn)
        reads = both.apply(lambda args: json.dumps(documents.reader_policy(partition, domain, args[0], prefix, args[1])))
        self._role(f"model-{model.name}", model, model.name, reads)
        writes = both.apply(
            lambda args: json.dumps(documents.staging_policy(partition, domain, args[0], prefix, staging.marker_key, args[1]))
        )
        self._role(f"stage-{model.name}", model, staging.service_account, writes)

    def _pull_through_cache(
        self, plan: Plan, partition: str, domain: str, region: str, account: str, node_roles: dict[str, aws.iam.Role]
    ) -> str:
        """The rule, its credentials and the nodes' part in a first pull; the registry path, known at preview (the
        account and region are), so that a preview shows every image the pods will pull."""
        child = pulumi.ResourceOptions(parent=self)
        hub = plan.config.images.docker_hub
        assert hub is not None and plan.config.cluster.name is not None
        prefix = repository_prefix(plan.config.cluster.name)
        # ECR reads the credentials itself; the name must start with its prefix. No fixed name: a destroyed
        # stack's secret waits out its recovery window, and a new one must not collide with it.
        secret = aws.secretsmanager.Secret(
            names.logical_name(SECRET, "docker-hub"),
            name_prefix=names.name_prefix(SECRET, f"{documents.PULL_THROUGH_SECRET_PREFIX}{prefix.replace('/', '-')}"),
            description="Docker Hub credentials of the ECR pull-through cache",
            tags=self._tags,
            opts=child,
        )
        version = aws.secretsmanager.SecretVersion(
            "docker-hub",
            secret_id=secret.id,
            secret_string=pulumi.Output.secret(json.dumps({"username": hub.username, "accessToken": hub.access_token})),
            opts=child,
        )
        rule = aws.ecr.PullThroughCacheRule(
            "docker-hub",
            ecr_repository_prefix=prefix,
            upstream_registry_url=documents.DOCKER_HUB_UPSTREAM,
            credential_arn=secret.arn,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[version]),
        )
        # Both node roles: the GPU nodes pull the models' images, the system nodes the platform's own.
        grants = [
            aws.iam.RolePolicy(
                names.logical_name(names.IAM_ROLE_POLICY, f"{nodes}-pull-through"),
                role=role.id,
                policy=json.dumps(documents.pull_through_node_policy(partition, region, account, prefix)),
                opts=child,
            )
            for nodes, role in node_roles.items()
        ]
        self.ready += [rule, *grants]
        return documents.pull_through_registry(domain, account, region, prefix)


def existing_cluster_sources(plan: Plan) -> tuple[Optional[str], Optional[str]]:
    """(cache bucket, registry) on an existing cluster, where the stack creates nothing: the config's own."""
    bucket = plan.config.model_cache.bucket if plan.caches_models else None
    return bucket, plan.config.images.registry


def pulled_image(model: ModelPlan, registry: Optional[str]) -> str:
    """The reference the model's pods pull: through the cache's or the mirror's registry where its route says."""
    if model.image_plan.route is ImageRoute.UPSTREAM or registry is None:
        return model.image_plan.reference
    return model.image_plan.pulled_from(registry)
