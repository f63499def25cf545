"""Offline render: run the real program under Pulumi mocks and write what `pulumi up` would create.

    python -m tools.render --stack dev --out build/dev
    python -m tools.render --config path/to/Pulumi.x.yaml [--stack x] --out DIR

Writes DIR/manifests.yaml (every Kubernetes object, apply-ready; not Helm releases or providers),
DIR/plan.json ({stack, project, resources: [{type, name, parent, dependsOn, inputs}], outputs}) and
DIR/charts/<release>.yaml, each Helm release's own objects from a real `helm template` (tools/charts.py).
Secrets, and the `secure:` config values that cannot be decrypted offline, appear as "[secret]".
Exit codes: 0 rendered, 2 invalid stack config, 1 anything else (no such stack file, `helm template` failing).
"""

from __future__ import annotations

import argparse
import json
import runpy
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pulumi
import yaml
from pulumi.runtime.settings import get_root_resource

from vllm_platform.config.errors import ConfigError
from vllm_platform.config.loader import StackConfig, read_stack_file
from vllm_platform.config.platform import PlatformConfig
from vllm_platform.plan.plans import Plan
from vllm_platform.plan.resolve import resolve
from tools import charts, mocks, offerings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROGRAM = PROJECT_ROOT / "__main__.py"
# Resource types that are not Kubernetes objects of their own: Helm releases and chart components.
NOT_MANIFESTS = ("kubernetes:helm.sh/", "kubernetes:yaml/", "kubernetes:kustomize/")
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
# Apply order: what others live in or refer to comes first.
KIND_ORDER = ("Namespace", "NetworkPolicy", "ServiceAccount", "Secret", "ConfigMap", "Service", "Deployment")


def _manifest_order(manifest: dict[str, Any]) -> tuple[int, str, str, str]:
    kind = manifest.get("kind", "")
    rank = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
    metadata = manifest.get("metadata", {})
    return rank, kind, metadata.get("namespace", ""), metadata.get("name", "")


def project_name() -> str:
    return yaml.safe_load((PROJECT_ROOT / "Pulumi.yaml").read_text())["name"]


def plan_of(stack_config: StackConfig) -> Plan:
    """The plan a stack file resolves to; raises ConfigError as `pulumi preview` would stop."""
    return resolve(stack_config.platform())


