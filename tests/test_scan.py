"""tools.scan: reading checkov's report, and the reasoned per-object skips the builders write."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from tests.conftest import COMMITTED_STACKS, rendered_stack
from tools import policy_pack, scan

SKIP_ANNOTATION = re.compile(r"checkov\.io/skip\d+", re.ASCII)
# A check id, then a reason of a few words at least: "CKV_K8S_43=pinned to ...".
REASONED_SKIP = re.compile(r"CKV2?_K8S_\d+=\S.{30,}", re.ASCII)


@pytest.fixture(autouse=True)
def accepted_findings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The reviewed file of accepted chart findings, empty unless a test writes one: the real one names objects
    of the real stacks, which these tests' made-up renders do not have."""
    path = tmp_path / "chart_findings.yaml"
    path.write_text("[]\n")
    monkeypatch.setattr(scan, "CHART_FINDINGS", path)
    return path


def _item(check_id: str, file: str, reason: Any = None) -> dict[str, Any]:
    result = {"result": "SKIPPED", "suppress_comment": reason} if reason else {"result": "FAILED"}
    return {"check_id": check_id, "check_name": f"{check_id} name", "resource": "Deployment.ns.m", "file_abs_path": file, "file_path": file, "check_result": result}


def test_the_report_names_failures_skips_and_what_was_scanned() -> None:
    output = json.dumps(
        {
            "results": {
                "passed_checks": [_item("CKV_K8S_8", "/b/dev/manifests.yaml")],
                "failed_checks": [_item("CKV_K8S_14", "/b/prod/manifests.yaml")],
                "skipped_checks": [_item("CKV_K8S_43", "/b/dev/manifests.yaml", "pinned to a release tag")],
                "parsing_errors": [],
            },
            "summary": {"failed": 1},
        }
    )
    report = scan.parse_report(output)
    assert [f.check_id for f in report.failed] == ["CKV_K8S_14"]
    assert report.skipped[0].line() == "CKV_K8S_43 Deployment.ns.m (/b/dev/manifests.yaml): pinned to a release tag"
    assert report.unscanned([Path("/b/dev/manifests.yaml"), Path("/b/local/manifests.yaml")]) == [Path("/b/local/manifests.yaml")]


def test_a_chart_of_crds_only_gives_checkov_nothing_to_scan(tmp_path: Path) -> None:
    charts_dir = tmp_path / "charts"
    charts_dir.mkdir()
    crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: nodepools.karpenter.sh}\n"
    (charts_dir / "karpenter-crd.yaml").write_text(crd)
    (charts_dir / "karpenter.yaml").write_text(crd + "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: karpenter}\n")
    assert scan.checkov_copy(charts_dir / "karpenter-crd.yaml") is None
    copy = scan.checkov_copy(charts_dir / "karpenter.yaml")
    assert copy == tmp_path / "checkov" / "karpenter.yaml"
    assert [o["kind"] for o in yaml.safe_load_all(copy.read_text())] == ["ServiceAccount"]


def test_a_report_per_framework_is_read_too() -> None:
    one = {"results": {"failed_checks": [_item("CKV_K8S_14", "/b/a.yaml")], "parsing_errors": ["/b/c.yaml"]}}
    report = scan.parse_report(json.dumps([one, {"results": {}}]))
    assert len(report.failed) == 1 and report.parsing_errors == ["/b/c.yaml"]


