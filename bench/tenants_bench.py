"""Benchmark: many tenants. `migrate_schemas` with nothing to do, and one balancing sweep tick.

Run:  .venv/bin/python bench/tenants_bench.py [--tenants 200] [--sites 5] [--baseline]

Uses its own database (the configured one's name + ``_scale_bench``, created here and kept
between runs so the tenants are made once) and its own queue prefix (``CELERY_QUEUE_PREFIX`` +
``scalebench.``). Tenants come from ``tenants_create_empty`` (the first migrated, the others
cloned from it), each with ``--sites`` sites and no chargers.

1. ``manage.py migrate_schemas --noinput`` with every schema up to date, wall time of the whole
   command (Django start, public schema, the check of every tenant schema); ``--baseline`` also
   times ``--all-schemas``, django-tenants' own run of `migrate` in every schema.
2. A sweep tick: ``sweep_all_sites`` is sent as beat sends it, and the time is taken until every
   site's rebalance request has been made (its coalescing key is in Redis; the request is
   published right after). The workers are the Procfile's balancer (``-P threads
   --concurrency=8``), here two of them; ``BALANCING_COALESCE_SECONDS`` is set to an hour for
   them so the requested runs wait as ETA messages instead of running during the measurement.
   The same tick with ``TENANT_FANOUT_CHUNK_SIZE`` above the tenant count is the earlier
   behaviour, every site requested by one task.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evplatform.settings.local")
BASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/evplatform")
DB_NAME = f"{urlsplit(BASE_URL).path.lstrip('/') or 'evplatform'}_scale_bench"
os.environ["DATABASE_URL"] = urlunsplit(urlsplit(BASE_URL)._replace(path=f"/{DB_NAME}"))
os.environ["CELERY_QUEUE_PREFIX"] = f"{os.environ.get('CELERY_QUEUE_PREFIX', '')}scalebench."
PREFIX = os.environ["CELERY_QUEUE_PREFIX"]


def manage(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)  # noqa: S603
    return time.perf_counter() - started


def start_workers(count: int, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    workers = []
    for n in range(count):
        command = [sys.executable, "-m", "celery", "-A", "evplatform", "worker", "-P", "threads"]
        command += ["--concurrency=8", "-Q", f"{PREFIX}balancing", f"--hostname=scalebench{n}-{os.getpid()}@%h"]
        command += ["--loglevel=WARNING", "--without-gossip", "--without-mingle", "--purge"]
        workers.append(subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}))  # noqa: S603
    time.sleep(8)  # started and consuming
    return workers


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()


def sweep_ticks(expected: int, repeats: int) -> list[float]:
    """Send the sweep ``repeats`` times; seconds until ``expected`` sites had their request made, each."""
    from balancing.tasks import sweep_all_sites
    from evplatform.redis import get_redis

    redis = get_redis()
    pattern = f"evp{PREFIX}:*:rebalance-pending:*"

    def pending() -> list[bytes]:
        return list(redis.scan_iter(match=pattern, count=5000))

    timings = []
    for _ in range(repeats):
        keys = pending()
        if keys:
            redis.delete(*keys)
        started = time.perf_counter()
        sweep_all_sites.delay()
        while len(pending()) < expected:
            if time.perf_counter() - started > 300:
                raise SystemExit(f"only {len(pending())} of {expected} sites requested after 300 s")
            time.sleep(0.01)
        timings.append(time.perf_counter() - started)
    keys = pending()
    if keys:
        redis.delete(*keys)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline", action="store_true", help="also time django-tenants' migrate of every schema")
    args = parser.parse_args()

    from evplatform.bootstrap import ensure_database

    ensure_database(os.environ["DATABASE_URL"])
    print(f"preparing {DB_NAME}: {args.tenants} tenants x {args.sites} sites ...", flush=True)
    manage("migrate_schemas", "--noinput", "--shared")
    import django

    django.setup()
    from django_tenants.utils import tenant_context

    from balancing.models import Site
    from tenants.services import tenants_create_empty

    started = time.perf_counter()
    tenants = tenants_create_empty(prefix="scale", count=args.tenants)
    print(f"  tenants ready in {time.perf_counter() - started:.0f} s", flush=True)
    for tenant in tenants:
        with tenant_context(tenant):
            have = Site.objects.count()
            Site.objects.bulk_create(
                Site(slug=f"site-{n}", name=f"Site {n}", limit_a=Decimal("63")) for n in range(have, args.sites)
            )

    runs = [manage("migrate_schemas", "--noinput") for _ in range(args.repeats)]
    print(f"migrate_schemas, {args.tenants} tenant schemas up to date (whole command, {args.repeats} runs):")
    print(f"  median {statistics.median(runs):.1f} s  (runs: {', '.join(f'{r:.1f}' for r in runs)})", flush=True)
    if args.baseline:
        baseline = manage("migrate_schemas", "--noinput", "--all-schemas")
        print(f"  django-tenants' run of migrate in every schema (--all-schemas, standard executor): {baseline:.1f} s")

    expected = args.tenants * args.sites
    for label, chunk in (("chunks of 50 tenants", "50"), ("one task for all tenants (before)", "1000000")):
        workers = start_workers(args.workers, {"BALANCING_COALESCE_SECONDS": "3600", "TENANT_FANOUT_CHUNK_SIZE": chunk})
        try:
            ticks = sweep_ticks(expected, args.repeats)
        finally:
            stop_workers(workers)
        print(f"sweep tick, {expected} sites, {label}, {args.workers} balancer workers x 8 threads:")
        print(f"  median {statistics.median(ticks):.2f} s  (runs: {', '.join(f'{t:.2f}' for t in ticks)})", flush=True)

    from evplatform.celery import app

    with app.connection_for_write() as broker:
        channel = broker.channel()
        for queue in ("balancing", "telemetry", "reports"):
            channel.queue_delete(f"{PREFIX}{queue}")
        channel.exchange_delete(f"{PREFIX}evplatform")


if __name__ == "__main__":
    main()
