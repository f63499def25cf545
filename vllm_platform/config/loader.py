"""Where the stack config comes from: the Pulumi engine at `pulumi up`, or a `Pulumi.<stack>.yaml` file offline.

Either way the same raw `vllm-platform:` values reach `parse_config`. The HF token is read as a secret
on its own and never validated into plain state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pulumi
import yaml

from vllm_platform.config.base import CONFIG_NAMESPACE
from vllm_platform.config.errors import ConfigError
from vllm_platform.config.platform import PlatformConfig, parse_config

HF_TOKEN_KEY = "hfToken"
# What a `secure:` value, which cannot be decrypted offline, reads as; and every secret in an offline render.
SECRET_PLACEHOLDER = "[secret]"


def platform_values(config: dict[str, str]) -> dict[str, Any]:
    """The `vllm-platform:` keys of an engine config map (values as JSON text), decoded for parse_config.

    Every key is passed on, so a misspelt one is an error, never a silent default. The HF token is
    left out: it is read as a secret on its own and never validated into plain state."""
    prefix, raw = f"{CONFIG_NAMESPACE}:", {}
    for key, text in config.items():
        name = key.removeprefix(prefix)
        if name == key or name == HF_TOKEN_KEY:
            continue
        try:
            raw[name] = json.loads(text)
        except ValueError:
            raw[name] = text  # a plain string such as `namespace: inference`
    return raw


def _engine_config() -> dict[str, str]:
    """Every config value the engine gave this program, read without the secret-access warnings of
    pulumi.Config: secrets inside (the Grafana password) are wrapped where they are used."""
    keys = {*pulumi.runtime.config.CONFIG.get(), *pulumi.runtime.config.get_config_env()}
    return {key: pulumi.runtime.config.get_config(key) for key in keys}


def engine_config() -> PlatformConfig:
    """This stack's config as the engine gives it, validated; raises ConfigError."""
    return parse_config(platform_values(_engine_config()))


def engine_hf_token() -> Optional[pulumi.Output[str]]:
    return pulumi.Config(CONFIG_NAMESPACE).get_secret(HF_TOKEN_KEY)


@dataclass
class StackConfig:
    """A stack file's config map, as the Pulumi engine hands it to the program."""

    values: dict[str, str]
    secret_keys: list[str]

    def platform(self) -> PlatformConfig:
        return parse_config(platform_values(self.values))


def _placeholder_secure(value: Any) -> tuple[Any, bool]:
    """Replace `secure:` leaves with the placeholder; report whether there were any."""
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return SECRET_PLACEHOLDER, True
        pairs = {k: _placeholder_secure(v) for k, v in value.items()}
        return {k: v for k, (v, _) in pairs.items()}, any(s for _, s in pairs.values())
    if isinstance(value, list):
        items = [_placeholder_secure(v) for v in value]
        return [v for v, _ in items], any(s for _, s in items)
    return value, False


def stack_config(document: dict[str, Any]) -> StackConfig:
    """The config map of a parsed Pulumi.<stack>.yaml document."""
    values, secret_keys = {}, []
    for key, raw in (document.get("config") or {}).items():
        value, secret = _placeholder_secure(raw)
        values[key] = value if isinstance(value, str) else json.dumps(value)
        if secret:
            secret_keys.append(key)
    return StackConfig(values=values, secret_keys=secret_keys)


def read_stack_file(path: Path) -> StackConfig:
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError([f"not valid YAML: {error}"]) from None
    if not isinstance(document, dict) or not isinstance(document.get("config") or {}, dict):
        raise ConfigError(["`config:` must be a mapping of `project:key` names to values"])
    return stack_config(document)