def test_a_failed_check_or_an_unscanned_stack_fails_the_scan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = [tmp_path / "dev" / "manifests.yaml", tmp_path / "prod" / "manifests.yaml"]
    for file in files:
        file.parent.mkdir()
        file.write_text("")
    monkeypatch.setattr(scan, "render_stacks", lambda out: files)
    commands: list[list[str]] = []

    def fake_checkov(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        results = {"passed_checks": [_item("CKV_K8S_8", str(files[0].resolve()))], "failed_checks": []}
        return subprocess.CompletedProcess(command, 0, json.dumps({"results": results}), "")

    monkeypatch.setattr(scan.subprocess, "run", fake_checkov)
    assert scan.main(["--checkov", "checkov", "--out", str(tmp_path)]) == 1
    assert f"checkov scanned nothing in {files[1]}" in capsys.readouterr().out
    (command,) = commands
    assert command[command.index("--framework") + 1] == "kubernetes"
    assert not [a for a in command if a.startswith(("--skip-check", "--soft-fail", "--check"))], "no blanket skips"


REASON = "pinned to release tag v0.31.0, never latest (validated)"
ANNOTATED = f"""
apiVersion: apps/v1
kind: Deployment
metadata:
  name: m
  namespace: ns
  annotations:
    checkov.io/skip1: CKV_K8S_43={REASON}
    bridgecrew.io/skip2: CKV_K8S_14=checkov honours this prefix too, but the platform's skips are checkov.io/skip
"""


def scan_with_skips(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, skipped: list[tuple[str, str, str]]
) -> int:
    """The scan of one rendered file holding ANNOTATED, where checkov reports these (check, resource, reason) skips."""
    manifests = tmp_path / "dev" / "manifests.yaml"
    manifests.parent.mkdir()
    manifests.write_text(ANNOTATED)
    monkeypatch.setattr(scan, "render_stacks", lambda out: [manifests])
    file = str(manifests.resolve())

    def fake_checkov(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        results = {
            "passed_checks": [_item("CKV_K8S_8", file)],
            "skipped_checks": [{**_item(check, file, reason), "resource": resource} for check, resource, reason in skipped],
        }
        return subprocess.CompletedProcess(command, 0, json.dumps({"results": results}), "")

    monkeypatch.setattr(scan.subprocess, "run", fake_checkov)
    return scan.main(["--checkov", "checkov", "--out", str(tmp_path)])


def test_a_skip_annotated_on_its_object_passes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert scan_with_skips(monkeypatch, tmp_path, [("CKV_K8S_43", "Deployment.ns.m", REASON)]) == 0
    assert "clean, 1 reasoned skip(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "skip",
    [
        pytest.param(("CKV_K8S_20", "Deployment.ns.m", "skipped in a .checkov.yaml or by the platform"), id="another-check"),
        pytest.param(("CKV_K8S_43", "Deployment.ns.other", REASON), id="another-object"),
        pytest.param(("CKV_K8S_43", "Deployment.ns.m", "No comment provided"), id="another-reason"),
        pytest.param(("CKV_K8S_14", "Deployment.ns.m", "checkov honours this prefix too, but the platform's skips are "
                      "checkov.io/skip"), id="not-a-checkov-io-annotation"),
    ],
)
def test_any_other_skip_fails_the_scan(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], skip: tuple[str, str, str]
) -> None:
    assert scan_with_skips(monkeypatch, tmp_path, [("CKV_K8S_43", "Deployment.ns.m", REASON), skip]) == 1
    out = capsys.readouterr().out
    assert f"FAILED   skipped without a checkov.io/skip annotation on the object: {skip[0]} {skip[1]} " in out
    assert out.count("skipped without") == 1 and "1 problem(s), 1 reasoned skip(s)" in out


