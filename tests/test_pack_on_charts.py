"""tools.pack_on_charts: the policy pack's resource rules on every object the Helm charts render, not only workloads.

That the committed stacks' charts break no rule is `make scan`'s to show (tools/scan.py runs the pack over them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import pack_on_charts
from vllm_platform.contract import NLB_ANNOTATION

# A chart's Service on an internet-facing NLB without TLS or a source list: a resource rule's, not a workload.
PUBLIC_SERVICE = f"""
apiVersion: v1
kind: Service
metadata:
  name: dashboard
  namespace: monitoring
  annotations: {{{NLB_ANNOTATION}scheme: internet-facing}}
spec:
  type: LoadBalancer
  ports: [{{name: http, port: 80, targetPort: 3000}}]
"""
# A chart's Karpenter NodePool that may launch GPUs, with no GPU limit: cluster-scoped, no pod in it.
UNBOUNDED_GPU_POOL = """
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: chart-gpus}
spec:
  template:
    spec:
      requirements: [{key: karpenter.k8s.aws/instance-family, operator: In, values: [g5]}]
"""


def chart_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "charts" / "chart.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "policy", "resource"),
    [
        (PUBLIC_SERVICE, "gateway-internet-needs-tls-and-allowlist", "Service.monitoring.dashboard"),
        (UNBOUNDED_GPU_POOL, "karpenter-gpu-node-pools-bounded", "NodePool.default.chart-gpus"),
    ],
)
def test_a_charts_non_workload_object_reaches_the_rules_about_its_kind(tmp_path: Path, text: str, policy: str, resource: str) -> None:
    found = pack_on_charts.violations([chart_file(tmp_path, text)])
    assert found and {(v.policy, v.resource) for v in found} == {(policy, resource)}, [v.line() for v in found]
