"""The one way this program installs a pinned Helm chart."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from vllm_platform.pins import Chart

# Installing a chart may provision volumes and waits for every pod; Helm's 300 s default is short.
RELEASE_TIMEOUT_SECONDS = 900


def helm_release(chart: Chart, values: dict[str, Any], opts: pulumi.ResourceOptions) -> k8s.helm.v3.Release:
    """A release named after the chart's `release`, so the Service names it creates are predictable."""
    return k8s.helm.v3.Release(
        chart.release,
        name=chart.release,
        chart=chart.chart,
        version=chart.version,
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=chart.repository),
        namespace=chart.namespace,
        create_namespace=False,
        values=values,
        timeout=RELEASE_TIMEOUT_SECONDS,
        cleanup_on_fail=True,
        opts=opts,
    )
