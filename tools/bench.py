"""How the offline render's time grows with the models: 100 and 200 models, each timed, and the ratio;
and how long a hostile stack file takes to refuse, against reading the committed prod stack.

    python -m tools.bench

Linear growth gives a ratio near 2; quadratic, near 4. A billion-laughs file (9 levels of 9 aliases)
is refused by walking its node graph once, so its ratio to a plain file stays near 1, where expanding
it would take minutes. Timing is for this command only: the test suite asserts counts that scale
(resources and planning work per model) and refusals, never seconds.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from typing import Any

from vllm_platform.config import stack_yaml
from vllm_platform.config.loader import stack_config
from tools import render

SIZES = (100, 200)
ADMIN = "arn:aws:iam::123456789012:role/bench"


def many_models(count: int) -> dict[str, Any]:
    """A stack of `count` 8B models on one g5.xlarge pool with a node for each."""
    return {
        "config": {
            "aws:region": "us-west-2",
            "vllm-platform:cluster": {
                "name": "llm-bench",
                "adminPrincipalArns": [ADMIN],
                "vpc": {"zones": ["us-west-2a", "us-west-2b"]},
                "gpuNodePools": [{"name": "g5", "instanceTypes": ["g5.xlarge"], "maxSize": count + 1}],
            },
            "vllm-platform:models": [
                {"name": f"model-{i}", "model": f"acme/model-{i}-8B", "gpuPool": "g5"} for i in range(count)
            ],
        }
    }


def timed_render(count: int) -> float:
    # The render's preview notes (several per model: no revision, no token) are dropped, so the figures stand alone.
    with contextlib.redirect_stderr(io.StringIO()):
        started = time.perf_counter()
        render.render(stack_config(many_models(count)), "bench")
        return time.perf_counter() - started


def billion_laughs(levels: int = 9) -> str:
    names = [f"l{i}" for i in range(levels + 1)]
    lines = [f"config:\n  {names[0]}: &{names[0]} [{', '.join(['lol'] * 9)}]\n"]
    lines += [f"  {b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip(names, names[1:])]
    return "".join(lines)


def timed_read(text: str, refused: bool) -> float:
    started = time.perf_counter()
    try:
        stack_yaml.load(text)
        assert not refused, "the hostile file was read"
    except stack_yaml.StackFileError:
        assert refused, "the plain file was refused"
    return time.perf_counter() - started


def main() -> int:
    # Imports and the providers' schemas load on the first render: warm them up before timing.
    timed_render(10)
    times = {count: timed_render(count) for count in SIZES}
    for count, seconds in times.items():
        print(f"{count} models: {seconds:.2f} s")
    small, large = SIZES
    print(f"ratio {large}/{small}: {times[large] / times[small]:.2f} (linear: {large / small:g})")
    plain = render.stack_file("prod").read_text()
    reading, refusing = timed_read(plain, refused=False), timed_read(billion_laughs(), refused=True)
    print(f"read Pulumi.prod.yaml: {reading * 1000:.1f} ms; refuse a billion laughs: {refusing * 1000:.1f} ms")
    print(f"ratio refuse/read: {refusing / reading:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
