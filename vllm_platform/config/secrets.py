"""The keys that hold secrets, and the refusal of any of them written in plain text.

A plain value lands in the committed `Pulumi.<stack>.yaml`, where everyone who reads the repository
reads it. `pulumi config set --secret` stores it encrypted with the stack's key instead, and the engine
then tells the program which keys are secret; offline, the `secure:` entries of the file say so.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from vllm_platform.config.base import CONFIG_NAMESPACE

# Dotted paths below `vllm-platform:`; the fields they name are declared with repr=False.
SECRET_PATHS = ("hfToken", "observability.grafanaAdminPassword", "cluster.existing.kubeconfig")


def _value_at(raw: Any, path: str) -> Any:
    node = raw
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def is_covered(path: str, secret_paths: Collection[str]) -> bool:
    """Whether a secret path, or a key above it, is secret: the engine marks a whole top-level key
    secret when any value inside it is."""
    parts = path.split(".")
    return any(".".join(parts[:end]) in secret_paths for end in range(1, len(parts) + 1))


def set_command(path: str) -> str:
    flag = " --path" if "." in path else ""
    return f"pulumi config set --secret{flag} '{CONFIG_NAMESPACE}:{path}'"


def plaintext_problems(raw: Any, secret_paths: Collection[str]) -> list[str]:
    """One line per secret given as plain text; the value itself is never repeated."""
    return [
        f"{path}: is a secret written in plain text, readable by anyone with the stack file; remove it there and "
        f"store it encrypted with {set_command(path)} (it prompts for the value, or reads it from a pipe)"
        for path in SECRET_PATHS
        if _value_at(raw, path) is not None and not is_covered(path, secret_paths)
    ]
