"""One GET through a gateway, to see what a request returns before it is
measured: item count, status and the meta.shards the gateway reports.

    probe.py URL   -> prints one JSON object {"status":..,"items":..,"shards":{..}}
"""
import json
import sys
import urllib.error
import urllib.request

url = sys.argv[1]
try:
    with urllib.request.urlopen(url, timeout=30) as r:
        status, body = r.status, r.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
try:
    doc = json.loads(body)
except ValueError:
    doc = None
out = {"status": status, "bytes": len(body)}
if isinstance(doc, dict):
    data = doc.get("data")
    out["items"] = len(data) if isinstance(data, list) else None
    out["shards"] = (doc.get("meta") or {}).get("shards")
    if isinstance(data, list) and data and isinstance(data[0], dict):
        out["item_shards"] = sorted({str(d.get("shard")) for d in data})
        out["vendor_ids_sample"] = [d.get("vendor_id") for d in data[:5]]
else:
    out["body_head"] = body[:300].decode("utf-8", "replace")
print(json.dumps(out))
