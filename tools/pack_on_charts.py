"""The policy pack's resource rules, run over the Helm charts' own objects, which the engine never shows it.

At `pulumi preview` a Helm release is one resource: the objects its chart creates are rendered inside the
provider, out of the pack's sight. Offline, `tools.charts` renders them; here every one of them, whatever its
kind (a Service, a Secret, a NodePool as much as a Deployment), is handed to every resource rule as the engine
would hand a resource of its type, and each rule checks the types it is about. Stack rules are not run: they
judge a stack's resources together, and a chart's objects are not a stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulumi_policy import PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs
from pulumi_policy.proxy import unknown_checking_proxy

from tools import charts
from tools.policy_pack import rules


@dataclass(frozen=True)
class Violation:
    policy: str
    resource: str  # Kind.namespace.name, as checkov names objects
    file: str
    message: str

    def line(self) -> str:
        return f"{self.policy} {self.resource} ({self.file}): {self.message}"


def _as_wire(value: Any) -> Any:
    """Every number a float, as the engine sends it."""
    if isinstance(value, dict):
        return {k: _as_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_wire(v) for v in value]
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def resource_type(manifest: dict[str, Any]) -> str:
    """The Pulumi type the engine gives an object: kubernetes:apps/v1:Deployment, kubernetes:core/v1:Pod."""
    api_version = manifest["apiVersion"]
    return f"kubernetes:{api_version if '/' in api_version else f'core/{api_version}'}:{manifest['kind']}"


def resource_name(manifest: dict[str, Any]) -> str:
    metadata = manifest.get("metadata") or {}
    return f"{manifest['kind']}.{metadata.get('namespace', 'default')}.{metadata.get('name')}"


def violations(files: list[Path]) -> list[Violation]:
    """What the pack's resource rules report on the charts' objects, one line per message."""
    options = PolicyResourceOptions(False, [], False, [], PolicyCustomTimeouts(0, 0, 0), [])
    found = []
    for file in files:
        for manifest in charts.load_objects(file.read_text()):
            name = resource_name(manifest)
            # One proxy of the object for every rule, as the engine shares one among its remediations: the rules
            # only read it, and a proxy per rule of the charts' large CRDs would multiply the scan's time by the rules.
            args = ResourceValidationArgs(
                resource_type(manifest), unknown_checking_proxy(_as_wire(manifest)), f"urn:chart::{name}", name, options, None
            )
            for rule in rules().RULES:
                if rule.stack:
                    continue
                messages: list[str] = []
                rule.check(args, lambda message, urn=None: messages.append(message))
                found += [Violation(rule.name, name, str(file.resolve()), m) for m in messages]
    return found
