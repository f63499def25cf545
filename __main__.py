"""vllm-platform: validated stack config in, a resolved plan, an EKS inference platform out (see vllm_platform/program.py)."""

from vllm_platform.program import run

run()
