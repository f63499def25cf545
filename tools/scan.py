"""Scan every committed stack's (and tests/data's example configs') rendered manifests with checkov's Kubernetes checks.

    python -m tools.scan --checkov venv-scan/bin/checkov [--out build/scan]

Renders each Pulumi.<stack>.yaml, and each tests/data/<name>.yaml, into OUT/<name>/ and runs checkov once over all of them. Fails
(exit 1) on any failed check, and on a stack of which checkov scanned nothing: an unparsable file
would otherwise pass with zero findings. Skips are only the per-object `checkov.io/skip<N>`
annotations the builders write, each with its reason; they are listed, never hidden, and any other
skip fails the scan. checkov runs from an empty directory that is its home too, without the CKV_,
BC_ and PRISMA_ variables it reads as options: no .checkov.yaml and no variable can skip checks,
which checkov would then not even report, or narrow them.
Exit codes: 0 clean, 1 findings, 2 checkov missing or unusable.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from vllm_platform.config.errors import ConfigError
from tools import render
from vllm_platform.config.loader import read_stack_file

# No calls home: no update check, no download of Prisma Cloud's check metadata; the scan is the same offline.
CHECKOV_ENV = {"CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"}
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
    files, the resource named as checkov names it: Kind.namespace.name."""
    skips = set()
    for file in files:
        for manifest in filter(None, yaml.safe_load_all(file.read_text())):
            metadata = manifest.get("metadata") or {}
            resource = f"{manifest['kind']}.{metadata.get('namespace', 'default')}.{metadata.get('name')}"
            for key, value in (metadata.get("annotations") or {}).items():
                check_id, equals, reason = str(value).partition("=")
                if SKIP_ANNOTATION.fullmatch(key) and equals and reason:
                    skips.add((str(file.resolve()), resource, check_id, reason))
    return skips


# Variants no committed stack shows: onto an existing cluster, with a Hugging Face token to mount.
FIXTURES = sorted((Path(__file__).resolve().parent.parent / "tests" / "data").glob("*.yaml"))


def render_stacks(out: Path) -> list[Path]:
    files = []
    sources = [(stack, render.stack_file(stack)) for stack in render.committed_stacks()]
    for stack, path in sources + [(f.stem, f) for f in FIXTURES]:
        render.render(read_stack_file(path), stack).write(out / stack)
        files.append(out / stack / "manifests.yaml")
    return files


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
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        report = parse_report(run_checkov(args.checkov, files))
    except (OSError, RuntimeError, ValueError) as error:
        print(f"error: checkov could not scan: {error}", file=sys.stderr)
        return 2
    unannotated = report.unannotated(annotated_skips(files))
    for finding in report.skipped:
        if finding not in unannotated:
            print(f"skipped  {finding.line()}")
    for finding in report.failed:
        print(f"FAILED   {finding.line()}")
    problems = [f"checkov scanned nothing in {f}" for f in report.unscanned(files)]
    problems += [f"skipped without a checkov.io/skip annotation on the object: {f.line()}" for f in unannotated]
    problems += [f"checkov could not parse {e}" for e in report.parsing_errors]
    for problem in problems:
        print(f"FAILED   {problem}")
    verdict = "clean" if not (report.failed or problems) else f"{len(report.failed) + len(problems)} problem(s)"
    print(f"checkov on {len(files)} stacks: {verdict}, {len(report.skipped) - len(unannotated)} reasoned skip(s)")
    return 1 if report.failed or problems else 0


if __name__ == "__main__":
    sys.exit(main())
