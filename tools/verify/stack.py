"""What verify knows of a stack: its outputs, through Pulumi's Automation API, and its settings, through the
program's own config model reading `Pulumi.<stack>.yaml`."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.parse import SplitResult, urlsplit

from pulumi import automation

from tools.verify.checks import KeyScope, Target, UsageError
from tools.verify.client import printable
from tools.verify.kube import SERVICE_HOST
from vllm_platform.config.base import DNS_1123_SUBDOMAIN
from vllm_platform.config.errors import ConfigError
from vllm_platform.config.loader import read_stack_file
from vllm_platform.config.platform import PlatformConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


# How `pulumi stack output --json` shows a secret output without --show-secrets (the CLI's mask, which the
# Automation API keeps private as _SECRET_SENTINEL; the config's own placeholder only happens to read the same).
SECRET_SHOWN_MASKED = "[secret]"


def stack_outputs(stack: str, show_secrets: bool = False) -> dict[str, Any]:
    """The stack's outputs, read with the Pulumi CLI through the Automation API's PulumiCommand. Masked by default
    (a secret output reads "[secret]"), so verify needs no secrets provider, nor PULUMI_CONFIG_PASSPHRASE, unless a
    secret is used: LocalWorkspace.stack_outputs would always decrypt every one."""
    args = ["stack", "output", "--json", *(["--show-secrets"] if show_secrets else []), "--stack", stack]
    try:
        result = automation.PulumiCommand().run(args, cwd=str(PROJECT_ROOT), additional_env={})
    except FileNotFoundError as exc:
        raise UsageError(
            "the pulumi CLI is not on PATH; install it, or check one endpoint with --url URL --model NAME"
        ) from exc
    except automation.errors.CommandError as exc:
        raise UsageError(f"reading the outputs of stack {stack} failed: {exc}") from exc
    try:
        outputs = json.loads(result.stdout)
    except ValueError as exc:
        raise UsageError(f"the outputs of stack {stack} are not JSON: {exc}") from exc
    if not isinstance(outputs, dict):
        raise UsageError(f"the outputs of stack {stack} are not a JSON object")
    return outputs


def stack_kubeconfig(stack: str, outputs: dict[str, Any]) -> Any:
    """The stack's `kubeconfig` output, or None; a secret one is decrypted now, the only read that needs the secrets
    provider."""
    kubeconfig = outputs.get("kubeconfig")
    if kubeconfig == SECRET_SHOWN_MASKED:
        kubeconfig = stack_outputs(stack, show_secrets=True).get("kubeconfig")
    return kubeconfig


def stack_file(stack: str) -> Path:
    # --stack may be fully qualified (org/project/stack, as CI passes it); the file is named after the stack alone.
    return PROJECT_ROOT / f"Pulumi.{stack.rsplit('/', 1)[-1]}.yaml"


def stack_settings(stack: str) -> Optional[PlatformConfig]:
    """The stack's config as the program reads it; None when there is no such stack file here."""
    path = stack_file(stack)
    if not path.is_file():
        return None
    try:
        return read_stack_file(path).platform()
    except ConfigError as exc:
        raise UsageError(f"{path.name}: {exc}") from exc


def key_scope(stack: str, client: str) -> KeyScope:
    """The models --client's key may use: its entry in the stack file's gateway.clients, as the program reads it."""
    settings = stack_settings(stack)
    where = stack_file(stack).name
    if settings is None:
        raise UsageError(f"--client {client!r}: no {where} here to read gateway.clients from")
    clients = {c.name: c.models for c in settings.gateway.clients}
    if client not in clients:
        raise UsageError(f"--client {client!r}: {where} has no such gateway.clients entry (its clients: {', '.join(clients) or 'none'})")
    return KeyScope(client, frozenset(clients[client]))


def stack_file_context(stack: str) -> Optional[str]:
    """The kubeconfig context an existing-cluster stack deploys to (`cluster.existing.context`), if any."""
    settings = stack_settings(stack)
    existing = settings.cluster.existing if settings else None
    return existing.context if existing else None


def _models(outputs: dict[str, Any]) -> dict[str, Any]:
    models = outputs.get("models") or {}
    if not isinstance(models, dict) or not models:
        raise UsageError("the stack has no `models` output; has it been deployed?")
    return models


