"""Which image references count as pinned to one release (`images.pin_problem`, read by the config and by the
policy pack): each refusal beside a near-identical reference that passes, and every image the platform pins or
its stacks pull passing."""

from __future__ import annotations

from typing import Optional

import pytest

from tests.conftest import COMMITTED_STACKS, plan_of
from tests.test_charts import pulled_images
from tests.test_config import problems, with_model
from vllm_platform import pins
from vllm_platform.contract import images

DIGEST = "@sha256:" + "0" * 64

# (refused, accepted beside it, what the refusal says).
REFUSED_BESIDE_ACCEPTED = [
    ("vllm/vllm-openai", "vllm/vllm-openai:v0.31.0", "has no tag"),
    ("vllm/vllm-openai:latest", "vllm/vllm-openai:v0.31.0", "floats ('latest' is a moving name"),
    ("vllm/vllm-openai:Latest", "vllm/vllm-openai:V0.31.0", "floats ('Latest' is a moving name"),
    ("vllm/vllm-openai:nightly", "vllm/vllm-openai:v0.31.0", "floats ('nightly'"),
    ("vllm/vllm-openai:main", "vllm/vllm-openai:v0.31.0", "floats ('main'"),
    ("registry:5000/img:stable", "registry:5000/img:v1", "floats ('stable'"),
    ("registry:5000/img:dev", "registry:5000/img:1.2.3", "floats ('dev'"),
    # A moving word anywhere in the tag, but only as a whole word: `dev0` is a version's part.
    ("vllm/vllm-openai:v0.31.0-dev", "vllm/vllm-openai:v0.31.0.dev0", "floats ('dev'"),
    ("registry:5000/img:1.2.3-SNAPSHOT", "registry:5000/img:1.2.3-SP1", "floats ('SNAPSHOT'"),
    ("vllm/vllm-openai:latest-v0.31.0", "vllm/vllm-openai:distroless-v0.31.0", "floats ('latest'"),
    ("vllm/vllm-openai:nightly-0e9e39f", "vllm/vllm-openai:0e9e39f", "floats ('nightly'"),
    # A tag with no version in it, or one after more than one word.
    ("vllm/vllm-openai:cu126", "vllm/vllm-openai:v0.31.0-cu126", "has the tag 'cu126', which names no release"),
    ("redis:bookworm", "redis:8.2.4-bookworm", "has the tag 'bookworm', which names no release"),
    ("redis:alpine-bookworm-8.2.4", "redis:bookworm-8.2.4", "has the tag 'alpine-bookworm-8.2.4', which names no release"),
    # A commit: 7 to 40 hex digits, one a digit at least (`deadbee` is a word).
    ("envoyproxy/ratelimit:deadbee", "envoyproxy/ratelimit:deadbe7", "has the tag 'deadbee', which names no release"),
    ("envoyproxy/ratelimit:abc12", "envoyproxy/ratelimit:abc1234", "has the tag 'abc12', which names no release"),
    # A digest pins what runs, whatever the tag beside it says.
    ("vllm/vllm-openai@sha256:" + "0" * 63, "vllm/vllm-openai" + DIGEST, "has a digest that is not sha256:<64 hex digits>"),
    ("vllm/vllm-openai:latest", "vllm/vllm-openai:latest" + DIGEST, "floats"),
]  # fmt: skip


@pytest.mark.parametrize("refused, accepted, says", REFUSED_BESIDE_ACCEPTED)
def test_an_image_is_pinned_by_a_release_tag_or_a_digest(refused: str, accepted: str, says: str) -> None:
    assert images.pin_problem(accepted) is None
    problem: Optional[str] = images.pin_problem(refused)
    assert problem is not None and problem.startswith(says)


@pytest.mark.parametrize("refused", [r for r, _, _ in REFUSED_BESIDE_ACCEPTED if "@" not in r])
def test_every_refused_tag_says_what_pins(refused: str) -> None:
    assert str(images.pin_problem(refused)).endswith(images.PIN_RULE)


def test_the_configs_image_refusal_names_the_rule() -> None:
    plan_of(with_model(image="vllm/vllm-openai:v0.31.0-cu126"))
    assert problems(with_model(image="vllm/vllm-openai:nightly")) == [
        f"models[llama-8b].image: 'vllm/vllm-openai:nightly' floats ('nightly' is a moving name, not a release): "
        f"{images.PIN_RULE}; pin a release such as {pins.DEFAULT_VLLM_IMAGE}"
    ]


def test_every_image_the_platform_pins_passes() -> None:
    pinned = {name: value for name, value in vars(pins).items() if name.endswith("_IMAGE") and isinstance(value, str)}
    assert len(pinned) >= 5
    assert {name: images.pin_problem(value) for name, value in pinned.items()} == dict.fromkeys(pinned)


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_every_image_a_committed_stack_pulls_passes(stack: str) -> None:
    """The charts' images too (`envoyproxy/ratelimit:17b1956c`, `dcgm-exporter:4.5.3-4.8.2-distroless`), which the
    policy pack holds to the same rule."""
    pulled = pulled_images(stack)
    assert pulled and {image: images.pin_problem(image) for image in pulled} == dict.fromkeys(pulled)
