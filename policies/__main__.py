"""The vllm-platform policy pack: `pulumi preview --policy-pack policies`.

The rules live in rules.py, which the tests import; this file only serves them, and blocks while it does.
"""

from pulumi_policy import PolicyPack

from rules import POLICIES

PolicyPack(name="vllm-platform", policies=POLICIES)
