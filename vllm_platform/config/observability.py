"""`observability`: kube-prometheus-stack, KEDA, the DCGM exporter, the dashboard and the alerts."""

from __future__ import annotations

import re
from typing import Optional
from urllib.parse import urlsplit

from pydantic import Field, StrictBool, StrictFloat, StrictStr, ValidationInfo, field_validator, model_validator

from vllm_platform.config.alerting import Alerting
from vllm_platform.config.base import DNS_1123_SUBDOMAIN, PRINTABLE_TEXT, Section, check_pattern, namespace_names
from vllm_platform.config.quantities import memory_mib
from vllm_platform.config.secrets import set_command
from vllm_platform.contract import MONITORING_NAMESPACE, SERVING_PORT, vllm_metrics

PROMETHEUS_DURATION = re.compile(r"(?P<count>[1-9][0-9]*)(?P<unit>ms|s|m|h|d|w|y)", re.ASCII)
DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def duration_seconds(duration: str) -> float:
    """A Prometheus duration of the form this config admits (15s, 30m, 15d) in seconds."""
    match = PROMETHEUS_DURATION.fullmatch(duration)
    if not match:
        raise ValueError(f"{duration!r} is not a Prometheus duration such as 15s, 30m or 15d")
    return int(match["count"]) * DURATION_SECONDS[match["unit"]]


# Each latency SLO and the vLLM histogram that counts requests within it.
SLO_HISTOGRAMS = {
    "time_to_first_token_slo_seconds": vllm_metrics.TIME_TO_FIRST_TOKEN,
    "inter_token_latency_slo_seconds": vllm_metrics.INTER_TOKEN_LATENCY,
    "request_latency_slo_seconds": vllm_metrics.END_TO_END_LATENCY,
}
STORAGE_QUANTITY = re.compile(r"[1-9][0-9]*(?:Gi|Ti)", re.ASCII)
# retentionSize is 85% of the volume in whole GB, and 0GB means no size limit: below 2Gi it would round to 0. EBS
# gp3 volumes end at 16TiB.
MIN_STORAGE, MAX_STORAGE = "2Gi", "16Ti"
# Faster than 5s loads every target for nothing; slower than 5m and Prometheus' 5-minute staleness marks every
# series stale between scrapes, so rules and KEDA's queries see gaps.
MIN_SCRAPE_SECONDS, MAX_SCRAPE_SECONDS = 5, 300
MAX_RETENTION_SECONDS = 10 * DURATION_SECONDS["y"]
# scheme://host[:port][/path]: a DNS name or IPv4 address, and a path of printable ASCII without spaces.
HTTP_URL = re.compile(
    r"https?://(?P<host>[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*)"
    r"(:(?P<port>[0-9]{1,5}))?(/[\x21\x22\x24-\x3e\x40-\x7e]*)?(?P<query>[?#][\x21-\x7e]*)?",
    re.ASCII,
)


# A URL's scheme and whatever comes before its last `@`: the userinfo, `user:password`. Up to the last `@`, not
# the authority's end, since a password may hold an unescaped `/` or `@`; a refused URL shows less, never a password.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)?.*@", re.DOTALL)


def _without_userinfo(url: str) -> tuple[str, bool]:
    """The URL to show in a message, its userinfo replaced by `***`, and whether it had any."""
    match = _USERINFO.match(url)
    return (url, False) if match is None else (f"{match[1] or ''}***@{url[match.end():]}", True)


