"""A real OpenID Connect provider (npm oidc-provider, tests/oidc/provider.mjs) and a web server that knows its secret.

`make test` installs the provider (`npm ci --prefix tests/oidc`); by hand run that once first.
"""

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

from bench.tcpproxy import free_port
from tests.conftest import ALPHA, start_web_server, stop_web_server

OIDC_DIR = Path(settings.BASE_DIR) / "tests" / "oidc"
PROVIDER_SLUG = "test-idp"
CLIENT_ID = "evplatform-alpha"
CLIENT_SECRET = "oidc-test-client-secret-2026"
SECRET_ENV = "OIDC_SECRET_TEST_IDP"
START_SECONDS = 30


@dataclass(frozen=True)
class OidcProvider:
    issuer: str
    client_id: str
    client_secret: str


def start_oidc_provider(*, redirect_uris: list[str], log_path: Path) -> tuple[subprocess.Popen[bytes], OidcProvider]:
    """Start tests/oidc/provider.mjs on a free loopback port; return it once its discovery document answers."""
    node = shutil.which("node")
    assert node, "the SSO tests run an OpenID Connect provider on Node.js 20.19+ (apt-get install nodejs)"
    assert (OIDC_DIR / "node_modules" / "oidc-provider").is_dir(), "run `npm ci --prefix tests/oidc` (make test does)"
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "OIDC_PORT": str(port),
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "OIDC_REDIRECT_URIS": ",".join(redirect_uris),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen([node, "provider.mjs"], cwd=OIDC_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration", timeout=2) as response:  # noqa: S310 - our own local provider
                assert json.load(response)["issuer"] == issuer
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail(f"the OpenID Connect provider did not start:\n{log_path.read_text()}")
            time.sleep(0.2)
    return process, OidcProvider(issuer=issuer, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@dataclass(frozen=True)
class SsoStack:
    web_port: str
    provider: OidcProvider

    @property
    def base_url(self) -> str:
        return f"http://{ALPHA.domain}:{self.web_port}"


@pytest.fixture(scope="module")
def sso_stack(django_db_setup: None, django_db_blocker, tmp_path_factory) -> Iterator[SsoStack]:
    """The web process (with the client secret in its environment, as production keeps it) and the
    provider, whose one client may return to alpha's callback URL on that server."""
    with django_db_blocker.unblock():
        server, port = start_web_server(env={SECRET_ENV: CLIENT_SECRET})
    callback = f"http://{ALPHA.domain}:{port}/accounts/oidc/{PROVIDER_SLUG}/login/callback/"
    try:
        process, provider = start_oidc_provider(
            redirect_uris=[callback], log_path=tmp_path_factory.mktemp("oidc") / "provider.log"
        )
    except BaseException:
        stop_web_server(server)
        raise
    yield SsoStack(web_port=port, provider=provider)
    stop_process(process)
    stop_web_server(server)
