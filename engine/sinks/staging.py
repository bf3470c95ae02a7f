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
#: how long a helper waits for a lock before the load gives up (retryably)
LOCK_TIMEOUT = "60s"
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


#: true when ``$1`` is still the table of oid ``$2``, unattached and carrying its bounds check ``$3``
_UNATTACHED_OWN_SQL = (
    "SELECT coalesce(to_regclass($1)::oid::bigint = $2, false) "
    "AND NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid::bigint = $2) "
    "AND EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid::bigint = $2 AND conname = $3)")


def bounds_constraint(child: str) -> str:
    """Name of the ``CHECK`` that states a staged child's range (dropped once it is attached)."""
    return shorten(f"{child}_bounds")


@dataclass
class _Child:
    schema: str
    name: str
    check: str
    #: the table's oid once created
    oid: int = 0


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

    :meth:`copy` hands a part to the stream that owns its child; :meth:`finish` has every stream build its
    children's indexes and, only when all succeeded, commit; :meth:`settled` (the load committed) forgets
    them; :meth:`abort` (the load failed, its transaction already rolled back) rolls back what is not
    committed and drops what was. The object is reused for the job's next source partition.
    """

    def __init__(self, sink: Any, streams: int) -> None:
        from engine.sinks.postgres import _wrap  # the sink's error wording, one place

        self._sink = sink
        self._wrap = _wrap
        self._streams: list[_Stream] = []
        self._owner: dict[str, _Stream] = {}
        #: (schema, child, oid) committed by the streams and not attached by a committed load yet
        self._committed: list[tuple[str, str, int]] = []
        self._table = ""
        self._time_column = ""
        self._hash_partitions = 0
        self._indexes: list[str] = []
        try:
            import adbc_driver_postgresql.dbapi as pgdbapi

            for _ in range(streams):
                stream = _Stream(conn=pgdbapi.connect(sink.dsn))
                self._streams.append(stream)
                with stream.conn.cursor() as cur:
                    # a helper waiting for a lock that waits for the load's own transaction is a cycle
                    # PostgreSQL cannot see (the load waits here, in Python): the timeout breaks it, as a
                    # retryable SinkConflictError
                    cur.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
                    cur.execute("SET maintenance_work_mem = '256MB'")
                stream.conn.commit()
        except Exception as exc:
            self.close()
            raise _wrap(exc, "connect", sink.dsn) from None
        for stream in self._streams:
            stream.thread = threading.Thread(target=self._work, args=(stream,), name="biconic-copy", daemon=True)
            stream.thread.start()

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
        """Index every child; then, only if no stream failed, commit them all. Raises the first error."""
        self._everywhere("index")
        errors = [s.error for s in self._streams if s.error is not None]
        if not errors:
            self._everywhere("commit")
            for stream in self._streams:
                if stream.error is None:
                    self._committed.extend((c.schema, c.name, c.oid) for c in stream.children.values())
            errors = [s.error for s in self._streams if s.error is not None]
        if errors:
            raise errors[0]

    def settled(self) -> None:
        """The load committed with its children attached: nothing to clean up any more."""
        self._committed.clear()
        self._reset()

    def abort(self) -> None:
        """The load failed and its transaction is rolled back: roll back the streams, and drop the children
        they had committed (each under its advisory lock; one held by another load means that load owns
        the period now, and drops the leftover itself)."""
        self._everywhere("rollback")
        committed, self._committed = self._committed, []
        if committed and self._streams:
            done = threading.Event()
            self._streams[0].jobs.put(("drop", committed, done))
            done.wait()
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

    def _everywhere(self, kind: str) -> None:
        events = []
        for stream in self._streams:
            event = threading.Event()
            stream.jobs.put((kind, event))
            events.append(event)
        for event in events:
            event.wait()

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

    # --- on the stream's thread -----------------------------------------------------------------------------
    def _work(self, stream: _Stream) -> None:
        while True:
            job = stream.jobs.get()
            if job is None:
                return
            kind = job[0]
            try:
                if kind == "copy" and stream.error is None:
                    self._copy(stream, job[1], job[2])
                elif kind == "index" and stream.error is None:
                    self._index(stream)
                elif kind == "commit" and stream.error is None:
                    self._commit(stream)
                elif kind == "rollback":
                    stream.conn.rollback()
                elif kind == "drop":
                    self._drop(stream, job[1])
            except BaseException as exc:  # handed to the loading thread
                stream.error = stream.error or exc
                with contextlib.suppress(Exception):
                    stream.conn.rollback()
            finally:
                if kind != "copy":
                    job[-1].set()

    def _rows(self, stream: _Stream, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        try:
            with stream.conn.cursor() as cur:
                cur.execute(sql, params) if params is not None else cur.execute(sql)
                return list(cur.fetchall()) if cur.description else []
        except Exception as exc:
            raise self._wrap(exc, sql.split("(")[0].strip()[:60], self._sink.dsn) from None

    def _copy(self, stream: _Stream, child: str, data: pa.Table) -> None:
        from engine.sinks.postgres import _small_batches, standalone_child_sql

        spec = stream.children[child]
        q = f"{quote_ident(spec.schema)}.{quote_ident(spec.name)}"
        if not spec.oid:
            [(exists, orphan)] = self._rows(stream, f"SELECT to_regclass($1) IS NOT NULL, ({ORPHAN_SQL})",
                                            [q, q, bounds_constraint(spec.name)])
            if orphan:  # left by a killed load; we hold its advisory lock, so no live load owns it
                self._rows(stream, f"DROP TABLE {q}")
            elif exists:
                raise SinkError(f"{spec.schema}.{spec.name}: a table of that name exists and is not a partition "
                                f"of {self._table}; rename or drop it, then re-run")
            for stmt in standalone_child_sql(self._table, spec.schema, spec.name, self._hash_partitions,
                                             check=(bounds_constraint(spec.name), spec.check)):
                self._rows(stream, stmt)
            spec.oid = int(self._rows(stream, "SELECT to_regclass($1)::oid", [q])[0][0])
        try:
            with stream.conn.cursor() as cur:
                cur.adbc_ingest(spec.name, _small_batches(data), mode="append", db_schema_name=spec.schema)
        except Exception as exc:
            raise self._wrap(exc, f"COPY into {spec.schema}.{spec.name}", self._sink.dsn) from None

    def _index(self, stream: _Stream) -> None:
        for spec in stream.children.values():
            q = f"{quote_ident(spec.schema)}.{quote_ident(spec.name)}"
            for sql in self._indexes:
                self._rows(stream, sql.replace(CHILD, q))

    def _commit(self, stream: _Stream) -> None:
        try:
            stream.conn.commit()
        except Exception as exc:
            raise self._wrap(exc, "commit", self._sink.dsn) from None

    def _drop(self, stream: _Stream, committed: list[tuple[str, str, int]]) -> None:
        """Drop children this load committed but never attached (identified by oid: the name may meanwhile
        belong to another load's child)."""
        stream.conn.rollback()
        for schema, name, oid in committed:
            locked = self._rows(stream, "SELECT pg_try_advisory_xact_lock(hashtext($1))", [f"child:{schema}.{name}"])
            if not locked[0][0]:
                continue
            q = f"{quote_ident(schema)}.{quote_ident(name)}"
            [(ours,)] = self._rows(stream, _UNATTACHED_OWN_SQL, [q, oid, bounds_constraint(name)])
            if ours:
                self._rows(stream, f"DROP TABLE {q}")
        self._commit(stream)
