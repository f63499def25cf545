"""tools.scan: reading checkov's report, and the reasoned per-object skips the builders write."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import COMMITTED_STACKS, rendered_stack
from tools import scan

SKIP_ANNOTATION = re.compile(r"^checkov\.io/skip\d+$")
# A check id, then a reason of a few words at least: "CKV_K8S_43=pinned to ...".
REASONED_SKIP = re.compile(r"^CKV2?_K8S_\d+=\S.{30,}$")


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


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_every_skip_is_on_its_object_with_a_reason(stack: str) -> None:
    skips = 0
    for manifest in rendered_stack(stack).manifests():
        for key, value in (manifest["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/"):
                assert SKIP_ANNOTATION.match(key) and REASONED_SKIP.match(value), (manifest["metadata"]["name"], key, value)
                skips += 1
        template = manifest.get("spec", {}).get("template", {}).get("metadata", {})
        assert not [k for k in template.get("annotations", {}) if k.startswith("checkov.io/")], "checkov reads the object's own"
    assert skips <= len(rendered_stack(stack).plan.models) * 2
