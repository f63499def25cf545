"""The rules of the vllm-platform policy pack, as pure functions of what the Pulumi engine hands a policy.

How props are read is props.py's; the rules for nodes, the control plane and Helm releases are
infrastructure_rules.py's, and every rule is listed in RULES here. The pack runs from its own
virtualenv: of the program it imports only the vocabulary, `vllm_platform.contract`, which needs
nothing beyond the standard library. Names, ports, flag semantics and the serving rules (image pins,
GPU workers, shared memory, drain timing) come from there, so the pack and the program cannot drift
apart; the pack checks foreign workloads its own way.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from infrastructure_rules import (
    check_eks_secrets_encryption,
    check_gpu_node_pools,
    check_helm_charts_pinned,
    check_imdsv2,
    check_node_classes,
)
from gateway_rules import check_internet_exposure, check_keys_in_secrets, check_keys_nowhere_else, check_route_per_model
from props import describe, dig, items, known, namespace_of, number
from vllm_platform.contract import (
    GPU_RESOURCE,
    HF_TOKEN_PATH_VARIABLE,
    HF_TOKEN_VARIABLES,
    HORIZONTAL_POD_AUTOSCALER,
    MODEL_APP,
    NAME_LABEL,
    PROBES,
    SCALED_OBJECT,
    SERVE_COMMAND,
    SERVING_PORT_NAME,
    SHM_PATH,
    VLLM_IMAGE_NAME,
    VLLM_SERVER_MODULE,
    images,
    minimum_grace_seconds,
    needs_shared_memory,
    vllm_flags,
    vllm_parser,
)

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
POD_DISRUPTION_BUDGET = "kubernetes:policy/v1:PodDisruptionBudget"
AUTOSCALERS = (SCALED_OBJECT.pulumi_type, HORIZONTAL_POD_AUTOSCALER.pulumi_type)
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    DEPLOYMENT: ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "kubernetes:core/v1:Pod": ("spec",),
}

# What Kubernetes gives a pod that sets no terminationGracePeriodSeconds.
DEFAULT_GRACE_SECONDS = 30.0
HF_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{20,}")
SHELLS = ("sh", "bash", "ash", "dash")


def command_words(command: Sequence[Any]) -> list[str]:
    """A command line as words; a shell's script is split too, since the flags may live inside one."""
    words = [str(word) for word in command]
    if not words or words[0].rpartition("/")[2] not in SHELLS:
        return words
    split: list[str] = []
    for word in words[1:]:
        try:
            split += shlex.split(word)
        except ValueError:
            split += word.split()
    return words[:1] + split


def container_words(container: Mapping[str, Any]) -> list[str]:
    return command_words([*items(container.get("command")), *items(container.get("args"))])


def named_port(container: Mapping[str, Any], name: str) -> Optional[float]:
    for port in items(container.get("ports")):
        if port.get("name") == name:
            return number(port.get("containerPort"))
    return None


def serving_port(container: Mapping[str, Any]) -> Optional[float]:
    port = number(vllm_flags.value(container_words(container), vllm_flags.PORT))
    return port if port is not None else named_port(container, SERVING_PORT_NAME)


def probe_port(container: Mapping[str, Any], port: Any) -> Optional[float]:
    if isinstance(port, str) and not port.isdigit():
        return named_port(container, port)
    return number(port)


def port_text(port: Any, resolved: Optional[float]) -> str:
    if resolved is None:
        return f"{port!r}, which is no port of the container,"
    return f"{port!r} ({resolved:g})" if isinstance(port, str) and not port.isdigit() else f"{resolved:g}"


def is_serve_command(first: str, second: str) -> bool:
    """Whether two words are vLLM's `vllm serve`, the program run by any path (/usr/local/bin/vllm serve)."""
    return (first.rpartition("/")[2], second) == SERVE_COMMAND


def runs_vllm(container: Mapping[str, Any]) -> bool:
    """What every vLLM policy means by a vLLM container: one that runs vLLM's server, through `vllm serve`
    or its api_server module (in a shell script too), or the vLLM image on its own entrypoint.

    The local stack's simulator is not one: it has no GPUs, no --shutdown-timeout, no vLLM.
    """
    words = container_words(container)
    if any(is_serve_command(a, b) for a, b in zip(words, words[1:])):
        return True
    if VLLM_SERVER_MODULE in words:
        return True
    image = images.parse(str(container.get("image")))
    return not items(container.get("command")) and image is not None and image.name == VLLM_IMAGE_NAME


def parallel_sizes(container: Mapping[str, Any]) -> dict[str, Optional[float]]:
    return vllm_flags.parallel_sizes(container_words(container))


