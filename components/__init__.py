"""Building blocks of the vllm-platform Pulumi program."""