class Prometheus(Section):
    retention: StrictStr = Field("15d", description="Prometheus retention")
    storage_size: StrictStr = Field(
        "50Gi",
        description=(
            "Prometheus volume; `retentionSize` is set to 85% of it, so a full volume never stops Prometheus (and "
            "KEDA's metric with it)"
        ),
    )
    # The EBS CSI gp3 class the cluster layer installs as the default.
    storage_class_name: StrictStr = Field("gp3", description="the class the volume is provisioned from (`standard` on kind)")
    scrape_interval: StrictStr = Field(
        "15s", description="scrape and rule evaluation interval, the models' ServiceMonitors' too"
    )

    @field_validator("storage_class_name")
    @classmethod
    def _class_name(cls, value: str) -> str:
        return check_pattern(value, DNS_1123_SUBDOMAIN, "a StorageClass name (a DNS-1123 subdomain such as gp3)")

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: str) -> str:
        if duration_seconds(value) > MAX_RETENTION_SECONDS:
            raise ValueError(f"{value} is more than 10y; Prometheus keeps metrics for days to months, such as 15d")
        return value

    @field_validator("scrape_interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        if not MIN_SCRAPE_SECONDS <= duration_seconds(value) <= MAX_SCRAPE_SECONDS:
            raise ValueError(
                f"{value} is not between {MIN_SCRAPE_SECONDS}s and 5m: faster loads every target for nothing, slower "
                "leaves series stale between scrapes (Prometheus' 5-minute lookback)"
            )
        return value

    @field_validator("storage_size")
    @classmethod
    def _quantity(cls, value: str) -> str:
        # Whole Gi or Ti only, the sizes EBS makes; the kubernetes client's parser reads the quantity.
        if not STORAGE_QUANTITY.fullmatch(value):
            raise ValueError(f"{value!r} is not a volume size in Gi or Ti, such as 50Gi")
        if not memory_mib(MIN_STORAGE) <= memory_mib(value) <= memory_mib(MAX_STORAGE):
            raise ValueError(
                f"{value} is not between {MIN_STORAGE} and {MAX_STORAGE}: retentionSize, 85% of it in whole GB, would be "
                f"0GB (no limit) below {MIN_STORAGE}, and an EBS gp3 volume ends at {MAX_STORAGE}"
            )
        return value


class Observability(Section):
    enabled: StrictBool = Field(
        True, description="install kube-prometheus-stack, KEDA, the DCGM exporter, the dashboard and the alerts"
    )
    prometheus: Prometheus = Field(Prometheus(), description="Prometheus' storage and intervals")
    grafana_enabled: StrictBool = Field(True, description="Grafana with the vLLM dashboard")
    alertmanager_enabled: StrictBool = Field(
        True,
        description=(
            "Alertmanager, routing as `alertmanager` says"
        ),
    )
    time_to_first_token_slo_seconds: StrictFloat = Field(
        2.5,
        description=(
            "the time-to-first-token SLO: `latencyObjective` of requests start within it. One of vLLM's bucket "
            "bounds (… 0.5, 0.75, 1.0, 2.5, 5.0 …): between two, a quantile is an interpolation, and 1.2 s reads as 2.4. "
            "Paged on a fast burn of its error budget (14.4× over 1 h and 5 min), a warning on a slow one (6× over "
            "6 h and 30 min)"
        ),
    )
    inter_token_latency_slo_seconds: StrictFloat = Field(
        0.2,
        description="the inter-token latency SLO, one of vLLM's bucket bounds (0.1, 0.15, 0.2, 0.3 …); a warning past it",
    )
    request_latency_slo_seconds: StrictFloat = Field(
        60.0,
        description="the end-to-end request latency SLO, one of vLLM's bucket bounds (… 30, 40, 50, 60, 120 …); a warning past it",
    )
    latency_objective: StrictFloat = Field(
        0.95, gt=0, lt=1, description="the share of requests (of tokens, for inter-token latency) within their SLO"
    )
    kv_cache_usage_alert_ratio: StrictFloat = Field(0.9, gt=0, le=1, description="KV-cache usage above which a replica alerts")
    # Unset, pulumi-random generates one once and the stack's state keeps it.
    grafana_admin_password: Optional[StrictStr] = Field(
        None,
        repr=False,
        description=(
            f"a secret, `{set_command('observability.grafanaAdminPassword')}`; unset, one is generated once "
            "(`pulumi-random`) and kept as a secret in the stack's state. Either way it reaches Grafana through the "
            "`grafana-admin` Secret, never the chart's well-known default"
        ),
    )
    # Where models' KEDA triggers query when this stack does not run its own Prometheus.
    external_prometheus_url: Optional[StrictStr] = Field(
        None,
        description="with `enabled: false`: the Prometheus the models' KEDA triggers query (KEDA must then already run)",
    )
    # With enabled false: namespaces whose Prometheus or agents scrape the models; by default the one
    # externalPrometheusUrl names (http://NAME.NAMESPACE.svc...). The models' NetworkPolicy admits them.
    scrape_namespaces: Optional[list[StrictStr]] = Field(
        None,
        description=(
            "with `enabled: false`: namespaces whose Prometheus or agent scrapes the models; the models' NetworkPolicy "
            f"admits them on port {SERVING_PORT}. By default the namespace in `externalPrometheusUrl`: "
            "`http://prometheus.shared.svc:9090` gives `[shared]`"
        ),
    )
    # With enabled false: ServiceMonitors for an operator-run Prometheus of your own; off by default,
    # since a cluster without the prometheus-operator CRDs would refuse them.
    service_monitors: Optional[StrictBool] = Field(
        None,
        description=(
            "with `enabled: false`: create the models' ServiceMonitors for a prometheus-operator of your own (its CRDs "
            "must exist; it must select `app.kubernetes.io/part-of: vllm-platform` namespaces); off by default"
        ),
    )
    # The DCGM exporter and GPU alerts; by default on when some model runs on GPUs (not simulated).
    alertmanager: Optional[Alerting] = Field(
        None,
        description=(
            "where alerts go: `{receivers, critical, warning, watchdog}` (see below). Unset, Alertmanager routes "
            "everything to its `null` receiver and the preview warns that alerts go nowhere"
        ),
    )
    gpu_metrics: Optional[StrictBool] = Field(
        None,
        description=(
            "the DCGM exporter and the `gpu-health` alerts; by default on where a model runs on GPUs, off when every "
            "model is simulated (the local stack)"
        ),
    )

    @field_validator("grafana_admin_password")
    @classmethod
    def _password_text(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        return check_pattern(value, PRINTABLE_TEXT, "a password of printable ASCII (no newline or control character)", shown=False)

    @field_validator("time_to_first_token_slo_seconds", "inter_token_latency_slo_seconds", "request_latency_slo_seconds")
    @classmethod
    def _on_a_bucket_bound(cls, value: float, info: ValidationInfo) -> float:
        histogram = SLO_HISTOGRAMS[info.field_name or ""]
        bounds = vllm_metrics.BUCKETS[histogram]
        if value not in bounds:
            below = max((b for b in bounds if b < value), default=None)
            above = min((b for b in bounds if b > value), default=None)
            near = " or ".join(f"{b:g}" for b in (below, above) if b is not None)
            raise ValueError(
                f"{value:g} is not a bucket bound of {histogram}, so the fraction of requests within it cannot be "
                f"counted, only interpolated; use {near}"
            )
        return value

    @field_validator("scrape_namespaces")
    @classmethod
    def _namespaces_are_labels(cls, values: Optional[list[str]]) -> Optional[list[str]]:
        return None if values is None else namespace_names(values)

    @field_validator("external_prometheus_url")
    @classmethod
    def _http_url(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        match = HTTP_URL.fullmatch(value)
        if match and match["query"]:
            # KEDA's Prometheus scaler writes `<serverAddress>/api/v1/query?query=...`: after a query or fragment
            # every trigger reads another URL, and a token in it would sit in plain text in every ScaledObject.
            raise ValueError(
                f"{value.partition(match['query'][0])[0]!r} is followed by a query or fragment, where KEDA appends "
                "/api/v1/query?query=... to the address; give the server's base URL alone"
            )
        if not match or (match["port"] is not None and not 0 < int(match["port"]) < 65536):
            shown, userinfo = _without_userinfo(value)
            why = (
                ": a user and password in it would sit in plain text in the stack file and every ScaledObject; give "
                "a URL without them, of a Prometheus that the models' namespace may query"
            ) if userinfo else ""
            raise ValueError(f"{shown!r} is not an http(s) URL such as http://prometheus.monitoring.svc:9090{why}")
        return value

    @model_validator(mode="after")
    def _routed_where_it_runs(self) -> "Observability":
        if self.alertmanager is not None and not (self.enabled and self.alertmanager_enabled):
            raise ValueError("alertmanager routes this stack's Alertmanager: it needs enabled and alertmanagerEnabled true")
        return self

    @model_validator(mode="after")
    def _one_prometheus(self) -> "Observability":
        if self.enabled and self.external_prometheus_url:
            raise ValueError(
                "externalPrometheusUrl is for enabled false; with enabled true the models query this stack's Prometheus"
            )
        if self.enabled and (self.scrape_namespaces is not None or self.service_monitors is not None):
            raise ValueError(
                "scrapeNamespaces and serviceMonitors are for enabled false; this stack's own Prometheus "
                f"scrapes from {MONITORING_NAMESPACE} through ServiceMonitors"
            )
        return self

    @property
    def scraper_namespaces(self) -> list[str]:
        """Where the Prometheus that scrapes the models runs; the models' NetworkPolicy admits it."""
        if self.enabled:
            return [MONITORING_NAMESPACE]
        if self.scrape_namespaces is not None:
            return self.scrape_namespaces
        host = urlsplit(self.external_prometheus_url or "").hostname or ""
        parts = host.split(".")
        return [parts[1]] if len(parts) >= 3 and parts[2] == "svc" else []

    @property
    def creates_service_monitors(self) -> bool:
        return self.enabled if self.service_monitors is None else self.service_monitors
