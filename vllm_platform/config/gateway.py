"""`gateway`: one OpenAI endpoint for every model, with a key and a token budget per client.

Envoy Gateway and Envoy AI Gateway route on the request body's `model`; each client's key is a secret
(config/secrets.py) that reaches Envoy only through a Kubernetes Secret, never as a value in a manifest.
"""

from __future__ import annotations

from enum import StrEnum
import re
from typing import Optional

from pydantic import Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator

from vllm_platform.config.base import (
    DNS_1123_LABEL,
    DNS_1123_SUBDOMAIN,
    Section,
    check_cidrs,
    check_label,
    check_pattern,
    duplicates,
)
from vllm_platform.config.secrets import SECRET_PLACEHOLDER, set_command
from vllm_platform.contract import API_KEY_LENGTHS
# A too-wide allowlist is refused by the rule the policy pack holds load balancers to.
from vllm_platform.contract.cidrs import coverage_problem

# An ACM certificate: the NLB terminates TLS with it, as ACM keys never leave AWS.
ACM_CERTIFICATE_ARN = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):acm:(?P<region>[a-z0-9-]+):\d{12}:certificate/[0-9a-f-]{36}", re.ASCII
)
# A key as OpenAI clients send it after `Bearer `: printable ASCII without spaces, long enough not to be guessed.
API_KEY = re.compile(r"[\x21-\x7e]{%d,%d}" % API_KEY_LENGTHS)


class Exposure(StrEnum):
    # Only pods in the cluster: the proxy's Service is a ClusterIP.
    CLUSTER = "cluster"
    # An internal NLB in the private subnets: the VPC and what is peered or connected to it.
    INTERNAL = "internal"
    # An internet-facing NLB in the public subnets, TLS with an ACM certificate, sources limited to a list.
    INTERNET = "internet"


class TokenKind(StrEnum):
    """Which tokens a client's budget counts, as AI Gateway reports each response's usage."""

    INPUT = "input"
    OUTPUT = "output"
    TOTAL = "total"


class Client(Section):
    name: StrictStr = Field(description="the client's name (DNS-1123 label): its metrics label and rate-limit bucket")
    api_key: StrictStr = Field(
        repr=False,
        description=(
            f"a secret, `{set_command('gateway.clients[N].apiKey')}`: the key the client sends as "
            f"`Authorization: Bearer <key>`, {API_KEY_LENGTHS[0]} to {API_KEY_LENGTHS[1]} printable ASCII characters without spaces"
        ),
    )
    models: list[StrictStr] = Field(
        min_length=1, description="the `models[].name`s the client may call; any other model answers 403"
    )
    tokens_per_minute: StrictInt = Field(
        gt=0, le=1_000_000_000, description="the client's budget: tokens per minute over all its models; past it, 429"
    )
    counts: TokenKind = Field(TokenKind.TOTAL, description="which tokens the budget counts: `input`, `output` or `total`")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_label(value, DNS_1123_LABEL, "DNS-1123 label")

    @field_validator("models")
    @classmethod
    def _models_once(cls, values: list[str]) -> list[str]:
        if twice := duplicates(values):
            raise ValueError(f"names {', '.join(twice)} more than once")
        return values

    @field_validator("api_key")
    @classmethod
    def _key(cls, value: str) -> str:
        if value == SECRET_PLACEHOLDER:
            # Offline, an encrypted key cannot be read; `pulumi preview` decrypts it and checks the real one.
            return value
        return check_pattern(
            value, API_KEY, "%d to %d printable ASCII characters without spaces or a newline" % API_KEY_LENGTHS, shown=False
        )


class Tls(Section):
    certificate_arn: StrictStr = Field(
        description="the ACM certificate the NLB serves on port 443, for the hostname clients use"
    )

    @field_validator("certificate_arn")
    @classmethod
    def _arn(cls, value: str) -> str:
        return check_pattern(value, ACM_CERTIFICATE_ARN, "an ACM certificate ARN (arn:aws:acm:REGION:ACCOUNT:certificate/UUID)")


