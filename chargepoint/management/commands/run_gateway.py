"""Run one OCPP gateway instance (several may run at once, on other ports or machines)."""

import asyncio
import logging
import signal
import ssl
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chargepoint.gateway.server import Gateway


class Command(BaseCommand):
    help = "Run the OCPP-J websocket gateway: ws://HOST:PORT/ocpp/<charge_point_id> (ocpp1.6, ocpp2.0.1)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=9000)
        parser.add_argument("--certfile", help="PEM certificate (chain) for wss:// (else TLS ends in front)")
        parser.add_argument("--keyfile", help="PEM private key for --certfile")
        parser.add_argument("--instance-id", help="name in the Redis registry (default: host-pid-random)")
        parser.add_argument("--log-frames", action="store_true", help="log every OCPP frame (the ocpp logger at INFO)")

    def handle(self, *args: Any, **options: Any) -> None:
        context = None
        if options["certfile"]:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(options["certfile"], options["keyfile"])
            except (OSError, ssl.SSLError) as exc:
                raise CommandError(f"--certfile/--keyfile: {exc}") from exc
        logging.getLogger("ocpp").setLevel(logging.INFO if options["log_frames"] else logging.WARNING)
        logging.getLogger("websockets").setLevel(logging.WARNING)
        gateway = Gateway(
            host=options["host"], port=options["port"], instance_id=options["instance_id"], ssl_context=context
        )
        try:
            asyncio.run(self._serve(gateway))
        except OSError as exc:
            raise CommandError(f"--host/--port: cannot listen on {options['host']}:{options['port']}: {exc}") from exc

    async def _serve(self, gateway: Gateway) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await gateway.run(stop)
