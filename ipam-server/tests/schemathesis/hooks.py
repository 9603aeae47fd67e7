"""Strategies for the OpenAPI document's own string formats, so that
schemathesis generates values the server takes (its patterns alone would
also yield networks with host bits set, which the document rules out).

- ip-network: an IPv4 or IPv6 network with its prefix length, no host bits
  set (a pool, a range to claim, a pool named in an assign request);
- ip-block: a block's CIDR, IPv4 /20 to /32 or IPv6 /116 to /128.

The pattern in the document states the syntax; a value drawn here matches
it, so a field that also carries a narrower pattern (an IPv4 pool) keeps
the values that fit.
"""

import ipaddress

import schemathesis
from hypothesis import strategies as st


def _networks(prefixes_v4, prefixes_v6):
    v4 = st.tuples(st.integers(0, 2**32 - 1), prefixes_v4).map(
        lambda t: str(ipaddress.IPv4Network((t[0], t[1]), strict=False))
    )
    v6 = st.tuples(st.integers(0, 2**128 - 1), prefixes_v6).map(
        lambda t: str(ipaddress.IPv6Network((t[0], t[1]), strict=False))
    )
    return st.one_of(v4, v6)


schemathesis.openapi.format(
    "ip-network", _networks(st.integers(0, 32), st.integers(0, 128))
)
schemathesis.openapi.format(
    "ip-block", _networks(st.integers(20, 32), st.integers(116, 128))
)
