"""Build the policy pack as it is published: policies/ with the vocabulary it imports beside it.

    python -m tools.policy_pack OUT        # then: cd OUT && pulumi policy publish ORG

In this repository the pack reads `vllm_platform.contract` from one directory up; Pulumi publishes
only the pack's own directory, so the published pack carries a copy of the vocabulary (standard
library only), made here from the same files, never edited by hand.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Optional

PROJECT_ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = PROJECT_ROOT / "policies"
PACK_FILES = (
    "__main__.py", "rules.py", "props.py", "infrastructure_rules.py", "gateway_rules.py", "PulumiPolicy.yaml", "requirements.txt",
)  # fmt: skip
VOCABULARY = ("vllm_platform/__init__.py", "vllm_platform/contract")


@lru_cache(maxsize=None)
def rules() -> ModuleType:
    """policies/rules.py as the engine loads it: from the pack's directory, which its sibling modules are imported from."""
    if str(POLICY_DIR) not in sys.path:
        sys.path.insert(0, str(POLICY_DIR))
    # A name of its own: a bare `rules` could be some installed package's module.
    spec = importlib.util.spec_from_file_location("vllm_platform_policy_rules", POLICY_DIR / "rules.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as an import would: dataclasses look their module up there.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build(out: Path) -> Path:
    """Write the publishable pack into `out` (emptied first) and return it."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in PACK_FILES:
        shutil.copy2(POLICY_DIR / name, out / name)
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
