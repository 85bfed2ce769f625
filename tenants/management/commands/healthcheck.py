"""Docker HEALTHCHECK of a web, worker or beat container: exit 0 when healthy, 1 when not.

worker and beat read their liveness file (``evplatform.health``), no broker round trip, unlike
`celery inspect ping`; web GETs its ``/healthz``.
"""

import urllib.request
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from evplatform.health import liveness_check

# Missed writes a worker may have before it counts as dead (the file is rewritten every interval).
WORKER_MISSED_WRITES = 3
BEAT_MISSED_TICKS = 4
MIN_MAX_AGE_S = 30.0


class Command(BaseCommand):
    help = "Exit 0 if this container's web, worker or beat process is alive, 1 if not (a Docker HEALTHCHECK)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", choices=("web", "worker", "beat"))
        parser.add_argument("--name", help="worker: its node name (celery@host); default: the newest worker file")
        parser.add_argument(
            "--max-age",
            type=float,
            help="seconds a liveness file may be old (worker: 3 intervals, beat: 4 checks; at least 30)",
        )
        parser.add_argument("--url", default="http://127.0.0.1:8000/healthz", help="web: the URL to GET")
        parser.add_argument("--timeout", type=float, default=3.0, help="web: seconds to wait (3)")

    def handle(self, *args: Any, **options: Any) -> None:
        kind = options["kind"]
        if kind == "web":
            ok, message = self._web(options["url"], options["timeout"])
        else:
            max_age_s = options["max_age"] or self._max_age_s(kind)
            ok, message = liveness_check(kind, max_age_s=max_age_s, name=options["name"])
        if not ok:
            raise CommandError(f"{kind} unhealthy: {message}", returncode=1)
        self.stdout.write(f"{kind} healthy: {message}")

    @staticmethod
    def _max_age_s(kind: str) -> float:
        if kind == "worker":
            return max(MIN_MAX_AGE_S, WORKER_MISSED_WRITES * float(settings.HEALTHCHECK_INTERVAL_S))
        return max(MIN_MAX_AGE_S, BEAT_MISSED_TICKS * float(settings.BEAT_LEADER_CHECK_S))

    @staticmethod
    def _web(url: str, timeout_s: float) -> tuple[bool, str]:
        if not url.startswith(("http://", "https://")):
            return False, f"not an HTTP URL: {url}"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - checked above
                return response.status == 200, f"{url} answered {response.status}"
        except OSError as exc:
            return False, f"{url}: {exc}"
