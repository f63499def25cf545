"""The one way this program installs a pinned Helm chart."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from vllm_platform.pins import Chart

# Installing a chart may provision volumes and waits for every pod; Helm's 300 s default is short.
RELEASE_TIMEOUT_SECONDS = 900


def split_deletions(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(values without their None leaves, just those leaves as nulls). A null deletes a chart default in Helm,
    but Pulumi's Python SDK drops None from a map before it reaches the provider: the nulls go as a values
    file instead, which it passes through as it is (pulumi-kubernetes 4.30 and later)."""
    kept: dict[str, Any] = {}
    deleted: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            deleted[key] = None
        elif isinstance(value, dict):
            inner_kept, inner_deleted = split_deletions(value)
            kept[key] = inner_kept
            if inner_deleted:
                deleted[key] = inner_deleted
        else:
            kept[key] = value
    return kept, deleted


def helm_release(
    chart: Chart, values: dict[str, Any], opts: pulumi.ResourceOptions, skip_crds: bool = False
) -> k8s.helm.v3.Release:
    """A release named after the chart's `release`, so the Service names it creates are predictable. An OCI
    chart is named by its reference (`oci://registry/path/chart`), a repository's by name and repository.
    `skip_crds`: the chart's crds/ are left out, for a chart whose CRDs another release installs and upgrades."""
    kept, deleted = split_deletions(values)
    oci = chart.repository.startswith("oci://")
    return k8s.helm.v3.Release(
        chart.release,
        name=chart.release,
        chart=f"{chart.repository}/{chart.chart}" if oci else chart.chart,
        version=chart.version,
        repository_opts=None if oci else k8s.helm.v3.RepositoryOptsArgs(repo=chart.repository),
        skip_crds=skip_crds or None,
        namespace=chart.namespace,
        create_namespace=False,
        values=kept,
        value_yaml_files=[pulumi.StringAsset(yaml.safe_dump(deleted))] if deleted else None,
        timeout=RELEASE_TIMEOUT_SECONDS,
        cleanup_on_fail=True,
        opts=opts,
    )
