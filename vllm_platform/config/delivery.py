"""`modelCache` and `images`: how a model's weights and its image reach a GPU node, near and fast.

Weights come from the stack's S3 model cache, filled once per model revision by a staging Job and streamed
from there; the image comes through an ECR pull-through cache (or a mirror of the user's own) instead of
Docker Hub, whose anonymous pulls are rate-limited per source IP, and every node shares the NAT's.
"""

from __future__ import annotations

import re
from typing import Optional

from pydantic import Field, StrictBool, StrictStr, field_validator, model_validator

from vllm_platform.config.base import PRINTABLE_WORD, S3_BUCKET_NAME, Section, check_pattern
from vllm_platform.config.secrets import set_command

# A bucket name with no `..` that is not an IP address.
S3_BUCKET = re.compile(rf"(?!.*\.\.)(?!\d+\.\d+\.\d+\.\d+$){S3_BUCKET_NAME}", re.ASCII)
# A registry host (with an optional port) and path, as an image reference starts: no scheme, no tag.
REGISTRY = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*", re.ASCII)
# Docker Hub user names: 4 to 30 lower-case letters and digits.
DOCKER_HUB_USER = re.compile(r"[a-z0-9]{4,30}", re.ASCII)


class ModelCache(Section):
    """The S3 bucket a model's checkpoint is staged into once per revision and streamed from at every start."""

    enabled: Optional[StrictBool] = Field(
        None,
        description=(
            "on by default for a created cluster (the stack creates the bucket) and where `bucket` is given; off by "
            "default on an existing cluster without `bucket`, whose models then download from the hub at every start"
        ),
    )
    bucket: Optional[StrictStr] = Field(
        None,
        description=(
            "an existing bucket to use instead of one the stack creates; the staging Jobs write "
            "`models/<org>/<name>/<revision>/` in it. On an existing cluster, grant the roles as \"The model cache\" says"
        ),
    )

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else check_pattern(value, S3_BUCKET, (
            "an S3 bucket name (3 to 63 of a-z, 0-9, '.', '-'; no '..', '-.' or '.-', not an IP address, no xn-- or "
            "sthree- prefix, no -s3alias or --ol-s3 suffix)"
        ))

    @model_validator(mode="after")
    def _a_bucket_is_for_a_cache(self) -> "ModelCache":
        if self.enabled is False and self.bucket is not None:
            raise ValueError("bucket names the cache's bucket, and enabled false turns the cache off: keep one")
        return self

    def active(self, creates_cluster: bool) -> bool:
        """Whether models with a revision stream from the cache."""
        if self.enabled is not None:
            return self.enabled
        return creates_cluster or self.bucket is not None


class DockerHub(Section):
    username: StrictStr = Field(description="the Docker Hub account the pull-through cache authenticates as")
    access_token: StrictStr = Field(
        repr=False,
        description=f"a secret, `{set_command('images.dockerHub.accessToken')}`: a Docker Hub access token with read access",
    )

    @field_validator("username")
    @classmethod
    def _user_name(cls, value: str) -> str:
        return check_pattern(value, DOCKER_HUB_USER, "a Docker Hub user name (4 to 30 lower-case letters and digits)")

    @field_validator("access_token")
    @classmethod
    def _token_is_one_word(cls, value: str) -> str:
        return check_pattern(value, PRINTABLE_WORD, "a token of printable ASCII without spaces or a newline", shown=False)


class Images(Section):
    """Where the nodes pull Docker Hub's images from: the vLLM image, and the platform's own (Grafana, the gateway's)."""

    registry: Optional[StrictStr] = Field(
        None,
        description=(
            "a mirror of Docker Hub of your own, such as `registry.example.com/dockerhub`: every Docker Hub image is "
            "pulled as `<registry>/<repository>:<tag>` (`vllm/vllm-openai:v0.31.0` becomes "
            "`<registry>/vllm/vllm-openai:v0.31.0`, Grafana's `grafana/grafana`, the gateway's `envoyproxy/...`)"
        ),
    )
    docker_hub: Optional[DockerHub] = Field(
        None,
        description=(
            "on a created cluster: credentials for an ECR pull-through cache of Docker Hub, which the stack creates "
            "(Docker Hub upstreams need them); the nodes then pull from ECR in the cluster's region"
        ),
    )

    @field_validator("registry")
    @classmethod
    def _registry(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        check_pattern(value, REGISTRY, "a registry host and path, such as registry.example.com/dockerhub")
        port = value.split("/", 1)[0].partition(":")[2]
        if port and not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} has port {port}, not one of 1 to 65535")
        return value

    @model_validator(mode="after")
    def _one_way(self) -> "Images":
        if self.registry is not None and self.docker_hub is not None:
            raise ValueError("registry and dockerHub are two ways to the same images: keep one")
        return self
