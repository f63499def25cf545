"""The CrossGuard policy pack in policies/, offline: the committed stacks pass, and each rule catches what it guards.

Rules run as the engine runs them: inputs behind pulumi-policy's read-only proxies, every number a float.
policies/__main__.py is never imported, since building its PolicyPack starts a server that never
returns: one test starts it as the engine does and talks to it.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import re
import select
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Optional

import grpc
import pytest
import yaml
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from tools import policy_pack
from vllm_platform import contract
from vllm_platform.contract import vllm_parser
from vllm_platform.k8s import autoscaling, workload
from tools.mocks import RecordedResource
from tests.conftest import COMMITTED_STACKS, rendered_stack
from tests.test_render import TOKEN

POLICY_DIR = policy_pack.POLICY_DIR
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
SECRET = "kubernetes:core/v1:Secret"
SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
AI_GATEWAY_ROUTE = "kubernetes:aigateway.envoyproxy.io/v1beta1:AIGatewayRoute"
EKS_CLUSTER = "aws:eks/cluster:Cluster"
GPU = "nvidia.com/gpu"
STACK_POLICY = "model-deployments-have-pdb-and-autoscaler"
ROUTE_POLICY = "gateway-route-per-model"
KEYS_POLICY = "gateway-keys-nowhere-else"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")

Breaks = Callable[[dict[str, Any]], object]


rules = policy_pack.rules()
RULES = {rule.name: rule for rule in rules.RULES}


def as_wire(value: Any) -> Any:
    """Every number a float, as the engine sends it (the mocks turn them back into ints)."""
    if isinstance(value, dict):
        return {key: as_wire(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_wire(item) for item in value]
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def props(resource: RecordedResource) -> Any:
    """The inputs as a policy sees them: read-only Mapping and Sequence proxies over the wire values."""
    return unknown_checking_proxy(as_wire(resource.inputs))


def urn(stack: str, resource: RecordedResource) -> str:
    return f"urn:pulumi:{stack}::{rendered_stack(stack).project}::{resource.type}::{resource.name}"


def options(resource: RecordedResource) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=resource.protect,
        ignore_changes=list(resource.ignore_changes),
        delete_before_replace=False,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
    )


Reported = list[tuple[str, Optional[str]]]


def run(policy: str, stack: str, resources: list[RecordedResource]) -> tuple[Reported, int]:
    """(message, urn) for each violation the policy reports on these resources of the stack, and how many
    things its check says it examined."""
    reported: Reported = []

    def report(message: str, at: Optional[str] = None) -> None:
        reported.append((message, at))

    rule = RULES[policy]
    if rule.stack:
        stack_resources = [
            PolicyResource(r.type, props(r), urn(stack, r), r.name, options(r), None, None, [], {}) for r in resources
        ]
        examined = rule.check(StackValidationArgs(stack_resources), report)
    else:
        examined = sum(
            rule.check(ResourceValidationArgs(r.type, props(r), urn(stack, r), r.name, options(r), None), report)
            for r in resources
        )
    return reported, examined


def violations(policy: str, stack: str, resources: list[RecordedResource]) -> Reported:
    return run(policy, stack, resources)[0]


@lru_cache(maxsize=None)
def on_committed_stack(stack: str, policy: str) -> tuple[Reported, int]:
    return run(policy, stack, rendered_stack(stack).resources)


def messages(policy: str, stack: str, resource: RecordedResource) -> list[str]:
    return [message for message, _ in violations(policy, stack, [resource])]


def rendered(stack: str, resource_type: str, name: str) -> RecordedResource:
    return next(r for r in rendered_stack(stack).resources if r.type == resource_type and r.name == name)


def broken(resource: RecordedResource, breaks: Breaks) -> RecordedResource:
    inputs = copy.deepcopy(resource.inputs)
    breaks(inputs)
    return dataclasses.replace(resource, inputs=inputs)


def label(resource: RecordedResource) -> str:
    """How a violation must name the resource."""
    if "metadata" not in resource.inputs:
        return f"{resource.type} {resource.name}"
    metadata = resource.inputs["metadata"]
    if "namespace" not in metadata:  # cluster-scoped: a NodePool, an EC2NodeClass
        return f"{resource.type.rpartition(':')[2]} {metadata['name']}"
    return f"{resource.type.rpartition(':')[2]} {metadata['namespace']}/{metadata['name']}"


def pod(inputs: dict[str, Any]) -> dict[str, Any]:
    return inputs["spec"]["template"]["spec"]


def server(inputs: dict[str, Any]) -> dict[str, Any]:
    return pod(inputs)["containers"][0]


def test_the_pack_is_a_python_pack_serving_the_rules() -> None:
    project = yaml.safe_load((POLICY_DIR / "PulumiPolicy.yaml").read_text())
    assert project["runtime"]["name"] == "python"
    assert project["description"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(project["version"])), "a semantic version of its own"
    assert "pulumi-policy" in (POLICY_DIR / "requirements.txt").read_text()


@contextmanager
def served_pack(directory: Any = POLICY_DIR) -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """The pack as `pulumi preview --policy-pack policies` starts it: `python -m pulumi.policy ENGINE .` in
    its directory, which prints the port it serves the analyzer on. -I keeps this project off the path,
    as it is in the pack's own virtualenv; the engine address goes unused until a policy reads config."""
    pack = subprocess.Popen(
        [sys.executable, "-I", "-u", "-m", "pulumi.policy", "127.0.0.1:1", "."],
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([pack.stdout], [], [], 10)
        port = pack.stdout.readline().strip() if ready else ""
        if not port.isdigit():
            pack.kill()
            pytest.fail(f"the pack printed no port: {pack.communicate()[1][-3000:]}")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        pack.kill()
        pack.communicate()


@pytest.mark.parametrize("published", [False, True], ids=["in-the-repository", "as-published"])
def test_the_pack_serves_every_policy_as_mandatory_and_enforces_them(published: bool, tmp_path: Any) -> None:
    """In the repository the pack reads the vocabulary one directory up; published, from the copy it carries."""
    release = struct_pb2.Struct()
    release.update({"chart": "keda", "version": "^2.20", "repositoryOpts": {"repo": "https://kedacore.github.io/charts"}})
    request = analyzer_pb2.AnalyzeRequest(
        type=HELM_RELEASE, name="keda", urn=f"urn:pulumi:dev::vllm-platform::{HELM_RELEASE}::keda", properties=release
    )
    directory = policy_pack.build(tmp_path / "pack") if published else POLICY_DIR
    with served_pack(directory) as analyzer:
        info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=10)
        response = analyzer.Analyze(request, timeout=10)
    assert info.name == "vllm-platform"
    assert {p.name: p.enforcementLevel for p in info.policies} == dict.fromkeys(RULES, analyzer_pb2.MANDATORY)
    [diagnostic] = response.diagnostics
    assert (diagnostic.policyName, diagnostic.enforcementLevel) == ("helm-charts-pinned", analyzer_pb2.MANDATORY)
    assert "chart 'keda' version is '^2.20'" in diagnostic.message


