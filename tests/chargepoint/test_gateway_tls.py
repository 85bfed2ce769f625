"""OCPP security profile 2: ``run_gateway --certfile/--keyfile`` serves wss:// with Basic auth.

A self-signed certificate made for the test (the ``openssl`` CLI); the charger trusts it as
its CA. A plain ws:// client on the TLS port fails at once and the gateway keeps serving.
"""

import asyncio
import json
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import InvalidHandshake, InvalidStatus

from tests.chargepoint.conftest import PASSWORD, GatewayProcess, basic

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI"),
]

BOOT = '[2,"b1","BootNotification",{"chargePointVendor":"ACME","chargePointModel":"TLS-1"}]'


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            str(shutil.which("openssl")), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls_gateway(certificate, gw_fleet, django_db_blocker):
    cert, key = certificate
    with django_db_blocker.unblock():
        gateway = GatewayProcess(args=["--certfile", str(cert), "--keyfile", str(key)])
    yield gateway
    gateway.stop()


def trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


async def connect(url: str, cp: str, password: str, context: ssl.SSLContext | None) -> websockets.ClientConnection:
    return await websockets.connect(
        f"{url}/{cp}",
        subprotocols=[websockets.Subprotocol("ocpp1.6")],
        additional_headers=basic(cp, password),
        ssl=context,
        open_timeout=10,
        ping_interval=None,
    )


def test_a_charger_boots_over_wss_with_basic_auth(tls_gateway, certificate, gw_fleet, bg) -> None:
    cp = gw_fleet.chargers_16[2]

    async def boot() -> tuple[str | None, list]:
        ws = await connect(tls_gateway.url("wss"), cp, PASSWORD, trusting(certificate[0]))
        try:
            await ws.send(BOOT)
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if frame[0] == 3:
                    return ws.subprotocol, frame
                await ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))  # the platform's own calls
        finally:
            await ws.close()

    subprotocol, answer = bg.run(boot())

    assert subprotocol == "ocpp1.6"
    assert answer[1] == "b1"
    assert answer[2]["status"] == "Accepted"


def test_a_wrong_password_over_wss_is_refused_with_401(tls_gateway, certificate, gw_fleet, bg) -> None:
    cp = gw_fleet.chargers_16[3]

    async def refused() -> int:
        try:
            await connect(tls_gateway.url("wss"), cp, "not-the-password", trusting(certificate[0]))
        except InvalidStatus as exc:
            return exc.response.status_code
        raise AssertionError("admitted with a wrong password")

    assert bg.run(refused()) == 401


def test_plain_ws_on_the_tls_port_fails_at_once_and_the_gateway_keeps_serving(
    tls_gateway, certificate, gw_fleet, bg
) -> None:
    cp = gw_fleet.chargers_16[2]

    async def plain() -> tuple[type[Exception], float]:
        started = time.monotonic()
        try:
            await connect(tls_gateway.url("ws"), cp, PASSWORD, None)
        except (InvalidHandshake, OSError, EOFError) as exc:
            return type(exc), time.monotonic() - started
        raise AssertionError("a plain ws:// connection was accepted on the TLS port")

    async def still_serving() -> bool:
        ws = await connect(tls_gateway.url("wss"), cp, PASSWORD, trusting(certificate[0]))
        await ws.close()
        return True

    error, took_s = bg.run(plain())

    assert took_s < 5
    assert bg.run(still_serving())
    assert tls_gateway.process.poll() is None
    assert "Traceback" not in tls_gateway.log()
    assert issubclass(error, InvalidHandshake | OSError | EOFError)
