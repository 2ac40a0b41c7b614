#!/bin/sh
# Bring the schema to head before anything else starts; Alembic takes a lock on PostgreSQL, so an
# API and workers starting together apply each migration once.
set -eu
alembic -c /app/alembic.ini upgrade head
exec "$@"
