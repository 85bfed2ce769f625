"""Redis key names shared by the gateway and the command senders (``chargepoint.commands``).

Schema: none (Redis). Nothing under these keys must survive a Redis restart: the registry is
rebuilt by the gateways' heartbeats and reconnecting chargers, a lost command is a Timeout the
sender has recorded in PostgreSQL.
"""

import hashlib

from django.conf import settings


def _prefix() -> str:
    # The deployment prefix keeps the tests and a running `make run` apart on one Redis.
    return f"evp:{settings.CELERY_QUEUE_PREFIX}gw:"


def instance_key(instance_id: str) -> str:
    """Alive while the instance heartbeats (value: its address)."""
    return f"{_prefix()}instance:{instance_id}"


def charger_key(charge_point_id: str) -> str:
    """Which instance holds the charger's connection (ids compare without case)."""
    return f"{_prefix()}cp:{charge_point_id.lower()}"


def command_stream_key(instance_id: str) -> str:
    """The instance's inbox: one stream entry per command."""
    return f"{_prefix()}cmd:{instance_id}"


def start_key(schema_name: str, charge_point_id: str, start: tuple[object, ...]) -> str:
    """The transactionId a StartTransaction got, for a retry that reaches another instance."""
    digest = hashlib.sha256(repr((schema_name, charge_point_id.lower(), *start)).encode()).hexdigest()[:32]
    return f"{_prefix()}start:{digest}"


def reply_key(batch_id: str) -> str:
    """Where the gateways push the answers to one batch of commands."""
    return f"{_prefix()}reply:{batch_id}"
