"""The OpenAPI document of a config: valid OpenAPI 3.1, and true to the config."""

from __future__ import annotations

import tomllib

from openapi_spec_validator import validate

from configs import GOOD
from shardstream.core import config, openapi


def test_the_document_of_a_config_is_valid_and_follows_it():
    data = tomllib.loads(GOOD)
    data["routes"][0]["sort"] = ["starts_at"]
    data["routes"][0]["max_limit"] = 50
    doc = openapi.document(config.parse(data, "<t>"))
    validate(doc)
    events = doc["paths"]["/v3/events"]["get"]
    names = [p["name"] for p in events["parameters"]]
    assert names == ["limit", "offset", "cursor", "partial", "sort"]
    assert events["parameters"][0]["schema"]["maximum"] == 50
    assert "security" not in doc and "401" not in events["responses"]  # no [auth] here
    vendor = doc["paths"]["/v3/vendors/{vendor_id}/events"]
    assert vendor["parameters"][0]["schema"]["enum"] == ["v100", "v200"]
    assert set(vendor) >= {"get", "post", "delete", "parameters"}  # route mode: any method
