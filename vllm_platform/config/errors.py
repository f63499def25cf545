"""ConfigError: every problem of a stack config at once, one line each, naming its key."""

from __future__ import annotations

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


def describe_location(loc: tuple[Any, ...], raw: Any) -> str:
    """('models', 1, 'tensorParallelSize') -> 'models[llama-13b].tensorParallelSize'."""
    text, node = "", raw
    for part in loc:
        if isinstance(part, int):
            name = node[part].get("name") if isinstance(node, list) and part < len(node) and isinstance(node[part], dict) else None
            text += f"[{name or part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else {}
        else:
            text += f".{part}" if text else str(part)
            node = node.get(part, {}) if isinstance(node, dict) else {}
    return text or "config"


def pydantic_problems(error: ValidationError, raw: Any) -> list[str]:
    problems = []
    for item in error.errors():
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "is not a known key (check its spelling against the README's config reference)"
        elif item["type"] == "missing":
            message = "is required"
        problems.append(f"{describe_location(loc, raw)}: {message}")
    return problems
