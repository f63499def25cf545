"""Container image references, read with the grammar of the distribution spec's reference package
(github.com/distribution/reference, reference.go): [domain[:port]/]path[:tag][@digest].

A reference that does not parse whole is refused rather than guessed at: the config and the policy pack
both ask here whether an image is pinned, so a spelling one of them misreads cannot pass the other.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[_.]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
REFERENCE = re.compile(
    rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?",
    re.ASCII,
)
_PATH_COMPONENT_WHOLE = re.compile(_PATH_COMPONENT, re.ASCII)
# The spec's limit on the name, domain and path together.
NAME_MAX_LENGTH = 255
SHA256_DIGEST = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)


class ImageReference(NamedTuple):
    domain: Optional[str]
    path: str
    tag: Optional[str]
    digest: Optional[str]

    @property
    def name(self) -> str:
        """The last path component: `vllm-openai` of registry/vllm/vllm-openai:v1."""
        return self.path.rpartition("/")[2]

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path


def parse(reference: str) -> Optional[ImageReference]:
    """The parts of a whole, valid reference; None for anything else."""
    match = REFERENCE.fullmatch(reference)
    if not match:
        return None
    domain, path = match["domain"], match["path"]
    # As the spec's normalisation reads it: a first component without '.' or ':' (other than localhost)
    # belongs to the path, `library/ubuntu` on Docker Hub, not a registry named `library`.
    if domain is not None and not ("." in domain or ":" in domain or domain == "localhost" or domain.startswith("[")):
        # Read as the path's first component, it must be one: lower case (`VLLM/vllm-openai` is no reference).
        if not _PATH_COMPONENT_WHOLE.fullmatch(domain):
            return None
        domain, path = None, f"{domain}/{path}"
    if len((f"{domain}/" if domain else "") + path) > NAME_MAX_LENGTH:
        return None
    return ImageReference(domain, path, match["tag"], match["digest"])


# The names a tag moves under, each to the next build it is pushed again for; a tag any of whose words
# (between `.`, `-` and `_`) is one of them is refused, in any case: `nightly`, `Latest`, `1.2.3-SNAPSHOT`, `main-abc1234`.
MOVING_TAG_WORDS = frozenset(
    ("latest", "stable", "nightly", "main", "master", "dev", "develop", "edge", "head", "canary", "current", "next",
     "rolling", "snapshot", "testing", "trunk", "unstable")
)  # fmt: skip
_TAG_WORDS = re.compile(r"[._-]")
# A tag that names one release: a version (`v0.31.0`, `8.2.4-alpine3.22`, `v0.10.1.post1`, `v0.10.0rc1`, `0.9.2-cu126`),
# after at most one word (`distroless-v1.39.0`), or a commit (`abc1234`: 7 to 40 hex digits, one a digit at least).
RELEASE_TAG = re.compile(
    r"(?:[a-z][a-z0-9]*-)?(?:v?[0-9]+(?:\.[0-9]+)*|(?=[a-f]*[0-9])[0-9a-f]{7,40})[\w.-]*", re.ASCII | re.IGNORECASE
)
PIN_RULE = (
    "pinned is a release tag, its version first or after one word (v0.31.0, 0.9.2-cu126, v0.10.0rc1, distroless-v1.39.0) "
    "or a commit (7 to 40 hex digits), or an @sha256: digest"
)


def pin_problem(reference: object) -> Optional[str]:
    """Why the image is not pinned to one release, or None: an @sha256: digest, or a release tag (`RELEASE_TAG`)
    none of whose words is a moving name (`MOVING_TAG_WORDS`)."""
    if not isinstance(reference, str) or not reference:
        return "is not an image reference"
    parsed = parse(reference)
    if parsed is None:
        return "is not an image reference ([registry/]path[:tag][@sha256:digest])"
    if parsed.digest is not None:
        return None if SHA256_DIGEST.fullmatch(parsed.digest) else "has a digest that is not sha256:<64 hex digits>"
    if parsed.tag is None:
        return f"has no tag: {PIN_RULE}"
    moving = [word for word in _TAG_WORDS.split(parsed.tag) if word.lower() in MOVING_TAG_WORDS]
    if moving:
        return f"floats ({moving[0]!r} is a moving name, not a release): {PIN_RULE}"
    if not RELEASE_TAG.fullmatch(parsed.tag):
        return f"has the tag {parsed.tag!r}, which names no release: {PIN_RULE}"
    return None


# The names Docker Hub goes by in a reference; no domain at all means Docker Hub too.
DOCKER_HUB_DOMAINS = (None, "docker.io", "index.docker.io", "registry-1.docker.io")
# Public registries outside AWS that vLLM builds are published to, besides Docker Hub: an image from one is
# pulled by every node across the internet, which the stack neither caches nor mirrors.
REMOTE_PUBLIC_REGISTRIES = frozenset({"ghcr.io", "quay.io", "nvcr.io", "registry.gitlab.com", "gcr.io", "registry.k8s.io"})


def below_mirror(registry: str, reference: str) -> str:
    """A Docker Hub image as a registry that mirrors Docker Hub serves it: `<registry>/<path>[:tag][@digest]`."""
    path = docker_hub_path(reference)
    assert path is not None, f"{reference} is not a Docker Hub image"
    return f"{registry}/{path}"


def docker_hub_path(reference: str) -> Optional[str]:
    """`path[:tag][@digest]` of a Docker Hub image as a registry that mirrors Docker Hub names it, or None for an
    image of another registry. Official images live under `library/` (`ubuntu` is `library/ubuntu`), which a
    mirror's path keeps."""
    parsed = parse(reference)
    if parsed is None or parsed.domain not in DOCKER_HUB_DOMAINS:
        return None
    path = parsed.path if "/" in parsed.path else f"library/{parsed.path}"
    return path + (f":{parsed.tag}" if parsed.tag else "") + (f"@{parsed.digest}" if parsed.digest else "")
