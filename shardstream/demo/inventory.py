"""The demo inventory: four simulated shards of a tours-and-activities
inventory, and the gateway config that fronts them.

Each shard is an independent database: ids run 1..N on every shard (so they
collide across shards), every vendor lives on exactly one shard, events are
sorted by ``starts_at`` within a shard, and each shard answers with its own
latency, so the interleaving of a streamed list is visible with ``curl -N``.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

from ..core import config as config_mod
from .shardsim import ShardSim

# (name, region, first-byte delay in s, drip per item in s)
SHARDS = (
    ("eu", "Europe", 0.02, 0.004),
    ("us", "Americas", 0.08, 0.004),
    ("apac", "Asia-Pacific", 0.2, 0.006),
    ("mea", "Middle East & Africa", 0.45, 0.008),
)
EVENTS_PER_SHARD = 60
VENDORS_PER_SHARD = 5

_CITIES = {
    "Europe": [("Lisbon", "PT"), ("Rome", "IT"), ("Barcelona", "ES"), ("Reykjavik", "IS"), ("Prague", "CZ")],
    "Americas": [("New York", "US"), ("Cusco", "PE"), ("Vancouver", "CA"), ("Mexico City", "MX"), ("Rio de Janeiro", "BR")],
    "Asia-Pacific": [("Kyoto", "JP"), ("Bali", "ID"), ("Sydney", "AU"), ("Queenstown", "NZ"), ("Hanoi", "VN")],
    "Middle East & Africa": [("Marrakesh", "MA"), ("Cape Town", "ZA"), ("Petra", "JO"), ("Zanzibar", "TZ"), ("Dubai", "AE")],
}
_KINDS = [
    ("Walking tour", "tours", 150),
    ("Food tasting tour", "food", 180),
    ("Sunset kayak trip", "outdoor", 120),
    ("Museum skip-the-line entry", "culture", 90),
    ("Day hike with a local guide", "outdoor", 420),
    ("Cooking class", "food", 210),
    ("Boat cruise", "water", 100),
    ("Street art bike tour", "tours", 165),
]
_VENDOR_WORDS = ["Trails", "Local Ways", "Wander Co.", "Hidden Gems", "Compass Tours"]
_LANGUAGES = ["en", "de", "fr", "es", "it", "ja", "pt"]


def inventory(shard_index: int, count: int = EVENTS_PER_SHARD) -> list[dict[str, Any]]:
    """A shard's events: deterministic, realistic, sorted by ``starts_at``."""
    _, region, _, _ = SHARDS[shard_index]
    rng = random.Random(1000 + shard_index)
    cities = _CITIES[region]
    vendors = [
        (f"v{(shard_index + 1) * 100 + n}", f"{cities[n][0]} {_VENDOR_WORDS[n]}", cities[n])
        for n in range(VENDORS_PER_SHARD)
    ]
    start = datetime(2027, 3, 1, 8, 0, tzinfo=timezone.utc)
    times = sorted(
        start + timedelta(minutes=15 * rng.randrange(0, 4 * 24 * 30)) for _ in range(count)
    )
    events = []
    for n, when in enumerate(times, start=1):
        vendor_id, vendor_name, (city, country) = rng.choice(vendors)
        title, category, minutes = rng.choice(_KINDS)
        capacity = rng.choice([8, 12, 16, 20, 30])
        events.append(
            {
                "id": n,
                "vendor_id": vendor_id,
                "vendor_name": vendor_name,
                "title": f"{title} in {city}",
                "category": category,
                "city": city,
                "country": country,
                "starts_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "duration_minutes": minutes,
                "price": {"amount": rng.randrange(1500, 25000) / 100, "currency": "EUR"},
                "capacity": capacity,
                "seats_left": rng.randrange(0, capacity + 1),
                "languages": sorted(rng.sample(_LANGUAGES, rng.randrange(1, 4))),
                "rating": round(rng.uniform(3.6, 5.0), 1),
            }
        )
    return events


def vendors(shard_index: int) -> dict[str, dict[str, Any]]:
    """The vendors a shard holds, by id."""
    return {
        e["vendor_id"]: {"id": e["vendor_id"], "name": e["vendor_name"], "city": e["city"],
                         "country": e["country"]}
        for e in inventory(shard_index)
    }


def shard_sims(reactor: Any = None) -> list[ShardSim]:
    return [
        ShardSim(name, inventory(i), delay=delay, drip=drip, vendors=vendors(i), reactor=reactor)
        for i, (name, _, delay, drip) in enumerate(SHARDS)
    ]


def demo_config(urls: list[str], listen: str) -> config_mod.Config:
    """The config of the demo gateway in front of shards at ``urls``."""
    return config_mod.parse(demo_config_data(urls, listen), "<demo>")


def demo_config_data(urls: list[str], listen: str) -> dict[str, Any]:
    """The demo gateway's config as a TOML-shaped mapping (tests extend it)."""
    vendor_map = {
        v: name
        for i, (name, *_rest) in enumerate(SHARDS)
        for v in sorted({e["vendor_id"] for e in inventory(i)})
    }
    data = {
        "server": {"listen": listen},
        "upstream": {
            "connect_timeout": 1.0,
            "first_byte_timeout": 3.0,
            "idle_timeout": 3.0,
            "total_timeout": 30.0,
        },
        "shards": {name: {"urls": [url]} for (name, *_), url in zip(SHARDS, urls)},
        "routes": [
            {"path": "/v3/events", "mode": "scatter", "items": "data.item",
             "sort": ["starts_at", "price.amount", "rating"], "max_limit": 500,
             "total": "meta.total", "id_fields": ["id"], "target_param": "vendor_id"},
            {"path": "/v3/events", "methods": ["POST"], "mode": "route",
             "shard_key_body": "vendor_id", "id_fields": ["id"], "max_body": 65536},
            {"path": "/v3/events/{event_id}", "mode": "route", "global_id": "event_id",
             "id_fields": ["id"]},
            {"path": "/v3/vendors/{vendor_id}/events", "mode": "route", "shard_key": "vendor_id",
             "id_fields": ["id"]},
            {"path": "/v3/vendors/{vendor_id}", "mode": "find", "cache_size": 1000,
             "cache_ttl": 60.0},
        ],
        "shard_map": {"vendor_id": vendor_map},
        "health": {"path": "/healthz", "interval": 5.0, "timeout": 1.0},
    }
    return data
