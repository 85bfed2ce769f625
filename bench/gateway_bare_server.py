"""The yardstick for ``gateway_bench``: a bare ``ocpp``-library 1.6 server that only acknowledges.

Run:  .venv/bin/python bench/gateway_bare_server.py PORT

No auth, no validation beyond the library's defaults, no hand-off: what one process of the
library and websockets does per MeterValues on this machine. Listens on 127.0.0.1 only.
"""

import asyncio
import contextlib
import sys
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action, RegistrationStatus


class BareChargePoint(ChargePoint):
    @on(Action.boot_notification)
    def on_boot(self, **kw: Any) -> Any:
        return call_result.BootNotification(
            current_time=datetime.now(UTC).isoformat(), interval=300, status=RegistrationStatus.accepted
        )

    @on(Action.meter_values)
    def on_meter_values(self, **kw: Any) -> Any:
        return call_result.MeterValues()

    @on(Action.heartbeat)
    def on_heartbeat(self) -> Any:
        return call_result.Heartbeat(current_time=datetime.now(UTC).isoformat())


async def handle(websocket: Any) -> None:
    cp = BareChargePoint(websocket.request.path.rsplit("/", 1)[-1], websocket)
    with contextlib.suppress(websockets.ConnectionClosed):
        await cp.start()


async def main(port: int) -> None:
    async with websockets.serve(
        handle, "127.0.0.1", port, subprotocols=[websockets.Subprotocol("ocpp1.6")], compression=None, backlog=2048
    ):
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