def test_policies_are_uniquely_named_mandatory_and_all_tested() -> None:
    names = [policy.name for policy in rules.POLICIES]
    assert names == list(RULES) and len(names) == len(set(names))
    stack_policies = [STACK_POLICY, ROUTE_POLICY, KEYS_POLICY]
    assert {param.values[0] for param in BROKEN} | set(stack_policies) == set(names), "each fails on a broken input"
    assert all(policy.enforcement_level == EnforcementLevel.MANDATORY for policy in rules.POLICIES)
    assert [p.name for p in rules.POLICIES if isinstance(p, StackValidationPolicy)] == stack_policies


def test_the_rules_read_the_programs_vocabulary() -> None:
    model = rendered_stack("dev").plan.models[0]
    assert (rules.GPU_RESOURCE, rules.SHM_PATH, rules.PROBES) == (contract.GPU_RESOURCE, contract.SHM_PATH, contract.PROBES)
    assert rules.vllm_flags is contract.vllm_flags and rules.images is contract.images
    assert workload.selector_labels(model)[rules.NAME_LABEL] == rules.MODEL_APP
    # The kinds the pack looks for are the program's, by their type tokens as pulumi-kubernetes spells them.
    types = {r.type for r in rendered_stack("prod").resources}
    pack_props = importlib.import_module("props")  # the pack's own module, beside rules.py
    gateway_rules = importlib.import_module("gateway_rules")
    assert {*rules.AUTOSCALERS[:1], pack_props.NODE_POOL, pack_props.NODE_CLASS, gateway_rules.AI_GATEWAY_ROUTE, gateway_rules.SECURITY_POLICY,
            gateway_rules.ENVOY_PROXY} <= types
    assert contract.Kind("v1", "Service").pulumi_type == "kubernetes:core/v1:Service"


@pytest.mark.parametrize("policy", sorted(RULES))
@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_committed_stack_passes(stack: str, policy: str) -> None:
    reported, examined = on_committed_stack(stack, policy)
    assert reported == []
    if not examined:
        pytest.skip(f"the {stack} stack has nothing {policy} examines")


@pytest.mark.parametrize("policy", sorted(RULES))
def test_every_policy_passes_a_committed_stack_where_it_examined_something(policy: str) -> None:
    if policy == KEYS_POLICY:  # offline the keys are placeholders; the engine hands policies the decrypted keys
        runs = [run(policy, stack, with_decrypted_keys(stack)) for stack in COMMITTED_STACKS]
    else:
        runs = [on_committed_stack(stack, policy) for stack in COMMITTED_STACKS]
    assert any(examined >= 1 and not reported for reported, examined in runs), f"{policy} examined nothing anywhere"


def without_flag(name: str) -> Breaks:
    def breaks(inputs: dict[str, Any]) -> None:
        args = server(inputs)["args"]
        del args[args.index(name) : args.index(name) + 2]

    return breaks


def tensor_parallel_spelled(*words: str) -> Breaks:
    def breaks(inputs: dict[str, Any]) -> None:
        without_flag("--tensor-parallel-size")(inputs)
        server(inputs)["args"].extend(words)

    return breaks


def shm_unmounted(inputs: dict[str, Any]) -> None:
    server(inputs)["volumeMounts"] = [m for m in server(inputs)["volumeMounts"] if m["mountPath"] != "/dev/shm"]


def shm_on_disk(inputs: dict[str, Any]) -> None:
    next(v for v in pod(inputs)["volumes"] if v["name"] == "dshm")["emptyDir"] = {}


def exec_prestop(seconds: int) -> Breaks:
    return lambda inputs: server(inputs)["lifecycle"].update(preStop={"exec": {"command": ["/bin/sh", "-c", f"sleep {seconds}"]}})


def env(name: str, value: str) -> Breaks:
    return lambda inputs: server(inputs)["env"].append({"name": name, "value": value})


Where = tuple[str, str, str]
PROD_8B: Where = ("prod", DEPLOYMENT, "llama-8b")
PROD_70B: Where = ("prod", DEPLOYMENT, "llama-70b")
DEV_8B: Where = ("dev", DEPLOYMENT, "llama-8b")
PROD_EKS: Where = ("prod", EKS_CLUSTER, "eks")
PROD_P4D_POOL: Where = ("prod", "kubernetes:karpenter.sh/v1:NodePool", "gpu-p4d")
PROD_P4D_CLASS: Where = ("prod", "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass", "gpu-p4d-class")
PROD_GATEWAY_SERVICE: Where = ("prod", "kubernetes:core/v1:Service", "llm-gateway-service")
PROD_KEYS_POLICY: Where = ("prod", "kubernetes:gateway.envoyproxy.io/v1alpha1:SecurityPolicy", "llm-gateway-keys-securitypolicy")
PROD_ENVOY_PROXY: Where = ("prod", "kubernetes:gateway.envoyproxy.io/v1alpha1:EnvoyProxy", "llm-gateway-proxy-envoyproxy")
NLB = "service.beta.kubernetes.io/aws-load-balancer-"


def envoy_service(inputs: dict[str, Any]) -> dict[str, Any]:
    return inputs["spec"]["provider"]["kubernetes"]["envoyService"]


def internet_envoy_service(**changes: Any) -> Breaks:
    """The EnvoyProxy's envoyService as an internet-facing NLB with TLS on every port and an allowlist, then
    `changes` (None removes a key, `annotations` merged): what Envoy Gateway would make its own Service of."""

    def breaks(inputs: dict[str, Any]) -> None:
        service = envoy_service(inputs)
        service.update(type="LoadBalancer", loadBalancerClass="service.k8s.aws/nlb", loadBalancerSourceRanges=["203.0.113.0/24"])
        service["annotations"] = {f"{NLB}scheme": "internet-facing", f"{NLB}ssl-cert": "arn:aws:acm:us-west-2:123456789012:certificate/x"}
        for key, value in changes.items():
            if key == "annotations":
                service["annotations"].update(value)
                service["annotations"] = {k: v for k, v in service["annotations"].items() if v is not None}
            elif value is None:
                service.pop(key)
            else:
                service[key] = value

    return breaks


def case(policy: str, where: Where, id: str, breaks: Breaks, says: str) -> Any:
    return pytest.param(policy, *where, breaks, says, id=f"{policy}:{id}")


