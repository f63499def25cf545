"""vllm-platform: a validated stack config, resolved once into a plan, built into an EKS inference platform.

Layers, each importing only from those below it (tests/test_layout.py holds them to it):
`contract` and `pins` (the vocabulary and the pinned versions), `config` (the stack config model),
`plan` (sizing, fit and the frozen plan), `k8s` and `aws` (pure builders, and the AWS resources),
`components` (the ComponentResources that wire them), and `program` (what `__main__.py` runs).
"""
