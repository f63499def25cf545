"""The pack's rules for the gateway in front of the models: a route per model, no open internet door, keys only
in Secrets.

Pure functions of what the engine hands a policy, as in rules.py, which lists them among its RULES.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Optional

from pulumi_policy import ReportViolation, ResourceValidationArgs, StackValidationArgs

from props import describe, dig, items, known, namespace_of
from vllm_platform.contract import (
    AI_GATEWAY_ROUTE as AI_GATEWAY_ROUTE_KIND,
    API_KEY_LENGTHS,
    ENVOY_PROXY as ENVOY_PROXY_KIND,
    MODEL_APP,
    MODEL_HEADER,
    NAME_LABEL,
    NLB_ANNOTATION,
    SECURITY_POLICY as SECURITY_POLICY_KIND,
    vllm_flags,
)
from vllm_platform.contract.cidrs import coverage_problem

AI_GATEWAY_ROUTE = AI_GATEWAY_ROUTE_KIND.pulumi_type
SECURITY_POLICY = SECURITY_POLICY_KIND.pulumi_type
ENVOY_PROXY = ENVOY_PROXY_KIND.pulumi_type
SERVICE = "kubernetes:core/v1:Service"
SECRET = "kubernetes:core/v1:Secret"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
# A variable that by its name carries an API key or bearer token.
KEY_VARIABLE = re.compile(r"(?i).*(api[_-]?key|bearer|auth[_-]?token).*")


def _served_name(deployment: Mapping[str, Any]) -> Optional[str]:
    """What a model Deployment's vLLM answers to: --served-model-name, else --model (the flags the program writes)."""
    for container in items(dig(deployment, "spec", "template", "spec", "containers")):
        args = [str(a) for a in items(container.get("args"))]
        served = vllm_flags.value(args, vllm_flags.SERVED_MODEL_NAME) or vllm_flags.value(args, vllm_flags.MODEL)
        if served:
            return served
    return None


def check_route_per_model(args: StackValidationArgs, report: ReportViolation) -> int:
    # Where a stack has a gateway, a model without a route is reachable only around it, with no key or quota.
    # The gateway is known by its key check, the SecurityPolicy, not by its routes: a stack whose routes are
    # all gone has a gateway still, and every model outside it.
    if not any(r.resource_type == SECURITY_POLICY for r in args.resources):
        return 0
    routes = [r for r in args.resources if r.resource_type == AI_GATEWAY_ROUTE]
    routed = {
        header.get("value")
        for route in routes
        for rule in items(dig(route.props, "spec", "rules"))
        for match in items(rule.get("matches"))
        for header in items(match.get("headers"))
        if header.get("name") == MODEL_HEADER
    }
    examined = 0
    for resource in args.resources:
        if resource.resource_type != DEPLOYMENT or dig(resource.props, "metadata", "labels", NAME_LABEL) != MODEL_APP:
            continue
        examined += 1
        served = _served_name(resource.props)
        if served not in routed:
            where = describe(resource.resource_type, resource.props, resource.name)
            report(
                f"{where}: serves {served!r}, which no AIGatewayRoute matches on {MODEL_HEADER}; add a rule for it",
                resource.urn,
            )
    return examined


def _internet_facing(service: Mapping[str, Any]) -> bool:
    """The AWS Load Balancer Controller (loadBalancerClass service.k8s.aws/nlb) makes an internal NLB unless the
    scheme says internet-facing; without a class, EKS's in-tree provider makes an internet-facing one unless the
    Service asks for an internal one."""
    annotations = dig(service, "metadata", "annotations") or {}
    scheme = annotations.get(f"{NLB_ANNOTATION}scheme")
    if scheme is not None or dig(service, "spec", "loadBalancerClass") is not None:
        return scheme == "internet-facing"
    return str(annotations.get(f"{NLB_ANNOTATION}internal", "")).lower() not in ("true", "0.0.0.0/0")


