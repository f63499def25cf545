"""Where the stack config comes from: the Pulumi engine at `pulumi up`, or a `Pulumi.<stack>.yaml` file offline.

Either way the same raw `vllm-platform:` values reach `parse_config`, with the paths that are secret, so
that a secret written in plain text is refused (config/secrets.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi

from vllm_platform.config import stack_yaml
from vllm_platform.config.base import CONFIG_NAMESPACE
from vllm_platform.config.errors import ConfigError
from vllm_platform.config.platform import PlatformConfig, parse_config
from vllm_platform.config.secrets import SECRET_PLACEHOLDER, provider_plaintext_problems


def platform_values(config: dict[str, str]) -> dict[str, Any]:
    """The `vllm-platform:` keys of an engine config map (values as JSON text), decoded for parse_config.

    Every key is passed on, so a misspelt one is an error, never a silent default."""
    prefix = f"{CONFIG_NAMESPACE}:"
    return {key.removeprefix(prefix): _decoded(text) for key, text in config.items() if key.startswith(prefix)}


def _decoded(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # a plain string such as `namespace: inference`


def platform_paths(keys: list[str]) -> set[str]:
    """Config keys (`vllm-platform:observability`) as the paths parse_config names (`observability`)."""
    prefix = f"{CONFIG_NAMESPACE}:"
    return {key.removeprefix(prefix) for key in keys if key.startswith(prefix)}


def _engine_config() -> dict[str, str]:
    """Every config value the engine gave this program, read without the secret-access warnings of
    pulumi.Config: secrets inside (the Grafana password) are wrapped where they are used.

    The keys come from `pulumi.runtime.config.CONFIG`, which the SDK does not export: no public call lists
    every key, and listing them all is how a misspelt key is refused instead of silently defaulted. A test
    under the mocks (which set the config through the SDK's public `set_all_config`) holds it to that."""
    keys = {*pulumi.runtime.config.CONFIG.get(), *pulumi.runtime.config.get_config_env()}
    return {key: pulumi.runtime.config.get_config(key) for key in keys}


def _parse_with_providers(values: dict[str, str], secret_keys: set[str], platform_secrets: set[str]) -> PlatformConfig:
    """parse_config, and the providers' credentials in plain text refused beside its problems."""
    leaked = provider_plaintext_problems(values, secret_keys)
    try:
        cfg = parse_config(platform_values(values), platform_secrets)
    except ConfigError as error:
        raise ConfigError([*leaked, *error.problems]) from None
    if leaked:
        raise ConfigError(leaked)
    return cfg


def _same_but_secrets(engine: Any, written: Any, path: str, secret_paths: set[str]) -> bool:
    """Whether the engine's value is the one the stack file writes, the file's secret values aside (the
    engine has them decrypted, the file read offline as the placeholder). Paths are spelt as _SecureValues spells them."""
    if path in secret_paths:
        return True
    if isinstance(written, dict):
        return (
            isinstance(engine, dict)
            and engine.keys() == written.keys()
            and all(_same_but_secrets(engine[k], v, f"{path}.{k}", secret_paths) for k, v in written.items())
        )
    if isinstance(written, list):
        return (
            isinstance(engine, list)
            and len(engine) == len(written)
            and all(_same_but_secrets(e, w, f"{path}[{i}]", secret_paths) for i, (e, w) in enumerate(zip(engine, written)))
        )
    return bool(engine == written)


def _exact_secret_paths(config: dict[str, str], secret_keys: list[str], stack_file: Path) -> set[str]:
    """Which values of the engine's secret keys are secret, from the stack file's `secure:` entries.

    The engine marks a whole top-level key secret when any value inside it is, so a second gateway client's
    key in plain text beside an encrypted first one would pass as secret; the stack file says exactly which
    values are. Where the file cannot say, a key is taken whole, as the engine marks it (the behaviour
    before the file was read): the file is missing or unreadable, say with `--config-file` naming another,
    or it lacks the key or holds another value than the engine's, the key being set in Pulumi ESC or the
    service rather than in this file."""
    try:
        written = read_stack_file(stack_file)
    except ConfigError:
        return set(secret_keys)
    exact: set[str] = set()
    for key in secret_keys:
        under = {p for p in written.secret_paths if p == key or p.startswith((f"{key}.", f"{key}["))}
        same = key in written.values and _same_but_secrets(
            _decoded(config[key]), _decoded(written.values[key]), key, under
        )
        exact |= under if under and same else {key}
    return exact


def engine_config() -> PlatformConfig:
    """This stack's config as the engine gives it, validated; raises ConfigError. Which values are secret
    comes from the stack file where it can say (_exact_secret_paths): the project's directory, where the
    engine runs the program, holds it."""
    config = _engine_config()
    secret_keys = sorted(key for key in config if pulumi.runtime.config.is_config_secret(key))
    secret = _exact_secret_paths(config, secret_keys, Path(f"Pulumi.{pulumi.get_stack()}.yaml"))
    return _parse_with_providers(config, secret, platform_paths(sorted(secret)))


@dataclass
class StackConfig:
    """A stack file's config map, as the Pulumi engine hands it to the program."""

    values: dict[str, str]
    # Top-level keys holding a secret, as the engine marks them.
    secret_keys: list[str]
    # Exactly which values are secret, `observability.grafanaAdminPassword`: the file says.
    secret_paths: set[str] = field(default_factory=set)

    def platform(self) -> PlatformConfig:
        return _parse_with_providers(self.values, self.secret_paths, platform_paths(sorted(self.secret_paths)))


def _offline(ciphertext: str) -> str:
    return SECRET_PLACEHOLDER


class _SecureValues:
    """Replaces each `secure:` value with what `decrypt` makes of it, noting its path and any malformed one."""

    def __init__(self, decrypt: Callable[[str], str]):
        self.decrypt = decrypt
        self.paths: set[str] = set()
        self.problems: list[str] = []

    def replace(self, value: Any, path: str) -> Any:
        if isinstance(value, dict) and "secure" in value:
            ciphertext = value["secure"]
            if set(value) != {"secure"} or not isinstance(ciphertext, str) or not ciphertext:
                what = (
                    f"has other keys ({', '.join(sorted(str(k) for k in value if k != 'secure'))})"
                    if set(value) != {"secure"}
                    else f"holds {type(ciphertext).__name__ if ciphertext is not None else 'nothing'}, not ciphertext"
                )
                self.problems.append(
                    f"{path}: malformed secret: a `secure:` value is exactly `secure: <ciphertext>`, as "
                    f"`pulumi config set --secret` writes it, and this one {what}"
                )
                return SECRET_PLACEHOLDER
            self.paths.add(path)
            return self.decrypt(ciphertext)
        if isinstance(value, dict):
            return {k: self.replace(v, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.replace(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value


def stack_config(document: dict[str, Any], decrypt: Callable[[str], str] = _offline) -> StackConfig:
    """The config map of a parsed Pulumi.<stack>.yaml document; raises ConfigError for a malformed secret.

    Offline, every secret reads as the placeholder; `decrypt` stands in for the engine's key in tests."""
    values, secure = {}, _SecureValues(decrypt)
    for key, raw in (document.get("config") or {}).items():
        value = secure.replace(raw, str(key))
        values[key] = value if isinstance(value, str) else json.dumps(value)
    if secure.problems:
        raise ConfigError([p.removeprefix(f"{CONFIG_NAMESPACE}:") for p in secure.problems])
    secret_keys = sorted({path.split(".")[0].split("[")[0] for path in secure.paths})
    return StackConfig(values=values, secret_keys=secret_keys, secret_paths=secure.paths)


def read_stack_file(path: Path) -> StackConfig:
    """A stack file, read strictly (config/stack_yaml.py); raises ConfigError with one line per problem."""
    try:
        with path.open("rb") as file:
            # One byte past the bound tells a file too large from one at it, and no larger file is read whole.
            data = file.read(stack_yaml.MAX_FILE_BYTES + 1)
        if problem := stack_yaml.size_problem(len(data)):
            raise ConfigError([f"{path.name}: {problem}"])
        document = stack_yaml.load(data.decode("utf-8")) or {}
    except stack_yaml.StackFileError as error:
        raise ConfigError([f"{path.name}: {error}"]) from None
    except UnicodeDecodeError as error:
        # Pulumi reads stack files as UTF-8; a file in another encoding is text no key can be read from.
        byte = error.object[error.start : error.start + 1].hex()
        raise ConfigError([f"{path.name}: byte 0x{byte} at offset {error.start} is not UTF-8; save the file as UTF-8"]) from None
    except OSError as error:
        raise ConfigError([f"{path.name}: cannot be read ({error.strerror or error})"]) from None
    if not isinstance(document, dict) or not isinstance(document.get("config") or {}, dict):
        raise ConfigError([f"{path.name}: `config:` must be a mapping of `project:key` names to values"])
    return stack_config(document)
