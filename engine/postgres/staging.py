"""New partitions filled beside the load's transaction, on connections of their own.

A load's transaction is one PostgreSQL backend: one COPY at a time, then one index build after another.
For children that do not exist yet (:func:`engine.postgres.ddl.child_for` found them missing, under their advisory
lock) this module creates each child as a standalone table on one of ``BICONIC_COPY_STREAMS`` helper
connections, COPYs its rows there, builds its indexes and commits; the load's transaction then only
*attaches* the finished children (the matching indexes are adopted, the bounds ``CHECK`` spares the
validation scan) together with its ledger row. Two backends COPY and sort at once, which is what the second
core is for.

The children are staged in the engine's own schema (:mod:`engine.postgres.stage_area`), under names carrying
the load's id, and moved into the dataset's schema only by the load's transaction, as it attaches them: nothing
new is visible to the user before the load commits. A load killed after a helper committed leaves its tables
in ``biconic_stage``, where the next load (or ``biconic tier``) sweeps them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from engine.handoff import Worker
from engine.names import quote_ident
from engine.postgres.connection import Session, connect, execute, wrap_error
from engine.postgres.copy import ingest
from engine.postgres.ddl import (
    ORPHAN_SQL,
    bounds_check,
    bounds_constraint,
    refuse_foreign_child,
    standalone_child_sql,
)
from engine.postgres.periods import Period
from engine.postgres.stage_area import STAGE_SCHEMA, ensure_stage_schema, hold_load, staged_name

__all__ = ["CHILD", "FreshChildren"]

#: stands for the child's qualified name in :meth:`FreshChildren.start`'s index statements
CHILD = "\x00child\x00"
#: how long a helper waits for a lock before the load gives up (retryably)
LOCK_TIMEOUT = "60s"
#: parts waiting per helper connection (each a piece of one batch): memory stays bounded
QUEUE = 4

#: true when the staged ``$1`` is still the table of oid ``$2``, unattached
_UNATTACHED_OWN_SQL = (
    "SELECT coalesce(to_regclass($1)::oid::bigint = $2, false) "
    "AND NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid::bigint = $2)")


@dataclass
class _Child:
    #: the dataset's schema and the child's name there (once attached)
    schema: str
    name: str
    check: str
    #: its name in :data:`STAGE_SCHEMA` while it is filled
    staged: str = ""
    #: the table's oid once created
    oid: int = 0

    @property
    def qualified(self) -> str:
        """The staged table."""
        return f"{quote_ident(STAGE_SCHEMA)}.{quote_ident(self.staged)}"

    @property
    def final(self) -> str:
        """Where the child lives once attached."""
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"


@dataclass
class _Stream:
    """One helper connection, the worker thread that owns it, and the children it fills."""

    conn: Any
    worker: Worker[tuple[str, pa.Table]] | None = None
    children: dict[str, _Child] = field(default_factory=dict)


class FreshChildren:
    """The new children of one source partition, spread over the helper connections.

    :meth:`copy` hands a part to the stream that owns its child; :meth:`finish` has every stream build its
    children's indexes and, only when all succeeded, commit; :meth:`settled` (the load committed) forgets
    them; :meth:`abort` (the load failed, its transaction already rolled back) rolls back what is not
    committed and drops what was. The object is reused for the job's next source partition.
    """

    def __init__(self, session: Session, streams: int, load_id: str) -> None:
        self._dsn = session.dsn
        self._load_id = load_id
        self._streams: list[_Stream] = []
        self._owner: dict[str, _Stream] = {}
        #: (staged name, oid) committed by the streams and not attached by a committed load yet
        self._committed: list[tuple[str, int]] = []
        self._table = ""
        self._time_column = ""
        self._hash_partitions = 0
        self._indexes: list[str] = []
        try:
            for _ in range(streams):
                stream = _Stream(conn=connect(self._dsn))
                self._streams.append(stream)
                # a helper waiting for a lock that waits for the load's own transaction is a cycle PostgreSQL
                # cannot see (the load waits here, in Python): the timeout breaks it, as a retryable
                # SinkConflictError
                self._run(stream, f"SET lock_timeout = '{LOCK_TIMEOUT}'")
                self._run(stream, "SET maintenance_work_mem = '256MB'")
                stream.conn.commit()
            ensure_stage_schema(self._streams[0].conn, self._dsn)
            # held while this object lives: the sweep leaves the tables staged under this id alone
            hold_load(self._streams[0].conn, self._dsn, load_id)
        except BaseException:
            self.close()
            raise
        for stream in self._streams:
            stream.worker = Worker(self._copier(stream), depth=QUEUE, name="biconic-copy")

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
            stream.children[child] = _Child(schema=schema, name=child, staged=staged_name(self._load_id, child),
                                            check=bounds_check(self._time_column, period, time_type))
        assert stream.worker is not None
        stream.worker.put((child, data))

    def finish(self) -> None:
        """Index every child; then, only if no stream failed, commit them all. Raises the first error."""
        self._everywhere(lambda s: lambda: self._index(s))
        errors = self._errors()
        if not errors:
            self._everywhere(lambda s: lambda: self._commit(s))
            for stream in self._streams:
                if stream.worker is not None and stream.worker.error is None:
                    self._committed.extend((c.staged, c.oid) for c in stream.children.values())
            errors = self._errors()
        if errors:
            raise errors[0]

    def settled(self) -> None:
        """The load committed with its children attached: nothing to clean up any more."""
        self._committed.clear()
        self._reset()

    def abort(self) -> None:
        """The load failed and its transaction is rolled back: roll back the streams, and drop the staged
        children they had committed (the sweep would, later; the rows go now)."""
        self._everywhere(lambda s: s.conn.rollback, after_error=True)
        committed, self._committed = self._committed, []
        first = self._streams[0] if self._streams else None
        if committed and first is not None and first.worker is not None:
            first.worker.call(lambda: self._drop(first, committed), after_error=True).exception()
        self._reset()

    def close(self) -> None:
        for stream in self._streams:
            if stream.worker is not None:
                stream.worker.close()
            with contextlib.suppress(Exception):  # the connection may be gone; the server rolls back anyway
                stream.conn.rollback()
                stream.conn.close()
        self._streams.clear()

    def _everywhere(self, job: Callable[[_Stream], Callable[[], Any]], *, after_error: bool = False) -> None:
        """Run ``job(stream)`` on every stream's thread (after what is queued there) and wait for all."""
        futures: list[Future[Any]] = [s.worker.call(job(s), after_error=after_error)
                                      for s in self._streams if s.worker is not None]
        wait(futures)

    def _errors(self) -> list[BaseException]:
        return [s.worker.error for s in self._streams if s.worker is not None and s.worker.error is not None]

    def _reset(self) -> None:
        self._owner.clear()
        for stream in self._streams:
            stream.children.clear()
            if stream.worker is not None:
                stream.worker.reset()

    # --- on the stream's thread -----------------------------------------------------------------------------
    def _run(self, stream: _Stream, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        return execute(stream.conn, sql, params, self._dsn)

    def _copier(self, stream: _Stream) -> Callable[[tuple[str, pa.Table]], None]:
        def copy(item: tuple[str, pa.Table]) -> None:
            try:
                self._copy(stream, *item)
            except BaseException:
                with contextlib.suppress(Exception):
                    stream.conn.rollback()
                raise
        return copy

    def _create(self, stream: _Stream, spec: _Child) -> None:
        """The child as a standalone staged table with its bounds ``CHECK``. Its name in the dataset's schema
        must be free when it is attached: a leftover of a killed load of an older version (staged there) is
        dropped (the load holds the child's advisory lock, so no live load owns it), anything else refused."""
        final = spec.final
        [(exists, orphan)] = self._run(stream, f"SELECT to_regclass($1) IS NOT NULL, ({ORPHAN_SQL})",
                                       [final, final, bounds_constraint(spec.name)])
        if orphan:
            self._run(stream, f"DROP TABLE {final}")
        elif exists:
            raise refuse_foreign_child(spec.schema, spec.name, self._table)
        for stmt in standalone_child_sql(self._table, STAGE_SCHEMA, spec.staged, self._hash_partitions,
                                         check=(bounds_constraint(spec.name), spec.check)):
            self._run(stream, stmt)
        spec.oid = int(self._run(stream, "SELECT to_regclass($1)::oid", [spec.qualified])[0][0])

    def _copy(self, stream: _Stream, child: str, data: pa.Table) -> None:
        spec = stream.children[child]
        if not spec.oid:
            self._create(stream, spec)
        ingest(stream.conn, STAGE_SCHEMA, spec.staged, data, self._dsn)

    def _index(self, stream: _Stream) -> None:
        try:
            for spec in stream.children.values():
                for sql in self._indexes:
                    self._run(stream, sql.replace(CHILD, spec.qualified))
        except BaseException:
            with contextlib.suppress(Exception):
                stream.conn.rollback()
            raise

    def _commit(self, stream: _Stream) -> None:
        try:
            stream.conn.commit()
        except Exception as exc:
            with contextlib.suppress(Exception):
                stream.conn.rollback()
            raise wrap_error(exc, "commit", self._dsn) from exc

    def _drop(self, stream: _Stream, committed: list[tuple[str, int]]) -> None:
        """Drop the staged children this load committed but never attached (checked by oid and by place: a
        commit that failed on the wire may still have moved and attached them)."""
        stream.conn.rollback()
        for staged, oid in committed:
            qualified = f"{quote_ident(STAGE_SCHEMA)}.{quote_ident(staged)}"
            [(ours,)] = self._run(stream, _UNATTACHED_OWN_SQL, [qualified, oid])
            if ours:
                self._run(stream, f"DROP TABLE {qualified}")
        self._commit(stream)
