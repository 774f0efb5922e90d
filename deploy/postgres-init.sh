#!/bin/sh
# compose: runs deploy/postgres-init.sql once, when the data directory is new (the postgres image runs
# /docker-entrypoint-initdb.d/ then, as POSTGRES_USER, a superuser), each role's password taken from this
# container's environment (DB_PASSWORD_<SERVICE>, as deploy/compose.yaml passes them). No `exec` and no
# `set -e`: the image sources a script it finds not executable, and either would act on its own shell.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v identity_password="${DB_PASSWORD_IDENTITY:?}" \
  -v ledger_password="${DB_PASSWORD_LEDGER:?}" \
  -v payments_password="${DB_PASSWORD_PAYMENTS:?}" \
  -v media_password="${DB_PASSWORD_MEDIA:?}" \
  -v projections_password="${DB_PASSWORD_PROJECTIONS:?}" \
  -f /etc/creditstream/postgres-init.sql || exit 1
