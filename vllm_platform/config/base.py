"""What every section of the stack config shares: strict, frozen, camelCase models, and the name grammars."""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from vllm_platform.contract import LABEL_MAX_LENGTH

CONFIG_NAMESPACE = "vllm-platform"

DNS_1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS_1123_SUBDOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# Text a secret or a name may hold: printable ASCII, no newline (a token piped in with `echo` ends in one).
# An S3 bucket name, as S3 names them: 3 to 63 lower-case letters, digits, `.` and `-`, starting and ending with
# a letter or digit (the patterns that use it refuse `..` over the whole value).
# AWS's further rules, as lookaheads within the name (it ends at `/` or the end): no `..`, `-.` or `.-`, not an IP
# address, none of the reserved prefixes (`xn--`, `sthree-`, `amzn-s3-demo-`) or suffixes (access point aliases'
# `-s3alias`, Object Lambda's `--ol-s3`, `.mrap`, directory buckets' `--x-s3`, table buckets' `--table-s3`).
S3_BUCKET_NAME = (
    r"(?![^/]*(?:\.\.|-\.|\.-))(?!xn--|sthree-|amzn-s3-demo-)(?!\d+\.\d+\.\d+\.\d+(?:/|$))"
    r"(?![^/]*(?:-s3alias|--ol-s3|\.mrap|--x-s3|--table-s3)(?:/|$))"
    r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
)
PRINTABLE_WORD = re.compile(r"[\x21-\x7e]+")
PRINTABLE_TEXT = re.compile(r"[\x20-\x7e]+")


class Section(BaseModel):
    """A config section: keys in camelCase, unknown keys refused, values frozen once validated, and no
    infinite or NaN number (YAML's `.inf` would pass every lower bound)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        validate_default=True,
        allow_inf_nan=False,
    )


def check_label(value: str, pattern: re.Pattern[str], kind: str) -> str:
    if len(value) > LABEL_MAX_LENGTH or not pattern.fullmatch(value):
        raise ValueError(f"{value!r} is not a {kind} (lower-case letters, digits and '-', at most 63 characters)")
    return value


def check_pattern(value: str, pattern: re.Pattern[str], expected: str, shown: bool = True) -> str:
    """The value, if the pattern matches all of it; else a refusal naming what was expected. A secret
    (`shown` false) is never repeated in the message."""
    if not pattern.fullmatch(value):
        raise ValueError(f"{repr(value) + ' ' if shown else ''}is not {expected}")
    return value


def namespace_names(values: list[str]) -> list[str]:
    return [check_label(v, DNS_1123_LABEL, "DNS-1123 label") for v in values]


def duplicates(names: list[str]) -> list[str]:
    return sorted({n for n in names if names.count(n) > 1})


def check_ordered(low: int, high: int, names: tuple[str, str] = ("minSize", "maxSize")) -> None:
    """A lower bound above its upper bound is refused, naming both."""
    if low > high:
        raise ValueError(f"{names[0]} {low} is above {names[1]} {high}")


def check_cidrs(values: list[str]) -> list[str]:
    """Each a network in canonical CIDR notation (`10.0.0.0/8`): no host bits set, as AWS takes it, and written
    as Python and AWS print it, so that a rule comparing them (`0.0.0.0/0` is the whole internet) cannot be
    dodged by `0.0.0.0/00`, `0.0.0.0/0.0.0.0` or `0::/0`; else ValueError naming it and its canonical spelling."""
    for value in values:
        try:
            network = ipaddress.ip_network(value, strict=True)
        except ValueError as error:
            if "host bits set" in str(error):
                raise
            # `010.0.0.0/8` among them: octal to some parsers, decimal to others, so no one spelling is its own.
            raise ValueError(
                f"{value!r} is not a network in CIDR notation such as 203.0.113.0/24 (no leading zeros, no spaces)"
            ) from None
        if str(network) != value:
            raise ValueError(f"{value!r} is not in canonical CIDR form: write {str(network)!r}")
    return values
