"""Pure builders of Kubernetes manifests and Helm values: a plan in, plain apply-ready dicts out.

Pulumi resources are made from these in `vllm_platform.components`; tests and the policy pack read them
without Pulumi.
"""
