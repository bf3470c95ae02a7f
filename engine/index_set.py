"""A dataset's index set: the default, and the one a user declares instead (the statements that build them, and
read a table's set for its new children, are in :mod:`engine.postgres.indexes`).

The default is a BRIN on the time column (scans of whole periods; a few pages per partition) and a B-tree on
``(connection_id, time DESC)`` (one connection's rows, newest first, which is how the platform reads). Before this
release the default also had a single-column B-tree on ``connection_id``: the composite index's first column answers
the same lookups, and keeping that third index up to date cost about 15% of the server's time on every append into
existing partitions (bench: ``psql \\copy`` of 1M rows beside 5M rows of other connections took 6.3-7.5 s with it,
5.3-6.3 s without). Tables created with it keep it; ``DROP INDEX <table>_conn_idx`` removes it from the table and
all its partitions at once.

A dataset may declare its own set (``target.indexes``, ``--index``): ``method(column [ASC|DESC], ...)`` with a
method PostgreSQL ships (``btree``, ``brin``, ``gist``, ``hash``, ``gin``, ``spgist``). The list replaces the
default; an empty list means no index. Declared indexes the table lacks are created when a load starts (on
an existing table: on every partition, which takes a while); indexes the table has and the list omits are
kept (the engine never drops them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from engine.names import quote_ident, shorten

__all__ = ["METHODS", "IndexSpec", "default_indexes", "index_set", "parse_index"]

METHODS = ("btree", "brin", "gist", "hash", "gin", "spgist")
_SPEC = re.compile(r"^\s*([A-Za-z_]*)\s*\((.*)\)\s*$", re.S)
_COLUMN = re.compile(r"^\s*(.*?)(?:\s+(asc|desc))?\s*$", re.I | re.S)
_FORMS = "method(column [asc|desc], ...) with method one of " + ", ".join(METHODS)


@dataclass(frozen=True)
class IndexSpec:
    """One index of a dataset: its method and columns (each with its order: ``""``, ``"ASC"`` or ``"DESC"``)."""

    method: str
    columns: tuple[tuple[str, str], ...]
    #: the name's suffix (``<table>_<label>``); the default indexes keep the names they always had
    label: str = ""

    def text(self) -> str:
        """How a user writes it: ``btree(connection_id, created_at desc)``."""
        cols = ", ".join(f"{name} {order.lower()}".strip() for name, order in self.columns)
        return f"{self.method}({cols})"

    def definition(self) -> str:
        """What follows ``CREATE INDEX ... ON table``: ``USING btree ("a", "b" DESC)``."""
        cols = ", ".join(f"{quote_ident(name)} {order}".strip() for name, order in self.columns)
        return f"USING {self.method} ({cols})"

    def name(self, table: str) -> str:
        base = table.rpartition(".")[2]
        label = self.label or "_".join([*(name for name, _ in self.columns), self.method, "idx"])
        return shorten(f"{base}_{label}")


def parse_index(text: str) -> IndexSpec:
    """``"gist(area)"`` as an :class:`IndexSpec`; a bare ``"(a, b)"`` is a B-tree. A ValueError says what is
    accepted."""
    found = _SPEC.match(text)
    method = (found.group(1) or "btree").lower() if found else ""
    if found is None or method not in METHODS:
        raise ValueError(f"index {text!r} is not {_FORMS}")
    columns = []
    for part in found.group(2).split(","):
        column = _COLUMN.match(part)
        name = column.group(1).strip().strip('"') if column else ""
        if not name or "\x00" in name:
            raise ValueError(f"index {text!r} names no column in one of its places; write {_FORMS}")
        columns.append((name, (column.group(2) or "").upper() if column else ""))
    return IndexSpec(method, tuple(columns))


def default_indexes(time_column: str) -> tuple[IndexSpec, ...]:
    """BRIN on the time column, B-tree on (connection_id, time DESC)."""
    return (IndexSpec("brin", ((time_column, ""),), label="time_brin"),
            IndexSpec("btree", (("connection_id", ""), (time_column, "DESC")), label="conn_time_idx"))


def index_set(declared: Sequence[str] | None, time_column: str) -> tuple[IndexSpec, ...]:
    """The declared indexes (a declared default keeps its usual name), or the default set."""
    defaults = {(d.method, d.columns): d for d in default_indexes(time_column)}
    if declared is None:
        return tuple(defaults.values())
    specs = [parse_index(text) for text in declared]
    return tuple(defaults.get((s.method, s.columns), s) for s in specs)
