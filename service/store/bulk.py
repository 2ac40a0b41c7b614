"""Bulk row loading inside the caller's transaction, the fastest way each database offers.

PostgreSQL: COPY through psycopg 3 on the very DBAPI connection the SQLAlchemy ``Connection`` holds,
so the rows share its transaction (6-8x faster than executemany, per DESIGN.md). SQLite: one prepared
statement executed for every row (``executemany``), which is what SQLite is fast at. No RETURNING
and no ORM objects: nothing comes back, nothing is tracked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice

from sqlalchemy import Connection, Table, exc

EXECUTEMANY_CHUNK = 20_000


def bulk_insert(conn: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Insert ``rows`` (tuples in ``columns`` order, plain Python values) into ``table``."""
    if conn.dialect.name == "postgresql":
        _copy(conn, table, columns, rows)
    else:
        _executemany(conn, table, columns, rows)


def _copy(conn: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    quote = conn.dialect.identifier_preparer.quote
    statement = "COPY {} ({}) FROM STDIN".format(quote(table.name), ", ".join(quote(c) for c in columns))
    raw = conn.connection.driver_connection
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except dbapi_error as error:
        # Raised as SQLAlchemy raises for its own statements (IntegrityError, OperationalError...),
        # so callers handle one family of database errors whichever path wrote the rows.
        raise exc.DBAPIError.instance(statement, None, error, dbapi_error, dialect=conn.dialect) from error


def _executemany(conn: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    # Positional driver SQL: building a dict per row for Core would cost more than the insert itself.
    quote = conn.dialect.identifier_preparer.quote
    statement = "INSERT INTO {} ({}) VALUES ({})".format(
        quote(table.name), ", ".join(quote(c) for c in columns), ", ".join("?" * len(columns))
    )
    iterator = iter(rows)
    while chunk := list(islice(iterator, EXECUTEMANY_CHUNK)):
        conn.exec_driver_sql(statement, chunk)
