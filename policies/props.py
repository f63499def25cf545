"""How the pack reads a resource's props, and names a resource in a message.

Props arrive as read-only Mapping and Sequence proxies (never dict or list), with camelCase keys, and
every number as a float; a value the preview cannot know yet raises when it is read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

from pulumi_policy.proxy import UnknownValueError

from vllm_platform.contract import NODE_CLASS as NODE_CLASS_KIND
from vllm_platform.contract import NODE_POOL as NODE_POOL_KIND

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
NODE_POOL = NODE_POOL_KIND.pulumi_type
NODE_CLASS = NODE_CLASS_KIND.pulumi_type
# Kinds without a namespace: their messages name them by name alone.
CLUSTER_SCOPED = (NODE_POOL, NODE_CLASS)
DEFAULT_NAMESPACE = "default"


def dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def items(value: Any) -> Sequence[Any]:
    return value if isinstance(value, Sequence) and not isinstance(value, str) else ()


def number(value: Any) -> Optional[float]:
    """2, 2.0 and "2" alike: the engine sends every number as a float, Kubernetes quantities come as strings."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def namespace_of(props: Mapping[str, Any]) -> str:
    return dig(props, "metadata", "namespace") or DEFAULT_NAMESPACE


def known(read: Callable[[], Any]) -> Any:
    """What read() returns, or None for a value the preview cannot know yet."""
    try:
        return read()
    except UnknownValueError:
        return None


def describe(resource_type: str, props: Mapping[str, Any], name: str) -> str:
    """How a message names a resource: kind namespace/name for Kubernetes objects, type and Pulumi name otherwise.

    Only for a message, never before a check: reading a value unknown at preview raises, and the engine
    then downgrades the whole policy to advisory. A name not known yet gives way to the Pulumi name.
    """
    # A Helm release is no Kubernetes object: it has no metadata to name it by.
    if not resource_type.startswith("kubernetes:") or resource_type == HELM_RELEASE:
        return f"{resource_type} {name}"
    kind = resource_type.rpartition(":")[2]
    object_name = known(lambda: dig(props, "metadata", "name"))
    if resource_type in CLUSTER_SCOPED:
        return f"{kind} {object_name or name}"
    namespace = known(lambda: namespace_of(props))
    return f"{kind} {namespace}/{object_name or name}" if namespace else f"{kind} {object_name or name}"