def targets_from_outputs(outputs: dict[str, Any]) -> list[Target]:
    """Every model of the `models` output, whose served name must be a string and whose serviceUrl an http(s) URL."""
    models = _models(outputs)
    namespace = outputs.get("namespace")
    targets = []
    for name, model in sorted(models.items()):
        served, url = (model.get("servedModelName"), model.get("serviceUrl")) if isinstance(model, dict) else (None, None)
        if not isinstance(served, str) or not served or http_url(url) is None:
            raise UsageError(
                f"the stack's `models.{printable(str(name))}` output is not the documented shape: a servedModelName "
                f"and an http(s) serviceUrl (got {printable(repr(served))}, {printable(repr(url))})"
            )
        targets.append(Target(name=name, served_model=served, url=url, namespace=namespace))
    return targets


def base_url_problem(url: str) -> Optional[str]:
    """Why `url` cannot be a base URL that verify's paths follow, or None. urlsplit would strip a tab or a newline
    from anywhere in it without a word, and verify's own paths would drop a query or fragment."""
    if any(c.isspace() or not c.isprintable() for c in url):
        return "has whitespace or a control character"
    if "?" in url or "#" in url:
        return "has a query or fragment; verify appends its own paths (/health, /v1/models) to a base URL"
    return None


def http_url(url: Any) -> Optional[SplitResult]:
    """The parts of an http(s) base URL a connection can be made to, or None: a scheme, a host that is an IP address
    or a DNS name (RFC 1123 once IDNA spells it in ASCII; urlsplit lowers its case), a port from 1 to 65535, and
    nothing base_url_problem refuses."""
    if not isinstance(url, str) or base_url_problem(url) is not None:
        return None
    try:
        parts = urlsplit(url)
        port_ok = parts.port != 0
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except ValueError:  # an unclosed [IPv6] host, a port out of range, an empty or overlong label
        return None
    if parts.scheme not in ("http", "https") or not host or not port_ok:
        return None
    return parts if _is_ip_address(host) or DNS_1123_SUBDOMAIN.fullmatch(host) else None


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def gateway_base_url(endpoint: Any) -> str:
    """The gateway's root URL: `endpoint` is an OpenAI base URL, ending in /v1, and verify's paths start with /v1."""
    parts = http_url(endpoint)
    path = parts.path.rstrip("/") if parts else ""
    if parts is None or not path.endswith("/v1"):
        raise UsageError(f"the stack's `endpoint` output {endpoint!r} is not an OpenAI base URL such as https://llm.example.com/v1")
    return f"{parts.scheme}://{parts.netloc}{path.removesuffix('/v1')}"


def gateway_targets(outputs: dict[str, Any]) -> list[Target]:
    """Every model as a client of the gateway names it: its `gatewayModelName`, at the stack's `endpoint`."""
    if not outputs.get("endpoint"):
        raise UsageError("the stack has no gateway (no `endpoint` output): set gateway.enabled in its config, or verify without --via-gateway")
    base_url = gateway_base_url(outputs["endpoint"])
    targets = []
    for name, model in sorted(_models(outputs).items()):
        gateway_model = model.get("gatewayModelName") if isinstance(model, dict) else None
        if not isinstance(gateway_model, str) or not gateway_model:
            raise UsageError(f"the stack's `models.{name}` output has no `gatewayModelName`")
        scales_to_zero = model.get("scalesToZero") is True
        targets.append(Target(name=name, served_model=gateway_model, url=base_url, scales_to_zero=scales_to_zero))
    return targets


def target_from_url(url: str, model: str) -> Target:
    """One endpoint; a cluster-local Service URL also names the Deployment and namespace for the Kubernetes checks."""
    if "@" in url.split("//", 1)[-1].split("/", 1)[0]:
        # Said without the URL: its user information may hold a password.
        raise UsageError("--url has a user name or password (USER:PASSWORD@HOST); verify sends no credentials in a URL")
    parts = http_url(url)
    if parts is None or parts.hostname is None:
        raise UsageError(f"--url {url!r} {base_url_problem(url) or 'is not an http(s) URL such as http://127.0.0.1:8000'}")
    service = SERVICE_HOST.fullmatch(parts.hostname)
    if service:
        return Target(service["name"], model, url, service["namespace"])
    return Target(model, model, url)


@contextlib.contextmanager
def kubeconfig_file(content: Any) -> Iterator[str]:
    """The stack's kubeconfig in a private temporary file, removed afterwards; mkstemp creates it 0600."""
    descriptor, path = tempfile.mkstemp(prefix="verify-", suffix=".kubeconfig")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(content if isinstance(content, str) else json.dumps(content))
        yield path
    finally:
        os.unlink(path)
