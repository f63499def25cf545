"""Post-deploy verification: are the models up, Ready, answering, and fast enough?

    python -m tools.verify --url http://127.0.0.1:8000 --model llama-8b
    python -m tools.verify --stack dev [--kubeconfig PATH] [--context NAME] [--json]
    python -m tools.verify --stack dev --via-gateway --api-key-env LLM_API_KEY [--client NAME]

HTTP checks for each model: /health answers 200; /v1/models lists the served model name; N chat
completions, at bounded concurrency, have no errors and a p95 latency within the SLO.
With a kubeconfig (--kubeconfig, --context, the stack's `kubeconfig` output or its cluster.existing.context)
it also checks the Deployment's available replicas, the pods' Ready condition and recent restarts, and
reaches every Ready pod behind each Service through port-forwards made with the kubernetes client, so
neither kubectl nor in-cluster DNS is needed: /health and /v1/models on each pod, completions spread over them.
With --via-gateway it reaches each model only through the stack's gateway `endpoint`, as a client does, with
the key from the variable --api-key-env names: refused (401) without a key, allowed with it (a 403 names a
model the key may not use), then the same completions and p95 within the SLO; no Kubernetes checks. With
--client, the stack file's gateway.clients entry whose key that is: its models must be allowed, and the
stack's others refused with the gateway's 403.

One module per concern: `client` (HTTP, with a total deadline per request), `kube` (the API reads
and port-forward streams), `relay` (local listeners over those streams), `checks` (pure verdicts),
`probe` (the orchestration), `stack` (the stack's outputs and settings), `report` and `cli`.

Progress goes to stderr; the table (or --json) to stdout.
Exit codes: 0 every check passed, 1 some check failed, 2 usage error (bad flags, no pulumi CLI, unknown stack).
"""
