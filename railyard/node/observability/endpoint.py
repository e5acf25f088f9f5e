"""The HTTP server behind a node's `metrics_address`: /metrics, /health, /ready.

- `/metrics`: the node's registry in Prometheus's text format;
- `/health`: 200 `{"health": true}` when the node knows a leader and is not
  stopping, 503 `{"health": false, "reason": ...}` otherwise (etcd's
  /health);
- `/ready`: 200 `{"ready": true}` once the node serves clients, is not
  stopping and is not catching up after starting with an empty store; 503
  with a reason otherwise.

It runs on threads of its own (the standard library's threading HTTP
server): a scrape renders text on its thread, and asks the event loop only
for a `StateSample`, which takes microseconds between two steps of the
driver. A loop that does not answer in time makes /health and /ready fail
and /metrics serve the last sample; nothing here waits on the driver.

It knows nothing of the node: the process hands it the registry and the two
probes.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

HTTP_OK = 200
HTTP_NOT_FOUND = 404
HTTP_UNAVAILABLE = 503
JSON_TYPE = "application/json"
# How often the serving thread checks for a shutdown request.
POLL_INTERVAL_S = 0.2


@dataclass(frozen=True, slots=True)
class Probe:
    """A /health or /ready answer: ok, or why not."""

    ok: bool
    reason: str = ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Reuse the port at once after a restart, as the gRPC server does.
    allow_reuse_address = True


class MetricsEndpoint:
    """Serves one node's /metrics, /health and /ready; see the module docstring."""

    def __init__(
        self,
        address: str,
        registry: CollectorRegistry,
        *,
        health: Callable[[], Probe],
        ready: Callable[[], Probe],
        log: logging.Logger,
    ) -> None:
        self.address = address
        self.registry = registry
        self.health = health
        self.ready = ready
        self.log = log
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port actually bound (after `start`; useful with port 0)."""
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve on a thread; OSError if the address cannot be bound."""
        # Validated by the config (port 0, for tests, picks a free port).
        host, _, port_text = self.address.rpartition(":")
        host, port = host.strip("[]"), int(port_text)
        server_class = _Server
        if ":" in host:

            class _Server6(_Server):
                address_family = socket.AF_INET6

            server_class = _Server6
        self._server = server_class((host, port), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(POLL_INTERVAL_S,),
            name="metrics-http",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port (blocks up to one poll interval)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(HTTP_OK, CONTENT_TYPE_LATEST, generate_latest(endpoint.registry))
                elif path == "/health":
                    self._probe("health", endpoint.health())
                elif path == "/ready":
                    self._probe("ready", endpoint.ready())
                else:
                    body = b"not found; try /metrics, /health or /ready\n"
                    self._send(HTTP_NOT_FOUND, "text/plain; charset=utf-8", body)

            def _probe(self, key: str, probe: Probe) -> None:
                doc: dict[str, object] = {key: probe.ok}
                if not probe.ok:
                    doc["reason"] = probe.reason
                body = json.dumps(doc).encode() + b"\n"
                self._send(HTTP_OK if probe.ok else HTTP_UNAVAILABLE, JSON_TYPE, body)

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                # One line per scrape would drown the node's log.
                pass

        return Handler