class Gateway(Section):
    enabled: StrictBool = Field(False, description="one OpenAI endpoint in front of every model (Envoy AI Gateway)")
    exposure: Exposure = Field(
        Exposure.INTERNAL,
        description=(
            "`cluster` (a ClusterIP Service), `internal` (an internal NLB) or `internet` (an internet-facing NLB, "
            "which needs `tls` and `allowedSourceCidrs`)"
        ),
    )
    hostname: Optional[StrictStr] = Field(
        None,
        description=(
            "the DNS name clients use, which you point at the load balancer (and the certificate names); by default "
            "the endpoint output is the load balancer's own name"
        ),
    )
    tls: Optional[Tls] = Field(
        None, description="TLS at the NLB with an ACM certificate for `hostname`, which it needs; required for `internet`"
    )
    allowed_source_cidrs: list[StrictStr] = Field(
        [], description="the only source CIDRs the NLB admits; required for `internet`, and never 0.0.0.0/0 there"
    )
    direct_access: StrictBool = Field(
        True,
        description=(
            "whether pods in `clientNamespaces` may still call the models' Services directly, without a key; "
            "false leaves the gateway the only door"
        ),
    )
    replicas: StrictInt = Field(2, ge=2, le=20, description="Envoy proxy replicas, spread over nodes, with a PDB")
    clients: list[Client] = Field([], description="who may call which models, with which key and budget (see below)")

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        check_pattern(value, DNS_1123_SUBDOMAIN, "a DNS name such as llm.example.com")
        # A certificate names a domain, and clients resolve it: one label, or an address, is neither.
        if "." not in value or re.fullmatch(r"[0-9.]+", value):
            raise ValueError(f"{value!r} is not a DNS name of a domain, such as llm.example.com")
        return value

    @field_validator("allowed_source_cidrs")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        return check_cidrs(values)

    @model_validator(mode="after")
    def _tls_names_a_host(self) -> "Gateway":
        if self.tls is None:
            return self
        if self.exposure is Exposure.CLUSTER:
            raise ValueError("tls with exposure cluster: the NLB terminates TLS and a ClusterIP has none; use exposure internal or internet, or drop tls")
        if self.hostname is None:
            # The endpoint would otherwise be the NLB's own *.elb.amazonaws.com name, which no ACM certificate can
            # name: every client would fail to verify it.
            raise ValueError("tls needs hostname: the DNS name your certificate names and clients call, pointed at the load balancer")
        return self

    @model_validator(mode="after")
    def _exposure_is_safe(self) -> "Gateway":
        if self.exposure is not Exposure.INTERNET:
            return self
        if self.tls is None:
            raise ValueError(
                "exposure internet needs tls.certificateArn: keys would cross the internet in plain text; "
                "give an ACM certificate, or use exposure internal"
            )
        if not self.allowed_source_cidrs:
            raise ValueError("exposure internet needs allowedSourceCidrs: the CIDRs your clients call from")
        # By coverage, not by spelling: 0.0.0.0/1 with 128.0.0.0/1 is 0.0.0.0/0 too.
        if wide := coverage_problem(self.allowed_source_cidrs):
            raise ValueError(f"exposure internet with allowedSourceCidrs {wide}: that admits the whole internet; list your clients' CIDRs")
        return self

    @model_validator(mode="after")
    def _clients_unique(self) -> "Gateway":
        for name in duplicates([c.name for c in self.clients]):
            raise ValueError(f"clients: name {name!r} is used more than once")
        return self

    def certificate_problem(self, partition: str, region: str) -> Optional[str]:
        """Why the NLB in `region` of `partition` (as AWS reports the stack's) cannot serve tls.certificateArn: an
        NLB takes only an ACM certificate of its own region and partition, and the config alone knows neither
        (aws:region may be unset, the provider reading AWS_REGION or a profile instead)."""
        if self.tls is None:
            return None
        match = ACM_CERTIFICATE_ARN.fullmatch(self.tls.certificate_arn)
        assert match is not None, "the validator admits only ACM certificate ARNs"
        if (match["partition"], match["region"]) == (partition, region):
            return None
        return (
            f"gateway.tls.certificateArn: the certificate is in {match['region']} (partition {match['partition']}), but the "
            f"stack deploys to {region} (partition {partition}); an NLB serves only an ACM certificate of its own "
            f"region: request or import one in {region}"
        )

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"
