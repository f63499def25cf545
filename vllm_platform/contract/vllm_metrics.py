"""vLLM's Prometheus metrics, as the pinned image exports them: names, labels and histogram buckets.

Read from vLLM 0.31.0's own source (the PyPI wheel vllm-0.31.0, vllm/v1/metrics/loggers.py and
buckets.py, 2026-12-02); 0.33.0 has the same buckets. Every series carries `model_name` (the served
name) and `engine`. The alerts, the dashboard and KEDA all query through these names, and a latency SLO
must sit on a bucket boundary: between two boundaries, histogram_quantile interpolates, and a p95 of
1.2 s reads as 2.4 s when the buckets jump from 1.0 to 2.5.
"""

from __future__ import annotations

MODEL_LABEL = "model_name"
QUEUE_DEPTH = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"  # a fraction, 0 to 1
PREEMPTIONS = "vllm:num_preemptions_total"
# Every finished request, with `finished_reason` stop, length, abort (the client went away), error
# (always answered 500) or repetition.
FINISHED_REQUESTS = "vllm:request_success_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
TIME_TO_FIRST_TOKEN = "vllm:time_to_first_token_seconds"
INTER_TOKEN_LATENCY = "vllm:inter_token_latency_seconds"
END_TO_END_LATENCY = "vllm:e2e_request_latency_seconds"
# Every HTTP answer of the API server, 500s raised outside the engine included (a dead engine, a failed
# request before it), by `handler`, `method` and `status` grouped as 2xx, 4xx, 5xx: prometheus-fastapi-
# instrumentator's default metric, which vLLM 0.31.0 mounts (vllm/entrypoints/serve/instrumentator/metrics.py,
# with prometheus-fastapi-instrumentator>=8.0.0, whose default groups the codes). It has no `model_name`.
HTTP_REQUESTS = "http_requests_total"

TIME_TO_FIRST_TOKEN_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
)  # fmt: skip
INTER_TOKEN_LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
END_TO_END_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
    1920.0, 7680.0,
)  # fmt: skip
BUCKETS = {
    TIME_TO_FIRST_TOKEN: TIME_TO_FIRST_TOKEN_BUCKETS,
    INTER_TOKEN_LATENCY: INTER_TOKEN_LATENCY_BUCKETS,
    END_TO_END_LATENCY: END_TO_END_LATENCY_BUCKETS,
}


def bucket_matcher(bound: float) -> str:
    """The `le` matcher of one bucket. prometheus_client writes `le="60.0"`; Prometheus 3 normalises the
    label of a classic histogram, Prometheus 2 keeps it as written; a whole bound matches both spellings."""
    if float(bound).is_integer():
        return f'le=~"{int(bound)}(\\\\.0)?"'
    return f'le="{bound:g}"'