BROKEN = [
    case("gateway-internet-needs-tls-and-allowlist", PROD_GATEWAY_SERVICE, "no-tls",
         lambda i: i["metadata"]["annotations"].pop("service.beta.kubernetes.io/aws-load-balancer-ssl-cert"),
         "internet-facing without service.beta.kubernetes.io/aws-load-balancer-ssl-cert"),
    case("gateway-internet-needs-tls-and-allowlist", PROD_GATEWAY_SERVICE, "open-to-all",
         lambda i: i["spec"].update(loadBalancerSourceRanges=["203.0.113.0/24", "0.0.0.0/0"]), "open to every source"),
    case("gateway-internet-needs-tls-and-allowlist", PROD_GATEWAY_SERVICE, "no-allowlist",
         lambda i: i["spec"].pop("loadBalancerSourceRanges"), "open to every source"),
    case("gateway-internet-needs-tls-and-allowlist", PROD_GATEWAY_SERVICE, "a-port-in-the-clear",
         lambda i: i["spec"]["ports"].append({"name": "plain", "port": 80, "targetPort": 10080, "protocol": "TCP"}),
         "ports 80 outside service.beta.kubernetes.io/aws-load-balancer-ssl-ports, in the clear"),
    case("gateway-internet-needs-tls-and-allowlist", PROD_GATEWAY_SERVICE, "in-tree-default-scheme",
         lambda i: (i["spec"].pop("loadBalancerClass"), i["metadata"]["annotations"].pop("service.beta.kubernetes.io/aws-load-balancer-scheme"),
                    i["metadata"]["annotations"].pop("service.beta.kubernetes.io/aws-load-balancer-ssl-cert")),
         "internet-facing without service.beta.kubernetes.io/aws-load-balancer-ssl-cert"),
    case("gateway-internet-needs-tls-and-allowlist", PROD_ENVOY_PROXY, "envoy-service-without-tls",
         internet_envoy_service(annotations={f"{NLB}ssl-cert": None}),
         "spec.provider.kubernetes.envoyService: internet-facing without service.beta.kubernetes.io/aws-load-balancer-ssl-cert"),
    case("gateway-internet-needs-tls-and-allowlist", PROD_ENVOY_PROXY, "envoy-service-without-allowlist",
         internet_envoy_service(loadBalancerSourceRanges=None),
         "spec.provider.kubernetes.envoyService: internet-facing and open to every source"),
    case("gateway-internet-needs-tls-and-allowlist", PROD_ENVOY_PROXY, "envoy-service-some-ports-tls",
         internet_envoy_service(annotations={f"{NLB}ssl-ports": "443"}),
         "ssl-ports '443', but its ports are the Gateway's listeners', unknown here"),
    case("gateway-internet-needs-tls-and-allowlist", PROD_ENVOY_PROXY, "envoy-service-type-defaulted",
         internet_envoy_service(type=None, annotations={f"{NLB}ssl-cert": None}),
         "spec.provider.kubernetes.envoyService: internet-facing without service.beta.kubernetes.io/aws-load-balancer-ssl-cert"),
    case("gateway-keys-in-secrets", PROD_KEYS_POLICY, "keys-in-a-configmap",
         lambda i: i["spec"]["apiKeyAuth"]["credentialRefs"][0].update(kind="ConfigMap"), "is a ConfigMap; keep keys in a Secret"),
    case("gateway-keys-in-secrets", PROD_8B, "key-as-env-literal",
         lambda i: server(i).setdefault("env", []).append({"name": "OPENAI_API_KEY", "value": "sk-abc"}),
         "env OPENAI_API_KEY has a literal value"),
    *(case("vllm-probes", PROD_8B, f"no-{p}", lambda i, p=p: server(i).pop(p), f"no {p} with httpGet") for p in PROBES),
    case("vllm-probes", PROD_8B, "probe-on-another-port",
         lambda i: server(i)["startupProbe"]["httpGet"].update(port=9000),
         "startupProbe checks port 9000 but vLLM serves on 8000"),
    case("vllm-probes", PROD_8B, "probe-on-an-undeclared-port",
         lambda i: server(i)["livenessProbe"]["httpGet"].update(port="metrics"),
         "livenessProbe checks port 'metrics', which is no port of the container,"),
    case("vllm-probes", PROD_8B, "tcp-probe",
         lambda i: server(i).update(readinessProbe={"tcpSocket": {"port": "http"}}),
         "no readinessProbe with httpGet"),
    case("vllm-gpus-match-tensor-parallel", PROD_70B, "4-gpus-for-tp-8",
         lambda i: server(i)["resources"]["limits"].update({GPU: "4"}),
         "resources.limits['nvidia.com/gpu'] is '4' but --tensor-parallel-size is 8"),
    case("vllm-gpus-match-tensor-parallel", PROD_70B, "no-gpu-limit",
         lambda i: server(i)["resources"]["limits"].pop(GPU),
         "is not set but --tensor-parallel-size is 8"),
    *(
        case("vllm-gpus-match-tensor-parallel", PROD_70B, f"tp-as-{'-'.join(words)}",
             tensor_parallel_spelled(*words),
             "is '8' but --tensor-parallel-size is 4")
        for words in (
            ["--tensor-parallel-size=4"], ["-tp", "4"], ["--tensor_parallel_size", "4"], ["--tensor-parallel-size 4"],
            ["--tensor-parallel", "4"],
        )
    ),
    *(
        case("vllm-gpus-match-tensor-parallel", PROD_70B, f"8-gpus-for-{'-'.join(words)}",
             lambda i, words=words: server(i)["args"].extend(words),
             f"is '8' but --tensor-parallel-size 8 x {flag} 2 start 16 workers; set the limit to 16")
        for words, flag in (
            (["--pipeline-parallel-size", "2"], "--pipeline-parallel-size"),
            (["-pp=2"], "--pipeline-parallel-size"),
            (["--data_parallel_size", "2"], "--data-parallel-size"),
            (["-dp", "2"], "--data-parallel-size"),
            (["-pcp", "2"], "--prefill-context-parallel-size"),
        )
    ),
    case("vllm-command-line-parses", PROD_8B, "word-for-a-number", lambda i: server(i)["args"].extend(["--max-num-seqs", "lots"]),
         "container vllm: vLLM v0.31.0 refuses its command line at start: argument --max-num-seqs: invalid int value: 'lots'"),
    case("vllm-command-line-parses", PROD_8B, "misspelt-flag", lambda i: server(i)["args"].append("--enable-prefix-cachng"),
         "unrecognized argument --enable-prefix-cachng (did you mean --enable-prefix-caching?)"),
    case("vllm-command-line-parses", PROD_8B, "on-the-images-entrypoint",
         lambda i: server(i).update(command=[], args=["--model", "m", "--kv-cache-dtype", "fp9"]),
         "argument --kv-cache-dtype: invalid choice: 'fp9'"),
    case("vllm-command-line-parses", PROD_8B, "number-below-its-bound", lambda i: server(i)["args"].extend(["--max-num-seqs", "0"]),
         "--max-num-seqs 0: vLLM's SchedulerConfig.max_num_seqs must be >= 1"),
    case("vllm-shared-memory-for-tensor-parallel", PROD_70B, "no-shm-mount", shm_unmounted,
         "runs --tensor-parallel-size 8 without shared memory"),
    case("vllm-shared-memory-for-tensor-parallel", PROD_70B, "shm-on-disk", shm_on_disk,
         "mount a volume with emptyDir.medium 'Memory' at /dev/shm"),
    case("vllm-drains-in-flight-requests", PROD_8B, "no-prestop", lambda i: server(i).pop("lifecycle"),
         "no preStop hook"),
    case("vllm-drains-in-flight-requests", PROD_8B, "no-shutdown-timeout", without_flag("--shutdown-timeout"),
         "no --shutdown-timeout N in args"),
    case("vllm-drains-in-flight-requests", PROD_8B, "grace-too-short",
         lambda i: pod(i).update(terminationGracePeriodSeconds=30),
         "terminationGracePeriodSeconds 30 is less than preStop 10 s + --shutdown-timeout 60 s; raise it to at least 70"),
    case("vllm-drains-in-flight-requests", PROD_8B, "grace-defaulted",
         lambda i: pod(i).pop("terminationGracePeriodSeconds"),
         "terminationGracePeriodSeconds 30 is less than"),
    case("vllm-drains-in-flight-requests", PROD_8B, "exec-prestop-outlasts-grace", exec_prestop(20),
         "terminationGracePeriodSeconds 75 is less than preStop 20 s"),
    case("hf-token-from-secret", DEV_8B, "literal-hf-token", env("HF_TOKEN", TOKEN),
         "env HF_TOKEN has a literal value; mount it from a Secret and point HF_TOKEN_PATH at the file"),
    case("hf-token-from-secret", DEV_8B, "literal-hub-token", env("HUGGING_FACE_HUB_TOKEN", "[secret]"),
         "env HUGGING_FACE_HUB_TOKEN has a literal value"),
    case("hf-token-from-secret", DEV_8B, "token-in-another-variable", env("EXTRA_HEADERS", f"Authorization: Bearer {TOKEN}"),
         "env EXTRA_HEADERS holds what looks like a Hugging Face token"),
    case("hf-token-from-secret", DEV_8B, "token-in-args", lambda i: server(i)["args"].extend(["--lora-modules", f"a={TOKEN}"]),
         "command or args hold what looks like a Hugging Face token"),
    case("hf-token-from-secret", DEV_8B, "hf-token-flag", lambda i: server(i)["args"].extend(["--hf-token", TOKEN]),
         "--hf-token passes a secret on vLLM's command line; the platform hands vLLM the token from a Kubernetes Secret"),
    case("hf-token-from-secret", DEV_8B, "hf-token-flag-any-value", lambda i: server(i)["args"].append("--hf_token=abc"),
         "--hf_token passes a secret on vLLM's command line"),
    case("hf-token-from-secret", PROD_8B, "api-key-flag", lambda i: server(i)["args"].extend(["--api-key", "sk-local"]),
         "--api-key passes a secret on vLLM's command line; callers' keys are the gateway's to check"),
    case("images-pinned", PROD_8B, "latest", lambda i: server(i).update(image="vllm/vllm-openai:latest"),
         "container vllm: image 'vllm/vllm-openai:latest' is not pinned"),
    case("workloads-request-cpu-and-memory", PROD_8B, "no-cpu",
         lambda i: server(i)["resources"]["requests"].pop("cpu"),
         "container vllm: no resources.requests.cpu;"),
    case("workloads-request-cpu-and-memory", PROD_8B, "no-memory",
         lambda i: server(i)["resources"]["requests"].pop("memory"),
         "container vllm: no resources.requests.memory;"),
    case("workloads-request-cpu-and-memory", PROD_8B, "init-container",
         lambda i: pod(i).update(initContainers=[{"name": "fetch", "image": "busybox:1.37"}]),
         "init container fetch: no resources.requests.cpu or resources.requests.memory"),
    case("nodes-require-imdsv2", ("prod", LAUNCH_TEMPLATE, "system"), "imdsv1-allowed",
         lambda i: i["metadataOptions"].update(httpTokens="optional"),
         "metadataOptions.httpTokens is 'optional'; set it to 'required'"),
    case("nodes-require-imdsv2", ("prod", LAUNCH_TEMPLATE, "system"), "no-metadata-options",
         lambda i: i.pop("metadataOptions"),
         "metadataOptions.httpTokens is not set"),
    case("nodes-require-imdsv2", ("prod", NODE_GROUP, "system"), "node-group-without-launch-template",
         lambda i: i.pop("launchTemplate"),
         "no launchTemplate; without one EKS launches the nodes from a template of its own"),
    *(
        case("helm-charts-pinned", ("prod", HELM_RELEASE, "keda"), f"version-{version or 'empty'}",
             lambda i, version=version: i.update(version=version),
             f"chart 'keda' version is {repr(version) if version else 'not set'}; pin one release")
        for version in ("^2.20.2", "~2.20.2", ">=2.0.0", "2.20", "2.x", "2.20.*", "")
    ),
    case("helm-charts-pinned", ("prod", HELM_RELEASE, "keda"), "no-version", lambda i: i.pop("version"),
         "chart 'keda' version is not set"),
    case("helm-charts-pinned", ("prod", HELM_RELEASE, "keda"), "no-repository", lambda i: i.pop("repositoryOpts"),
         "chart 'keda' has no repositoryOpts.repo"),
    case("helm-charts-pinned", ("prod", HELM_RELEASE, "karpenter"), "oci-unpinned", lambda i: i.update(version="1.x"),
         "chart 'oci://public.ecr.aws/karpenter/karpenter' version is '1.x'"),
    case("karpenter-gpu-node-pools-bounded", PROD_P4D_POOL, "no-gpu-limit", lambda i: i["spec"]["limits"].pop(GPU),
         "no spec.limits['nvidia.com/gpu']; cap the GPUs it may launch"),
    case("karpenter-gpu-node-pools-bounded", PROD_P4D_POOL, "no-taint", lambda i: i["spec"]["template"]["spec"].pop("taints"),
         "no nvidia.com/gpu:NoSchedule taint"),
    case("karpenter-gpu-node-pools-bounded", PROD_P4D_POOL, "repacks-serving-nodes",
         lambda i: i["spec"]["disruption"].update(consolidationPolicy="WhenEmptyOrUnderutilized"),
         "consolidationPolicy is 'WhenEmptyOrUnderutilized'; set it to WhenEmpty"),
    case("karpenter-gpu-node-pools-bounded", PROD_P4D_POOL, "default-policy",
         lambda i: i["spec"]["disruption"].pop("consolidationPolicy"),
         "consolidationPolicy is not set (WhenEmptyOrUnderutilized)"),
    case("karpenter-node-classes-imdsv2-encrypted", PROD_P4D_CLASS, "imdsv1",
         lambda i: i["spec"]["metadataOptions"].update(httpTokens="optional"),
         "metadataOptions.httpTokens is 'optional'; set it to 'required'"),
    case("karpenter-node-classes-imdsv2-encrypted", PROD_P4D_CLASS, "hop-limit-2",
         lambda i: i["spec"]["metadataOptions"].update(httpPutResponseHopLimit=2),
         "httpPutResponseHopLimit is not 1"),
    case("karpenter-node-classes-imdsv2-encrypted", PROD_P4D_CLASS, "unencrypted",
         lambda i: i["spec"]["blockDeviceMappings"][0]["ebs"].update(encrypted=False),
         "volume /dev/xvda is not encrypted"),
    case("karpenter-node-classes-imdsv2-encrypted", PROD_P4D_CLASS, "default-volumes",
         lambda i: i["spec"].pop("blockDeviceMappings"),
         "no blockDeviceMappings"),
    case("eks-secrets-encrypted-with-kms", PROD_EKS, "no-encryption", lambda i: i.pop("encryptionConfig"),
         "no encryptionConfig"),
    case("eks-secrets-encrypted-with-kms", PROD_EKS, "secrets-not-encrypted",
         lambda i: i["encryptionConfig"].update(resources=[]),
         "encryptionConfig.resources does not include 'secrets'"),
    case("eks-secrets-encrypted-with-kms", PROD_EKS, "no-kms-key", lambda i: i["encryptionConfig"].pop("provider"),
         "no encryptionConfig.provider.keyArn"),
]


