"""`python -m tools.verify`: flags in, one table (or JSON) of checks out, and the exit code that sums them up."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import time
from typing import Any, Callable, Optional, Sequence

from tools.verify.checks import Check, Options, UsageError
from tools.verify.kube import KubeApi, KubeError
from tools.verify.probe import unknown_model_check, verify_target, verify_via_gateway
from tools.verify.client import conceal, redacting
from tools.verify.report import progress, render_json, render_table, usage_error
from tools.verify.stack import (
    gateway_targets,
    key_scope,
    kubeconfig_file,
    stack_file_context,
    stack_kubeconfig,
    stack_outputs,
    stack_settings,
    target_from_url,
    targets_from_outputs,
)

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# The whole run: every model's wait, its checks and its completions together.
DEFAULT_DEADLINE_SECONDS = 3600.0
# Each completion in flight is a thread and a connection (through a port-forward, a websocket to the API server).
MAX_CONCURRENCY = 64
# verify checks a deployment, it does not load it: a p95 of ten thousand completions is as sure as it gets, and the
# run's bookkeeping (a result for each request, sent or not) stays small whatever --deadline cuts.
MAX_REQUESTS = 10_000
# Every span of seconds a flag takes: a week is longer than any check should wait, and far below what a timer,
# a socket timeout or a timedelta can hold (threading.TIMEOUT_MAX, ~9.2e9 s on Linux; 1e14 s overflows a timedelta).
MAX_SECONDS = 7 * 24 * 3600.0


def _positive(
    kind: Callable[[str], Any], minimum: float = 0, inclusive: bool = False, maximum: float = math.inf
) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {'>=' if inclusive else '>'} {minimum:g}, got {text}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum:g}, got {text}")
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.verify", description=(__doc__ or "").split("\n\n")[0])
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="one endpoint, e.g. http://127.0.0.1:8000 (needs --model)")
    target.add_argument("--stack", help="every model of this Pulumi stack, from its outputs")
    p.add_argument("--model", help="served model name expected at --url")
    p.add_argument(
        "--kubeconfig",
        help="enables the Kubernetes checks and the port-forward (with --stack, its kubeconfig output is the default)",
    )
    p.add_argument(
        "--context", help="kubeconfig context; on its own, enables the Kubernetes checks with the default kubeconfig"
    )
    p.add_argument(
        "--requests",
        type=_positive(int, maximum=MAX_REQUESTS),
        default=Options.requests,
        help=f"chat completions per model, at most {MAX_REQUESTS} (default %(default)s)",
    )
    p.add_argument(
        "--concurrency",
        type=_positive(int, maximum=MAX_CONCURRENCY),
        default=Options.concurrency,
        help=f"completions in flight at once, each a thread and a connection of its own, at most {MAX_CONCURRENCY} (default %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=_positive(float, maximum=MAX_SECONDS),
        default=Options.timeout,
        help="seconds each request may take, from connecting to the last byte of its answer (default %(default)s)",
    )
    p.add_argument(
        "--p95-slo",
        type=_positive(float, maximum=MAX_SECONDS),
        metavar="SECONDS",
        help=f"p95 latency limit (default: the stack's verify.p95SloSeconds, else {Options.p95_slo})",
    )
    for flag, default, zero_allowed, meaning in (
        ("--wait-ready", Options.wait_ready, True, "first wait up to this long for the model to be ready, asking every few seconds (default: do not wait)"),
        ("--restart-window", Options.restart_window, False, "a restart this recent fails the restarts check (default %(default)s)"),
        ("--deadline", DEFAULT_DEADLINE_SECONDS, False, "the whole run ends by then, reporting what it found (default %(default)s)"),
    ):
        p.add_argument(flag, type=_positive(float, inclusive=zero_allowed, maximum=MAX_SECONDS), default=default, metavar="SECONDS", help=meaning)
    p.add_argument(
        "--via-gateway",
        action="store_true",
        help="check each model through the stack's gateway endpoint, as a client would (needs --stack and --api-key-env)",
    )
    p.add_argument("--api-key-env", metavar="VAR", help="the environment variable holding the client's API key (with --via-gateway)")
    p.add_argument(
        "--client",
        metavar="NAME",
        help=(
            "the stack's gateway.clients entry whose key --api-key-env holds: its models must answer, the stack's "
            "others 403 (with --via-gateway; without it, the key must reach every model)"
        ),
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    return p


def flag_problem(args: argparse.Namespace) -> Optional[str]:
    """Why these flags do not go together, or None."""
    if args.url and not args.model:
        return "--url needs --model (the served model name)"
    if args.stack and args.model:
        return "--model goes with --url; --stack takes the model names from the stack"
    if args.api_key_env is not None and not args.via_gateway:
        return "--api-key-env goes with --via-gateway"
    if args.client is not None and not args.via_gateway:
        return "--client goes with --via-gateway"
    if not args.via_gateway:
        return None
    if not args.stack:
        return "--via-gateway needs --stack: the gateway's endpoint is a stack output"
    if args.api_key_env is None:
        return "--via-gateway needs --api-key-env VAR, the environment variable holding the client API key"
    if args.kubeconfig is not None or args.context is not None:
        return "--via-gateway reaches the endpoint directly: it takes no --kubeconfig or --context"
    return None


def api_key(variable: str) -> str:
    """The client's key, from the environment rather than a flag, which shell history and `ps` would show.
    The messages name the variable, never what it holds."""
    key = os.environ.get(variable, "").strip()
    if not key:
        raise UsageError(f"--api-key-env {variable}: the environment variable {variable} is unset or empty")
    if not (key.isascii() and key.isprintable()):
        raise UsageError(f"--api-key-env {variable}: {variable} holds characters an HTTP header cannot carry")
    return key


def p95_slo(args: argparse.Namespace) -> float:
    if args.p95_slo is not None:
        return args.p95_slo
    settings = stack_settings(args.stack) if args.stack else None
    return settings.verify.p95_slo_seconds if settings else Options.p95_slo


def run(args: argparse.Namespace) -> list[Check]:
    options = Options(
        requests=args.requests,
        concurrency=args.concurrency,
        timeout=args.timeout,
        p95_slo=p95_slo(args),
        wait_ready=args.wait_ready,
        restart_window=args.restart_window,
        deadline=time.monotonic() + args.deadline,
    )
    if args.via_gateway:
        return run_via_gateway(args, options)
    with contextlib.ExitStack() as stack:
        kubeconfig, context = args.kubeconfig, args.context
        if args.url:
            targets = [target_from_url(args.url, args.model)]
        else:
            outputs = stack_outputs(args.stack)
            targets = targets_from_outputs(outputs)
            stacks_kubeconfig = stack_kubeconfig(args.stack, outputs) if kubeconfig is None else None
            if stacks_kubeconfig is not None:
                kubeconfig = stack.enter_context(kubeconfig_file(stacks_kubeconfig))
            # The context the stack deploys with selects it in the stack's kubeconfig as in the default one.
            context = context or stack_file_context(args.stack)
        if kubeconfig is None and context is None:
            if args.stack:
                progress("no kubeconfig: Service URLs resolve only inside the cluster; pass --kubeconfig to port-forward")
            return [check for target in targets for check in verify_target(target, options)]
        if any(t.namespace is None for t in targets):
            raise UsageError(
                "Kubernetes checks need a namespace: give --url as a Service URL, http://NAME.NAMESPACE.svc.cluster.local:PORT"
            )
        try:
            kube = KubeApi(kubeconfig, context, options.timeout, options.deadline)
        except KubeError as exc:
            return [Check("-", "kubeconfig", False, str(exc))]
        return [check for target in targets for check in verify_target(target, options, kube)]


def run_via_gateway(args: argparse.Namespace, options: Options) -> list[Check]:
    """Every model through the stack's gateway endpoint, with the key read before anything is asked of the stack,
    and --client's models from the stack file before its outputs."""
    key = api_key(args.api_key_env)
    conceal(key)  # whatever a server echoes of it, verify prints none of it
    scope = None if args.client is None else key_scope(args.stack, args.client)
    targets = gateway_targets(stack_outputs(args.stack))
    checks = [check for target in targets for check in verify_via_gateway(target, options, key, scope)]
    if targets:  # every target is at the one endpoint
        checks.append(unknown_model_check(targets[0].url, options, key))
    return checks


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    problem = flag_problem(args)
    if problem is not None:
        p.error(problem)
    with redacting():
        try:
            checks = run(args)
        except UsageError as exc:
            usage_error(p.prog, str(exc))
            return EXIT_USAGE
        print(render_json(checks) if args.json else render_table(checks))
    return EXIT_PASSED if all(c.passed for c in checks) else EXIT_FAILED
