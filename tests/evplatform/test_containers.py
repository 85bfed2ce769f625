"""The container files (docker/, .dockerignore), read as Docker would: no Docker needed here."""

import re
from pathlib import Path

import yaml
from django.conf import settings

BASE = Path(settings.BASE_DIR)
APP_SERVICES = ("web", "gateway", "worker", "balancer", "notifier", "mqtt", "beat")


def compose() -> dict:
    return yaml.safe_load((BASE / "docker" / "compose.yml").read_text())


def seconds(duration: str) -> float:
    """A compose duration ("1m30s", "40s") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s)", duration)
    assert parts, duration
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def gateway_telemetry_drain_s() -> float:
    """How long the gateway publishes the telemetry it still holds after closing its connections."""
    source = (BASE / "chargepoint" / "gateway" / "server.py").read_text()
    found = re.search(r"telemetry\.drain\(timeout_s=(\d+(?:\.\d+)?)\)", source)
    assert found, "the gateway's shutdown drain moved: update this test"
    return float(found.group(1))


def test_every_app_service_has_time_to_stop_cleanly() -> None:
    services = compose()["services"]
    for name in APP_SERVICES:
        assert "stop_grace_period" in services[name], name
    gateway = services["gateway"]
    pre_close_drain_s = float(gateway["environment"].get("GATEWAY_DRAIN_S", 0))
    assert seconds(gateway["stop_grace_period"]) > pre_close_drain_s + gateway_telemetry_drain_s()
    # A warm shutdown lets the tasks under way end (each within CELERY_TASK_TIME_LIMIT).
    assert seconds(services["worker"]["stop_grace_period"]) > settings.CELERY_TASK_TIME_LIMIT
    assert seconds(services["balancer"]["stop_grace_period"]) > settings.BALANCING_PUSH_TIMEOUT_S
    assert seconds(services["notifier"]["stop_grace_period"]) > max(settings.WEBHOOK_TIMEOUT_S, settings.EMAIL_TIMEOUT)
    web = services["web"]
    graceful_s = float(web["command"][web["command"].index("--graceful-timeout") + 1])
    assert seconds(web["stop_grace_period"]) > graceful_s


def test_secrets_come_only_from_the_environment() -> None:
    text = (BASE / "docker" / "compose.yml").read_text()
    for variable in ("SECRET_KEY", "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "EMAIL_URL"):
        uses = re.findall(r"\$\{" + variable + r"(:?[-?=+]?)", text)
        assert uses, variable
        assert set(uses) == {":?"}, f"{variable} must be required (${{{variable}:?...}}), not defaulted"
    assert not re.search(r"\$\{[A-Z_]*(PASSWORD|SECRET|KEY)[A-Z_]*:?-", text)
    app_env = compose()["x-app"]["environment"]
    for cookie in ("SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE"):
        assert cookie not in app_env  # production's default: secure


def test_browsers_and_chargers_come_in_over_tls_through_the_proxy() -> None:
    services = compose()["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"proxy"}
    assert services["proxy"]["image"].startswith("caddy:2")
    caddyfile = (BASE / "docker" / "Caddyfile").read_text()
    assert re.search(r"@ocpp path /ocpp/\*\s+reverse_proxy @ocpp gateway:9000", caddyfile)
    assert "reverse_proxy web:8000" in caddyfile
    assert "tls {$CADDY_TLS:internal}" in caddyfile
    assert compose()["x-app"]["environment"]["TRUSTED_PROXY_COUNT"] == "1"
    healthcheck = " ".join(services["web"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/healthz" in healthcheck


def test_the_build_context_leaves_out_local_state_and_secrets() -> None:
    ignored = set((BASE / ".dockerignore").read_text().split())
    assert {".venv", ".run", ".git", "services.env", ".env", "test-artifacts", "bench/results", "*.pyc"} <= ignored
