"""ConfigError: every problem of a stack config at once, one line each, naming its key."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from vllm_platform.config.base import CONFIG_NAMESPACE


class ConfigError(Exception):
    """A stack config that must not deploy; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        head = f"invalid {CONFIG_NAMESPACE} stack config ({len(self.problems)} problem{'s' * (len(self.problems) > 1)}):"
        return "\n".join([head, *(f"  - {p}" for p in self.problems)])


# A list entry's `name` or a key that can stand in a key's path as it is; any other (a newline, brackets,
# another script's look-alike letters) would break the one line or mislead: an entry is then named by its
# index, a key quoted.
PATH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", re.ASCII)


def describe_location(loc: tuple[Any, ...], raw: Any) -> str:
    """('models', 1, 'tensorParallelSize') -> 'models[llama-13b].tensorParallelSize'."""
    text, node = "", raw
    for part in loc:
        if isinstance(part, int):
            name = node[part].get("name") if isinstance(node, list) and part < len(node) and isinstance(node[part], dict) else None
            text += f"[{name if isinstance(name, str) and PATH_NAME.fullmatch(name) else part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else {}
        else:
            # A misspelt key is shown as written, quoted where it holds what would break the line.
            shown = str(part) if PATH_NAME.fullmatch(str(part)) else repr(part)
            text += f".{shown}" if text else shown
            node = node.get(part, {}) if isinstance(node, dict) else {}
    return text or "config"


# What a value of each strict type must be; YAML's and pydantic's coercions (true as 1, "yes" as a
# boolean, "2" as a number) are refused, so the message says what was given instead.
EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "model_type": "a mapping of keys",
    "dict_type": "a mapping of keys",
}
# Pydantic's bounds name the limit; the message adds the value given.
BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number")


def describe_value(value: Any, secret: bool) -> str:
    """The value as YAML would show it; a secret's own text is never repeated."""
    kinds = {bool: "the boolean", int: "the number", float: "the number", str: "the string"}
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    kind = next((name for type_, name in kinds.items() if isinstance(value, type_)), "a value")
    if secret:
        return f"{kind.replace('the ', 'a ')}"
    shown = json.dumps(value) if not isinstance(value, str) or len(value) <= 60 else json.dumps(value[:57] + "...")
    return f"{kind} {shown}"


def pydantic_problems(error: ValidationError, raw: Any, is_secret: Callable[[tuple[Any, ...]], bool] = lambda loc: False) -> list[str]:
    problems = []
    for item in error.errors():
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
        where = describe_location(loc, raw)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "is not a known key (check its spelling against the README's config reference)"
        elif item["type"] == "missing":
            message = "is required"
        elif item["type"] in EXPECTED:
            message = f"must be {EXPECTED[item['type']]}, not {describe_value(item['input'], is_secret(loc))}"
        elif item["type"] in BOUNDS:
            message = f"{message}, not {describe_value(item['input'], is_secret(loc))}"
        problems.append(f"{where}: {message}")
    return problems