@pytest.mark.parametrize("policy, stack, resource_type, name, breaks, says", BROKEN)
def test_a_broken_resource_is_reported_by_name(
    policy: str, stack: str, resource_type: str, name: str, breaks: Breaks, says: str
) -> None:
    resource = broken(rendered(stack, resource_type, name), breaks)
    [message] = messages(policy, stack, resource)
    assert message.startswith(label(resource))
    assert says in message
    assert TOKEN not in message


def through_a_shell(inputs: dict[str, Any]) -> None:
    container = server(inputs)
    script = " ".join(["exec", "vllm", "serve", *container.pop("args")]).replace("--port 8000", "--port 8001")
    container["command"] = ["/bin/sh", "-c", script]


def test_vllm_started_by_a_shell_script_is_found_and_its_flags_read() -> None:
    model = broken(rendered("prod", DEPLOYMENT, "llama-8b"), through_a_shell)
    assert messages("vllm-probes", "prod", model) == [
        f"{label(model)} container vllm: {probe} checks port 'http' (8000) but vLLM serves on 8001; "
        "point httpGet.port at 8001 or the port named 'http'"
        for probe in PROBES
    ]


def on_the_images_entrypoint(image: str) -> Breaks:
    return lambda inputs: server(inputs).update(command=None, image=image)


