"""The custom APIs each chart is templated with: those the stack's releases install, as the cluster serves them
once their CRDs are in, for the charts' `.Capabilities.APIVersions.Has`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.conftest import COMMITTED_STACKS, rendered_stack
from tests.test_charts import chart_objects, of_kind
from tools import charts, render, schemas
from vllm_platform.pins import KARPENTER


def asking_karpenter_for_its_monitor(stack: str) -> render.Rendering:
    """The stack's render with Karpenter's release asking its chart for the chart's own ServiceMonitor."""
    chart_objects(stack)
    rendering = rendered_stack(stack)
    enabled = {"serviceMonitor": {"enabled": True}}
    resources = [
        dataclasses.replace(r, inputs={**r.inputs, "values": {**r.inputs["values"], **enabled}})
        if r.type == render.HELM_RELEASE and r.inputs["name"] == KARPENTER.release else r
        for r in rendering.resources
    ]  # fmt: skip
    return dataclasses.replace(rendering, resources=resources)


def test_a_template_gated_on_an_api_the_stack_installs_renders_as_the_install_does() -> None:
    """Karpenter's chart makes its ServiceMonitor only where the cluster serves monitoring.coreos.com/v1, which
    kube-prometheus-stack's CRDs make it serve. Offered the stack's APIs, it renders; offered none, as helm knows
    offline, it would not, and the check that the chart makes none (tests/test_charts.py) could never fail."""
    rendering = asking_karpenter_for_its_monitor("dev")
    version = rendering.config.cluster.kubernetes_version
    (monitor,) = of_kind(charts.load_objects(charts.templates(rendering.releases(), version)[KARPENTER.release]), "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == KARPENTER.namespace
    (karpenter,) = [r for r in rendering.releases() if r["name"] == KARPENTER.release]
    assert not of_kind(charts.load_objects(charts.template(karpenter, version)), "ServiceMonitor")


def test_the_render_offers_each_chart_the_apis_the_stacks_releases_install() -> None:
    """What `tools.render` writes to charts/ is each release templated as above, with the stack's APIs."""
    rendering = asking_karpenter_for_its_monitor("dev")
    assert of_kind(charts.load_objects(rendering.chart_documents()[KARPENTER.release]), "ServiceMonitor")


def test_the_template_cache_tells_apart_the_apis_offered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the process's own cache, on disk: the same release offered other APIs is templated again."""
    rendering = asking_karpenter_for_its_monitor("dev")
    (karpenter,) = [r for r in rendering.releases() if r["name"] == KARPENTER.release]
    version = rendering.config.cluster.kubernetes_version
    monkeypatch.setattr(charts, "TEMPLATE_CACHE", tmp_path)
    monkeypatch.setattr(charts, "_template", charts._template.__wrapped__)
    plain = charts.template(karpenter, version)
    offered = charts.template(karpenter, version, ("monitoring.coreos.com/v1",))
    assert "kind: ServiceMonitor" in offered and "kind: ServiceMonitor" not in plain
    assert len(list(tmp_path.glob("*.yaml"))) == 2 and charts.template(karpenter, version, ("monitoring.coreos.com/v1",)) == offered


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_the_apis_the_stacks_releases_install_are_every_one_the_program_relies_on(stack: str) -> None:
    """The APIs the charts are offered cover every custom kind the program makes itself: none of them comes from
    outside the stack, so none is missing from what a chart sees."""
    chart_objects(stack)
    rendering = rendered_stack(stack)
    served = set(charts.served_api_versions(rendering.chart_documents().values()))
    made = {f"{m['apiVersion']}/{m['kind']}" for m in rendering.manifests() if schemas.is_custom_resource(m)}
    assert made and made <= served
    assert {"monitoring.coreos.com/v1", "monitoring.coreos.com/v1/ServiceMonitor", "keda.sh/v1alpha1"} <= served
