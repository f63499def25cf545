"""Shared fixtures: rendering configs under Pulumi mocks, and the CRD schema directory."""

from __future__ import annotations

import copy
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import pytest

from tools import render, schemas
from vllm_platform.config import stack_yaml
from vllm_platform.config.loader import stack_config
from vllm_platform.config.platform import parse_config
from vllm_platform.plan.plans import Plan
from vllm_platform.plan.resolve import resolve

COMMITTED_STACKS = render.committed_stacks()
ADMIN = "arn:aws:iam::123456789012:role/deploy"


def stack_document(stack: str) -> dict[str, Any]:
    return stack_yaml.load(render.stack_file(stack).read_text())


def render_document(
    document: dict[str, Any], stack: str = "test", secrets: Optional[dict[str, str]] = None
) -> render.Rendering:
    """Run the real program under mocks on a whole Pulumi.<stack>.yaml document. `secrets` maps each
    `secure:` ciphertext to its plain text, as the engine decrypts them; offline they stay placeholders."""
    config = stack_config(copy.deepcopy(document), secrets.__getitem__) if secrets else stack_config(copy.deepcopy(document))
    return render.render(config, stack)


def plan_of(raw: dict[str, Any]) -> Plan:
    """The plan of raw `vllm-platform:` values: validated, then resolved, as the program does; raises ConfigError."""
    return resolve(parse_config(raw))


def document_plan(document: dict[str, Any]) -> Plan:
    """The plan of a whole Pulumi.<stack>.yaml document."""
    return render.plan_of(stack_config(copy.deepcopy(document)))


@lru_cache(maxsize=None)
def stack_plan(stack: str) -> Plan:
    """A committed stack's plan, without running the program: cheap enough to choose parameters at collection."""
    return document_plan(stack_document(stack))


@lru_cache(maxsize=None)
def rendered_stack(stack: str) -> render.Rendering:
    return render_document(stack_document(stack), stack)


def minimal_document(**platform: Any) -> dict[str, Any]:
    """The smallest stack that renders: one g5.xlarge pool and one 8B model; keyword args replace keys."""
    config = {
        "aws:region": "us-west-2",
        "vllm-platform:cluster": {
            "name": "llm-test",
            "adminPrincipalArns": [ADMIN],
            "gpuNodePools": [{"name": "g5", "instanceTypes": ["g5.xlarge"], "minSize": 0, "maxSize": 4}],
        },
        "vllm-platform:models": [
            {"name": "llama-8b", "model": "meta-llama/Llama-3.1-8B-Instruct", "gpuPool": "g5"},
        ],
    }
    config.update({f"vllm-platform:{k}": v for k, v in platform.items()})
    return {"config": config}


def objects_of(rendering: render.Rendering, kind: str) -> list[dict[str, Any]]:
    return [m for m in rendering.manifests() if m["kind"] == kind]


def resources_of(rendering: render.Rendering, type_prefix: str) -> list[Any]:
    return [r for r in rendering.resources if r.type.startswith(type_prefix)]


@pytest.fixture(scope="session")
def crd_dir() -> Path:
    """The CRD schemas; a clone without them skips CRD checks, CI (REQUIRE_CRD_SCHEMAS=1) fails instead."""
    directory = schemas.crd_schema_dir()
    if directory.is_dir() and any(directory.glob("*.yaml")):
        return directory
    reason = f"CRD schemas not found in {directory} (set CRD_SCHEMA_DIR to the shared crds folder)"
    if os.environ.get("REQUIRE_CRD_SCHEMAS"):
        pytest.fail(reason)
    pytest.skip(reason)