def runs_other_server(inputs: dict[str, Any]) -> None:
    server(inputs).update(command=["python3", "-m", "sglang.launch_server"])


VLLM_POLICIES = [name for name in RULES if name.startswith("vllm-")]


@pytest.mark.parametrize(
    "breaks, is_vllm",
    [
        pytest.param(lambda inputs: None, True, id="vllm-serve"),
        pytest.param(through_a_shell, True, id="vllm-serve-in-a-shell-script"),
        pytest.param(lambda i: server(i).update(command=["python3", "-m", "vllm.entrypoints.openai.api_server"]), True,
                     id="api-server-module"),
        pytest.param(on_the_images_entrypoint("vllm/vllm-openai:v0.31.0"), True, id="image-entrypoint"),
        pytest.param(on_the_images_entrypoint("123456789012.dkr.ecr.us-west-2.amazonaws.com/mirror/vllm-openai@sha256:"
                                              + "0" * 64), True, id="mirrored-image-entrypoint"),
        pytest.param(runs_other_server, False, id="another-server-with-the-same-flags"),
        pytest.param(on_the_images_entrypoint("lmsysorg/sglang:v0.5.0"), False, id="another-image"),
    ],
)
def test_every_vllm_policy_examines_the_same_containers(breaks: Breaks, is_vllm: bool) -> None:
    workload = broken(rendered("prod", DEPLOYMENT, "llama-70b"), breaks)
    expected = dict.fromkeys(VLLM_POLICIES, int(is_vllm))
    # A command line is read only where the image is of the release the flag table is read from, and where no
    # shell reads it first.
    container = server(workload.inputs)
    known = vllm_parser.checks_image(container["image"]) and (container.get("command") or [""])[0] != "/bin/sh"
    expected["vllm-command-line-parses"] = int(is_vllm and known)
    assert {policy: run(policy, "prod", [workload])[1] for policy in VLLM_POLICIES} == expected


def test_the_local_stacks_simulator_is_no_vllm_container() -> None:
    simulator = rendered("local", DEPLOYMENT, "llama-8b")
    assert {policy: run(policy, "local", [simulator])[1] for policy in VLLM_POLICIES} == dict.fromkeys(VLLM_POLICIES, 0)


@pytest.mark.parametrize(
    "image, pinned",
    [
        ("vllm/vllm-openai", False),
        ("vllm/vllm-openai:latest", False),
        ("registry:5000/img", False),
        ("registry:5000/img:latest", False),
        ("registry:5000/img:v1", True),
        ("vllm/vllm-openai:v0.31.0", True),
        ("vllm/vllm-openai@sha256:" + "0" * 64, True),
        # Moving names in any case, and tags with no version, beside release tags and a commit.
        ("vllm/vllm-openai:Latest", False),
        ("vllm/vllm-openai:nightly", False),
        ("registry:5000/img:main", False),
        ("registry:5000/img:stable", False),
        ("vllm/vllm-openai:cu126", False),
        ("vllm/vllm-openai:v0.31.0-cu126", True),
        ("envoyproxy/ratelimit:17b1956c", True),
        ("vllm/vllm-openai:latest@sha256:" + "0" * 64, True),
    ],
)
def test_images_are_pinned_by_a_release_tag_or_a_digest(image: str, pinned: bool) -> None:
    resource = broken(rendered("prod", DEPLOYMENT, "llama-8b"), lambda i: server(i).update(image=image))
    reported = messages("images-pinned", "prod", resource)
    assert reported == ([] if pinned else [
        f"{label(resource)} container vllm: image {image!r} is not pinned; {contract.images.PIN_RULE}"
    ])


WORKLOAD_SPECS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "kubernetes:apps/v1:Deployment": lambda pod_spec: {"template": {"spec": pod_spec}},
    "kubernetes:apps/v1:StatefulSet": lambda pod_spec: {"template": {"spec": pod_spec}},
    "kubernetes:apps/v1:DaemonSet": lambda pod_spec: {"template": {"spec": pod_spec}},
    "kubernetes:batch/v1:Job": lambda pod_spec: {"template": {"spec": pod_spec}},
    "kubernetes:batch/v1:CronJob": lambda pod_spec: {"jobTemplate": {"spec": {"template": {"spec": pod_spec}}}},
    "kubernetes:core/v1:Pod": lambda pod_spec: pod_spec,
}


