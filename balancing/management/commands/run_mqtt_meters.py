"""Subscribe to the site meters' MQTT topics and record their readings (a long-running process)."""

import signal
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from balancing.mqtt import MeterSubscriber, subscription


class Command(BaseCommand):
    help = (
        "Record site meter readings published on <MQTT_TOPIC_PREFIX>/<tenant schema>/<site slug>/meter "
        "(JSON like the REST API's body); reconnects with backoff when the broker goes away."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", help="broker, e.g. mqtt://user:password@127.0.0.1:1883 (default: MQTT_URL)")
        parser.add_argument("--prefix", help="topic prefix (default: MQTT_TOPIC_PREFIX)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            subscriber = MeterSubscriber(url=options["url"], prefix=options["prefix"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc

        def stop(signum: int, frame: FrameType | None) -> None:
            subscriber.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        address = subscriber.address
        self.stdout.write(f"MQTT meters: {address.host}:{address.port} {subscription(subscriber.prefix)}")
        self.stdout.flush()
        subscriber.run()
        self.stdout.write("MQTT meters: stopped")