@dataclass
class Rendering:
    stack: str
    project: str
    plan: Plan
    resources: list[mocks.RecordedResource]
    outputs: dict[str, Any]
    # The provider functions the program invoked, in order: what its preview asks AWS.
    calls: tuple[str, ...] = ()

    @property
    def config(self) -> PlatformConfig:
        return self.plan.config

    def manifests(self) -> list[dict[str, Any]]:
        objects = []
        for resource in self.resources:
            if not resource.type.startswith("kubernetes:") or resource.type.startswith(NOT_MANIFESTS):
                continue
            head = {k: resource.inputs[k] for k in ("apiVersion", "kind", "metadata") if k in resource.inputs}
            objects.append({**head, **{k: v for k, v in resource.inputs.items() if k not in head}})
        return sorted(objects, key=_manifest_order)

    def plan_document(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "project": self.project,
            "resources": [r.as_plan_entry() for r in sorted(self.resources, key=lambda r: (r.type, r.name))],
            "outputs": self.outputs,
        }

    def releases(self) -> list[dict[str, Any]]:
        """Every Helm release's inputs: chart, version, repository, values, namespace and name."""
        return [r.inputs for r in self.resources if r.type == HELM_RELEASE]

    def chart_documents(self) -> dict[str, str]:
        """Each release's own objects as `helm template` renders them, by release name; ChartsUnavailable
        says why where helm or a chart cannot be had."""
        # Rendered together: each chart sees the APIs the stack's other releases install (its CRDs), as after the
        # first `pulumi up`, where a template checks .Capabilities.APIVersions.
        return charts.templates(self.releases(), self.config.cluster.kubernetes_version)

    def write(self, out: Path, with_charts: bool = True) -> None:
        """OUT holds this render and nothing else: a release an earlier render had is not left behind."""
        shutil.rmtree(out / "charts", ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifests.yaml").write_text(yaml.safe_dump_all(self.manifests(), sort_keys=False))
        (out / "plan.json").write_text(json.dumps(self.plan_document(), indent=2) + "\n")
        if with_charts and self.releases():
            documents = self.chart_documents()
            (out / "charts").mkdir(exist_ok=True)
            for release, text in documents.items():
                (out / "charts" / f"{release}.yaml").write_text(text)


async def _resolved_exports() -> dict[str, Any]:
    root = get_root_resource()
    exports = {}
    for name, value in getattr(root, "outputs", {}).items():
        output = pulumi.Output.from_input(value)
        resolved = await output.future()
        exports[name] = mocks.mask_secrets(resolved, inside_secret=await output.is_secret())
    return exports


def render(stack_config: StackConfig, stack: str, caller_arn: Optional[str] = None) -> Rendering:
    """Run the program under mocks; raises ConfigError before anything runs if the config is invalid.

    It runs as caller_arn, by default the stack's first admin: the identity a real `pulumi up` would use.
    """
    plan = plan_of(stack_config)
    region = stack_config.values.get("aws:region", mocks.DEFAULT_REGION)
    if plan.config.cluster.existing is None and region not in offerings.REGION_ZONES:
        known = ", ".join(sorted(offerings.REGION_ZONES))
        raise ConfigError([f"aws:region: the offline render knows no zones of {region!r}; it knows {known}"])
    project = project_name()
    caller = caller_arn or next(iter(plan.config.cluster.admin_principal_arns), mocks.DEFAULT_CALLER)
    monitor = mocks.install(project, stack, stack_config.values, stack_config.secret_keys, caller)
    exports: dict[str, Any] = {}

    def program() -> Any:
        runpy.run_path(str(PROGRAM), run_name="__main__")

        async def collect() -> None:
            exports.update(await _resolved_exports())

        return collect()

    # Pulumi's own way to run a program under mocks: it awaits what the program returns, then every
    # output still pending, as the engine would before the update ends.
    pulumi.runtime.test(program)()
    calls = tuple(monitor.mocks.calls)  # type: ignore[attr-defined]
    return Rendering(stack=stack, project=project, plan=plan, resources=monitor.records, outputs=exports, calls=calls)


def stack_file(stack: str) -> Path:
    return PROJECT_ROOT / f"Pulumi.{stack}.yaml"


def committed_stacks() -> list[str]:
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in PROJECT_ROOT.glob("Pulumi.*.yaml"))


def main(argv: Optional[list[str]] = None) -> int:
    """The command line. Returns 0 once rendered; 2 for an invalid stack config (argparse exits 2 on bad usage
    too); 1 where something else fails: no stack file to read, or `helm template` refusing a release's chart and
    values, each said in one `error:` line on stderr, not a traceback. Without helm or a chart it renders the
    rest, says why on a `note:` line, and returns 0."""
    parser = argparse.ArgumentParser(prog="python -m tools.render", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", help="stack name; reads Pulumi.<stack>.yaml unless --config is given")
    parser.add_argument("--config", type=Path, help="a stack config file in Pulumi.<stack>.yaml format")
    parser.add_argument("--out", type=Path, required=True, help="directory for manifests.yaml and plan.json")
    args = parser.parse_args(argv)
    if not args.stack and not args.config:
        parser.error("give --stack, --config or both")
    path = args.config or stack_file(args.stack)
    stack = args.stack or path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    if not path.is_file():
        print(f"error: no stack config file {path}", file=sys.stderr)
        return 1
    try:
        rendering = render(read_stack_file(path), stack)
    except (ConfigError, pulumi.RunError) as error:
        print(f"error: {path.name}: {error}", file=sys.stderr)
        return 2
    try:
        rendering.write(args.out)
        charts_note = f", {len(rendering.releases())} Helm releases' objects in charts/"
    except charts.HelmFailed as error:
        print(f"error: {path.name}: {error}", file=sys.stderr)
        return 1
    except charts.ChartsUnavailable as reason:
        rendering.write(args.out, with_charts=False)
        charts_note = f"; the Helm releases' own objects are not rendered: {reason}"
        print(f"note: {reason}", file=sys.stderr)
    kinds = len(rendering.manifests())
    print(f"rendered stack {stack}: {kinds} Kubernetes objects, {len(rendering.resources)} resources{charts_note} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
