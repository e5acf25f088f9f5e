"""The Kinesis JSON 1.1 protocol over HTTP/1.1 (aiohttp), on the caller's event loop.

`POST /` with `Content-Type: application/x-amz-json-1.1` and
`X-Amz-Target: Kinesis_20131202.<Operation>`; blobs are base64 and
timestamps epoch seconds inside the JSON. Every answer carries an
`x-amzn-RequestId`; every failure is a `KinesisError` answered as
`{"__type", "message"}` with its status — a body that is not JSON, an
unknown operation or a malformed iterator is a 400, never a 500.

With credentials configured, every request must be SigV4-signed by one of
their access keys and may do what that key's role allows; without, any
request (signed or not) is served and its signature is not checked.
"""

from __future__ import annotations

import json
import logging
import ssl
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from railyard.kinesis.errors import (
    KinesisError,
    serialization,
    unknown_operation,
    validation,
)
from railyard.kinesis.operations import KinesisApi
from railyard.kinesis.sigv4 import Credential, verify

log = logging.getLogger(__name__)

TARGET_PREFIX = "Kinesis_20131202."
CONTENT_TYPE = "application/x-amz-json-1.1"
# A PutRecords of 5 MiB grows by a third in base64, plus JSON around it;
# a 10 MiB record (the model's Data maximum) as well.
MAX_BODY_BYTES = 16 << 20


def _now() -> datetime:
    return datetime.now(UTC)


class KinesisHttp:
    def __init__(
        self,
        api: KinesisApi,
        credentials: Mapping[str, Credential] | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.api = api
        self.credentials = dict(credentials or {})
        self.clock = clock

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        request_id = str(uuid.uuid4())
        try:
            answer = await self._serve(request)
            status = 200
        except KinesisError as exc:
            answer, status = exc.body(), exc.status
        except Exception:
            log.exception("Kinesis request %s failed", request_id)
            answer = {"__type": "InternalFailureException", "message": "Internal service failure."}
            status = 500
        return web.Response(
            status=status,
            body=json.dumps(answer, separators=(",", ":")).encode(),
            headers={"Content-Type": CONTENT_TYPE, "x-amzn-RequestId": request_id},
        )

    async def _serve(self, request: web.Request) -> dict[str, Any]:
        target = request.headers.get("X-Amz-Target", "")
        if request.method != "POST" or not target.startswith(TARGET_PREFIX):
            raise unknown_operation(
                f"Expected POST with X-Amz-Target: {TARGET_PREFIX}<Operation>, got "
                f"{request.method} with X-Amz-Target {target!r}"
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise validation(f"the request body is larger than {MAX_BODY_BYTES} bytes") from None
        role: str | None = None
        region: str | None = None
        if self.credentials:
            headers = {k.lower(): ",".join(request.headers.getall(k)) for k in request.headers}
            verified = verify(
                method=request.method,
                path=request.rel_url.raw_path,
                query=request.rel_url.raw_query_string,
                headers=headers,
                body=body,
                credentials=self.credentials,
                now=self.clock(),
            )
            role, region = verified.role, verified.region
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            raise serialization("The request body is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise serialization("The request body must be a JSON object")
        return await self.api.call(
            target.removeprefix(TARGET_PREFIX),
            parsed,
            role=role,
            invocation_id=request.headers.get("amz-sdk-invocation-id"),
            region=region,
        )


async def start_server(
    http: KinesisHttp, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> web.AppRunner:
    """Serve on host:port until `runner.cleanup()`."""
    runner = web.AppRunner(http.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
    await site.start()
    return runner
