"""What a request's shards did, as the access log and the metrics tell it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Outcome:
    """How many shards were asked, which failed and why (their
    ``meta.shards.failed`` error codes), and the items each delivered."""

    asked: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
