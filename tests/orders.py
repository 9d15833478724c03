"""The order the gateway documents for sorted lists, written independently of
the product, for tests to compare against."""

from __future__ import annotations

import json


def reference_cmp(a, b):
    """The documented order, written independently of the product: null/missing
    last; then booleans < numbers < strings < arrays/objects; numbers numerically,
    strings by code point."""

    def rank(v):
        return 0 if isinstance(v, bool) else 1 if isinstance(v, (int, float)) else \
            2 if isinstance(v, str) else 3

    if a is None or b is None:
        return (a is None) - (b is None)
    if rank(a) != rank(b):
        return rank(a) - rank(b)
    if rank(a) == 3:
        a, b = json.dumps(a, separators=(",", ":")), json.dumps(b, separators=(",", ":"))
    return (a > b) - (a < b)
