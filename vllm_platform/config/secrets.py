"""The keys that hold secrets, and the refusal of any of them written in plain text.

A plain value lands in the committed `Pulumi.<stack>.yaml`, where everyone who reads the repository
reads it. `pulumi config set --secret` stores it encrypted with the stack's key instead, and the engine
then tells the program which keys are secret; offline, the `secure:` entries of the file say so.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any

from vllm_platform.config.base import CONFIG_NAMESPACE

# What an encrypted value reads as where it cannot be decrypted: the offline render, and outputs that hold it.
SECRET_PLACEHOLDER = "[secret]"

# Dotted paths below `vllm-platform:`, `[]` standing for every index of a list; the fields they name are
# declared with repr=False.
SECRET_PATHS = (
    "hfToken",
    "observability.grafanaAdminPassword",
    "cluster.existing.kubeconfig",
    "images.dockerHub.accessToken",
    "observability.alertmanager.receivers[].pagerduty.routingKey",
    "observability.alertmanager.receivers[].slack.apiUrl",
    "observability.alertmanager.receivers[].webhook.url",
    "gateway.clients[].apiKey",
)


def _values_at(node: Any, parts: list[str], path: str = "") -> Iterator[tuple[str, Any]]:
    """(concrete path, value) of each value a SECRET_PATHS pattern names in raw config."""
    if not parts:
        yield path, node
        return
    part, rest = parts[0], parts[1:]
    name, listed = part.removesuffix("[]"), part.endswith("[]")
    child = node.get(name) if isinstance(node, dict) else None
    where = f"{path}.{name}" if path else name
    if not listed:
        yield from _values_at(child, rest, where) if child is not None else ()
    elif isinstance(child, list):
        for index, item in enumerate(child):
            yield from _values_at(item, rest, f"{where}[{index}]")


def is_secret_location(loc: tuple[Any, ...]) -> bool:
    """Whether a validation error's location, ('observability', 'alertmanager', 'receivers', 0, ...), is a secret."""
    text = ""
    for part in loc:
        text += "[]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text in SECRET_PATHS


def is_covered(path: str, secret_paths: Collection[str]) -> bool:
    """Whether a secret path, or a key above it, is secret: the engine marks a whole top-level key
    secret when any value inside it is."""
    parts = path.split(".")
    return any(".".join(parts[:end]) in secret_paths for end in range(1, len(parts) + 1))


def set_command(path: str) -> str:
    flag = " --path" if "." in path or "[" in path else ""
    return f"pulumi config set --secret{flag} '{CONFIG_NAMESPACE}:{path}'"


def plaintext_problems(raw: Any, secret_paths: Collection[str]) -> list[str]:
    """One line per secret given as plain text; the value itself is never repeated."""
    return [
        f"{path}: is a secret written in plain text, readable by anyone with the stack file; remove it there and "
        f"store it encrypted with {set_command(path)} (it prompts for the value, or reads it from a pipe)"
        for pattern in SECRET_PATHS
        for path, value in _values_at(raw, pattern.split("."))
        if value is not None and not is_covered(path, secret_paths)
    ]


# The providers' own keys that hold credentials: the AWS provider's static keys and session token, and the
# Kubernetes provider's kubeconfig when it holds the file's contents (a path to the file is no secret).
PROVIDER_SECRET_KEYS = ("aws:accessKey", "aws:secretKey", "aws:token", "kubernetes:kubeconfig")


def _holds_a_secret(key: str, value: Any) -> bool:
    if not isinstance(value, str) or value in ("", SECRET_PLACEHOLDER):
        return False
    if key == "kubernetes:kubeconfig":
        # Contents are YAML or JSON over several lines or in braces; a path is one line of neither.
        return "\n" in value or value.lstrip().startswith("{") or "apiVersion" in value
    return True


def provider_plaintext_problems(values: Mapping[str, Any], secret_keys: Collection[str]) -> list[str]:
    """One line per provider credential (PROVIDER_SECRET_KEYS) given as plain text, never repeating it."""
    return [
        f"{key}: is a secret written in plain text, readable by anyone with the stack file; remove it there and "
        f"store it encrypted with pulumi config set --secret {key} (or leave it to the provider's own credential "
        "chain: a profile, the environment, or a role)"
        for key in PROVIDER_SECRET_KEYS
        if key not in secret_keys and _holds_a_secret(key, values.get(key))
    ]
