"""Webhook signatures, secrets derived from a salt, URL rules, and the POST against a real local receiver."""

import hashlib
import hmac
import json
import time

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from balancing.notifications.webhooks import (
    endpoint_secret,
    webhook_post,
    webhook_signature,
    webhook_signature_verify,
    webhook_url_check,
)
from tests.balancing.notification_helpers import webhook_receiver

SECRET = "a" * 64
BODY = b'{"id":"e1","type":"alert.opened"}'


def test_a_signature_verifies_with_its_secret_and_body_and_nothing_else() -> None:
    header = webhook_signature(SECRET, BODY, timestamp=int(time.time()))

    assert webhook_signature_verify(SECRET, header, BODY)
    assert not webhook_signature_verify(SECRET, header, BODY.replace(b"opened", b"cleared"))
    assert not webhook_signature_verify("b" * 64, header, BODY)
    assert not webhook_signature_verify(SECRET, "v1=deadbeef", BODY)
    assert not webhook_signature_verify(SECRET, "garbage", BODY)


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    header = webhook_signature(SECRET, BODY, timestamp=1767225600)

    expected = hmac.new(SECRET.encode(), b"1767225600." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1767225600,v1={expected}"


def test_a_signature_older_or_newer_than_the_tolerance_is_refused() -> None:
    now = 1767225600.0
    header = webhook_signature(SECRET, BODY, timestamp=int(now))

    assert webhook_signature_verify(SECRET, header, BODY, tolerance_s=300, now=now + 300)
    assert not webhook_signature_verify(SECRET, header, BODY, tolerance_s=300, now=now + 301)
    assert not webhook_signature_verify(SECRET, header, BODY, tolerance_s=300, now=now - 301)
    assert webhook_signature_verify(SECRET, header, BODY, tolerance_s=3600, now=now + 1800)


def test_the_secret_comes_from_the_salt_and_the_signing_key_and_a_new_salt_is_a_new_secret() -> None:
    with override_settings(WEBHOOK_SIGNING_KEY="key-one-0123456789abcdef"):
        first = endpoint_secret("salt-1")
        assert endpoint_secret("salt-1") == first
        assert endpoint_secret("salt-2") != first
        assert first == hmac.new(b"key-one-0123456789abcdef", b"salt-1", hashlib.sha256).hexdigest()
    with override_settings(WEBHOOK_SIGNING_KEY="key-two-0123456789abcdef"):
        assert endpoint_secret("salt-1") != first
    with override_settings(WEBHOOK_SIGNING_KEY="", SECRET_KEY="the-secret-key-0123456789abcdef"):
        assert (
            endpoint_secret("salt-1") == hmac.new(b"the-secret-key-0123456789abcdef", b"salt-1", "sha256").hexdigest()
        )


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://93.184.216.34/x", "https://"),
        ("http://93.184.216.34/hook", "plain http only to localhost"),
        ("https://user:pw@93.184.216.34/hook", "must not carry a user"),
        ("https://", "https://"),
    ],
)
def test_a_webhook_url_must_be_https_without_credentials(url: str, why: str) -> None:
    with pytest.raises(ValidationError) as refused:
        webhook_url_check(url)
    assert why in refused.value.message_dict["url"][0]


def test_private_addresses_are_refused_unless_allowed_and_public_https_is_fine() -> None:
    assert webhook_url_check(" https://93.184.216.34/hook ") == "https://93.184.216.34/hook"
    with override_settings(WEBHOOK_ALLOW_PRIVATE_HOSTS=False, DEBUG=False):
        for url in ("https://10.0.0.5/h", "https://169.254.169.254/latest", "http://127.0.0.1:9/h", "https://[::1]/h"):
            with pytest.raises(ValidationError, match="not a public address"):
                webhook_url_check(url)
    with override_settings(WEBHOOK_ALLOW_PRIVATE_HOSTS=True):
        assert webhook_url_check("http://127.0.0.1:9/h") == "http://127.0.0.1:9/h"


def test_the_post_carries_the_headers_and_a_signature_the_receiver_verifies() -> None:
    with webhook_receiver() as receiver:
        result = webhook_post(url=receiver.url, secret=SECRET, body=BODY, event_type="alert.opened", delivery_id="d-1")

    assert (result.delivered, result.status_code) == (True, 200)
    [got] = receiver.got
    assert got.body == BODY
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-EVP-Event"] == "alert.opened"
    assert got.headers["X-EVP-Delivery"] == "d-1"
    assert webhook_signature_verify(SECRET, got.headers["X-EVP-Signature"], got.body)
    assert json.loads(got.body)["type"] == "alert.opened"


def test_a_non_2xx_answer_or_no_answer_is_not_delivered_and_says_why() -> None:
    with webhook_receiver([503, 302]) as receiver:
        unavailable = webhook_post(url=receiver.url, secret=SECRET, body=BODY, event_type="t", delivery_id="d")
        redirected = webhook_post(url=receiver.url, secret=SECRET, body=BODY, event_type="t", delivery_id="d")
    closed_port = receiver.url  # the receiver has stopped: nothing listens there now
    refused = webhook_post(url=closed_port, secret=SECRET, body=BODY, event_type="t", delivery_id="d")

    assert (unavailable.delivered, unavailable.status_code) == (False, 503)
    assert "HTTP 503" in unavailable.error
    assert (redirected.delivered, redirected.status_code) == (False, 302)
    assert not refused.delivered
    assert refused.status_code is None
    assert "ConnectionError" in refused.error
