"""vllm-platform: validated stack config in, an EKS inference platform out."""

import pulumi

from components.config import load_stack_config
from components.platform import build_platform

config, hf_token = load_stack_config()
for output_name, value in build_platform(config, hf_token).items():
    pulumi.export(output_name, value)