@pytest.mark.parametrize("resource_type", sorted(WORKLOAD_SPECS))
def test_every_workload_kind_is_inspected(resource_type: str) -> None:
    model = rendered("prod", DEPLOYMENT, "llama-70b")
    pod_spec = copy.deepcopy(pod(model.inputs))
    pod_spec["containers"][0].update(image="vllm/vllm-openai:latest", resources={"limits": {GPU: "1"}})
    inputs = {"metadata": model.inputs["metadata"], "spec": WORKLOAD_SPECS[resource_type](pod_spec)}
    workload = dataclasses.replace(model, type=resource_type, inputs=inputs)
    where = f"{resource_type.rpartition(':')[2]} inference/llama-70b container vllm: "
    for policy, says in (
        ("images-pinned", "image 'vllm/vllm-openai:latest' is not pinned"),
        ("workloads-request-cpu-and-memory", "no resources.requests.cpu or resources.requests.memory"),
        ("vllm-gpus-match-tensor-parallel", "resources.limits['nvidia.com/gpu'] is '1' but --tensor-parallel-size is 8"),
    ):
        [message] = messages(policy, "prod", workload)
        assert message.startswith(where + says)


@pytest.mark.parametrize("version", ["0.20.0", "v2.20.2", "2.20.2-rc.1", "2.20.2+build.7"])
def test_an_exact_chart_version_passes(version: str) -> None:
    release = broken(rendered("prod", HELM_RELEASE, "keda"), lambda i: i.update(version=version))
    assert run("helm-charts-pinned", "prod", [release]) == ([], 1)


def test_hf_token_from_the_secret_passes() -> None:
    plan = rendered_stack("dev").plan.models[0]
    manifest = workload.deployment(plan, hf_token=True, weights_uri=plan.weights.uri("model-cache"), region="us-west-2")
    model = dataclasses.replace(rendered("dev", DEPLOYMENT, "llama-8b"), inputs=manifest)
    assert any(e["name"] == "HF_TOKEN_PATH" for e in server(manifest)["env"])
    assert violations("hf-token-from-secret", "dev", [model]) == []


@pytest.mark.parametrize("flag", ["--hf-token", "--hf-config-path", "--api-key", "--api-server-count"])
def test_only_vllms_secret_flags_are_refused_in_its_command_line(flag: str) -> None:
    # --hf-config-path and --api-server-count share the secret flags' prefixes, and carry nothing secret.
    resource = broken(rendered("dev", DEPLOYMENT, "llama-8b"), lambda i: server(i)["args"].extend([flag, "1"]))
    refused = [message for message in messages("hf-token-from-secret", "dev", resource) if "passes a secret" in message]
    assert len(refused) == (flag in ("--hf-token", "--api-key"))


@pytest.mark.parametrize(
    "command, args",
    [
        pytest.param(["/bin/sh", "-c", "exec vllm serve --model m --max-num-seqs lots 2>&1 | tee /tmp/log"], [], id="shell"),
        pytest.param(["vllm", "serve"], ["--model", "m", "--max-num-seqs", "$(MAX_NUM_SEQS)"], id="kubernetes-variable"),
    ],
)
def test_a_command_line_known_only_in_the_pod_is_not_read(command: list[str], args: list[str]) -> None:
    workload = broken(rendered("prod", DEPLOYMENT, "llama-8b"), lambda i: server(i).update(command=command, args=args))
    assert run("vllm-command-line-parses", "prod", [workload]) == ([], 0)


def test_another_vllm_release_is_not_read_with_the_pinned_releases_flags() -> None:
    words = ["--max-num-seqs", "lots"]
    other = broken(rendered("prod", DEPLOYMENT, "llama-8b"), lambda i: (server(i)["args"].extend(words), server(i).update(image="vllm/vllm-openai:v0.30.0")))
    assert run("vllm-command-line-parses", "prod", [other]) == ([], 0)
    pinned = broken(rendered("prod", DEPLOYMENT, "llama-8b"), lambda i: server(i)["args"].extend(["--max-num-seqs", "8"]))
    assert run("vllm-command-line-parses", "prod", [pinned]) == ([], 1)


def test_a_kms_key_created_in_the_same_stack_passes_at_preview() -> None:
    cluster = broken(
        rendered("prod", EKS_CLUSTER, "eks"), lambda i: i["encryptionConfig"]["provider"].update(keyArn=UNKNOWN_STRING_VALUE)
    )
    assert messages("eks-secrets-encrypted-with-kms", "prod", cluster) == []


def test_a_launch_template_created_in_the_same_stack_passes_at_preview() -> None:
    group = broken(
        rendered("prod", NODE_GROUP, "system"),
        lambda i: i["launchTemplate"].update(id=UNKNOWN_STRING_VALUE, version=UNKNOWN_STRING_VALUE),
    )
    assert run("nodes-require-imdsv2", "prod", [group]) == ([], 1)


def unknown_names(inputs: dict[str, Any]) -> None:
    inputs["metadata"].update(namespace=UNKNOWN_STRING_VALUE, name=UNKNOWN_STRING_VALUE)


CONTAINER_POLICIES = [
    "vllm-probes",
    "vllm-command-line-parses",
    "vllm-gpus-match-tensor-parallel",
    "vllm-shared-memory-for-tensor-parallel",
    "vllm-drains-in-flight-requests",
    "hf-token-from-secret",
    "images-pinned",
    "workloads-request-cpu-and-memory",
]


@pytest.mark.parametrize("policy", CONTAINER_POLICIES)
def test_names_unknown_at_preview_do_not_keep_a_policy_from_checking(policy: str) -> None:
    """The engine downgrades a policy that reads an unknown value to advisory: names are read only to report."""
    model = broken(rendered("prod", DEPLOYMENT, "llama-70b"), unknown_names)
    assert run(policy, "prod", [model]) == ([], 1)


def test_a_violation_on_a_resource_named_only_after_apply_names_its_pulumi_name() -> None:
    model = broken(broken(rendered("prod", DEPLOYMENT, "llama-70b"), unknown_names), shm_unmounted)
    [message] = messages("vllm-shared-memory-for-tensor-parallel", "prod", model)
    assert message.startswith("Deployment llama-70b container vllm: runs --tensor-parallel-size 8 without shared memory")


def stack_with(stack: str, resource_type: str, name: str, breaks: Optional[Breaks]) -> list[RecordedResource]:
    """The stack's resources with one of them broken, or removed when breaks is None."""
    resources: list[RecordedResource] = []
    for resource in rendered_stack(stack).resources:
        if resource.type != resource_type or resource.name != name:
            resources.append(resource)
        elif breaks is not None:
            resources.append(broken(resource, breaks))
    return resources


def selector(**changes: Any) -> Breaks:
    return lambda inputs: inputs["spec"]["selector"].update(changes)


