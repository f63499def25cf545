"""The vllm-platform policy pack: `pulumi preview --policy-pack policies`.

The rules live in rules.py, which the tests import; this file only serves them, and blocks while it does.
"""

import sys
from pathlib import Path

# The engine runs the pack from its own directory with only that directory on the path. The rules read
# the platform's vocabulary, vllm_platform.contract: a pack built for publishing (`make policy-pack`)
# carries a copy of it beside this file; in the repository it is one directory up.
PACK_DIR = Path(__file__).resolve().parent
if not (PACK_DIR / "vllm_platform").is_dir():
    sys.path.insert(0, str(PACK_DIR.parent))

from pulumi_policy import PolicyPack

from rules import POLICIES

PolicyPack(name="vllm-platform", policies=POLICIES)
