"""With SENTRY_DSN set, an exception in a view reaches Sentry: a local HTTP server stands in for it."""

import gzip
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import ALPHA, start_web_server, stop_web_server

pytestmark = pytest.mark.django_db

WAIT_S = 20


class Envelopes(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        Envelopes.received.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, fmt: str, *args: object) -> None:
        pass


@pytest.fixture
def sentry() -> Iterator[str]:
    """A stand-in for Sentry's ingest on a local port; yields the DSN that points at it."""
    Envelopes.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Envelopes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://publickey@127.0.0.1:{server.server_address[1]}/1"
    server.shutdown()
    server.server_close()


def events() -> list[dict[str, object]]:
    """The event items of the envelopes received: an envelope is a header line, then item header/payload pairs."""
    found = []
    for envelope in Envelopes.received:
        lines = envelope.split(b"\n")[1:]
        for header, payload in zip(lines[::2], lines[1::2], strict=False):
            if json.loads(header).get("type") == "event":
                found.append(json.loads(payload))
    return found


def test_an_exception_in_a_view_is_sent_to_sentry(sentry, django_db_blocker) -> None:
    with django_db_blocker.unblock():
        server, port = start_web_server(
            env={"DJANGO_SETTINGS_MODULE": "tests.evplatform.failing_site_settings", "SENTRY_DSN": sentry}
        )
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/boom", headers={"Host": ALPHA.domain})
        with pytest.raises(urllib.error.HTTPError) as answered:
            urllib.request.urlopen(request, timeout=10)  # noqa: S310 - our own local server
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not events():
            time.sleep(0.2)
    finally:
        stop_web_server(server)

    assert answered.value.code == 500
    event = next(iter(events()), None)
    assert event is not None, f"no event reached the stand-in Sentry in {WAIT_S}s"
    exception = event["exception"]["values"][-1]
    assert (exception["type"], exception["value"]) == ("RuntimeError", "sentry hook probe")
    assert event["request"]["url"].endswith("/boom")
