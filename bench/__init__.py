"""`make bench`: the ledger's debits/s and latencies over HTTP and NATS, beside two baselines of the
naive design (a FastAPI + psycopg service and pgbench), on one embedded PostgreSQL and NATS.

Figures depend on the machine: read them as ratios (the table names the machine)."""
