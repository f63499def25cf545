"""What AWS needs for the model cache and the image cache, as plain dicts: the bucket's policy, the staging Job's
and the serving pods' access to one model's prefix, and what the GPU nodes need of the ECR pull-through cache.

Objects are encrypted with the platform's KMS key (SSE-KMS with an S3 Bucket Key), so every reader also needs
kms:Decrypt on that key, and a writer kms:GenerateDataKey (S3 asks KMS for a data key per object, and for a
multipart upload's parts: "you must have permission to the kms:Decrypt and kms:GenerateDataKey actions",
Amazon S3 User Guide, "Uploading and copying objects using multipart upload").
"""

from __future__ import annotations

from typing import Any

from vllm_platform.aws.iam import POLICY_VERSION, model_weights_policy

# S3 aborts a multipart upload left incomplete this long (a staging Job that died mid-file and never came
# back); a Job resumes its own uploads well within it.
INCOMPLETE_UPLOAD_DAYS = 7
# Docker Hub, as ECR's pull-through cache names the upstream (CreatePullThroughCacheRule, upstreamRegistryUrl).
DOCKER_HUB_UPSTREAM = "registry-1.docker.io"
# Secrets Manager names a pull-through cache's credentials with this prefix, or ECR refuses them.
PULL_THROUGH_SECRET_PREFIX = "ecr-pullthroughcache/"


def bucket_policy(bucket_arn: str) -> dict[str, Any]:
    """TLS only: a request over plain HTTP is refused, whoever signs it."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def _key_use(domain: str, key_arn: str, actions: list[str]) -> dict[str, Any]:
    # Only through S3: the key serves no other purpose for these roles.
    return {
        "Sid": "UseCacheKeyThroughS3",
        "Effect": "Allow",
        "Action": actions,
        "Resource": key_arn,
        "Condition": {"StringLike": {"kms:ViaService": f"s3.*.{domain}"}},
    }


def staging_policy(partition: str, domain: str, bucket: str, prefix: str, marker_key: str, key_arn: str) -> dict[str, Any]:
    """What one model's staging Job may do: write its own prefix and its completion marker, resume its own
    multipart uploads there, read back what it wrote, and delete there what it finds wrong (a stale marker, a
    resumed file whose hash does not match); nothing elsewhere in the bucket."""
    objects = [f"arn:{partition}:s3:::{bucket}/{prefix}*", f"arn:{partition}:s3:::{bucket}/{marker_key}"]
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "WriteOwnPrefix",
                "Effect": "Allow",
                "Action": [
                    "s3:PutObject",
                    "s3:GetObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                ],
                "Resource": objects,
            },
            {
                "Sid": "ListOwnPrefix",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": f"arn:{partition}:s3:::{bucket}",
                "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*", marker_key]}},
            },
            # The uploads in progress, to resume its own. Not narrowed by s3:prefix, which S3 documents for
            # ListBucket: a listing of keys and upload ids, never an object's bytes.
            {
                "Sid": "FindOwnUploads",
                "Effect": "Allow",
                "Action": ["s3:ListBucketMultipartUploads"],
                "Resource": f"arn:{partition}:s3:::{bucket}",
            },
            _key_use(domain, key_arn, ["kms:GenerateDataKey", "kms:Decrypt"]),
        ],
    }


def cache_read_statement(domain: str, key_arn: str) -> dict[str, Any]:
    """What a serving pod adds to reading its prefix when the cache is encrypted with the platform key."""
    return _key_use(domain, key_arn, ["kms:Decrypt"])


def pull_through_node_policy(partition: str, region: str, account: str, repository_prefix: str) -> dict[str, Any]:
    """The GPU nodes' part in a first pull through the cache: ECR imports the upstream image into a repository
    it creates, on the puller's permission ("ecr:BatchImportUpstreamImage ... ecr:CreateRepository", Amazon ECR
    User Guide, "IAM permissions required to sync an upstream registry"), under the rule's prefix only."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "ImportThroughPullThroughCache",
                "Effect": "Allow",
                "Action": ["ecr:BatchImportUpstreamImage", "ecr:CreateRepository"],
                "Resource": f"arn:{partition}:ecr:{region}:{account}:repository/{repository_prefix}/*",
            }
        ],
    }


def pull_through_registry(domain: str, account: str, region: str, repository_prefix: str) -> str:
    """The registry path that mirrors Docker Hub: images are `<this>/<Docker Hub path>:<tag>`."""
    return f"{account}.dkr.ecr.{region}.{domain}/{repository_prefix}"


def reader_policy(partition: str, domain: str, bucket: str, prefix: str, key_arn: str) -> dict[str, Any]:
    """A serving pod's read of its revision in the stack's cache: the prefix, and the key it is encrypted with."""
    document = model_weights_policy(partition, bucket, prefix)
    return {**document, "Statement": [*document["Statement"], cache_read_statement(domain, key_arn)]}
