"""vllm-platform: a validated stack config, resolved once into a plan, built into an EKS inference platform.

Layers, each importing only from those below it (tests/test_layout.py holds them to it), from the bottom:
`staging` (the staging Job's script, which imports nothing else of the project), `contract` (the vocabulary),
`pins`, `catalog` and `names` (the pinned versions, the GPU catalog, AWS's name limits), `config` (the stack
config model), `plan` (sizing, fit and the frozen plan), `k8s` and `aws` (pure builders, and the AWS
resources), `components` (the ComponentResources that wire them), and `program` (what `__main__.py` runs).
"""
