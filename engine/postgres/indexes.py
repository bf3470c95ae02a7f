"""The statements that give a dataset its index set (:mod:`engine.index_set`), and read the set a table has so
that each new child repeats it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from engine.errors import SinkError, SpecError
from engine.index_set import IndexSpec
from engine.names import qualified, quote_ident

__all__ = ["create_indexes", "parent_indexes"]

#: a definition from ``pg_get_indexdef``: what follows ``ON [ONLY] table`` (method, columns, options)
_DEFINITION = re.compile(r" USING (.*)$", re.S)


def create_indexes(session: Any, table: str, specs: Sequence[IndexSpec], columns: Sequence[str], *,
                   conn: Any = None) -> None:
    """Create the indexes of ``specs`` that ``table`` lacks (by name). A column the table does not have, or a
    method the column's type does not take, is a one-line SpecError naming the index."""
    for spec in specs:
        missing = [name for name, _ in spec.columns if name not in columns]
        if missing:
            raise SpecError("target.indexes", f"index {spec.text()!r}: {table} has no column {missing[0]!r}")
        try:
            session.run(f"CREATE INDEX IF NOT EXISTS {quote_ident(spec.name(table))} ON {qualified(table)} "
                        f"{spec.definition()}", conn=conn)
        except SinkError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != "42704":  # undefined_object: no operator class
                raise
            hint = "; GiST on plain columns needs the btree_gist extension (CREATE EXTENSION btree_gist)" \
                if spec.method == "gist" else ""
            raise SpecError("target.indexes", f"index {spec.text()!r} on {table}: {exc}{hint}") from exc


def parent_indexes(session: Any, table: str, *, conn: Any = None) -> list[str]:
    """The table's own non-unique indexes as definitions (``USING ...``) to repeat on a new child, so that
    attaching the child adopts them instead of building them again. The unique index a merge adds is left
    out: merges do not fill children beside the transaction."""
    rows = session.run("SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = to_regclass($1) "
                       "AND NOT i.indisunique ORDER BY i.indexrelid", [qualified(table)], conn=conn)
    out = []
    for (text,) in rows:
        found = _DEFINITION.search(str(text))
        if found:
            out.append(f"USING {found.group(1)}")
    return out
