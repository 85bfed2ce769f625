"""`make run` starts the MQTT meter subscriber only when a broker answers, and says so."""

import socket
import sys
from pathlib import Path

import pytest

from evplatform.runner import Service, Stack, banner, mqtt_service, run_processes

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stack() -> Stack:
    return Stack(
        Service("PostgreSQL", "postgres://postgres@127.0.0.1:5432/evplatform", "default"),
        Service("Redis", "redis://127.0.0.1:6379/0", "default"),
        Service("Broker", "amqp://guest:guest@127.0.0.1:5672//", "default"),
    )


def test_the_machines_mosquitto_is_found_and_named_in_the_banner() -> None:
    mqtt = mqtt_service({})
    assert mqtt is not None
    assert (mqtt.url, mqtt.how) == ("mqtt://127.0.0.1:1883", "default")
    assert "site meters (run_mqtt_meters)" in banner(stack(), mqtt)


def test_without_a_broker_the_banner_says_the_subscriber_is_not_started() -> None:
    url = f"mqtt://meter:secret@127.0.0.1:{closed_port()}"
    assert mqtt_service({"MQTT_URL": url}) is None
    text = banner(stack(), None, url)
    assert "run_mqtt_meters not started" in text
    assert "secret" not in text


def test_a_skipped_procfile_process_is_not_started(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        f"web: {sys.executable} -c \"print('web-ran')\"\nmqtt: {sys.executable} -c \"print('mqtt-ran')\"\n"
    )
    assert run_processes({"PATH": "/usr/bin:/bin"}, procfile, skip=frozenset({"mqtt"})) == 0
    out = capfd.readouterr().out
    assert "web-ran" in out
    assert "mqtt-ran" not in out
