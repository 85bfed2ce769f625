"""The simulated charger reconnects as a real one does when the gateway says "not now"."""

import asyncio
from http import HTTPStatus

from websockets.asyncio.server import serve
from websockets.datastructures import Headers

from chargepoint.simulator.charger import ChargerSpec, SimulatedCharger


def test_a_handshake_put_off_with_503_or_429_is_retried_after_retry_after_and_a_401_ends_it() -> None:
    answers = [
        (HTTPStatus.SERVICE_UNAVAILABLE, "0.05"),
        (HTTPStatus.TOO_MANY_REQUESTS, "0.05"),
        (HTTPStatus.UNAUTHORIZED, None),
    ]
    seen: list[str] = []

    def refuse(connection, request):
        status, retry_after = answers[len(seen)]
        seen.append(request.path)
        response = connection.respond(status, "no\n")
        if retry_after is not None:
            response.headers = Headers([*response.headers.raw_items(), ("Retry-After", retry_after)])
        return response

    async def scenario() -> SimulatedCharger:
        async with serve(lambda ws: ws.wait_closed(), "127.0.0.1", 0, process_request=refuse) as server:
            port = server.sockets[0].getsockname()[1]
            charger = SimulatedCharger(
                ChargerSpec("SIM-RETRY", "secret-password-1", car_kw=7.2), f"ws://127.0.0.1:{port}/ocpp"
            )
            await asyncio.wait_for(charger.run(asyncio.Event()), timeout=10)
            return charger

    charger = asyncio.run(scenario())

    assert seen == ["/ocpp/SIM-RETRY"] * 3
    assert charger.state.deferred == 2
    assert charger.state.refused == "HTTP 401"
