"""What `__main__.py` runs: read the stack config, resolve the plan, build the platform, export the outputs.

A config that must not deploy stops the program here, before any resource exists, with one error that
names every problem and no traceback.
"""

from __future__ import annotations

import pulumi

from vllm_platform.components.platform import build_platform
from vllm_platform.config.errors import ConfigError
from vllm_platform.config.loader import engine_config
from vllm_platform.plan.notes import alerting_notes, cold_start_notes, delivery_notes, quota_notes, token_notes
from vllm_platform.plan.plans import Plan
from vllm_platform.plan.resolve import resolve


def load_plan() -> Plan:
    """This stack's plan; the notes a valid config deserves go to the preview as warnings."""
    try:
        plan = resolve(engine_config())
    except ConfigError as error:
        raise pulumi.RunError(str(error)) from None
    quota_info, quota_warnings = quota_notes(plan)
    warnings = (*plan.notes, *token_notes(plan.config), *alerting_notes(plan.config), *delivery_notes(plan), *quota_warnings)
    for note in warnings:
        pulumi.log.warn(note)
    for note in (*quota_info, *cold_start_notes(plan)):
        pulumi.log.info(note)
    return plan


def run() -> None:
    plan = load_plan()
    for name, value in build_platform(plan).items():
        pulumi.export(name, value)
