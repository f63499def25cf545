"""The vllm-platform policy pack: `pulumi preview --policy-pack policies`.

The rules live in rules.py, which the tests import; this file only serves them, and blocks while it does.
"""

import sys
from pathlib import Path

# The engine runs the pack from policies/ with only this directory on the path; rules.py reads vLLM's
# flags with the program's own components/vllm_args.py, one directory up, so both read them alike.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import PolicyPack

from rules import POLICIES

PolicyPack(name="vllm-platform", policies=POLICIES)
