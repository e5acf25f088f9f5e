"""AWS Signature Version 4, verified (the server's half of SigV4).

A client signs a canonical form of its request — method, path, query,
the headers it lists, the SHA-256 of the body — with a key derived from
its secret, the date, the region and the service. The server rebuilds the
same canonical form from what it received and compares signatures in
constant time. Only the `Authorization` header form is accepted (what
every SDK sends for Kinesis); a request dated more than
`MAX_CLOCK_SKEW_S` from the server's clock is refused, so a captured
request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from railyard.kinesis.errors import KinesisError

ALGORITHM = "AWS4-HMAC-SHA256"
# AWS refuses requests dated more than 15 minutes from its clock.
MAX_CLOCK_SKEW_S = 15 * 60
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})"
)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Credential:
    secret_access_key: str
    role: str


@dataclass(frozen=True, slots=True)
class Verified:
    access_key_id: str
    role: str
    region: str


def _unrecognized(message: str) -> KinesisError:
    return KinesisError("UnrecognizedClientException", message)


def _invalid_signature(message: str) -> KinesisError:
    return KinesisError("InvalidSignatureException", message)


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _canonical_query(query: str) -> str:
    pairs = []
    for item in filter(None, query.split("&")):
        name, _, value = item.partition("=")
        pairs.append((quote(name, safe="-_.~%"), quote(value, safe="-_.~%")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def verify(
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: Mapping[str, Credential],
    now: datetime,
) -> Verified:
    """Check a request's signature; raise the error Kinesis would answer if it fails.

    `headers` maps lower-case names to values (repeated headers joined with ",").
    """
    authorization = headers.get("authorization")
    if authorization is None:
        raise KinesisError(
            "MissingAuthenticationTokenException",
            "Request is missing Authentication Token "
            "(this endpoint requires SigV4-signed requests)",
        )
    found = _AUTHORIZATION.fullmatch(authorization.strip())
    if found is None:
        raise _invalid_signature(
            f"Authorization header is not {ALGORITHM} with Credential, SignedHeaders and Signature"
        )
    parts = found["credential"].split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise _invalid_signature(
            "Credential should be <key>/<date>/<region>/<service>/aws4_request"
        )
    key_id, date, region, service, _ = parts
    credential = credentials.get(key_id)
    if credential is None:
        raise _unrecognized("The security token included in the request is invalid.")
    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise _invalid_signature(
            "X-Amz-Date is missing or not in the form 20250101T000000Z"
        ) from None
    if not amz_date.startswith(date):
        raise _invalid_signature("The credential's date is not the date of X-Amz-Date")
    if abs((now - signed_at).total_seconds()) > MAX_CLOCK_SKEW_S:
        raise _invalid_signature(
            f"Signature expired: {amz_date} is more than {MAX_CLOCK_SKEW_S // 60} minutes "
            f"from the server's time {now.strftime('%Y%m%dT%H%M%SZ')}"
        )
    signed = found["signed"].split(";")
    if "host" not in signed:
        raise _invalid_signature("SignedHeaders must include host")
    canonical_headers = "".join(
        f"{name}:{_SPACES.sub(' ', headers.get(name, '').strip())}\n" for name in signed
    )
    payload_hash = hashlib.sha256(body).hexdigest()
    canonical_request = "\n".join(
        [
            method,
            quote(path or "/", safe="/-_.~%"),
            _canonical_query(query),
            canonical_headers,
            found["signed"],
            payload_hash,
        ]
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = signing_key(credential.secret_access_key, date, region, service)
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, found["signature"]):
        raise _invalid_signature(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."
        )
    return Verified(key_id, credential.role, region)
