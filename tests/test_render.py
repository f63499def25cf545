"""The offline render: the real program under mocks, for every committed stack and for edge configs."""

from __future__ import annotations

import base64
import copy
import subprocess
import sys
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools import render, schemas
from vllm_platform.aws.addons import ADDONS_BEFORE_NODES
from vllm_platform.plan import sizing
from tests.conftest import (
    COMMITTED_STACKS,
    document_plan,
    minimal_document,
    objects_of,
    render_document,
    rendered_stack,
    stack_document,
)

TOKEN = "hf_SENTINELtokenNEVERtoAPPEAR0123456789"


def kubernetes_version(stack: str) -> str:
    return stack_document(stack)["config"]["vllm-platform:cluster"].get("kubernetesVersion", "1.34")


def test_the_three_environments_are_committed() -> None:
    assert {"dev", "staging", "prod"} <= set(COMMITTED_STACKS)


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_committed_stack_renders_schema_valid_built_ins(stack: str) -> None:
    manifests = rendered_stack(stack).manifests()
    assert objects_of(rendered_stack(stack), "Deployment")
    assert schemas.validate_manifests(manifests, kubernetes_version(stack), crd_dir=None) == []


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_committed_stack_custom_resources_match_their_crds(stack: str, crd_dir: Path) -> None:
    custom = [m for m in rendered_stack(stack).manifests() if schemas.is_custom_resource(m)]
    assert custom
    assert schemas.validate_manifests(custom, kubernetes_version(stack), crd_dir) == []


def test_fetch_crds_downloads_the_crd_of_every_custom_kind_the_program_renders(crd_dir: Path) -> None:
    """A GitHub runner validates against what tools/fetch-crds downloads, not the shared folder: a kind it
    misses would fail the pull-request check with "no CRD for"."""
    script = (Path(__file__).parent.parent / "tools" / "fetch-crds").read_text()
    fetched = set(re.findall(r'/([A-Za-z0-9_.-]+\.yaml)"', script))
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    defined_in = {
        key: path.name
        for path in sorted(crd_dir.glob("*.yaml"))
        for key in schemas.schemas_of(yaml.load_all(path.read_text(), Loader=loader))
    }
    rendered = {
        (m["apiVersion"], m["kind"])
        for stack in COMMITTED_STACKS
        for m in rendered_stack(stack).manifests()
        if schemas.is_custom_resource(m)
    }
    assert rendered and all(kind in defined_in for kind in rendered)
    assert {kind: defined_in[kind] for kind in rendered if defined_in[kind] not in fetched} == {}


def test_schema_validation_catches_a_broken_object(crd_dir: Path) -> None:
    deployment = objects_of(rendered_stack("dev"), "Deployment")[0]
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["startupprobe"] = {}
    assert schemas.validate_manifests([broken], "1.34", None)
    scaled = json.loads(json.dumps(objects_of(rendered_stack("dev"), "ScaledObject")[0]))
    scaled["spec"]["minReplicas"] = 1
    assert schemas.validate_manifests([scaled], "1.34", crd_dir)


def one_of(stack: str, kind: str) -> dict[str, Any]:
    return copy.deepcopy(objects_of(rendered_stack(stack), kind)[0])


def test_the_crds_cel_rules_refuse_what_the_api_server_would_and_pass_the_rest(crd_dir: Path) -> None:
    """Each rule with an object that breaks it and a near-identical one that does not: on the schema's defaults
    (a Backend's type is Endpoints unless set), through Kubernetes' own functions (find, in Karpenter's rules)."""
    backend = one_of("prod", "Backend")
    assert "type" not in backend["spec"] and schemas.validate_manifests([backend], "1.34", crd_dir) == []
    backend["spec"]["type"] = "DynamicResolver"
    assert schemas.validate_manifests([backend], "1.34", crd_dir) == [
        f"Backend {backend['metadata']['namespace']}/{backend['metadata']['name']}: spec: DynamicResolver type cannot have endpoints specified"
    ]
    node_class = one_of("prod", "EC2NodeClass")
    node_class["spec"]["amiFamily"] = "AL2023"
    assert schemas.validate_manifests([node_class], "1.34", crd_dir) == []
    node_class["spec"]["amiFamily"] = "Bottlerocket"
    (problem,) = schemas.validate_manifests([node_class], "1.34", crd_dir)
    assert problem.endswith("spec: if set, amiFamily must be 'AL2023' or 'Custom' when using an AL2023 alias")
    pool = one_of("prod", "NodePool")
    requirements = pool["spec"]["template"]["spec"]["requirements"]
    requirements.append({"key": "karpenter.sh/nodepool", "operator": "In", "values": ["other"]})
    assert any(p.endswith('label "karpenter.sh/nodepool" is restricted') for p in schemas.validate_manifests([pool], "1.34", crd_dir))
    requirements[-1]["key"] = "example.com/team"
    assert schemas.validate_manifests([pool], "1.34", crd_dir) == []


