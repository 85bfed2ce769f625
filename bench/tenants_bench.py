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
   behaviour, every site requested by one task. Each tick gets freshly started workers and an
   empty queue: workers holding the last tick's hour-long ETA messages would distort the next.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
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


def purge_balancing_queue() -> None:
    from evplatform.celery import app

    queue = app.amqp.queues[f"{PREFIX}balancing"]
    with app.connection_for_write() as broker:
        channel = broker.channel()
        queue(channel).declare()  # the workers of the first tick declare it otherwise
        channel.queue_purge(queue.name)


def start_workers(count: int, env: dict[str, str]) -> list[subprocess.Popen[str]]:
    """``count`` balancer workers on the bench's queue, returned once each says it is ready."""
    workers = []
    ready = []
    for n in range(count):
        command = [sys.executable, "-m", "celery", "-A", "evplatform", "worker", "-P", "threads"]
        command += ["--concurrency=8", "-Q", f"{PREFIX}balancing", f"--hostname=scalebench{n}-{os.getpid()}@%h"]
        command += ["--loglevel=INFO", "--without-gossip", "--without-mingle"]
        worker = subprocess.Popen(  # noqa: S603 - our own worker
            command, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        event = threading.Event()

        def pump(worker: subprocess.Popen[str] = worker, event: threading.Event = event) -> None:
            for line in worker.stdout or ():
                if " ready." in line:
                    event.set()

        threading.Thread(target=pump, daemon=True).start()
        workers.append(worker)
        ready.append(event)
    for event in ready:
        if not event.wait(120):
            stop_workers(workers)
            raise SystemExit("a bench worker did not start within 120 s")
    return workers


def stop_workers(workers: list[subprocess.Popen[str]]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()


def sweep_tick(expected: int) -> float:
    """Send the sweep once; seconds until ``expected`` sites had their rebalance request made."""
    from balancing.tasks import sweep_all_sites
    from evplatform.redis import get_redis

    redis = get_redis()
    pattern = f"evp{PREFIX}:*:rebalance-pending:*"

    def pending() -> list[bytes]:
        return list(redis.scan_iter(match=pattern, count=5000))

    keys = pending()
    if keys:
        redis.delete(*keys)
    started = time.perf_counter()
    sweep_all_sites.delay()
    while len(pending()) < expected:
        if time.perf_counter() - started > 300:
            raise SystemExit(f"only {len(pending())} of {expected} sites requested after 300 s")
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    redis.delete(*pending())
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline", action="store_true", help="also time django-tenants' migrate of every schema")
    parser.add_argument(
        "--chunks",
        default="50,1000000",
        help="TENANT_FANOUT_CHUNK_SIZE values to time the sweep with (comma-separated)",
    )
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
    for chunk in args.chunks.split(","):
        label = f"chunks of {chunk} tenants" if int(chunk) < args.tenants else "one task for all tenants (as before)"
        ticks = []
        for _ in range(args.repeats):  # fresh workers each time: none holds the last tick's requests
            purge_balancing_queue()
            env = {"BALANCING_COALESCE_SECONDS": "3600", "TENANT_FANOUT_CHUNK_SIZE": chunk}
            workers = start_workers(args.workers, env)
            try:
                ticks.append(sweep_tick(expected))
            finally:
                stop_workers(workers)
        purge_balancing_queue()
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
