"""Validate rendered manifests offline: built-in kinds against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict), custom resources against the openAPIV3Schema of their CRDs and then, as the API
server does on create, against the CRDs' CEL rules (`x-kubernetes-validations`) on the object with the schema's
defaults applied.

CRD files are read from CRD_SCHEMA_DIR (default ../shared/crds beside the project); they are
published upstream data and are never copied into this repository.
"""

from __future__ import annotations

import copy
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Optional

import cel
import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CRD_DIR = PROJECT_ROOT.parent / "shared" / "crds"
# API groups the API server serves itself; every other group is a custom resource with a CRD.
BUILT_IN_GROUPS = {
    "", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "rbac.authorization.k8s.io",
    "storage.k8s.io", "scheduling.k8s.io", "node.k8s.io", "discovery.k8s.io", "coordination.k8s.io",
    "admissionregistration.k8s.io", "apiextensions.k8s.io", "certificates.k8s.io", "apiregistration.k8s.io",
}  # fmt: skip


def crd_schema_dir() -> Path:
    return Path(os.environ.get("CRD_SCHEMA_DIR") or DEFAULT_CRD_DIR)


def is_custom_resource(manifest: dict[str, Any]) -> bool:
    group = manifest["apiVersion"].rpartition("/")[0]
    return group not in BUILT_IN_GROUPS


def _strict(schema: Any) -> Any:
    """Make an openAPIV3Schema reject unknown fields, as the API server's strict field validation does."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in strict
        and "additionalProperties" not in strict
        and not strict.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    if strict.pop("nullable", False) and "type" in strict:
        strict["type"] = [strict["type"], "null"]
    return strict


CrdSchemas = dict[tuple[str, str], dict[str, Any]]


def schemas_of(documents: Iterable[Any]) -> CrdSchemas:
    """(apiVersion, kind) -> strict JSON schema, from every CustomResourceDefinition among the documents."""
    schemas = {}
    for document in documents:
        if not isinstance(document, dict) or document.get("kind") != "CustomResourceDefinition":
            continue
        spec = document["spec"]
        for version in spec["versions"]:
            schema = version.get("schema", {}).get("openAPIV3Schema")
            if schema:
                schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = _strict(schema)
    return schemas


@lru_cache(maxsize=None)
def crd_schemas(directory: Path) -> CrdSchemas:
    """The strict schemas of every CRD file in the directory; the C loader, since they run to megabytes."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return schemas_of(d for path in sorted(directory.glob("*.yaml")) for d in yaml.load_all(path.read_text(), Loader=loader))


def validate_custom_resource(manifest: dict[str, Any], directory: Path, extra: Optional[CrdSchemas] = None) -> list[str]:
    key = (manifest["apiVersion"], manifest["kind"])
    schema = crd_schemas(directory).get(key) or (extra or {}).get(key)
    if schema is None:
        return [f"{describe(manifest)}: no CRD for {key[0]} {key[1]} in {directory} or among the charts' own"]
    validator = jsonschema.Draft7Validator(schema)
    problems = [
        f"{describe(manifest)}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(manifest)
    ]
    # The rules assume a structurally valid object, as the API server runs them only on one.
    return problems or [f"{describe(manifest)}: {problem}" for problem in cel_problems(schema, defaulted(schema, manifest))]


def defaulted(schema: dict[str, Any], value: Any) -> Any:
    """The value with the schema's defaults filled in where a field is absent, as the API server decodes it."""
    if isinstance(value, dict):
        filled = dict(value)
        properties = schema.get("properties") or {}
        for name, sub in properties.items():
            if name not in filled and "default" in sub:
                filled[name] = copy.deepcopy(sub["default"])
        extra = schema.get("additionalProperties")
        return {
            name: defaulted(properties[name] if name in properties else extra if isinstance(extra, dict) else {}, item)
            for name, item in filled.items()
        }
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [defaulted(schema["items"], item) for item in value]
    return value


def _find(text: str, pattern: str) -> str:
    found = re.search(pattern, text)
    return found.group(0) if found else ""


# The Kubernetes CEL libraries' functions the CRDs' rules call that CEL's standard library lacks (k8s.io/apiserver
# pkg/cel/library: regex's find; the strings extension's split, lowerAscii, upperAscii). Python's re stands in for
# RE2 in find, the same for the plain patterns the CRDs use.
KUBERNETES_FUNCTIONS = {
    "find": _find,
    "split": lambda text, separator: text.split(separator),
    "lowerAscii": lambda text: "".join(c.lower() if c.isascii() else c for c in text),
    "upperAscii": lambda text: "".join(c.upper() if c.isascii() else c for c in text),
}


@lru_cache(maxsize=None)
def _compiled(rule: str) -> Any:
    return cel.compile(rule)


def cel_problems(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Every rule of the schema that the value breaks, or that cannot be evaluated (an error the API server would
    refuse the object for, or a function neither CEL nor KUBERNETES_FUNCTIONS has). Transition rules, which
    compare with oldSelf, apply to updates only and are left out."""
    problems = []
    for validation in schema.get("x-kubernetes-validations") or []:
        where = path or "<root>"
        try:
            program = _compiled(validation["rule"])
            if "oldSelf" in program.variables():
                continue
            passed = program.execute(cel.Context(variables={"self": value}, functions=KUBERNETES_FUNCTIONS))
        except Exception as exc:  # the library's errors have no common base; each is this rule's failure
            problems.append(f"{where}: rule {validation['rule']!r} cannot be evaluated: {type(exc).__name__}: {exc}")
            continue
        if passed is not True:
            message = validation.get("message") or f"failed rule: {validation['rule']}"
            problems.append(f"{where}: {message}")
    if isinstance(value, dict):
        properties, extra = schema.get("properties") or {}, schema.get("additionalProperties")
        for name, item in value.items():
            sub = properties.get(name, extra if isinstance(extra, dict) else None)
            if sub is not None and item is not None:
                problems += cel_problems(sub, item, f"{path}.{name}" if path else name)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problems += cel_problems(schema["items"], item, f"{path}[{index}]")
    return problems


# kubernetes-validate reads and parses two schema files (its definitions file, megabytes, among them) for every
# object it validates; a chart such as Envoy Gateway's has dozens. Each file is parsed once here, and only read.
kubernetes_validate.utils.schema_contents = lru_cache(maxsize=None)(kubernetes_validate.utils.schema_contents)


def validate_built_in(manifest: dict[str, Any], kubernetes_version: str) -> list[str]:
    try:
        kubernetes_validate.validate(manifest, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(map(str, error.path)) or "<root>"
        return [f"{describe(manifest)}: {path}: {error.message}"]
    return []


def describe(manifest: dict[str, Any]) -> str:
    metadata = manifest.get("metadata", {})
    return f"{manifest.get('kind')} {metadata.get('namespace', '-')}/{metadata.get('name')}"


def validate_manifests(
    manifests: Iterable[dict[str, Any]],
    kubernetes_version: str,
    crd_dir: Optional[Path],
    extra_crds: Optional[CrdSchemas] = None,
) -> list[str]:
    """Every problem found; custom resources are checked only when crd_dir is given, against its CRDs and then
    `extra_crds` (those a chart installs itself)."""
    problems = []
    for manifest in manifests:
        if is_custom_resource(manifest):
            if crd_dir is not None:
                problems += validate_custom_resource(manifest, crd_dir, extra_crds)
        else:
            problems += validate_built_in(manifest, kubernetes_version)
    return problems
