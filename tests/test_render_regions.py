"""The offline render of a stack in another region: what the mocks answer follows the stack's region and partition."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import objects_of, render_document, stack_document
from tools import mocks

HOME = "us-west-2"


def in_region(stack: str, region: str) -> dict[str, Any]:
    """A committed stack file moved to another region: aws:region and the VPC's zones, which name it."""
    document = stack_document(stack)
    config = document["config"]
    assert config["aws:region"] == HOME
    config["aws:region"] = region
    vpc = config["vllm-platform:cluster"].get("vpc") or {}
    if "zones" in vpc:
        vpc["zones"] = [region + zone.removeprefix(HOME) for zone in vpc["zones"]]
    return document


def written(document: dict[str, Any], out: Path) -> dict[str, str]:
    """manifests.yaml and plan.json as `python -m tools.render` writes them."""
    render_document(document, "dev").write(out, with_charts=False)
    return {name: (out / name).read_text() for name in ("manifests.yaml", "plan.json")}


def test_a_stack_in_another_region_names_no_other(tmp_path: Path) -> None:
    home = written(in_region("dev", HOME), tmp_path / HOME)
    away = written(in_region("dev", "eu-north-1"), tmp_path / "eu-north-1")
    for name in ("manifests.yaml", "plan.json"):
        assert HOME in home[name], f"the {HOME} render's {name} names its region: the check below sees it where it is"
        assert HOME not in away[name], [line.strip() for line in away[name].splitlines() if HOME in line]


def test_a_stack_in_the_china_partition_gets_its_arns_and_hosts() -> None:
    rendering = render_document(in_region("dev", "cn-north-1"), "dev")
    outputs = rendering.outputs
    assert outputs["clusterEndpoint"] == f"https://{mocks.FAKE_EKS_ID}.gr7.cn-north-1.eks.amazonaws.com.cn"
    assert outputs["oidcIssuerUrl"] == f"https://oidc.eks.cn-north-1.amazonaws.com.cn/id/{mocks.FAKE_EKS_ID}"
    # IAM is global: its ARNs name the partition and no region.
    roles = [outputs["nodeRoleArn"], outputs["gpuNodeRoleArn"], *outputs["podIdentity"]["roleArns"].values()]
    assert all(arn.startswith(f"arn:aws-cn:iam::{mocks.FAKE_ACCOUNT}:role/") for arn in roles), roles
    (cluster,) = [r for r in rendering.resources if r.type == "aws:eks/cluster:Cluster"]
    key_arn = cluster.inputs["encryptionConfig"]["provider"]["keyArn"]
    assert key_arn.startswith(f"arn:aws-cn:kms:cn-north-1:{mocks.FAKE_ACCOUNT}:key/")
    # AWS's endpoints in China end in .com.cn: the pull-through registry's host and the services keys go through.
    images = {c["image"] for d in objects_of(rendering, "Deployment") for c in d["spec"]["template"]["spec"]["containers"]}
    assert any(i.startswith(f"{mocks.FAKE_ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn/") for i in images), images
    assert ".amazonaws.com/" not in json.dumps([r.inputs for r in rendering.resources])
    assert "s3.*.amazonaws.com.cn" in json.dumps([r.inputs for r in rendering.resources])
