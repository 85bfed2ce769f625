"""Create the configured PostgreSQL database if it does not exist yet.

``python -m evplatform.bootstrap`` runs before migrations in `make run` and in the container
entry point: Django cannot connect to a database that is not there to create it. It waits a
little for the server (containers start in any order) and says clearly what is wrong.
"""

import sys
import time
from typing import Any
from urllib.parse import unquote

import environ
import psycopg
from psycopg import sql

WAIT_SECONDS = 30


def ensure_database(url: str, *, wait_seconds: float = WAIT_SECONDS) -> bool:
    """Create the database named in ``url`` if missing; True if it was created."""
    config = environ.Env.db_url_config(url)
    name = config["NAME"]
    params: dict[str, Any] = {
        "host": unquote(config.get("HOST") or "") or None,
        "port": config.get("PORT") or None,
        "user": config.get("USER") or None,
        "password": config.get("PASSWORD") or None,
    }
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            with psycopg.connect(dbname="postgres", autocommit=True, connect_timeout=3, **params) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
                if exists:
                    return False
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                return True
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"PostgreSQL at {params['host'] or 'the local socket'}:{params['port'] or 5432} does not answer "
                    f"({exc}).\nStart it (see README, 'Services') or set DATABASE_URL."
                ) from None
            time.sleep(1)


def main() -> None:
    from evplatform.settings.base import DATABASE_URL as url

    created = ensure_database(url)
    name = environ.Env.db_url_config(url)["NAME"]
    print(f"database {name}: {'created' if created else 'exists'}", file=sys.stderr)


if __name__ == "__main__":
    main()
