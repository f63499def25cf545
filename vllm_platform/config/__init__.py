"""The stack config: the user's interface, validated whole before any resource exists.

Keys are the camelCase names of `Pulumi.<stack>.yaml` under the `vllm-platform:` namespace.
`parse_config` turns the raw values into a `PlatformConfig` or raises one `ConfigError` that lists
every problem, each naming its key, the model or pool, the numbers and a way out. The fit of the
models on their pools is checked when the plan is resolved (`vllm_platform.plan`).
"""
