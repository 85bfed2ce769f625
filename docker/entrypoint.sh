#!/bin/sh
# Container entry point. With MIGRATE=1 (the compose `migrate` service) it creates the database
# if needed and migrates the public and every tenant schema; otherwise it runs the command.
set -eu
if [ "${MIGRATE:-0}" = "1" ]; then
    python -m evplatform.bootstrap
    python manage.py migrate_schemas --noinput
    python manage.py setup_platform
fi
exec "$@"