def test_a_rule_that_cannot_be_evaluated_is_a_problem_not_a_pass() -> None:
    schema = {"type": "object", "x-kubernetes-validations": [{"rule": "self.name.isURL()", "message": "a URL"}],
              "properties": {"name": {"type": "string", "x-kubernetes-validations": [{"rule": "self.lowerAscii() == self"}]}}}  # fmt: skip
    (unevaluated,) = schemas.cel_problems(schema, {"name": "abc"})
    assert unevaluated.startswith("<root>: rule 'self.name.isURL()' cannot be evaluated: ") and "isURL" in unevaluated
    assert schemas.cel_problems(schema, {"name": "ABC"})[1:] == ["name: failed rule: self.lowerAscii() == self"]
    # A rule this CEL cannot even parse is reported as well, not raised.
    (unparsed,) = schemas.cel_problems({"x-kubernetes-validations": [{"rule": "self.?a.orValue(1) == 1"}]}, {"a": 1})
    assert unparsed.startswith("<root>: rule 'self.?a.orValue(1) == 1' cannot be evaluated: ")
    # Transition rules compare with the stored object, which a create has none of.
    assert schemas.cel_problems({"x-kubernetes-validations": [{"rule": "self == oldSelf"}]}, "a") == []


def test_prod_serves_8b_with_two_replicas_and_70b_on_p4d_tp8() -> None:
    prod = rendered_stack("prod")
    deployments = {d["metadata"]["name"]: d for d in objects_of(prod, "Deployment")}
    scaled = {s["metadata"]["name"]: s["spec"] for s in objects_of(prod, "ScaledObject")}
    assert scaled["llama-8b"]["minReplicaCount"] >= 2
    big = deployments["llama-70b"]["spec"]["template"]["spec"]
    assert big["nodeSelector"] == {"gpu-pool": "p4d"}
    assert big["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"


def test_hf_token_never_appears_in_the_output(tmp_path: Path) -> None:
    # As the engine runs the program: the token decrypted, its key marked secret.
    rendering = render_document(minimal_document(hfToken={"secure": "AAABAtoken"}), secrets={"AAABAtoken": TOKEN})
    rendering.write(tmp_path, with_charts=False)
    written = "".join(p.read_text() for p in tmp_path.iterdir())
    for form in (TOKEN, base64.b64encode(TOKEN.encode()).decode()):
        assert form not in written
    secret = objects_of(rendering, "Secret")[0]
    assert secret["stringData"] == {"token": "[secret]"}
    env = objects_of(rendering, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "HF_TOKEN_PATH", "value": "/var/run/secrets/huggingface/token"} in env
    assert not [e for e in env if e["name"] == "HF_TOKEN"]


def test_a_release_an_earlier_render_had_is_not_left_behind(tmp_path: Path) -> None:
    stale, kept = tmp_path / "charts" / "cluster-autoscaler.yaml", tmp_path / "notes.txt"
    stale.parent.mkdir()
    stale.write_text("kind: Deployment\n")
    kept.write_text("the user's own\n")
    render_document(minimal_document()).write(tmp_path, with_charts=False)
    assert not stale.exists() and kept.exists()
    assert (tmp_path / "manifests.yaml").exists() and (tmp_path / "plan.json").exists()


def test_secure_config_values_render_as_placeholders() -> None:
    rendering = render_document(minimal_document(hfToken={"secure": "AAABAJ0cipher"}))
    assert objects_of(rendering, "Secret")[0]["stringData"] == {"token": "[secret]"}
    assert "AAABAJ0cipher" not in json.dumps(rendering.plan_document())


def test_without_a_token_there_is_no_secret_and_no_reference() -> None:
    rendering = render_document(minimal_document())
    assert not [s for s in objects_of(rendering, "Secret") if s["metadata"]["name"] == "hf-token"]
    env = objects_of(rendering, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert all(e["name"] != "HF_TOKEN" for e in env)


def test_cli_writes_manifests_and_plan(tmp_path: Path) -> None:
    assert render.main(["--stack", "dev", "--out", str(tmp_path)]) == 0
    manifests = list(yaml.safe_load_all((tmp_path / "manifests.yaml").read_text()))
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert {m["kind"] for m in manifests} >= {"Namespace", "Deployment", "Service", "ScaledObject", "ServiceMonitor"}
    assert plan["stack"] == "dev" and plan["project"] == "vllm-platform"
    assert all({"type", "name", "parent", "dependsOn", "inputs"} <= set(r) for r in plan["resources"])
    assert plan["outputs"]["models"]["llama-8b"]["serviceUrl"] == "http://llama-8b.inference.svc.cluster.local:8000"
    assert not any(m["kind"] == "Release" for m in manifests)
    # What waits on what, by the names the plan gives: the system nodes wait for the add-ons a node needs.
    known = {f"{r['type']}::{r['name']}" for r in plan["resources"]}
    assert all(r["dependsOn"] == sorted(r["dependsOn"]) and set(r["dependsOn"]) <= known for r in plan["resources"])
    (system,) = [r for r in plan["resources"] if r["type"] == "aws:eks/nodeGroup:NodeGroup" and r["name"] == "system"]
    assert {f"aws:eks/addon:Addon::{a}" for a in ADDONS_BEFORE_NODES} <= set(system["dependsOn"])


def test_cli_refuses_an_invalid_config_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = minimal_document()
    document["config"]["vllm-platform:models"][0].update(
        {"name": "llama-13b", "model": "meta-llama/Llama-2-13b-chat-hf"}
    )
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(yaml.safe_dump(document))
    assert render.main(["--config", str(path), "--out", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err
    assert "models[llama-13b]: needs ~26.0 GB of weights per GPU" in message
    assert "use tensorParallelSize 2" in message and "Traceback" not in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "text, says",
    [
        ("config: [unclosed", "not valid YAML"),
        ("config: [a, b]\n", "`config:` must be a mapping"),
        ("config:\n  vllm-platform:models: llama\n", "models: must be a list, not the string \"llama\""),
    ],
    ids=["malformed YAML", "config not a mapping", "models not a list"],
)
def test_cli_refuses_a_malformed_file_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, says: str
) -> None:
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(text)
    assert render.main(["--config", str(path), "--out", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err
    assert says in message and "Traceback" not in message


PROGRAM_SOURCES = str(render.PROJECT_ROOT / "vllm_platform")


def many_models(count: int) -> dict:
    document = minimal_document(
        models=[
            {"name": f"model-{i}", "model": f"acme/model-{i}-8B", "gpuPool": "g5"}
            for i in range(count)
        ]
    )
    document["config"]["vllm-platform:cluster"]["gpuNodePools"][0]["maxSize"] = count
    return document


def test_every_model_adds_the_same_resources() -> None:
    """What the render's time follows: a model adds its component and its six objects, and nothing that grows
    with the others (`make bench` times it)."""
    counts = {n: len(render_document(many_models(n)).resources) for n in (1, 2, 3)}
    assert counts[3] - counts[2] == counts[2] - counts[1] == 7


def test_planning_work_grows_linearly_with_the_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each model's nodes are counted from its own sizing: twice the models, twice the packing arithmetic."""
    calls = []
    real = sizing.replicas_per_node
    monkeypatch.setattr(sizing, "replicas_per_node", lambda *args: calls.append(args) or real(*args))
    work = {}
    for count in (50, 100):
        calls.clear()
        document_plan(many_models(count))
        work[count] = len(calls)
    assert work[100] == 2 * work[50] > 0


def test_all_of_the_planning_grows_linearly_with_the_models() -> None:
    """Every line the plan runs in the program, counted: the same work per model added, whatever the count. A
    lookup of each model among all the others would add more per model the more there are."""

    def planning_lines(count: int) -> int:
        document, lines = many_models(count), 0

        def in_program(frame: Any, event: str, _: Any) -> Any:
            return counting if frame.f_code.co_filename.startswith(PROGRAM_SOURCES) else None

        def counting(frame: Any, event: str, _: Any) -> Any:
            nonlocal lines
            lines += event == "line"
            return counting

        sys.settrace(in_program)
        try:
            document_plan(document)
        finally:
            sys.settrace(None)
        return lines

    planning_lines(5)  # imports and caches filled once
    lines = {count: planning_lines(count) for count in (10, 20, 40)}
    assert lines[40] - lines[20] == 2 * (lines[20] - lines[10]) > 0


def test_local_stack_runs_simulated_models_without_gpus_or_aws() -> None:
    local = rendered_stack("local")
    assert not [r for r in local.resources if r.type.startswith("aws:")]
    for deployment in objects_of(local, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert "nodeSelector" not in pod and "tolerations" not in pod
        for container in pod["containers"]:
            assert "nvidia.com/gpu" not in json.dumps(container["resources"])
            assert container["image"].startswith("ghcr.io/llm-d/llm-d-inference-sim:")
    assert objects_of(local, "ScaledObject") and objects_of(local, "ServiceMonitor")


def test_without_the_venv_the_tools_stop_with_one_line(tmp_path: Path) -> None:
    # -S leaves site-packages out: a Python with the standard library only, as a bare `python3` may be.
    done = subprocess.run(
        [sys.executable, "-S", "-m", "tools.render", "--stack", "dev", "--out", str(tmp_path)],
        cwd=render.PROJECT_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert "lacks pulumi" in line and "run `make install`" in line
    assert not list(tmp_path.iterdir())


# Where each workload kind the program renders keeps its pod spec.
POD_SPEC_PATHS = {"Deployment": ("spec", "template", "spec"), "StatefulSet": ("spec", "template", "spec"),
                  "DaemonSet": ("spec", "template", "spec"), "Job": ("spec", "template", "spec")}  # fmt: skip


def volume_items(pod: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, name, key) of every ConfigMap or Secret key a pod's volumes name by item, projected ones included."""
    sources = [v for v in pod.get("volumes", [])]
    sources += [s for v in pod.get("volumes", []) for s in v.get("projected", {}).get("sources", [])]
    found = []
    for source in sources:
        for field, kind, name_field in (("configMap", "ConfigMap", "name"), ("secret", "Secret", "secretName")):
            if field in source and not source[field].get("optional"):
                name = source[field].get(name_field) or source[field].get("name")
                found += [(kind, name, item["key"]) for item in source[field].get("items", [])]
    return found


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_every_key_a_pod_mounts_by_item_is_in_the_object_as_rendered(stack: str) -> None:
    """The kubelet refuses a volume whose item names a key its ConfigMap or Secret lacks, and the pod never starts:
    as rendered (the keys Pulumi sends, which leave out any that starts with "__"), every such key is there."""
    objects = rendered_stack(stack).manifests()
    keys = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): {*o.get("data", {}), *o.get("stringData", {})}
            for o in objects if o["kind"] in ("ConfigMap", "Secret")}  # fmt: skip
    checked = 0
    for workload in (o for o in objects if o["kind"] in POD_SPEC_PATHS):
        pod = workload
        for step in POD_SPEC_PATHS[workload["kind"]]:
            pod = pod[step]
        namespace = workload["metadata"].get("namespace")
        for kind, name, key in volume_items(pod):
            if (kind, namespace, name) not in keys:
                continue  # made by a chart or by hand (the gateway's client keys), not among the program's objects
            assert key in keys[kind, namespace, name], f"{workload['kind']} {workload['metadata']['name']}: {kind} {name} has no key {key!r}"
            checked += 1
    if stack != "local":
        assert checked, "the staging Jobs' script and the models' token mount keys by item"


def test_a_pods_missing_item_key_is_seen() -> None:
    pod = {"volumes": [{"name": "s", "configMap": {"name": "m", "items": [{"key": "__init__.py", "path": "p"}]}},
                       {"name": "o", "configMap": {"name": "m", "optional": True, "items": [{"key": "x", "path": "x"}]}},
                       {"name": "p", "projected": {"sources": [{"secret": {"name": "t", "items": [{"key": "k", "path": "k"}]}}]}}]}  # fmt: skip
    assert volume_items(pod) == [("ConfigMap", "m", "__init__.py"), ("Secret", "t", "k")]
