#!/bin/sh
# Container entry point. With MIGRATE=1 (the compose `migrate` service) it creates the database
# if needed and migrates the public and every tenant schema; otherwise it runs the command.
set -eu
# Prometheus multiprocess mode: gunicorn's workers and a prefork worker's children each write
# their metrics here and /metrics (or WORKER_METRICS_PORT) adds them up; emptied at every start,
# so a restarted container does not count a previous run's processes (README, "Operations").
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-/tmp/evp-metrics}"
rm -rf "$PROMETHEUS_MULTIPROC_DIR"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
if [ "${MIGRATE:-0}" = "1" ]; then
    python -m evplatform.bootstrap
    python manage.py migrate_schemas --noinput
    python manage.py setup_platform
fi
exec "$@"
