"""Scan every committed stack's (and tests/data's example configs') rendered objects with checkov's Kubernetes
checks, and the Helm charts' own objects with the policy pack's resource rules too.

    python -m tools.scan --checkov venv-scan/bin/checkov [--out build/scan]

Renders each Pulumi.<stack>.yaml, and each tests/data/<name>.yaml, into OUT/<name>/ (manifests.yaml and
charts/<release>.yaml) and runs checkov once over all of them. Fails (exit 1) on any failed check, and on a
file of which checkov scanned nothing: an unparsable file would otherwise pass with zero findings.
Skips of the program's own objects are only the per-object `checkov.io/skip<N>` annotations the builders
write into manifests.yaml, each with its reason. A finding on a chart's object is accepted only where
tools/chart_findings.yaml names its check (or policy) and object with a reason, whether checkov failed it or
skipped it for an annotation on the object (the chart's own, or one its values put there, which nobody here
reviewed); an entry there that matches nothing fails too.
Accepted findings are listed, never hidden. checkov runs from an empty directory that is its home too,
without the CKV_, BC_ and PRISMA_ variables it reads as options: no .checkov.yaml and no variable can skip
checks, which checkov would then not even report, or narrow them.
Exit codes: 0 clean, 1 findings, 2 checkov missing or unusable.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from tools import charts, pack_on_charts, render
from vllm_platform.config.errors import ConfigError
from vllm_platform.config.loader import read_stack_file

# No calls home: no update check, no download of Prisma Cloud's check metadata; the scan is the same offline.
# No size limit: the charts' CRDs make kube-prometheus-stack's render 5 MB, which checkov would skip unread.
CHECKOV_ENV = {"CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE", "CHECKOV_MAX_FILE_SIZE": "0"}
CHART_FINDINGS = Path(__file__).resolve().parent / "chart_findings.yaml"
CHECKOV_OPTION_PREFIXES = ("CKV_", "BC_", "PRISMA_")
SKIP_ANNOTATION = re.compile(r"checkov\.io/skip\d+")


@dataclass(frozen=True)
class Finding:
    check_id: str
    check_name: str
    resource: str
    file: str
    reason: Optional[str] = None

    def line(self) -> str:
        where = f"{self.resource} ({self.file})"
        return f"{self.check_id} {where}: " + (self.reason if self.reason is not None else self.check_name)


@dataclass(frozen=True)
class ScanReport:
    failed: list[Finding]
    skipped: list[Finding]
    scanned_files: set[str]
    parsing_errors: list[str]

    def unscanned(self, files: list[Path]) -> list[Path]:
        return [f for f in files if str(f.resolve()) not in self.scanned_files]

    def unannotated(self, annotated: set[tuple[str, str, str, str]]) -> list[Finding]:
        """Skips that no checkov.io/skip<N> annotation on their object, with that check and reason, explains."""
        return [f for f in self.skipped if (f.file, f.resource, f.check_id, f.reason) not in annotated]


def _finding(item: dict[str, Any]) -> Finding:
    return Finding(
        check_id=item["check_id"],
        check_name=item["check_name"],
        resource=item["resource"],
        file=item.get("file_abs_path") or item["file_path"],
        reason=(item.get("check_result") or {}).get("suppress_comment"),
    )


def parse_report(output: str) -> ScanReport:
    """checkov's JSON: one report object, or a list of them when several frameworks ran."""
    document = json.loads(output)
    reports = document if isinstance(document, list) else [document]
    failed, skipped, scanned, errors = [], [], set(), []
    for report in reports:
        results = report.get("results") or {}
        failed += [_finding(i) for i in results.get("failed_checks", [])]
        skipped += [_finding(i) for i in results.get("skipped_checks", [])]
        for key in ("passed_checks", "failed_checks", "skipped_checks"):
            scanned |= {i.get("file_abs_path") or i["file_path"] for i in results.get(key, [])}
        errors += results.get("parsing_errors", [])
    return ScanReport(failed, skipped, scanned, errors)


def annotated_skips(files: list[Path]) -> set[tuple[str, str, str, str]]:
    """(file, resource, check id, reason) for each `checkov.io/skip<N>: CHECK=reason` annotation in the
    files (the program's own: a chart's are no reason), the resource named as checkov names it: Kind.namespace.name."""
    skips = set()
    for file in files:
        for manifest in charts.load_objects(file.read_text()):
            metadata = manifest.get("metadata") or {}
            resource = f"{manifest['kind']}.{metadata.get('namespace', 'default')}.{metadata.get('name')}"
            for key, value in (metadata.get("annotations") or {}).items():
                check_id, equals, reason = str(value).partition("=")
                if SKIP_ANNOTATION.fullmatch(key) and equals and reason:
                    skips.add((str(file.resolve()), resource, check_id, reason))
    return skips


# Variants no committed stack shows: onto an existing cluster, with a Hugging Face token to mount.
FIXTURES = sorted((Path(__file__).resolve().parent.parent / "tests" / "data").glob("*.yaml"))


def checkov_copy(chart_file: Path) -> Optional[Path]:
    """A chart's objects without its CRDs, for checkov: it parses with PyYAML's safe loader, which fails on the bare
    `=` some upstream CRDs hold (the whole file would go unscanned), and a CRD runs nothing to check. None for a
    chart of CRDs only (karpenter-crd): nothing of it is for checkov, and the schemas check its CRDs."""
    objects = [o for o in charts.load_objects(chart_file.read_text()) if o.get("kind") != "CustomResourceDefinition"]
    if not objects:
        return None
    copy = chart_file.parent.parent / "checkov" / chart_file.name
    copy.parent.mkdir(exist_ok=True)
    copy.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return copy


