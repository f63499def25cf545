"""Build the policy pack as it is published: policies/ with the vocabulary it imports beside it.

    python -m tools.policy_pack OUT        # then: cd OUT && pulumi policy publish ORG

In this repository the pack reads `vllm_platform.contract` from one directory up; Pulumi publishes
only the pack's own directory, so the published pack carries a copy of the vocabulary (standard
library only), made here from the same files, never edited by hand.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Optional

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACK_FILES = ("__main__.py", "rules.py", "PulumiPolicy.yaml", "requirements.txt")
VOCABULARY = ("vllm_platform/__init__.py", "vllm_platform/contract")


def build(out: Path) -> Path:
    """Write the publishable pack into `out` (emptied first) and return it."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in PACK_FILES:
        shutil.copy2(PROJECT_ROOT / "policies" / name, out / name)
    for relative in VOCABULARY:
        source, target = PROJECT_ROOT / relative, out / relative
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.policy_pack", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory for the publishable pack")
    args = parser.parse_args(argv)
    print(f"policy pack -> {build(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