INSTANCE_LABEL = "app.kubernetes.io/instance"
NO_BUDGET = "no PodDisruptionBudget in namespace inference selects its pods"
NO_AUTOSCALER = "no ScaledObject or HorizontalPodAutoscaler in namespace inference scales it"


@pytest.mark.parametrize(
    "resource_type, breaks, says",
    [
        pytest.param(PDB, None, NO_BUDGET, id="no-pdb"),
        pytest.param(PDB, selector(matchLabels={INSTANCE_LABEL: "llama-70b"}), NO_BUDGET,
                     id="pdb-of-another-model"),
        pytest.param(PDB, lambda i: i["metadata"].update(namespace="other"), NO_BUDGET, id="pdb-in-another-namespace"),
        pytest.param(PDB, selector(matchExpressions=[{"key": INSTANCE_LABEL, "operator": "NotIn", "values": ["llama-8b"]}]),
                     NO_BUDGET, id="pdb-excludes-the-model"),
        pytest.param(PDB, lambda i: i["spec"].update(selector={}), NO_BUDGET, id="pdb-selects-everything"),
        pytest.param(SCALED_OBJECT, None, NO_AUTOSCALER, id="no-autoscaler"),
        pytest.param(SCALED_OBJECT, lambda i: i["spec"]["scaleTargetRef"].update(kind="StatefulSet"), NO_AUTOSCALER,
                     id="autoscaler-of-a-statefulset"),
        pytest.param(SCALED_OBJECT, lambda i: i["metadata"].update(namespace="other"), NO_AUTOSCALER,
                     id="autoscaler-in-another-namespace"),
    ],
)
def test_a_model_without_its_budget_or_autoscaler_is_reported(
    resource_type: str, breaks: Optional[Breaks], says: str
) -> None:
    deployment = rendered("staging", DEPLOYMENT, "llama-8b")
    reported = violations(STACK_POLICY, "staging", stack_with("staging", resource_type, "llama-8b", breaks))
    [(message, at)] = reported
    assert message.startswith(f"{label(deployment)}: {says}")
    assert at == urn("staging", deployment)


def test_an_hpa_is_an_autoscaler_too() -> None:
    manifest = autoscaling.horizontal_pod_autoscaler(rendered_stack("staging").plan.model("llama-8b"))
    hpa = dataclasses.replace(rendered("staging", SCALED_OBJECT, "llama-8b"), type=HPA, inputs=manifest)
    resources = [*stack_with("staging", SCALED_OBJECT, "llama-8b", None), hpa]
    assert violations(STACK_POLICY, "staging", resources) == []


def test_a_node_pool_that_cannot_launch_gpus_needs_no_gpu_limit() -> None:
    cpu_only = broken(
        rendered("prod", PROD_P4D_POOL[1], "gpu-p4d"),
        lambda i: (i["spec"]["limits"].pop(GPU), i["spec"]["template"]["spec"]["requirements"][0].update(values=["m6i.large"])),
    )
    assert run("karpenter-gpu-node-pools-bounded", "prod", [cpu_only]) == ([], 0)


@pytest.mark.parametrize("instance_type", ["gr6.4xlarge", "g6e.12xlarge", "g4ad.xlarge", "p5e.48xlarge", "p6-b200.48xlarge"])
@pytest.mark.parametrize("limited", [False, True], ids=["no-gpu-limit", "gpu-limit"])
def test_a_node_pool_of_any_gpu_family_needs_its_gpu_limit(instance_type: str, limited: bool) -> None:
    """Every family with GPUs counts, not only the catalog's: gr6 (NVIDIA L4) is no g or p and a digit."""
    def breaks(i: dict[str, Any]) -> None:
        i["spec"]["template"]["spec"]["requirements"][0].update(values=[instance_type])
        if not limited:
            i["spec"]["limits"].pop(GPU)

    reported, examined = run("karpenter-gpu-node-pools-bounded", "prod", [broken(rendered("prod", PROD_P4D_POOL[1], "gpu-p4d"), breaks)])
    assert examined == 1
    assert [m.partition(": ")[2] for m, _ in reported] == ([] if limited else [f"no spec.limits['{GPU}']; cap the GPUs it may launch"])


@pytest.mark.parametrize("scheduled", [False, True])
def test_a_budget_that_never_repacks_serving_nodes_passes_and_one_that_holds_only_in_a_window_does_not(scheduled: bool) -> None:
    budget: dict[str, Any] = {"nodes": "0", "reasons": ["Underutilized"]}
    if scheduled:
        budget.update(schedule="0 9 * * mon-fri", duration="8h")
    guarded = broken(
        rendered("prod", PROD_P4D_POOL[1], "gpu-p4d"),
        lambda i: i["spec"]["disruption"].update(consolidationPolicy="WhenEmptyOrUnderutilized", budgets=[budget]),
    )
    reported, examined = run("karpenter-gpu-node-pools-bounded", "prod", [guarded])
    assert examined == 1
    assert [m.partition(": ")[2] for m, _ in reported] == (
        ["consolidationPolicy is 'WhenEmptyOrUnderutilized'; set it to WhenEmpty, or give a budget of nodes '0' for reason "
         "Underutilized, with no schedule, so serving nodes are never repacked"] if scheduled else []
    )


def test_a_model_without_a_gateway_route_is_reported_and_one_with_it_passes() -> None:
    deployment = rendered("prod", DEPLOYMENT, "llama-70b")
    assert violations(ROUTE_POLICY, "prod", stack_with("prod", AI_GATEWAY_ROUTE, "llama-70b-aigatewayroute", lambda i: None)) == []
    [(message, at)] = violations(ROUTE_POLICY, "prod", stack_with("prod", AI_GATEWAY_ROUTE, "llama-70b-aigatewayroute", None))
    assert message.startswith(f"{label(deployment)}: serves 'meta-llama/Llama-3.3-70B-Instruct', which no AIGatewayRoute")
    assert at == urn("prod", deployment)


def test_a_gateway_with_every_route_removed_reports_every_model_and_with_them_passes() -> None:
    """The gateway is known by its SecurityPolicy: with no route at all, every model is reachable only around it."""
    resources = rendered_stack("prod").resources
    models = [r for r in resources if r.type == DEPLOYMENT and r.inputs["metadata"]["labels"].get(contract.NAME_LABEL) == contract.MODEL_APP]
    assert len(models) >= 2 and run(ROUTE_POLICY, "prod", resources) == ([], len(models))
    unrouted = [r for r in resources if r.type != AI_GATEWAY_ROUTE]
    assert sorted(at for _, at in violations(ROUTE_POLICY, "prod", unrouted)) == sorted(urn("prod", m) for m in models)