def render_stacks(out: Path) -> list[Path]:
    """Every stack rendered into OUT/<stack>/: its manifests.yaml, then its charts' objects in checkov/<release>.yaml
    (from charts/<release>.yaml, less their CRDs)."""
    files = []
    sources = [(stack, render.stack_file(stack)) for stack in render.committed_stacks()]
    for stack, path in sources + [(f.stem, f) for f in FIXTURES]:
        rendering = render.render(read_stack_file(path), stack)
        shutil.rmtree(out / stack / "checkov", ignore_errors=True)
        try:
            rendering.write(out / stack)
        except charts.ChartsUnavailable as reason:
            if os.environ.get("REQUIRE_HELM_CHARTS"):
                raise
            print(f"note: the charts' own objects of {stack} are not scanned: {reason}", file=sys.stderr)
            rendering.write(out / stack, with_charts=False)
        copies = (checkov_copy(f) for f in sorted((out / stack / "charts").glob("*.yaml")))
        files += [out / stack / "manifests.yaml", *(copy for copy in copies if copy is not None)]
    return files


def is_chart_file(file: Path) -> bool:
    return file.parent.name == "checkov"


@dataclass(frozen=True)
class Accepted:
    """tools/chart_findings.yaml: (check id or policy name, object) -> why the platform accepts that finding."""

    reasons: dict[tuple[str, str], str]

    @classmethod
    def load(cls, path: Optional[Path] = None) -> "Accepted":
        reasons = {}
        for entry in yaml.safe_load((path or CHART_FINDINGS).read_text()) or []:
            for check in entry["checks"]:
                for obj in entry["objects"]:
                    reasons[(check, obj)] = " ".join(entry["reason"].split())
        return cls(reasons)

    def reason(self, check: str, obj: str) -> Optional[str]:
        return self.reasons.get((check, obj))


def run_checkov(checkov: str, files: list[Path]) -> str:
    # It runs elsewhere: a path to it, and the files, must not depend on this directory.
    executable = str(Path(checkov).resolve()) if os.sep in checkov else checkov
    command = [executable, "--framework", "kubernetes", "--skip-download", "--output", "json"]
    for file in files:
        command += ["--file", str(file.resolve())]
    env = {key: value for key, value in os.environ.items() if not key.startswith(CHECKOV_OPTION_PREFIXES)}
    # checkov reads .checkov.yaml from its working directory and from home: both are this empty one.
    with tempfile.TemporaryDirectory(prefix="checkov-") as empty:
        env.update(CHECKOV_ENV, HOME=empty)
        result = subprocess.run(command, capture_output=True, text=True, cwd=empty, env=env)
    # checkov exits 1 on findings, which the report says as well; anything else is checkov failing.
    if result.returncode not in (0, 1) or not result.stdout.strip():
        raise RuntimeError(f"checkov exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result.stdout


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.scan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkov", required=True, help="the checkov executable")
    parser.add_argument("--out", type=Path, default=Path("build/scan"), help="where the stacks are rendered")
    args = parser.parse_args(argv)
    try:
        files = render_stacks(args.out)
    except (ConfigError, charts.ChartsUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        report = parse_report(run_checkov(args.checkov, files))
    except (OSError, RuntimeError, ValueError) as error:
        print(f"error: checkov could not scan: {error}", file=sys.stderr)
        return 2
    accepted, used = Accepted.load(), set()
    # checkov honours a skip annotation wherever it is; the platform only on its own objects. A chart object's
    # skipped finding is judged as a failed one: by tools/chart_findings.yaml alone.
    chart_skips = [f for f in report.skipped if is_chart_file(Path(f.file))]
    own_files = [f for f in files if not is_chart_file(f)]
    unannotated = [f for f in report.unannotated(annotated_skips(own_files)) if f not in chart_skips]
    reasoned_skips = [f for f in report.skipped if f not in unannotated and f not in chart_skips]
    for finding in reasoned_skips:
        print(f"skipped  {finding.line()}")
    failed = []
    for finding in report.failed + chart_skips:
        reason = accepted.reason(finding.check_id, finding.resource) if is_chart_file(Path(finding.file)) else None
        if reason is None:
            failed.append(finding)
            annotated = " (skipped by an annotation on the chart's object, which is no reviewed reason)" if finding in chart_skips else ""
            print(f"FAILED   {finding.line()}{annotated}")
        else:
            used.add((finding.check_id, finding.resource))
            print(f"accepted {finding.check_id} {finding.resource} ({finding.file}): {reason}")
    for violation in pack_on_charts.violations([f for f in files if is_chart_file(f)]):
        reason = accepted.reason(violation.policy, violation.resource)
        if reason is None:
            failed.append(violation)
            print(f"FAILED   {violation.line()}")
        else:
            used.add((violation.policy, violation.resource))
            print(f"accepted {violation.policy} {violation.resource} ({violation.file}): {reason}")
    problems = [f"checkov scanned nothing in {f}" for f in report.unscanned(files)]
    problems += [f"skipped without a checkov.io/skip annotation on the object: {f.line()}" for f in unannotated]
    problems += [f"checkov could not parse {e}" for e in report.parsing_errors]
    problems += [
        f"{CHART_FINDINGS.name} accepts {check} on {obj}, which no stack has: remove the entry"
        for check, obj in sorted(set(accepted.reasons) - used)
    ]
    for problem in problems:
        print(f"FAILED   {problem}")
    verdict = "clean" if not (failed or problems) else f"{len(failed) + len(problems)} problem(s)"
    reasoned = len(reasoned_skips) + len(used)
    print(f"checkov and the pack on {len(files)} files: {verdict}, {reasoned} reasoned skip(s) and accepted finding(s)")
    return 1 if failed or problems else 0


if __name__ == "__main__":
    sys.exit(main())