def test_checkov_runs_where_no_config_file_or_variable_reaches_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """checkov reads .checkov.yaml from its directory and home, and options from CKV_ variables: a skip-check
    there makes it leave checks out without reporting them skipped."""
    monkeypatch.setenv("CKV_SKIP_CHECK", "CKV_K8S_14")
    monkeypatch.setenv("BC_API_KEY", "x")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".checkov.yaml").write_text("skip-check: [CKV_K8S_14]\n")
    seen: dict[str, Any] = {}

    def fake_checkov(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        seen.update(kwargs, command=command, listed=sorted(os.listdir(kwargs["cwd"])))
        return subprocess.CompletedProcess(command, 0, json.dumps({"results": {}}), "")

    monkeypatch.setattr(scan.subprocess, "run", fake_checkov)
    scan.run_checkov("venv-scan/bin/checkov", [Path("build/dev/manifests.yaml")])
    assert seen["listed"] == [] and seen["env"]["HOME"] == seen["cwd"] != str(tmp_path)
    assert not {"CKV_SKIP_CHECK", "BC_API_KEY"} & set(seen["env"])
    assert seen["env"]["CKV_SKIP_PACKAGE_UPDATE_CHECK"] == "true"
    assert seen["command"][0] == str(tmp_path / "venv-scan" / "bin" / "checkov")
    assert seen["command"][seen["command"].index("--file") + 1] == str(tmp_path / "build" / "dev" / "manifests.yaml")


def test_checkov_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(scan, "render_stacks", lambda out: [tmp_path / "m.yaml"])
    assert scan.main(["--checkov", str(tmp_path / "no-checkov"), "--out", str(tmp_path)]) == 2
    assert "checkov could not scan" in capsys.readouterr().err


# The checks each kind of the program's objects may skip, by its app.kubernetes.io/name; every other object none.
ALLOWED_SKIPS = {
    # Pinned to a release tag (or a digest), pulled IfNotPresent.
    ("Deployment", "vllm"): {"CKV_K8S_43", "CKV_K8S_15"},
    ("Job", "vllm-staging"): {"CKV_K8S_43", "CKV_K8S_15"},
    # The gateway's rate-limit store: the upstream Redis by release tag.
    ("Deployment", "llm-gateway"): {"CKV_K8S_43", "CKV_K8S_15"},
    # The same, and a sleep that serves nothing has no probe to give.
    ("Deployment", "vllm-warm-node"): {"CKV_K8S_43", "CKV_K8S_15", "CKV_K8S_8", "CKV_K8S_9"},
}


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_every_skip_is_on_its_object_with_a_reason(stack: str) -> None:
    for manifest in rendered_stack(stack).manifests():
        skipped = set()
        for key, value in (manifest["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/"):
                assert SKIP_ANNOTATION.fullmatch(key) and REASONED_SKIP.fullmatch(value), (manifest["metadata"]["name"], key, value)
                skipped.add(value.split("=", 1)[0])
        app = manifest["metadata"].get("labels", {}).get("app.kubernetes.io/name")
        assert skipped <= ALLOWED_SKIPS.get((manifest["kind"], app), set()), (manifest["kind"], manifest["metadata"]["name"], skipped)
        template = manifest.get("spec", {}).get("template", {}).get("metadata", {})
        assert not [k for k in template.get("annotations", {}) if k.startswith("checkov.io/")], "checkov reads the object's own"


CHART_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: operator, namespace: keda}
spec:
  template:
    spec:
      containers:
        - name: operator
          image: ghcr.io/kedacore/keda:2.20.2
          resources: {requests: {cpu: 100m, memory: 128Mi}}
"""


def scan_chart_finding(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    accepted: list[dict[str, Any]],
    chart: str = CHART_DEPLOYMENT,
    skipped_because: Optional[str] = None,
) -> int:
    """The scan of one chart's objects where checkov fails CKV_K8S_43 on Deployment.keda.operator, or, with
    `skipped_because`, skips it for the skip annotation the chart (or a value injected into it) put on the object."""
    chart_file = tmp_path / "dev" / "checkov" / "keda.yaml"
    chart_file.parent.mkdir(parents=True)
    chart_file.write_text(chart)
    scan.CHART_FINDINGS.write_text(json.dumps(accepted))
    monkeypatch.setattr(scan, "render_stacks", lambda out: [chart_file])
    file = str(chart_file.resolve())

    def fake_checkov(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        found = {**_item("CKV_K8S_43", file, skipped_because), "resource": "Deployment.keda.operator"}
        results = {"skipped_checks": [found]} if skipped_because else {"failed_checks": [found]}
        return subprocess.CompletedProcess(command, 0 if skipped_because else 1, json.dumps({"results": results}), "")

    monkeypatch.setattr(scan.subprocess, "run", fake_checkov)
    return scan.main(["--checkov", "checkov", "--out", str(tmp_path)])


ACCEPTED_43 = {"checks": ["CKV_K8S_43"], "objects": ["Deployment.keda.operator"], "reason": "the chart pins its image by tag"}


def test_a_chart_finding_passes_only_with_a_reason_in_the_reviewed_file(monkeypatch, tmp_path, capsys) -> None:
    assert scan_chart_finding(monkeypatch, tmp_path, [ACCEPTED_43]) == 0
    assert "accepted CKV_K8S_43 Deployment.keda.operator" in capsys.readouterr().out
    other = {**ACCEPTED_43, "objects": ["Deployment.keda.other"]}
    assert scan_chart_finding(monkeypatch, tmp_path / "again", [ACCEPTED_43 | {"checks": ["CKV_K8S_40"]}]) == 1
    assert "FAILED   CKV_K8S_43 Deployment.keda.operator" in capsys.readouterr().out
    assert scan_chart_finding(monkeypatch, tmp_path / "third", [ACCEPTED_43, other]) == 1
    assert "accepts CKV_K8S_43 on Deployment.keda.other, which no stack has: remove the entry" in capsys.readouterr().out


def test_the_policy_pack_looks_at_the_charts_objects_too(monkeypatch, tmp_path, capsys) -> None:
    unrequested = CHART_DEPLOYMENT.replace("          resources: {requests: {cpu: 100m, memory: 128Mi}}\n", "")
    assert scan_chart_finding(monkeypatch, tmp_path, [ACCEPTED_43], chart=unrequested) == 1
    out = capsys.readouterr().out
    assert "FAILED   workloads-request-cpu-and-memory Deployment.keda.operator" in out
    accepted = {"checks": ["workloads-request-cpu-and-memory"], "objects": ["Deployment.keda.operator"], "reason": "x y z"}
    assert scan_chart_finding(monkeypatch, tmp_path / "again", [ACCEPTED_43, accepted], chart=unrequested) == 0


def test_every_accepted_chart_finding_says_why() -> None:
    entries = scan.yaml.safe_load(Path(scan.__file__).with_name("chart_findings.yaml").read_text())
    rules = {rule.name for rule in policy_pack.rules().RULES}
    assert entries
    for entry in entries:
        assert set(entry) == {"checks", "objects", "reason"}
        assert all(re.fullmatch(r"CKV2?_K8S_\d+", c) or c in rules for c in entry["checks"]), entry["checks"]
        assert all(re.fullmatch(r"[A-Za-z]+\.[a-z0-9-]+\.[a-z0-9.:-]+", o) for o in entry["objects"]), entry["objects"]
        assert len(entry["reason"].split()) >= 12, entry["reason"]


ANNOTATED_CHART_DEPLOYMENT = CHART_DEPLOYMENT.replace(
    "metadata: {name: operator, namespace: keda}",
    "metadata: {name: operator, namespace: keda, annotations: {checkov.io/skip1: 'CKV_K8S_43=upstream says its tag is fine'}}",
)


def scan_annotated_chart_object(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, accepted: list[dict[str, Any]]) -> int:
    return scan_chart_finding(monkeypatch, tmp_path, accepted, ANNOTATED_CHART_DEPLOYMENT, "upstream says its tag is fine")


def test_a_skip_annotation_on_a_chart_object_skips_nothing_without_a_reviewed_reason(monkeypatch, tmp_path, capsys) -> None:
    assert scan_annotated_chart_object(monkeypatch, tmp_path, []) == 1
    out = capsys.readouterr().out
    assert "FAILED   CKV_K8S_43 Deployment.keda.operator" in out and "skipped by an annotation on the chart's object" in out
    assert "skipped  CKV_K8S_43" not in out and "1 problem(s), 0 reasoned skip(s)" in out
    assert scan_annotated_chart_object(monkeypatch, tmp_path / "again", [ACCEPTED_43]) == 0
    out = capsys.readouterr().out
    assert "accepted CKV_K8S_43 Deployment.keda.operator" in out and "clean, 1 reasoned skip(s)" in out
