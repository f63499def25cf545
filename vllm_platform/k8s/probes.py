"""A model's three probes: the one place they are defined.

vLLM opens its port only once weights, KV cache and CUDA graphs are ready, so the startup probe waits for
the model's whole load (its budget, `ModelPlan.startup_budget_seconds`, comes from the plan, sized to the
weights); readiness asks whether it lists the model; liveness whether the engine still answers.
"""

from __future__ import annotations

import math
from typing import Any

from vllm_platform.contract import LIVENESS_PATH, READINESS_PATH, SERVING_PORT_NAME, STARTUP_PROBE_PERIOD_SECONDS
from vllm_platform.plan.plans import ModelPlan

READINESS_PERIOD_SECONDS = 5
LIVENESS_PERIOD_SECONDS = 10
PROBE_TIMEOUT_SECONDS = 5
# /health fails once the engine process is dead, but an API server busy with a burst can also answer it
# late; a restart costs a full reload, so only a minute of failures counts.
LIVENESS_FAILURE_THRESHOLD = 6


def _http_get(path: str) -> dict[str, Any]:
    return {"path": path, "port": SERVING_PORT_NAME}


def startup_probe(model: ModelPlan) -> dict[str, Any]:
    return {
        "httpGet": _http_get(READINESS_PATH),
        "periodSeconds": STARTUP_PROBE_PERIOD_SECONDS,
        "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
        "failureThreshold": math.ceil(model.startup_budget_seconds / STARTUP_PROBE_PERIOD_SECONDS),
    }


def readiness_probe() -> dict[str, Any]:
    return {
        "httpGet": _http_get(READINESS_PATH),
        "periodSeconds": READINESS_PERIOD_SECONDS,
        "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
        "failureThreshold": 3,
    }


def liveness_probe() -> dict[str, Any]:
    return {
        "httpGet": _http_get(LIVENESS_PATH),
        "periodSeconds": LIVENESS_PERIOD_SECONDS,
        "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
        "failureThreshold": LIVENESS_FAILURE_THRESHOLD,
    }


def probes(model: ModelPlan) -> dict[str, Any]:
    """The probes of a model's serving container, vLLM's or the simulator's alike."""
    return {"startupProbe": startup_probe(model), "readinessProbe": readiness_probe(), "livenessProbe": liveness_probe()}
