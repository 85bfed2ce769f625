"""Site meter readings over MQTT: the subscriber behind ``manage.py run_mqtt_meters``. Schema: both.

A site's meter (or a gateway in front of it) publishes JSON like the REST API's body
(``{"measured_at": "2026-05-01T12:00:00Z", "current_a": [12.5, 11, 13.2], "power_kw": 8.4,
"includes_chargers": true}``) on ``<MQTT_TOPIC_PREFIX>/<tenant schema>/<site slug>/meter``. The
topic names the organisation: it is looked up in ``public`` and the reading is recorded by
``site_meter_record(source="mqtt")`` inside that tenant's schema. Whatever arrives is checked:
an unknown organisation or site, a payload that is not JSON, or a reading that cannot be true is
logged with the reason and dropped; the subscriber never stops for a message. When the broker
goes away the client reconnects with a growing delay (1 s doubling to ``MAX_RECONNECT_DELAY_S``)
and subscribes again.
"""

import json
import logging
import ssl
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import close_old_connections
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context
from paho.mqtt.enums import CallbackAPIVersion

from balancing.meter import measured_at_parse, refusal, site_meter_record
from balancing.models import SiteMeterReading
from balancing.selectors import site_get
from tenants.models import Tenant

logger = logging.getLogger(__name__)

MIN_RECONNECT_DELAY_S = 1
MAX_RECONNECT_DELAY_S = 30
KEEPALIVE_S = 30
MAX_PAYLOAD_BYTES = 4096
QOS = 1


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is: host, port, TLS or not, and the optional user and password of ``MQTT_URL``."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None


def broker_address(url: str) -> BrokerAddress:
    """``mqtt://[user:password@]host[:1883]`` or ``mqtts://...[:8883]``; a clear error otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
        raise ValueError(f"MQTT_URL {url!r} must look like mqtt://[user:password@]host[:port] (or mqtts://)")
    tls = parts.scheme in ("mqtts", "ssl")
    return BrokerAddress(
        host=parts.hostname,
        port=parts.port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def subscription(prefix: str) -> str:
    """The topic filter for every organisation's and site's meter under ``prefix``."""
    return f"{prefix.rstrip('/')}/+/+/meter"


def meter_topic(prefix: str, schema_name: str, site_slug: str) -> str:
    return f"{prefix.rstrip('/')}/{schema_name}/{site_slug}/meter"


def _payload(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise ValidationError({"payload": f"{len(raw)} bytes is more than {MAX_PAYLOAD_BYTES}"})
    try:
        data = json.loads(raw.decode("utf-8"))  # NaN/Infinity pass, to be refused naming their field
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: arrays nested too deep
        raise ValidationError({"payload": "is not JSON like {'measured_at': ..., 'current_a': [...]}"}) from None
    if not isinstance(data, dict):
        raise ValidationError({"payload": "must be a JSON object"})
    return data


def meter_message_apply(*, topic: str, payload: bytes, prefix: str, now: datetime) -> str:
    """Record one MQTT meter message; returns what happened ("stored", "duplicate" or why it was dropped).

    Runs from the public schema: the organisation comes from the topic, the reading is written
    in its schema. Never raises for bad input (a meter must not stop the subscriber).
    """
    head = prefix.rstrip("/") + "/"
    parts = topic[len(head) :].split("/") if topic.startswith(head) else []
    if len(parts) != 3 or parts[2] != "meter":
        return f"dropped: topic {topic!r} is not {meter_topic(prefix, '<tenant>', '<site>')}"
    schema_name, site_slug = parts[0], parts[1]
    with schema_context(get_public_schema_name()):
        tenant = (
            Tenant.objects.exclude(schema_name=get_public_schema_name())
            .filter(schema_name=schema_name, is_active=True)
            .first()
        )
    if tenant is None:
        return f"dropped: no active organisation {schema_name!r}"
    with tenant_context(tenant):
        try:
            site = site_get(slug=site_slug)
        except ObjectDoesNotExist:
            return f"dropped: no site {site_slug!r} in {schema_name!r}"
        try:
            data = _payload(payload)
            outcome = site_meter_record(
                site=site,
                measured_at=measured_at_parse(data.get("measured_at")),
                current_a=data.get("current_a"),
                power_kw=data.get("power_kw"),
                source=SiteMeterReading.Source.MQTT,
                includes_chargers=data.get("includes_chargers", True),
                now=now,
            )
        except ValidationError as exc:
            return f"refused: {refusal(exc)}"
    return "stored" if outcome.created else "duplicate"


class MeterSubscriber:
    """One MQTT connection that records every meter message it receives, until ``stop``."""

    def __init__(self, *, url: str | None = None, prefix: str | None = None, client_id: str | None = None) -> None:
        self.address = broker_address(url or settings.MQTT_URL)
        self.prefix = prefix or settings.MQTT_TOPIC_PREFIX
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"evp-meters-{uuid.uuid4().hex[:12]}"
        )
        if self.address.username:
            self.client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            self.client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        self.client.reconnect_delay_set(min_delay=MIN_RECONNECT_DELAY_S, max_delay=MAX_RECONNECT_DELAY_S)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            logger.warning("mqtt: broker %s refused the connection: %s", self.address.host, reason)
            return
        logger.info("mqtt: connected to %s:%s", self.address.host, self.address.port)
        client.subscribe(subscription(self.prefix), qos=QOS)  # again after every reconnect

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        if any(r.is_failure for r in reasons):
            logger.error("mqtt: broker refused the subscription to %s: %s", subscription(self.prefix), reasons)
            return
        logger.info("mqtt: subscribed to %s", subscription(self.prefix))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        logger.warning("mqtt: disconnected from %s:%s (%s); reconnecting", self.address.host, self.address.port, reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        close_old_connections()  # a long-lived process: a connection the database dropped is replaced
        try:
            result = meter_message_apply(
                topic=message.topic, payload=bytes(message.payload), prefix=self.prefix, now=timezone.now()
            )
        except Exception:  # the database away, a bug: log it, keep the subscriber alive
            logger.exception("mqtt: %s: message not recorded", message.topic)
            close_old_connections()
            return
        if result in ("stored", "duplicate"):
            logger.debug("mqtt: %s: %s", message.topic, result)
        else:
            logger.warning("mqtt: %s: %s", message.topic, result)

    def run(self) -> None:
        """Connect (retrying with backoff until the broker answers) and record messages until ``stop``."""
        logger.info("mqtt: connecting to %s:%s", self.address.host, self.address.port)
        self.client.connect_async(self.address.host, self.address.port, keepalive=KEEPALIVE_S)
        self.client.loop_forever(retry_first_connection=True)

    def stop(self) -> None:
        self.client.disconnect()