def _ports_without_tls(service: Mapping[str, Any], ssl_ports: Any) -> list[str]:
    """The Service's ports the NLB serves without TLS: every port is TLS when ssl-ports is unset or `*`, else
    only those it names (by number or by name)."""
    if ssl_ports is None or str(ssl_ports).strip() == "*":
        return []
    named = {p.strip() for p in str(ssl_ports).split(",")}
    # The engine hands numbers over as floats: 443.0 is port 443.
    numbers = [(f"{p.get('port'):g}" if isinstance(p.get("port"), (int, float)) else str(p.get("port")), str(p.get("name"))) for p in items(dig(service, "spec", "ports"))]
    return [number for number, name in numbers if number not in named and name not in named]


def _envoy_service(envoy_proxy: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """The Service Envoy Gateway makes of an EnvoyProxy's envoyService, in a Service's shape, or None where it
    makes none (the Host provider). Unset, the provider is Kubernetes and the type LoadBalancer
    (GetEnvoyProxyKubeProvider, api/v1alpha1/envoyproxy_helpers.go at v1.9.0); annotations, class and source
    ranges pass to the Service as they are. Its ports are the Gateway's listeners', which are not here."""
    provider = dig(envoy_proxy, "spec", "provider")
    if provider is not None and provider.get("type", "Kubernetes") != "Kubernetes":
        return None
    service = dig(provider, "kubernetes", "envoyService") or {}
    spec = {key: service[key] for key in ("loadBalancerClass", "loadBalancerSourceRanges") if key in service}
    return {"metadata": {"annotations": service.get("annotations") or {}}, "spec": {"type": service.get("type", "LoadBalancer"), **spec}}


def _exposure_problems(service: Mapping[str, Any], ports_known: bool) -> Optional[list[str]]:
    """What an internet-facing load balancer Service lacks (TLS on every port, a source list); None for any other."""
    if dig(service, "spec", "type") != "LoadBalancer" or not _internet_facing(service):
        return None
    annotations = dig(service, "metadata", "annotations") or {}
    problems = []
    ssl_ports = annotations.get(f"{NLB_ANNOTATION}ssl-ports")
    if not annotations.get(f"{NLB_ANNOTATION}ssl-cert"):
        problems.append(f"internet-facing without {NLB_ANNOTATION}ssl-cert; terminate TLS with an ACM certificate")
    elif ports_known:
        plain = _ports_without_tls(service, ssl_ports)
        if plain:
            problems.append(f"internet-facing with ports {', '.join(plain)} outside {NLB_ANNOTATION}ssl-ports, in the clear; list every port there")
    elif ssl_ports is not None and str(ssl_ports).strip() != "*":
        problems.append(
            f"internet-facing with {NLB_ANNOTATION}ssl-ports {ssl_ports!r}, but its ports are the Gateway's listeners', "
            "unknown here; leave it unset or '*' so that every port is TLS"
        )
    ranges = [str(r) for r in items(dig(service, "spec", "loadBalancerSourceRanges"))]
    if not ranges:
        problems.append("internet-facing and open to every source; list the clients' CIDRs in spec.loadBalancerSourceRanges")
    # By coverage, as the config refuses allowedSourceCidrs: 0.0.0.0/1 with 128.0.0.0/1 is 0.0.0.0/0 too.
    elif wide := coverage_problem(ranges):
        problems.append(
            f"internet-facing and open to every source: spec.loadBalancerSourceRanges {wide}; list the clients' CIDRs there"
        )
    return problems


def check_internet_exposure(args: ResourceValidationArgs, report: ReportViolation) -> int:
    # An internet-facing load balancer without TLS sends keys and prompts in the clear; without a source list
    # it takes every scanner on the internet. Envoy Gateway makes such a Service of an EnvoyProxy's envoyService,
    # which no Service resource of the stack shows.
    if args.resource_type == SERVICE:
        service: Optional[Mapping[str, Any]] = args.props
    elif args.resource_type == ENVOY_PROXY:
        service = _envoy_service(args.props)
    else:
        return 0
    problems = _exposure_problems(service, ports_known=args.resource_type == SERVICE) if service is not None else None
    if problems:
        where = describe(args.resource_type, args.props, args.name)
        where += ": spec.provider.kubernetes.envoyService" if args.resource_type == ENVOY_PROXY else ""
        for problem in problems:
            report(f"{where}: {problem}")
    return 0 if problems is None else 1


def check_keys_in_secrets(args: ResourceValidationArgs, report: ReportViolation) -> int:
    # A key written into a policy, a route or an env value is readable by whoever may read that object.
    examined = 0
    if args.resource_type == SECURITY_POLICY:
        examined += 1
        where = describe(args.resource_type, args.props, args.name)
        for ref in items(dig(args.props, "spec", "apiKeyAuth", "credentialRefs")):
            if ref.get("kind", "Secret") != "Secret":
                report(f"{where}: apiKeyAuth credentialRefs {ref.get('name')!r} is a {ref.get('kind')}; keep keys in a Secret")
    for container in items(dig(args.props, "spec", "template", "spec", "containers")):
        examined += 1
        for variable in items(container.get("env")):
            name = str(variable.get("name", ""))
            if KEY_VARIABLE.fullmatch(name) and variable.get("value") is not None:
                where = describe(args.resource_type, args.props, args.name)
                report(f"{where}: env {name} has a literal value; read it from a Secret with valueFrom.secretKeyRef")
    return examined


def _secret_values(secret: Mapping[str, Any]) -> list[str]:
    """A Secret's values as text: stringData as it is, data decoded from base64; what preview cannot know, left out."""
    values = [str(v) for v in (known(lambda: dict(dig(secret, "stringData") or {})) or {}).values()]
    for encoded in (known(lambda: dict(dig(secret, "data") or {})) or {}).values():
        try:
            values.append(base64.b64decode(str(encoded), validate=True).decode())
        except (binascii.Error, UnicodeDecodeError):
            continue
    return values


def _strings(value: Any) -> Iterator[str]:
    """Every string in a resource's props, however deep; a value preview cannot know yet is passed over."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key in value:
            yield from _strings(known(lambda key=key: value[key]))
    elif isinstance(value, Sequence):
        for index in range(len(value)):
            yield from _strings(known(lambda index=index: value[index]))


def check_keys_nowhere_else(args: StackValidationArgs, report: ReportViolation) -> int:
    # The keys' Secret is the one place a key may be: in any other resource (a ConfigMap, a chart's values, an
    # annotation) it is readable by whoever may read that object, and shown in plain text by `pulumi preview`.
    # Every read through known(): a name preview cannot know yet matches nothing, rather than raising, which
    # would make the engine downgrade the whole policy to advisory.
    key_secrets = {
        (known(lambda r=r: namespace_of(r.props)), known(lambda ref=ref: str(ref.get("name"))))
        for r in args.resources
        if r.resource_type == SECURITY_POLICY
        for ref in items(known(lambda r=r: dig(r.props, "spec", "apiKeyAuth", "credentialRefs")))
    }
    keys: set[str] = set()
    for resource in args.resources:
        if resource.resource_type != SECRET:
            continue
        named = (known(lambda: namespace_of(resource.props)), known(lambda: dig(resource.props, "metadata", "name")))
        if None not in named and named in key_secrets:
            keys.update(k for k in _secret_values(resource.props) if len(k) >= API_KEY_LENGTHS[0])
    if not keys:
        return 0
    examined = 0
    for resource in args.resources:
        if resource.resource_type == SECRET:
            continue
        examined += 1
        if any(key in text for text in _strings(resource.props) for key in keys):
            where = describe(resource.resource_type, resource.props, resource.name)
            names = ", ".join(sorted(name for _, name in key_secrets))
            report(f"{where}: holds a gateway client's API key in plain text; keep keys in the Secret {names} only", resource.urn)
    return examined
