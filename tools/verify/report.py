"""What verify tells: progress on stderr while it runs, then one table (or JSON) of every check on stdout.

Both escape what they print: a model name comes from the user's --model or the stack's outputs, and a
control character in it would otherwise reach the terminal as it is (a newline splits a row, an escape
sequence rewrites the screen). JSON escapes control characters itself. Every text is redacted first: a
server may echo the gateway key in an error, and none of what verify prints carries it."""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence

from tools.verify.checks import Check
from tools.verify.client import escaped, redacted


def progress(message: str) -> None:
    print(f"verify: {escaped(redacted(message))}", file=sys.stderr, flush=True)


def render_table(checks: Sequence[Check]) -> str:
    header = ("MODEL", "CHECK", "STATUS", "DETAIL")
    rows = [header] + [tuple(escaped(redacted(cell)) for cell in (c.model, c.check, c.status, c.detail)) for c in checks]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    failed = sum(not c.passed for c in checks)
    lines.append(
        f"FAIL: {failed} of {len(checks)} checks failed" if failed else f"PASS: all {len(checks)} checks passed"
    )
    return "\n".join(lines)


def render_json(checks: Sequence[Check]) -> str:
    document = {"passed": all(c.passed for c in checks), "checks": [c.as_json() for c in checks]}
    return json.dumps(_redacted_json(document), indent=2)


def _redacted_json(value: Any) -> Any:
    """Every string in a JSON document (keys too) redacted."""
    if isinstance(value, str):
        return redacted(value)
    if isinstance(value, dict):
        return {_redacted_json(k): _redacted_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted_json(v) for v in value]
    return value


def usage_error(prog: str, message: str) -> None:
    print(f"{prog}: error: {escaped(redacted(message))}", file=sys.stderr)
