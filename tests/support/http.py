"""HTTP for tests: a node's /metrics, /health and /ready, and Prometheus's API.

Requests go direct whatever the environment's proxy variables say (the
fault tests set them for node processes, CI machines may have them), and
every request has a deadline.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

HTTP_TIMEOUT_S = 5.0
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str) -> tuple[int, str]:
    """(status, body); a connection failure is status 0 with the reason as body."""
    try:
        with _DIRECT.open(url, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


@dataclass(frozen=True)
class Family:
    type: str
    samples: list[tuple[str, dict[str, str], float]]  # (sample name, labels, value)


def scrape(address: str) -> dict[str, Family]:
    """A node's /metrics, by family name (counters without `_total`, as the parser names them)."""
    status, body = get(f"http://{address}/metrics")
    assert status == 200, f"/metrics on {address}: {status} {body[:200]}"
    return {
        f.name: Family(f.type, [(s.name, dict(s.labels), s.value) for s in f.samples])
        for f in text_string_to_metric_families(body)
    }


def health(address: str, path: str = "/health") -> tuple[int, Any]:
    status, body = get(f"http://{address}{path}")
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def prometheus_query(base_url: str, query: str) -> list[dict[str, Any]]:
    """An instant query's result vector; AssertionError naming the query if it failed."""
    status, body = get(f"{base_url}/api/v1/query?{urllib.parse.urlencode({'query': query})}")
    assert status == 200, f"{query}: {status} {body[:300]}"
    doc = json.loads(body)
    assert doc["status"] == "success", f"{query}: {doc}"
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result
