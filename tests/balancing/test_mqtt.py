"""Site meter readings over MQTT: the message path in the database, and ``run_mqtt_meters`` end to end.

The end-to-end tests run the command as a process of its own on the test database against the
machine's Mosquitto (127.0.0.1:1883), with a topic prefix of their own (the broker is shared),
and cut the broker with a TCP proxy (never by stopping Mosquitto).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_tenants.utils import tenant_context
from paho.mqtt.enums import CallbackAPIVersion

from balancing.models import Site, SiteMeterReading
from balancing.mqtt import broker_address, meter_message_apply, meter_topic, subscription
from bench.tcpproxy import ThreadedTcpProxy
from tests.conftest import _database_url
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db

MOSQUITTO = ("127.0.0.1", 1883)
PREFIX = f"evp-test-{uuid.uuid4().hex[:8]}"
# A site id far from the small ones other suites use: balancing's Redis keys name schema and id.
E2E_SITE_ID = 930_001


def reading(**overrides: Any) -> dict[str, Any]:
    return {
        "measured_at": (timezone.now() - timedelta(seconds=1)).isoformat(),
        "current_a": [10.5, 12, 9.75],
        "power_kw": 7.2,
        **overrides,
    }


def apply(payload: bytes | dict[str, Any], topic: str | None = None) -> str:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return meter_message_apply(
        topic=topic or meter_topic(PREFIX, "alpha", "garage"), payload=raw, prefix=PREFIX, now=timezone.now()
    )


# --- The message path, in the test's transaction ------------------------------------------------


@pytest.fixture
def site() -> Site:
    return SiteFactory(slug="garage", limit_a=Decimal("63"))


def test_a_message_is_recorded_in_the_topics_organisation(site: Site) -> None:
    connection.set_schema_to_public()
    assert apply(reading()) == "stored"
    connection.set_schema("alpha")
    row = SiteMeterReading.objects.get(site=site)
    assert (row.source, row.current_a, row.power_kw) == ("mqtt", [10.5, 12.0, 9.75], Decimal("7.20"))


def test_the_same_message_twice_is_one_reading(site: Site) -> None:
    message = reading()
    assert [apply(message), apply(message)] == ["stored", "duplicate"]
    assert SiteMeterReading.objects.count() == 1


@pytest.mark.parametrize(
    ("payload", "topic", "why"),
    [
        (reading(), f"{PREFIX}/nobody/garage/meter", "no active organisation 'nobody'"),
        (reading(), f"{PREFIX}/alpha/nowhere/meter", "no site 'nowhere'"),
        (reading(), f"{PREFIX}/alpha/garage/status", "is not"),
        (reading(), f"{PREFIX}/beta/garage/meter", "no site 'garage' in 'beta'"),
        (b"\xff\xfe not json", None, "payload"),
        (b"[1, 2, 3]", None, "payload"),
        (b"{" + b" " * 5000 + b"}", None, "payload"),
        (b"[" * 2000 + b"]" * 2000, None, "payload"),
        (reading(current_a=[10, -1, 10]), None, "current_a: L2 current -1 is negative"),
        (reading(power_kw=float("nan")), None, "power_kw"),
        (reading(power_kw=10_000), None, "power_kw"),
        (reading(current_a=[10]), None, "current_a"),
        (reading(measured_at="2026-05-01T12:00:00"), None, "measured_at"),
        (reading(measured_at="2026-13-01T12:00:00Z"), None, "measured_at"),
        (reading(measured_at=None), None, "measured_at"),
        (reading(measured_at=(timezone.now() - timedelta(hours=1)).isoformat()), None, "stale"),
        (reading(measured_at=(timezone.now() + timedelta(hours=1)).isoformat()), None, "future"),
        (reading(includes_chargers="yes"), None, "includes_chargers"),
    ],
)
def test_a_bad_message_is_dropped_with_its_reason(
    site: Site, payload: bytes | dict[str, Any], topic: str | None, why: str
) -> None:
    result = apply(payload, topic)
    assert result.startswith(("dropped", "refused"))
    assert why in result
    assert not SiteMeterReading.objects.exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1883", ("127.0.0.1", 1883, False, None, None)),
        ("mqtt://broker", ("broker", 1883, False, None, None)),
        ("mqtts://meter:p%40ss@broker.example", ("broker.example", 8883, True, "meter", "p@ss")),
    ],
)
def test_the_broker_url_gives_host_port_tls_and_credentials(url: str, expected: tuple[Any, ...]) -> None:
    address = broker_address(url)
    assert (address.host, address.port, address.tls, address.username, address.password) == expected


@pytest.mark.parametrize("url", ["http://broker:1883", "broker:1883", "mqtt://"])
def test_a_broker_url_that_is_not_mqtt_is_refused_clearly(url: str) -> None:
    with pytest.raises(ValueError, match="MQTT_URL"):
        broker_address(url)


def test_the_subscription_covers_every_organisation_and_site() -> None:
    assert subscription("evp/") == "evp/+/+/meter"
    assert mqtt.topic_matches_sub(subscription("evp"), meter_topic("evp", "alpha", "garage"))


# --- run_mqtt_meters end to end against Mosquitto -----------------------------------------------


class MeterProcess:
    """``manage.py run_mqtt_meters`` in a process of its own, on the test database."""

    def __init__(self, *, args: Sequence[str] = ()) -> None:
        self.lines: list[str] = []
        self.subscriptions = 0
        self._changed = threading.Condition()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "evplatform.settings.test",
            "DATABASE_URL": _database_url(),
            "CELERY_QUEUE_PREFIX": settings.CELERY_QUEUE_PREFIX,
            "LOG_LEVEL": "INFO",
        }
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_mqtt_meters", "--prefix", PREFIX, *args],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line)
                if "subscribed to" in line:
                    self.subscriptions += 1
                self._changed.notify_all()

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        with self._changed:
            if not self._changed.wait_for(condition, timeout):
                raise AssertionError(f"run_mqtt_meters: no {what}:\n" + "".join(self.lines[-40:]))

    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


@pytest.fixture(scope="module")
def e2e_site(tenant, django_db_blocker) -> Iterator[Site]:
    """A committed site the meter process can see (the tests' own transactions are invisible to it)."""
    with django_db_blocker.unblock(), tenant_context(tenant):
        Site.objects.filter(pk=E2E_SITE_ID).delete()
        site = Site.objects.create(pk=E2E_SITE_ID, slug="mqtt-garage", name="MQTT garage", limit_a=Decimal("63"))
    yield site
    with django_db_blocker.unblock(), tenant_context(tenant):
        SiteMeterReading.objects.filter(site_id=E2E_SITE_ID).delete()
        Site.objects.filter(pk=E2E_SITE_ID).delete()
    connection.set_schema_to_public()


def publish(payload: bytes | dict[str, Any], *, slug: str = "mqtt-garage", schema: str = "alpha") -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(*MOSQUITTO)
    client.loop_start()
    try:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        client.publish(meter_topic(PREFIX, schema, slug), raw, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def wait_for_reading(site: Site, message: dict[str, Any], timeout: float = 30) -> SiteMeterReading:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = SiteMeterReading.objects.filter(site_id=site.pk, measured_at=message["measured_at"]).first()
        if row is not None:
            return row
        time.sleep(0.2)
    raise AssertionError(f"no reading measured at {message['measured_at']} was stored")


def test_run_mqtt_meters_records_published_readings_and_survives_bad_ones(e2e_site: Site) -> None:
    meters = MeterProcess()
    try:
        meters.wait_for(lambda: meters.subscriptions >= 1, "subscription")
        publish(b"not json at all")
        negative = reading(current_a=[5, -5, 5])
        publish(negative)
        publish(reading(), slug="no-such-site")
        publish(reading(), schema="no_such_tenant")
        good = reading(current_a=[20, 21, 22.5], power_kw=14.1)
        publish(good)
        row = wait_for_reading(e2e_site, good)
        assert (row.source, row.current_a, row.power_kw) == ("mqtt", [20.0, 21.0, 22.5], Decimal("14.10"))
        assert not SiteMeterReading.objects.filter(site_id=e2e_site.pk, measured_at=negative["measured_at"]).exists()
        meters.wait_for(lambda: "no site 'no-such-site'" in meters.log(), "log of the unknown site")
        log = meters.log()
        assert "payload: is not JSON" in log
        assert "current_a: L2 current -5 is negative" in log
        assert "no active organisation 'no_such_tenant'" in log
        assert meters.process.poll() is None
    finally:
        assert meters.stop() == 0, meters.log()
    assert "MQTT meters: stopped" in meters.log()


def test_run_mqtt_meters_reconnects_when_the_broker_comes_back(e2e_site: Site) -> None:
    proxy = ThreadedTcpProxy(MOSQUITTO)
    meters = MeterProcess(args=["--url", f"mqtt://127.0.0.1:{proxy.port}"])
    try:
        meters.wait_for(lambda: meters.subscriptions >= 1, "subscription")
        proxy.cut()
        meters.wait_for(lambda: "disconnected" in meters.log(), "disconnect noticed")
        time.sleep(2)  # a reconnect attempt or two fails while the broker is away
        proxy.restore()
        meters.wait_for(lambda: meters.subscriptions >= 2, "subscription after the broker came back")
        after = reading(measured_at=timezone.now().isoformat(), current_a=[1, 2, 3])
        publish(after)
        assert wait_for_reading(e2e_site, after).current_a == [1.0, 2.0, 3.0]
    finally:
        assert meters.stop() == 0, meters.log()
        proxy.close()


def test_run_mqtt_meters_waits_for_a_broker_that_is_not_there_and_stops_cleanly(e2e_site: Site) -> None:
    proxy = ThreadedTcpProxy(MOSQUITTO)
    proxy.cut()
    meters = MeterProcess(args=["--url", f"mqtt://127.0.0.1:{proxy.port}"])
    try:
        meters.wait_for(lambda: "connecting to" in meters.log(), "first connection attempt")
        time.sleep(3)  # attempts at 1 s, then 2 s: none reaches a broker
        assert meters.process.poll() is None
        assert meters.subscriptions == 0
        proxy.restore()
        meters.wait_for(lambda: meters.subscriptions >= 1, "subscription once the broker answers", timeout=30)
    finally:
        assert meters.stop() == 0, meters.log()
        proxy.close()


def test_run_mqtt_meters_refuses_a_url_that_is_not_mqtt() -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="MQTT_URL 'http://broker' must look like mqtt://"):
        call_command("run_mqtt_meters", "--url", "http://broker")