def test_an_allowlist_covering_the_internet_in_halves_is_refused_and_as_narrow_halves_pass() -> None:
    """By coverage, not by spelling, as the config refuses allowedSourceCidrs: two /1s per family are a /0."""
    def ranges(*cidrs: str) -> RecordedResource:
        return broken(rendered(*PROD_GATEWAY_SERVICE), lambda i: i["spec"].update(loadBalancerSourceRanges=list(cidrs)))

    [message] = messages("gateway-internet-needs-tls-and-allowlist", "prod", ranges("0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"))
    assert message.endswith(
        ": internet-facing and open to every source: spec.loadBalancerSourceRanges 0.0.0.0/1, 128.0.0.0/1 together cover "
        "100% of the IPv4 addresses (half or more is the internet, not an allowlist); list the clients' CIDRs there"
    )
    narrow = ranges("203.0.113.0/25", "203.0.113.128/25", "2001:db8::/33", "2001:db8:8000::/33")
    assert messages("gateway-internet-needs-tls-and-allowlist", "prod", narrow) == []


def test_an_internal_load_balancer_needs_no_certificate() -> None:
    service = rendered("dev", "kubernetes:core/v1:Service", "llm-gateway-service")
    assert service.inputs["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"
    assert messages("gateway-internet-needs-tls-and-allowlist", "dev", service) == []
    # Near-identical to the in-tree case refused above: a classless Service that asks for an internal one.
    classless = broken(service, lambda i: (i["spec"].pop("loadBalancerClass"), i["metadata"]["annotations"].pop("service.beta.kubernetes.io/aws-load-balancer-scheme"),
                                          i["metadata"]["annotations"].update({"service.beta.kubernetes.io/aws-load-balancer-internal": "true"})))
    assert messages("gateway-internet-needs-tls-and-allowlist", "dev", classless) == []
    # Every port listed in ssl-ports, by name: no port in the clear.
    prod = broken(rendered("prod", "kubernetes:core/v1:Service", "llm-gateway-service"),
                  lambda i: i["metadata"]["annotations"].update({"service.beta.kubernetes.io/aws-load-balancer-ssl-ports": i["spec"]["ports"][0]["name"]}))
    assert messages("gateway-internet-needs-tls-and-allowlist", "prod", prod) == []


def with_decrypted_keys(stack: str) -> list[RecordedResource]:
    """The stack's resources as the engine hands them to a policy: secrets decrypted (pulumi-policy gives policies
    every secret in plain text), here each client's key made up from its name."""
    return [
        broken(r, lambda i: i.update(stringData={c: made_up_key(c) for c in i["stringData"]}))
        if (r.type, r.name) == (SECRET, contract.GATEWAY_KEYS_SECRET)
        else r
        for r in rendered_stack(stack).resources
    ]


def made_up_key(client: str) -> str:
    return f"sk-{client}-" + "5d1e" * 10


def test_a_key_anywhere_but_its_secret_is_reported_and_the_secret_alone_passes() -> None:
    resources = with_decrypted_keys("prod")
    reported, examined = run(KEYS_POLICY, "prod", resources)
    assert reported == [] and examined > 100
    [client, *_] = [c.name for c in rendered_stack("prod").config.gateway.clients]
    leaked = ("kubernetes:core/v1:Service", "llm-gateway-service")
    annotated = [
        broken(r, lambda i: i["metadata"]["annotations"].update(note=f"key {made_up_key(client)}")) if (r.type, r.name) == leaked else r
        for r in resources
    ]
    [(message, at)] = violations(KEYS_POLICY, "prod", annotated)
    service = rendered("prod", *leaked)
    assert message == f"{label(service)}: holds a gateway client's API key in plain text; keep keys in the Secret gateway-api-keys only"
    assert made_up_key(client) not in message and at == urn("prod", service)
    # A second Secret holding it is a Secret still: readable only by who may read Secrets.
    [keys] = [r for r in resources if (r.type, r.name) == (SECRET, contract.GATEWAY_KEYS_SECRET)]
    copied = [*resources, broken(keys, lambda i: i["metadata"].update(name="copy"))]
    assert violations(KEYS_POLICY, "prod", copied) == []


def test_the_readme_lists_every_policy() -> None:
    readme = (policy_pack.POLICY_DIR.parent / "README.md").read_text()
    assert [name for name in RULES if f"\n| `{name}` | " not in readme] == []


def test_a_keys_secret_named_only_after_apply_keeps_the_keys_policy_checking() -> None:
    """An unknown read raising would make the engine downgrade the whole stack policy to advisory."""
    resources = [
        broken(r, lambda i: i["metadata"].update(name=UNKNOWN_STRING_VALUE)) if (r.type, r.name) == (SECRET, contract.GATEWAY_KEYS_SECRET) else r
        for r in with_decrypted_keys("prod")
    ]
    assert run(KEYS_POLICY, "prod", resources) == ([], 0), "its keys are not known to be the gateway's yet"


@pytest.mark.parametrize(
    "breaks",
    [
        internet_envoy_service(),
        internet_envoy_service(annotations={f"{NLB}ssl-ports": "*"}),
        internet_envoy_service(annotations={f"{NLB}scheme": "internal", f"{NLB}ssl-cert": None}, loadBalancerSourceRanges=None),
    ],
    ids=["tls-and-allowlist", "every-port-tls", "internal"],
)
def test_an_envoy_proxys_load_balancer_with_tls_and_an_allowlist_or_internal_passes(breaks: Breaks) -> None:
    """Near-identical to the EnvoyProxy cases refused above: Envoy Gateway's own Service an internet-facing NLB
    with TLS on every port and a source list, or an internal one."""
    proxy = broken(rendered(*PROD_ENVOY_PROXY), breaks)
    assert violations("gateway-internet-needs-tls-and-allowlist", "prod", [proxy]) == []


def test_an_envoy_proxy_without_a_load_balancer_is_not_examined() -> None:
    """The committed ClusterIP envoyService, and the Host provider, which makes no Service."""
    proxy = rendered(*PROD_ENVOY_PROXY)
    assert envoy_service(proxy.inputs)["type"] == "ClusterIP"
    assert run("gateway-internet-needs-tls-and-allowlist", "prod", [proxy]) == ([], 0)
    host = broken(proxy, lambda i: i["spec"].update(provider={"type": "Host"}))
    assert run("gateway-internet-needs-tls-and-allowlist", "prod", [host]) == ([], 0)
    assert run("gateway-internet-needs-tls-and-allowlist", "prod", [broken(proxy, internet_envoy_service())]) == ([], 1)
    # Without an envoyService, Envoy Gateway makes a classless LoadBalancer: internet-facing on EKS's in-tree provider.
    defaulted = broken(proxy, lambda i: i["spec"]["provider"]["kubernetes"].pop("envoyService"))
    where = f"{label(proxy)}: spec.provider.kubernetes.envoyService"
    assert messages("gateway-internet-needs-tls-and-allowlist", "prod", defaulted) == [
        f"{where}: internet-facing without {NLB}ssl-cert; terminate TLS with an ACM certificate",
        f"{where}: internet-facing and open to every source; list the clients' CIDRs in spec.loadBalancerSourceRanges",
    ]