def tensor_parallel_size(container: Mapping[str, Any]) -> Optional[float]:
    return parallel_sizes(container)[vllm_flags.TENSOR_PARALLEL]


def prestop_seconds(container: Mapping[str, Any]) -> Optional[float]:
    """How long the preStop hook holds the pod before SIGTERM; None without a sleep or exec hook.

    An exec hook counts the `sleep N` in its command, if it has one.
    """
    hook = dig(container, "lifecycle", "preStop")
    if isinstance(dig(hook, "sleep"), Mapping):
        return number(dig(hook, "sleep", "seconds")) or 0.0
    if not isinstance(dig(hook, "exec"), Mapping):
        return None
    words = command_words(items(dig(hook, "exec", "command")))
    for word, after in zip(words, words[1:]):
        if word.rpartition("/")[2] == "sleep" and number(after) is not None:
            return number(after)
    return 0.0


def has_memory_shm(container: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    in_memory = {v.get("name") for v in items(pod.get("volumes")) if dig(v, "emptyDir", "medium") == "Memory"}
    return any(
        str(mount.get("mountPath")).rstrip("/") == SHM_PATH and mount.get("name") in in_memory
        for mount in items(container.get("volumeMounts"))
    )


def pod_spec(resource_type: str, props: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    path = POD_SPEC_PATHS.get(resource_type)
    spec = dig(props, *path) if path else None
    return spec if isinstance(spec, Mapping) else None


@dataclass(frozen=True)
class Where:
    """Names a container in a message, and reads its names only then, as describe() must."""

    args: ResourceValidationArgs
    role: str
    container: Mapping[str, Any]

    def __str__(self) -> str:
        owner = describe(self.args.resource_type, self.args.props, self.args.name)
        return f"{owner} {self.role} {known(lambda: self.container.get('name'))}"


WorkloadContainers = Iterator[tuple[Where, Mapping[str, Any], Mapping[str, Any]]]


def workload_containers(args: ResourceValidationArgs, init: bool = True) -> WorkloadContainers:
    """(where, container, pod spec) for every container of a workload, and its init containers unless init is False."""
    pod = pod_spec(args.resource_type, args.props)
    if pod is None:
        return
    for key in ("initContainers", "containers") if init else ("containers",):
        role = "init container" if key == "initContainers" else "container"
        for container in items(pod.get(key)):
            yield Where(args, role, container), container, pod


def vllm_containers(args: ResourceValidationArgs) -> WorkloadContainers:
    for where, container, pod in workload_containers(args, init=False):
        if runs_vllm(container):
            yield where, container, pod


def check_vllm_probes(args: ResourceValidationArgs, report: ReportViolation) -> int:
    # A model loads for minutes: without a startup probe liveness kills it mid-load, without readiness
    # traffic reaches it before it serves, and a probe on another port tests nothing vLLM answers.
    containers = list(vllm_containers(args))
    for where, container, _ in containers:
        port = serving_port(container)
        if port is None:
            report(f"{where}: no serving port to probe; pass --port N or name its containerPort {SERVING_PORT_NAME!r}")
            continue
        for probe in PROBES:
            spec = container.get(probe)
            if not isinstance(dig(spec, "httpGet"), Mapping):
                report(f"{where}: no {probe} with httpGet; add one on the serving port {port:g}")
                continue
            probed = dig(spec, "httpGet", "port")
            checked = probe_port(container, probed)
            if checked != port:
                report(
                    f"{where}: {probe} checks port {port_text(probed, checked)} but vLLM serves on {port:g}; "
                    f"point httpGet.port at {port:g} or the port named {SERVING_PORT_NAME!r}"
                )
    return len(containers)


def check_gpus_match_parallelism(args: ResourceValidationArgs, report: ReportViolation) -> int:
    # vLLM starts one worker per GPU, tensor x pipeline x data parallel size of them: with fewer GPUs it
    # cannot start and the pod crash-loops, more sit idle.
    containers = list(vllm_containers(args))
    for where, container, _ in containers:
        sizes = parallel_sizes(container)
        unreadable = [flag for flag, size in sizes.items() if size is None]
        if unreadable:
            report(f"{where}: {unreadable[0]} is not a number; set it to a whole number")
            continue
        workers, tensor = math.prod(sizes.values()), sizes[vllm_flags.TENSOR_PARALLEL]
        limit = dig(container, "resources", "limits", GPU_RESOURCE)
        if number(limit) != workers:
            shown = "not set" if limit is None else repr(limit)
            more = "".join(f" x {flag} {size:g}" for flag, size in sizes.items() if flag != vllm_flags.TENSOR_PARALLEL and size != 1)
            if more:
                wants = f"--tensor-parallel-size {tensor:g}{more} start {workers:g} workers"
            else:
                wants = f"--tensor-parallel-size is {tensor:g}"
            report(
                f"{where}: resources.limits[{GPU_RESOURCE!r}] is {shown} but {wants}; "
                f"set the limit to {workers:g}, one GPU per vLLM worker"
            )
    return len(containers)


def exec_serve_words(container: Mapping[str, Any]) -> Optional[list[str]]:
    """The words vLLM's parser reads where they are known before the pod runs: those after `vllm serve` or the
    api_server module, or all of them on the image's own entrypoint (`vllm serve`). None through a shell, whose
    syntax and variables are the shell's, or where Kubernetes expands a `$(VAR)` in them."""
    words = [str(word) for word in [*items(container.get("command")), *items(container.get("args"))]]
    if (words and words[0].rpartition("/")[2] in SHELLS) or any("$(" in word for word in words):
        return None
    for start, (first, second) in enumerate(zip(words, words[1:])):
        if is_serve_command(first, second):
            return words[start + 2 :]
    if VLLM_SERVER_MODULE in words:
        return words[words.index(VLLM_SERVER_MODULE) + 1 :]
    return words


def check_command_line_parses(args: ResourceValidationArgs, report: ReportViolation) -> int:
    # vLLM's parser refuses an unknown flag, or a value its flag cannot take, before it loads anything: the pod
    # exits at once and crash-loops. Only the release the table is read from is known here.
    examined = 0
    for where, container, _ in vllm_containers(args):
        words = exec_serve_words(container)
        if words is None or not vllm_parser.checks_image(str(container.get("image"))):
            continue
        examined += 1
        refused = vllm_parser.refusal(words)
        if refused:
            report(f"{where}: vLLM {vllm_parser.table_release()} refuses its command line at start: {refused}")
    return examined


def check_shared_memory(args: ResourceValidationArgs, report: ReportViolation) -> int:
    # NCCL passes tensors between the workers through /dev/shm; the container runtime gives it 64 MiB.
    examined = 0
    for where, container, pod in vllm_containers(args):
        size = tensor_parallel_size(container)
        if size is None or not needs_shared_memory(size):
            continue
        examined += 1
        if not has_memory_shm(container, pod):
            report(
                f"{where}: runs --tensor-parallel-size {size:g} without shared memory; mount a volume with "
                f"emptyDir.medium 'Memory' at {SHM_PATH}"
            )
    return examined


def check_drains(args: ResourceValidationArgs, report: ReportViolation) -> int:
    # preStop holds the pod while endpoints stop routing to it, then vLLM finishes what it accepted;
    # a grace period shorter than both makes the kubelet kill it with requests still in flight.
    containers = list(vllm_containers(args))
    for where, container, pod in containers:
        hold = prestop_seconds(container)
        timeout = number(vllm_flags.value(container_words(container), vllm_flags.SHUTDOWN_TIMEOUT))
        if hold is None:
            report(f"{where}: no preStop hook; add lifecycle.preStop.sleep.seconds so traffic stops before vLLM does")
        if timeout is None:
            report(f"{where}: no --shutdown-timeout N in args; add it so vLLM drains in-flight requests on SIGTERM")
        if hold is None or timeout is None:
            continue
        grace = number(pod.get("terminationGracePeriodSeconds"))
        grace = DEFAULT_GRACE_SECONDS if grace is None else grace
        least = minimum_grace_seconds(hold, timeout)
        if grace < least:
            report(
                f"{where}: terminationGracePeriodSeconds {grace:g} is less than preStop {hold:g} s "
                f"+ --shutdown-timeout {timeout:g} s; raise it to at least {least:g}"
            )
    return len(containers)


def check_hf_token_from_secret(args: ResourceValidationArgs, report: ReportViolation) -> int:
    # A literal lands in the object itself, readable by anyone who may read Deployments; messages never echo it.
    fix = (
        f"mount it from a Secret and point {HF_TOKEN_PATH_VARIABLE} at the file, as the platform does, "
        "or use valueFrom.secretKeyRef"
    )
    containers = list(workload_containers(args))
    for where, container, _ in containers:
        for variable in items(container.get("env")):
            name, value = variable.get("name"), variable.get("value")
            if name in HF_TOKEN_VARIABLES and value is not None:
                report(f"{where}: env {name} has a literal value; {fix}")
            elif isinstance(value, str) and HF_TOKEN_PATTERN.search(value):
                report(f"{where}: env {name} holds what looks like a Hugging Face token; {fix}")
        # vLLM's own secret flags (its hub token, its API key) put a secret in the argv, whatever it looks like.
        flagged = vllm_flags.secret_flags(exec_serve_words(container) or []) if runs_vllm(container) else []
        for written, name in flagged:
            report(f"{where}: {written} passes a secret on vLLM's command line; {vllm_flags.SECRET_FLAGS[name]}")
        if not flagged and any(HF_TOKEN_PATTERN.search(word) for word in container_words(container)):
            report(f"{where}: command or args hold what looks like a Hugging Face token; {fix}")
    return len(containers)


def check_images_pinned(args: ResourceValidationArgs, report: ReportViolation) -> int:
    # A moving tag changes what runs on the next pull, with no change in the stack to review or roll back.
    containers = list(workload_containers(args))
    for where, container, _ in containers:
        image = container.get("image")
        if images.pin_problem(image):
            report(f"{where}: image {image!r} is not pinned; {images.PIN_RULE}")
    return len(containers)


def check_requests(args: ResourceValidationArgs, report: ReportViolation) -> int:
    # The scheduler places a container without requests as if it used nothing, and evicts it first.
    containers = list(workload_containers(args))
    for where, container, _ in containers:
        missing = [key for key in ("cpu", "memory") if dig(container, "resources", "requests", key) in (None, "")]
        if missing:
            absent = " or ".join(f"resources.requests.{key}" for key in missing)
            report(f"{where}: no {absent}; request what it needs so the scheduler can place it")
    return len(containers)


def selects(selector: Any, labels: Mapping[str, Any]) -> bool:
    """Whether a label selector picks pods with these labels; an empty one is refused, it means every pod."""
    match = dig(selector, "matchLabels") or {}
    expressions = items(dig(selector, "matchExpressions"))
    if not match and not expressions:
        return False
    return all(labels.get(key) == value for key, value in match.items()) and all(
        expression_holds(expression, labels) for expression in expressions
    )


def expression_holds(expression: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    key, operator, values = expression.get("key"), expression.get("operator"), list(items(expression.get("values")))
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    return operator == "DoesNotExist" and key not in labels


def scales(autoscaler: PolicyResource, namespace: str, deployment_name: str) -> bool:
    target = dig(autoscaler.props, "spec", "scaleTargetRef")
    return (
        namespace_of(autoscaler.props) == namespace
        and dig(target, "name") == deployment_name
        # KEDA's default target kind; an HPA must name it.
        and (dig(target, "kind") or "Deployment") == "Deployment"
    )


def of_type(args: StackValidationArgs, *types: str) -> list[PolicyResource]:
    return [r for r in args.resources if r.resource_type in types]


def check_model_deployments(args: StackValidationArgs, report: ReportViolation) -> int:
    # A node drain without a budget can evict every replica of a model at once, and a model without an
    # autoscaler neither follows its queue nor gives its GPUs back.
    budgets, autoscalers = of_type(args, POD_DISRUPTION_BUDGET), of_type(args, *AUTOSCALERS)
    examined = 0
    for deployment in of_type(args, DEPLOYMENT):
        props = deployment.props
        if dig(props, "metadata", "labels", NAME_LABEL) != MODEL_APP:
            continue
        examined += 1
        namespace, name = namespace_of(props), dig(props, "metadata", "name") or deployment.name
        where = partial(describe, deployment.resource_type, props, deployment.name)
        pod_labels = dig(props, "spec", "template", "metadata", "labels") or {}
        if not any(
            namespace_of(b.props) == namespace and selects(dig(b.props, "spec", "selector"), pod_labels) for b in budgets
        ):
            report(
                f"{where()}: no PodDisruptionBudget in namespace {namespace} selects its pods; add one whose "
                "spec.selector.matchLabels match the pod template labels",
                deployment.urn,
            )
        if not any(scales(autoscaler, namespace, name) for autoscaler in autoscalers):
            report(
                f"{where()}: no ScaledObject or HorizontalPodAutoscaler in namespace {namespace} scales it; add one "
                f"whose spec.scaleTargetRef is kind Deployment, name {name}",
                deployment.urn,
            )
    return examined


# A check returns how many things it examined. The engine ignores what a policy returns; the tests
# assert on it, so that no policy passes a stack by finding nothing there to look at.
Check = Callable[[Any, ReportViolation], int]


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Check
    stack: bool = False

    def policy(self) -> ResourceValidationPolicy | StackValidationPolicy:
        kind = StackValidationPolicy if self.stack else ResourceValidationPolicy
        return kind(
            name=self.name,
            description=self.description,
            validate=self.check,
            enforcement_level=EnforcementLevel.MANDATORY,
        )


RULES: list[Rule] = [
    Rule(
        name="vllm-probes",
        description="vLLM containers have startup, readiness and liveness httpGet probes on the serving port.",
        check=check_vllm_probes,
    ),
    Rule(
        name="vllm-gpus-match-tensor-parallel",
        description=(
            "A vLLM container's nvidia.com/gpu limit equals the GPU workers it starts: --tensor-parallel-size, "
            "times --pipeline-parallel-size, --data-parallel-size and --prefill-context-parallel-size where they are given."
        ),
        check=check_gpus_match_parallelism,
    ),
    Rule(
        name="vllm-command-line-parses",
        description=(
            "A vLLM container of the release the platform pins, whose command line is known before it runs (no "
            "shell, no $(VAR)), passes only flags and values that release takes."
        ),
        check=check_command_line_parses,
    ),
    Rule(
        name="vllm-shared-memory-for-tensor-parallel",
        description="A vLLM container with tensor parallelism above 1 mounts an in-memory emptyDir at /dev/shm.",
        check=check_shared_memory,
    ),
    Rule(
        name="vllm-drains-in-flight-requests",
        description="vLLM has a preStop hook and --shutdown-timeout, and the grace period covers both.",
        check=check_drains,
    ),
    Rule(
        name="hf-token-from-secret",
        description=(
            "Hugging Face tokens reach containers from Secrets, never as literal values, and no vLLM container takes a "
            "secret-bearing flag (--hf-token, --api-key) on its command line."
        ),
        check=check_hf_token_from_secret,
    ),
    Rule(
        name="images-pinned",
        description=(
            "Every container image of a workload the stack declares has a release tag (a version, or a commit), never a "
            "moving name such as latest, nightly or main, or a digest."
        ),
        check=check_images_pinned,
    ),
    Rule(
        name="workloads-request-cpu-and-memory",
        description="Every container and init container of a workload the stack declares requests CPU and memory.",
        check=check_requests,
    ),
    Rule(
        name="nodes-require-imdsv2",
        description="EC2 launch templates require IMDSv2 session tokens, and every EKS node group launches from one.",
        check=check_imdsv2,
    ),
    Rule(
        name="karpenter-gpu-node-pools-bounded",
        description=(
            "Every Karpenter NodePool that may launch GPU instances has an nvidia.com/gpu limit, the nvidia.com/gpu "
            "NoSchedule taint, and a disruption policy that never repacks serving nodes."
        ),
        check=check_gpu_node_pools,
    ),
    Rule(
        name="karpenter-node-classes-imdsv2-encrypted",
        description="Every EC2NodeClass requires IMDSv2 with a hop limit of 1, and encrypts every volume.",
        check=check_node_classes,
    ),
    Rule(
        name="eks-secrets-encrypted-with-kms",
        description="EKS clusters encrypt Kubernetes Secrets with a KMS key.",
        check=check_eks_secrets_encryption,
    ),
    Rule(
        name="helm-charts-pinned",
        description=(
            "Every Helm release installs an exact chart version from a named repository or an OCI reference: the "
            "objects a chart creates are the chart's own, out of the other policies' sight."
        ),
        check=check_helm_charts_pinned,
    ),
    Rule(
        name="model-deployments-have-pdb-and-autoscaler",
        description="Every vLLM model Deployment has a PodDisruptionBudget and a ScaledObject or HPA in its namespace.",
        check=check_model_deployments,
        stack=True,
    ),
    Rule(
        name="gateway-route-per-model",
        description="Where the stack has an AI gateway, every vLLM model has an AIGatewayRoute rule on its served name.",
        check=check_route_per_model,
        stack=True,
    ),
    Rule(
        name="gateway-internet-needs-tls-and-allowlist",
        description=(
            "An internet-facing load balancer Service, or an EnvoyProxy's envoyService, terminates TLS with a certificate "
            "and admits listed CIDRs only."
        ),
        check=check_internet_exposure,
    ),
    Rule(
        name="gateway-keys-in-secrets",
        description="API keys reach the gateway from Secrets only, and no container carries a key as a literal env value.",
        check=check_keys_in_secrets,
    ),
    Rule(
        name="gateway-keys-nowhere-else",
        description="A gateway client's API key is in the Secret its SecurityPolicy names, and in no other resource.",
        check=check_keys_nowhere_else,
        stack=True,
    ),
]

POLICIES = [rule.policy() for rule in RULES]
