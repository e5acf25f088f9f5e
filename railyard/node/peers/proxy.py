"""Reaching a peer through an HTTP proxy, chosen as gRPC chooses it.

Outbound peer connections honour the proxy settings gRPC honours
(`grpc_proxy`, `https_proxy`, `http_proxy`; `no_grpc_proxy`, `no_proxy`)
through HTTP CONNECT, so peer traffic takes the same route whichever
transport carries it (`tcp.connect` opens the tunnel, then speaks the peer
wire through it).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

# A proxy's answer to CONNECT is a few short lines; more is not a proxy.
MAX_PROXY_HEADER_BYTES = 8192
# gRPC's default port for a proxy URL without one.
DEFAULT_PROXY_PORT = 443
MAX_PORT = 65535


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy to reach peers through with CONNECT."""

    host: str
    port: int
    authorization: str | None = None  # a Proxy-Authorization header value


async def open_tunnel(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str, proxy: Proxy
) -> None:
    where = f"the proxy at {proxy.host}:{proxy.port}"
    header = f"CONNECT {address} HTTP/1.1\r\nHost: {address}\r\n"
    if proxy.authorization is not None:
        header += f"Proxy-Authorization: {proxy.authorization}\r\n"
    writer.write((header + "\r\n").encode())
    try:
        answer = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise ConnectionError(f"{where} closed the connection to {address}") from exc
    except asyncio.LimitOverrunError as exc:
        raise ConnectionError(f"{where} answered with over {MAX_PROXY_HEADER_BYTES} bytes") from exc
    status = answer.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status.split()
    if len(parts) < 2 or not parts[1].startswith("2"):
        raise ConnectionError(f"{where} refused a connection to {address}: {status}")


def proxy_for(host: str, environ: Mapping[str, str] | None = None) -> Proxy | None:
    """The HTTP proxy to reach `host` through, chosen as gRPC chooses it.

    The first of grpc_proxy, https_proxy and http_proxy that is set names
    it (set but empty: none), as ``http://[user:password@]host[:port]``
    (port 443 if left out). The first of no_grpc_proxy and no_proxy that is
    set lists hosts reached directly: names (matching the host or a domain
    below it) and address ranges (``10.0.0.0/8``). Raises ValueError,
    naming the variable, for a proxy that cannot be used.
    """
    env = os.environ if environ is None else environ
    variable = next((k for k in ("grpc_proxy", "https_proxy", "http_proxy") if k in env), None)
    if variable is None or not env[variable]:
        return None
    url = env[variable]
    exclusions = next((env[k] for k in ("no_grpc_proxy", "no_proxy") if k in env), "")
    if any(_excludes(entry, host) for entry in exclusions.split(",")):
        return None
    problem = f"{variable}={url!r}: expected http://[user:password@]host[:port]"
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "http":
        raise ValueError(problem)
    hostport = rest.split("/", 1)[0]
    userinfo, at, hostport = hostport.rpartition("@")
    if hostport.startswith("["):  # [v6 address]:port
        proxy_host, bracket, after = hostport[1:].partition("]")
        port_text = after.removeprefix(":") if bracket and after[:1] in ("", ":") else "bad"
    else:
        proxy_host, colon, port_text = hostport.partition(":")
        if colon and not port_text:
            port_text = "missing"
    port_text = port_text or str(DEFAULT_PROXY_PORT)
    if not proxy_host or not port_text.isdigit() or not 0 < int(port_text) <= MAX_PORT:
        raise ValueError(problem)
    authorization = None
    if at:
        credentials = base64.b64encode(urllib.parse.unquote(userinfo).encode()).decode()
        authorization = f"Basic {credentials}"
    return Proxy(proxy_host, int(port_text), authorization)


def _excludes(entry: str, host: str) -> bool:
    name = entry.strip().lstrip(".").lower()
    if not name:
        return False
    try:
        return ipaddress.ip_address(host.strip("[]")) in ipaddress.ip_network(name, strict=False)
    except ValueError:
        pass  # not an address and a range: compare names
    host = host.lower()
    return host == name or host.endswith("." + name)
