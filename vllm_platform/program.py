"""What `__main__.py` runs: read the stack config, resolve the plan, build the platform, export the outputs.

A config that must not deploy stops the program here, before any resource exists, with one error that
names every problem and no traceback.
"""

from __future__ import annotations

from typing import Optional

import pulumi

from vllm_platform.components.platform import build_platform
from vllm_platform.config.errors import ConfigError
from vllm_platform.config.loader import engine_config, engine_hf_token
from vllm_platform.plan.notes import token_notes
from vllm_platform.plan.plans import Plan
from vllm_platform.plan.resolve import resolve


def load_plan() -> tuple[Plan, Optional[pulumi.Output[str]]]:
    """This stack's plan and HF token; the notes a valid config deserves go to the preview as warnings."""
    try:
        plan = resolve(engine_config())
    except ConfigError as error:
        raise pulumi.RunError(str(error)) from None
    token = engine_hf_token()
    for note in (*plan.notes, *token_notes(plan.config, token is not None)):
        pulumi.log.warn(note)
    return plan, token


def run() -> None:
    plan, hf_token = load_plan()
    for name, value in build_platform(plan, hf_token).items():
        pulumi.export(name, value)
