"""Celery's Django fix-up, with database connections kept across tasks. Schema: any (connections only).

Celery's own fix-up (``celery.fixups.django``) closes every database connection before and
after each task, whatever ``CONN_MAX_AGE`` says: each task then pays a new PostgreSQL
connection (TCP, authentication, a backend process), a few milliseconds, which is most of a
small task such as a rebalance request or a heartbeat, and at many tasks a second a load of
its own on the server. Here a worker treats tasks as Django treats requests: a connection is
kept until it is ``CONN_MAX_AGE`` old (``DB_CONN_MAX_AGE``, 60 s), and with
``CONN_HEALTH_CHECKS`` the first query of the next task checks it first, so one that went away
(a restarted server or PgBouncer) is replaced rather than failing the task.

A connection is closed after a task all the same when the task left it in a transaction or
saw a database error in it: session state such as a site's advisory lock, released in a
``finally`` that may itself have failed, must not outlive the task on a connection the next
one reuses. Which schema a task reads is django-tenants' ``search_path``, sent again whenever
tenant-schemas-celery switches the connection to the task's schema (with
``TENANT_LIMIT_SET_CALLS`` once per switch, and again after a rollback or a new connection), so a
reused connection never carries the last task's tenant.

A forked pool process still closes what it inherited from the parent (Celery's
``on_worker_process_init``, unchanged).
"""

import os
from typing import Any

from celery import Celery
from celery.fixups import django as celery_django
from celery.fixups.django import DjangoFixup

# Celery's class; celery-types' stubs do not list it yet.
DjangoWorkerFixup: Any = celery_django.DjangoWorkerFixup  # type: ignore[attr-defined]


class ConnectionReusingWorkerFixup(DjangoWorkerFixup):
    """Before and after each task: close only the connections that are old, broken or dirty."""

    def install(self) -> Any:
        installed = super().install()
        # What the worker opened while starting (checks, imports) is closed, as Celery does, so a
        # forked pool process inherits no connection and the parent keeps none idle.
        self._close_database()
        return installed

    def close_database(self, **kwargs: Any) -> None:
        for conn in self._db.connections.all(initialized_only=True):
            if conn.connection is None:
                continue
            try:
                if conn.errors_occurred or conn.in_atomic_block:
                    conn.close()
                else:
                    # CONN_MAX_AGE, the autocommit state and (lazily, at the next query) health.
                    conn.close_if_unusable_or_obsolete()
            except self.interface_errors:
                pass
            except self.DatabaseError as exc:  # as Celery's: a connection that is gone already is fine
                if "closed" not in str(exc) and "not connected" not in str(exc):
                    raise


class ConnectionReusingFixup(DjangoFixup):
    """Celery's Django fix-up whose worker part is ``ConnectionReusingWorkerFixup``."""

    _worker_fixup: Any

    @property
    def worker_fixup(self) -> Any:
        if self._worker_fixup is None:
            self._worker_fixup = ConnectionReusingWorkerFixup(self.app)
        return self._worker_fixup

    @worker_fixup.setter
    def worker_fixup(self, value: Any) -> None:
        self._worker_fixup = value


def fixup(app: Celery, env: str = "DJANGO_SETTINGS_MODULE") -> DjangoFixup | None:
    """Install the fix-up when Django is configured, as Celery's built-in one does (the app names this one instead)."""
    if not os.environ.get(env):
        return None
    installed = ConnectionReusingFixup(app)
    installed.install()
    return installed
