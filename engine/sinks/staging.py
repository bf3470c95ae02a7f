"""New partitions filled beside the load's transaction, on connections of their own.

A load's transaction is one PostgreSQL backend: one COPY at a time, then one index build after another.
For children that do not exist yet (``PostgresSink.child_for`` found them missing, under their advisory
lock) this module creates each child as a standalone table on one of ``BICONIC_COPY_STREAMS`` helper
connections, COPYs its rows there, builds its indexes and commits; the load's transaction then only
*attaches* the finished children (the matching indexes are adopted, the bounds ``CHECK`` spares the
validation scan) together with its ledger row. Two backends COPY and sort at once, which is what the second
core is for.

Nothing new is visible through the parent before the load commits: an unattached table is not part of it.
A load killed after a helper committed leaves that standalone table behind; the next load needing the same
child holds the same advisory lock, so it knows no live load owns the table, and drops it first.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from engine.errors import SinkError
from engine.names import quote_ident, shorten
from engine.sinks._partitions import Period

__all__ = ["CHILD", "ORPHAN_SQL", "FreshChildren", "bounds_constraint", "copy_streams"]

#: stands for the child's qualified name in :meth:`FreshChildren.start`'s index statements
CHILD = "\x00child\x00"
#: parts waiting per helper connection (each a piece of one batch): memory stays bounded
QUEUE = 4


def copy_streams() -> int:
    """Helper connections for new partitions (``BICONIC_COPY_STREAMS``, default 2; 1 or 0 = none: new
    children are filled inside the load's own transaction)."""
    try:
        return max(int(os.environ.get("BICONIC_COPY_STREAMS", "2")), 0)
    except ValueError:
        return 2


#: true when ``$1`` is a staged child that was never attached (params: name, name, its bounds constraint)
ORPHAN_SQL = ("SELECT NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1)) AND EXISTS "
              "(SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($2) AND conname = $3)")


def bounds_constraint(child: str) -> str:
    """Name of the ``CHECK`` that states a staged child's range (dropped once it is attached)."""
    return shorten(f"{child}_bounds")


@dataclass
class _Child:
    schema: str
    name: str
    check: str
    created: bool = False


@dataclass
class _Stream:
    """One helper connection and the thread that owns it."""

    conn: Any
    jobs: queue.Queue[Any] = field(default_factory=lambda: queue.Queue(maxsize=QUEUE))
    children: dict[str, _Child] = field(default_factory=dict)
    error: BaseException | None = None
    thread: threading.Thread | None = None


class FreshChildren:
    """The new children of one source partition, spread over the helper connections.

    :meth:`copy` hands a part to the stream that owns its child; :meth:`finish` waits until every stream has
    built its children's indexes and committed, and returns the children to attach; :meth:`abort` rolls back
    what is not committed. The object can be reused for the next source partition after either.
    """

    def __init__(self, sink: Any, streams: int) -> None:
        from engine.sinks.postgres import _wrap  # the sink's error wording, one place

        self._sink = sink
        self._wrap = _wrap
        self._streams: list[_Stream] = []
        self._owner: dict[str, _Stream] = {}
        self._table = ""
        self._time_column = ""
        self._hash_partitions = 0
        self._indexes: list[str] = []
        try:
            import adbc_driver_postgresql.dbapi as pgdbapi

            for _ in range(streams):
                stream = _Stream(conn=pgdbapi.connect(sink.dsn))
                self._streams.append(stream)
        except Exception as exc:
            self.close()
            raise _wrap(exc, "connect", sink.dsn) from None
        for stream in self._streams:
            stream.thread = threading.Thread(target=self._work, args=(stream,), name="biconic-copy", daemon=True)
            stream.thread.start()
            self._run(stream, "SET maintenance_work_mem = '256MB'")

    # --- called by the loading thread -----------------------------------------------------------------------
    def start(self, table: str, time_column: str, hash_partitions: int, index_sql: list[str]) -> None:
        """The parent (qualified) the next children belong to, and its index statements (:data:`CHILD`
        stands for the child)."""
        self._table, self._time_column, self._hash_partitions = table, time_column, hash_partitions
        self._indexes = index_sql

    def copy(self, schema: str, child: str, period: Period, time_type: str, data: pa.Table) -> None:
        stream = self._owner.get(child)
        if stream is None:  # each child stays on one connection: its rows, indexes and commit go together
            stream = min(self._streams, key=lambda s: len(s.children))
            self._owner[child] = stream
            stream.children[child] = _Child(schema=schema, name=child,
                                             check=self._check_sql(period, time_type))
        self._raise(stream)
        stream.jobs.put(("copy", child, data))

    def finish(self) -> None:
        """Every stream indexes its children and commits; raises the first stream's error."""
        done = [threading.Event() for _ in self._streams]
        for stream, event in zip(self._streams, done, strict=True):
            stream.jobs.put(("finish", event))
        for event in done:
            event.wait()
        errors = [s.error for s in self._streams if s.error is not None]
        self._reset()
        if errors:
            raise errors[0]

    def abort(self) -> None:
        """Roll back what the streams have not committed (the load failed)."""
        done = [threading.Event() for _ in self._streams]
        for stream, event in zip(self._streams, done, strict=True):
            stream.jobs.put(("abort", event))
        for event in done:
            event.wait()
        self._reset()

    def close(self) -> None:
        for stream in self._streams:
            if stream.thread is not None and stream.thread.is_alive():
                stream.jobs.put(None)
                stream.thread.join()
            try:
                stream.conn.rollback()
                stream.conn.close()
            except Exception:  # the connection may be gone; the server rolls back anyway
                pass
        self._streams.clear()

    def _reset(self) -> None:
        self._owner.clear()
        for stream in self._streams:
            stream.children.clear()
            stream.error = None

    def _raise(self, stream: _Stream) -> None:
        if stream.error is not None:
            raise stream.error

    def _check_sql(self, period: Period, time_type: str) -> str:
        from engine.sinks.postgres import _bound

        t = quote_ident(self._time_column)
        lo = f"{t} >= {_bound(period.start, time_type)}"
        return f"{lo} AND {t} < {_bound(period.end, time_type)}" if period.end is not None else lo

    def _run(self, stream: _Stream, sql: str) -> None:
        done = threading.Event()
        stream.jobs.put(("sql", sql, done))
        done.wait()
        self._raise(stream)

    # --- on the stream's thread -----------------------------------------------------------------------------
    def _work(self, stream: _Stream) -> None:
        while True:
            job = stream.jobs.get()
            if job is None:
                return
            kind = job[0]
            try:
                if kind == "sql":
                    if stream.error is None:
                        self._execute(stream, job[1])
                elif kind == "copy":
                    if stream.error is None:
                        self._copy(stream, job[1], job[2])
                elif kind == "finish":
                    if stream.error is None:
                        self._finish(stream)
                    else:
                        stream.conn.rollback()
                elif kind == "abort":
                    stream.conn.rollback()
            except BaseException as exc:  # handed to the loading thread
                stream.error = stream.error or exc
                with contextlib.suppress(Exception):
                    stream.conn.rollback()
            finally:
                if kind in ("sql", "finish", "abort"):
                    job[-1].set()

    def _execute(self, stream: _Stream, sql: str) -> None:
        try:
            with stream.conn.cursor() as cur:
                cur.execute(sql)
        except Exception as exc:
            raise self._wrap(exc, sql.split("(")[0].strip()[:60], self._sink.dsn) from None

    def _copy(self, stream: _Stream, child: str, data: pa.Table) -> None:
        from engine.sinks.postgres import CONNECTION_COLUMN, _small_batches

        spec = stream.children[child]
        q = f"{quote_ident(spec.schema)}.{quote_ident(spec.name)}"
        if not spec.created:
            with stream.conn.cursor() as cur:
                cur.execute(f"SELECT to_regclass($1) IS NOT NULL, ({ORPHAN_SQL})", [q, q, bounds_constraint(spec.name)])
                exists, orphan = cur.fetchall()[0]
            if orphan:  # left by a killed load; we hold its advisory lock, so no live load owns it
                self._execute(stream, f"DROP TABLE {q}")
            elif exists:
                raise SinkError(f"{spec.schema}.{spec.name}: a table of that name exists and is not a partition "
                                f"of {self._table}; rename or drop it, then re-run")
            by_hash = f" PARTITION BY HASH ({quote_ident(CONNECTION_COLUMN)})" if self._hash_partitions else ""
            self._execute(stream, f"CREATE TABLE {q} (LIKE {self._table} INCLUDING DEFAULTS, CONSTRAINT "
                                  f"{quote_ident(bounds_constraint(spec.name))} CHECK ({spec.check})){by_hash}")
            for i in range(self._hash_partitions):
                sub = quote_ident(shorten(f"{spec.name}_h{i}"))
                self._execute(stream, f"CREATE TABLE {quote_ident(spec.schema)}.{sub} PARTITION OF {q} "
                                      f"FOR VALUES WITH (MODULUS {self._hash_partitions}, REMAINDER {i})")
            spec.created = True
        try:
            with stream.conn.cursor() as cur:
                cur.adbc_ingest(spec.name, _small_batches(data), mode="append", db_schema_name=spec.schema)
        except Exception as exc:
            raise self._wrap(exc, f"COPY into {spec.schema}.{spec.name}", self._sink.dsn) from None

    def _finish(self, stream: _Stream) -> None:
        for spec in stream.children.values():
            q = f"{quote_ident(spec.schema)}.{quote_ident(spec.name)}"
            for sql in self._indexes:
                self._execute(stream, sql.replace(CHILD, q))
        try:
            stream.conn.commit()
        except Exception as exc:
            raise self._wrap(exc, "commit", self._sink.dsn) from None
