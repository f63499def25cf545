"""How much of the internet a source allowlist admits: the config refuses an internet-facing gateway whose
allowedSourceCidrs admit too much, and the policy pack a load balancer whose source ranges do, by one rule."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Optional


def coverage_problem(cidrs: Iterable[str]) -> Optional[str]:
    """Why a list of CIDRs admits too much of the internet to be an allowlist: a /0, or networks that together
    cover half or more of their family's addresses (`0.0.0.0/1` and `128.0.0.0/1` are /0); None for a narrow one.

    Host bits are masked, as Kubernetes and AWS read a source range; an entry that is no network admits nothing
    here (the config refuses it by name, the API server any Service that holds it)."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            continue
    for version, bits in ((4, 32), (6, 128)):
        family = [n for n in networks if n.version == version]
        if not family:
            continue
        whole = [str(n) for n in family if n.prefixlen == 0]
        if whole:
            return f"{', '.join(whole)} admits every address"
        covered = sum(n.num_addresses for n in ipaddress.collapse_addresses(family))  # type: ignore[arg-type]
        if covered * 2 >= 2**bits:
            share = covered / 2**bits
            return (
                f"{', '.join(str(n) for n in family)} together cover {share:.0%} of the IPv{version} addresses "
                "(half or more is the internet, not an allowlist)"
            )
    return None
