"""Webhook signing, verifying, URL rules and the POST itself. No schema: plain values in and out.

Signature (``X-EVP-Signature``): ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>``,
the body being the exact bytes POSTed (UTF-8 JSON). The receiver recomputes it with its secret
(``webhook_signature_verify``) and refuses a timestamp older than a few minutes (replays).

The secret is not stored: each endpoint keeps a random salt and its secret is
``HMAC-SHA256(WEBHOOK_SIGNING_KEY or SECRET_KEY, salt)`` in hex. A leaked database alone does
not sign; rotating an endpoint's secret is a new salt.
"""

import hashlib
import hmac
import ipaddress
import secrets
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.exceptions import ValidationError

SIGNATURE_HEADER = "X-EVP-Signature"
EVENT_HEADER = "X-EVP-Event"
DELIVERY_HEADER = "X-EVP-Delivery"
DEFAULT_TOLERANCE_S = 300
USER_AGENT = "evplatform-webhooks/1"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
MAX_ERROR_CHARS = 500


def secret_salt_new() -> str:
    return secrets.token_hex(16)


def endpoint_secret(salt: str) -> str:
    """The signing secret of the endpoint with this salt (64 hex characters)."""
    key = settings.WEBHOOK_SIGNING_KEY or settings.SECRET_KEY
    if not key:
        raise RuntimeError("WEBHOOK_SIGNING_KEY or SECRET_KEY must be set to sign webhooks")
    return hmac.new(key.encode(), salt.encode(), hashlib.sha256).hexdigest()


def webhook_signature(secret: str, body: bytes, *, timestamp: int) -> str:
    """The ``X-EVP-Signature`` value of ``body`` sent at ``timestamp`` (unix seconds)."""
    signed = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def webhook_signature_verify(
    secret: str, header: str, body: bytes, tolerance_s: int = DEFAULT_TOLERANCE_S, *, now: float | None = None
) -> bool:
    """True if ``header`` is a signature of ``body`` with ``secret`` made within ``tolerance_s`` of now.

    What a receiver runs on each request (README has a copy that needs only the standard library).
    """
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = webhook_signature(secret, body, timestamp=timestamp).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, candidate) for candidate in parts.get("v1", []))


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return not ip.is_global


def webhook_url_check(url: str) -> str:
    """``url`` if a webhook may be sent there, else ValidationError naming ``url``.

    https, or http to this machine (localhost) or with DEBUG on; a host that resolves to a
    loopback, private, link-local or otherwise non-public address is refused unless
    ``WEBHOOK_ALLOW_PRIVATE_HOSTS`` (or DEBUG) is on: an endpoint must not reach our network.
    """
    url = url.strip()
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise ValidationError({"url": "must be an https:// URL"})
    if parts.username or parts.password:
        raise ValidationError({"url": "must not carry a user or password; the signature authenticates us"})
    allow_private = settings.WEBHOOK_ALLOW_PRIVATE_HOSTS or settings.DEBUG
    if parts.scheme == "http" and not (settings.DEBUG or host in LOOPBACK_NAMES):
        raise ValidationError({"url": "must be https:// (plain http only to localhost, or with DEBUG on)"})
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError) as exc:
        raise ValidationError({"url": f"host {host!r} does not resolve ({exc})"}) from None
    if not allow_private and any(_private(str(info[4][0])) for info in infos):
        raise ValidationError({"url": f"host {host!r} is not a public address"})
    return url


@dataclass(frozen=True)
class PostResult:
    delivered: bool
    status_code: int | None
    error: str


def webhook_post(*, url: str, secret: str, body: bytes, event_type: str, delivery_id: str) -> PostResult:
    """POST ``body`` signed now; delivered on a 2xx answer within ``WEBHOOK_TIMEOUT_S``. Redirects are not followed."""
    try:
        webhook_url_check(url)  # again: what the name resolves to may have changed since it was saved
    except ValidationError as exc:
        return PostResult(False, None, "; ".join(exc.messages))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: event_type,
        DELIVERY_HEADER: delivery_id,
        SIGNATURE_HEADER: webhook_signature(secret, body, timestamp=int(time.time())),
    }
    try:
        response = requests.post(
            url, data=body, headers=headers, timeout=settings.WEBHOOK_TIMEOUT_S, allow_redirects=False
        )
    except requests.RequestException as exc:
        return PostResult(False, None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
    if 200 <= response.status_code < 300:
        return PostResult(True, response.status_code, "")
    return PostResult(False, response.status_code, f"HTTP {response.status_code}: {response.text[:200]}")
