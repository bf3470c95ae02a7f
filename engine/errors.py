"""One error tree for the whole engine.

::

    BiconicError                 exit 1   root: catch this to catch everything the engine raises on purpose
    ├── SpecError                exit 2   the pipeline spec or an argument is wrong (carries a dotted ``path``)
    ├── QueryError               exit 2   DuckDB refused or failed an ad-hoc query (syntax, unknown table)
    ├── SourceError              exit 3   a source cannot be read: missing, corrupt, truncated, wrong format
    │   ├── EmptySourceError     exit 3   a file with no rows (0 bytes, a header only, blank lines), unless allowed
    │   ├── HostileInputError    exit 3   a parser crashed or blew its memory/time limit in its sandbox
    │   ├── RejectedError        exit 3   too many of a file's rows were rejected (or all): nothing of it committed
    │   └── SourceUnavailableError exit 3 a database or API kept failing or is unreachable (also a TransientError)
    ├── SchemaDriftError         exit 4   incoming columns do not fit the target table under the contract
    ├── SinkError                exit 5   PostgreSQL refused or failed the load
    │   ├── SinkUnavailableError exit 5   the server cannot be reached (also a TransientError)
    │   └── SinkConflictError    exit 5   a deadlock or lock timeout with another load (also a TransientError)
    ├── BrokerUnavailableError   exit 5   the jobs' broker or result store cannot be reached (also a TransientError)
    ├── ArchiveError             exit 7   the archive copy could not be written and verified (also a TransientError)
    ├── IntegrityError           exit 6   a partition's row accounting does not add up; nothing of it committed
    ├── StorageError             exit 8   a local file or folder could not be written: disk full, quota, read-only,
    │                                     permission denied, missing folder (names the path and its free space)
    ├── PartialLoadError         exit of the first failure: some source partitions failed, the others committed
    ├── StoppedLoadError         exit of its cause: a transient failure stopped a load part-way (a TransientError)
    └── BeatRunningError         exit 9   another ``biconic beat`` holds the deployment's beat lock (or this lost it)

    TransientError                        marker: the job layer retries these, and only these

Errors keep their inputs as attributes and their message ends with a hint where one helps. A driver's
exception is wrapped once, at the boundary, and kept as ``__cause__`` (for logs); users see the one line.
Bad *rows* are never exceptions: they go to quarantine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.report import LoadReport

__all__ = [
    "ArchiveError",
    "BeatRunningError",
    "BiconicError",
    "BrokerUnavailableError",
    "EmptySourceError",
    "HostileInputError",
    "IntegrityError",
    "PartialLoadError",
    "QueryError",
    "RejectedError",
    "SchemaDriftError",
    "SinkConflictError",
    "SinkError",
    "SinkUnavailableError",
    "SourceError",
    "SourceUnavailableError",
    "SpecError",
    "StorageError",
    "StoppedLoadError",
    "TransientError",
    "first_line",
]


def first_line(exc: BaseException) -> str:
    """The first non-empty line of a library error (at most 300 characters): their multi-paragraph hints are
    noise to our users, who see one line; the whole error stays on ``__cause__`` for logs."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:300]
    return type(exc).__name__


class BiconicError(Exception):
    """Root of every error the engine raises on purpose; ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1


class TransientError(Exception):
    """Marker: retrying the same work later may succeed (server gone, lock timeout)."""


class SpecError(BiconicError):
    """The pipeline spec (or a CLI/API argument) is invalid; ``path`` is where, e.g. ``steps[2].expr``."""

    exit_code = 2

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class QueryError(BiconicError):
    """DuckDB refused or failed an ad-hoc query (syntax, unknown table or column)."""

    exit_code = 2


class SourceError(BiconicError):
    """A source cannot be read. ``source`` names the file (and sheet), ``row``/``column`` where known."""

    exit_code = 3

    def __init__(self, source: str, message: str, *, row: int | None = None, column: str | None = None) -> None:
        self.source = source
        self.row = row
        self.column = column
        self.message = message
        where = source
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")


class EmptySourceError(SourceError):
    """A file with no rows (0 bytes, a header only, or only blank lines): an error unless the load allows it,
    so a failed export is not a silent 0-row success."""

    def __init__(self, source: str, what: str) -> None:
        super().__init__(source, f"{what}; nothing to load (pass --allow-empty, or allow_empty=True, to accept "
                                 "an empty file)")


class HostileInputError(SourceError):
    """A native parser crashed, or exceeded its memory or time limit, while reading the source."""


class RejectedError(SourceError):
    """Too many of a source partition's rows were rejected (by rules, types or encoding), or every one of them,
    for its load to count as a success. Nothing of that partition was committed; a sample of the rejected rows
    was kept in ``biconic.quarantine`` under ``load_id``.

    ``reasons`` are the most frequent ``(rule, column, rows, example reason)``; ``limit`` is the limit as the
    user wrote it (``50%``, ``1000``), ``hint`` the likely fix.
    """

    def __init__(self, source: str, *, rejected: int, rows: int, limit: str,
                 reasons: list[tuple[str, str | None, int, str]], load_id: str, kept: int, hint: str = "",
                 dataset: str = "DATASET") -> None:
        self.rejected, self.rows, self.limit = rejected, rows, limit
        self.reasons, self.load_id, self.kept, self.hint = reasons, load_id, kept, hint
        why = "every row" if rejected == rows else f"over --max-rejected {limit}"
        top = "; ".join(f"{rule}{f' on {column!r}' if column else ''}: {n:,} (e.g. {_short(example)!r})"
                        for rule, column, n, example in reasons)
        super().__init__(source, f"{rejected:,} of {rows:,} rows rejected ({why}): {top}; nothing of it was "
                                 f"committed; {hint + '; ' if hint else ''}the first {kept:,} rejected rows are kept: "
                                 f"biconic quarantine {dataset} --load {load_id}")


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class SourceUnavailableError(SourceError, TransientError):
    """The source's server kept failing (5xx, 429, timeouts) or cannot be reached; a later retry may work."""


class SchemaDriftError(BiconicError):
    """An incoming column's type cannot be reconciled with the table's under the schema contract."""

    exit_code = 4

    def __init__(self, table: str, column: str, existing: str | None, incoming: str, hint: str) -> None:
        self.table = table
        self.column = column
        self.existing = existing
        self.incoming = incoming
        if existing is None:
            what = f"new column {column!r} ({incoming})"
        else:
            what = f"column {column!r} is {existing} in the table but {incoming} in the source"
        super().__init__(f"table {table}: {what}; {hint}")


class SinkError(BiconicError):
    """PostgreSQL refused or failed the load; the transaction was rolled back."""

    exit_code = 5


class SinkUnavailableError(SinkError, TransientError):
    """PostgreSQL cannot be reached; retrying later may work."""


class SinkConflictError(SinkError, TransientError):
    """Another load held a lock this one needed (deadlock, lock timeout); the partition was rolled back and a
    retry completes it."""


class BrokerUnavailableError(BiconicError, TransientError):
    """The jobs' broker (Redis, RabbitMQ) or result store cannot be reached or did not answer in time; a later
    retry may work. ``url`` is the broker's URL with its password redacted, so the error can be logged."""

    exit_code = 5

    def __init__(self, url: str, message: str) -> None:
        from engine.redact import redact

        self.url = redact(url)
        self.message = message
        super().__init__(f"broker {self.url}: {message}")


class IntegrityError(BiconicError):
    """rows_in != rows_loaded + rows_quarantined + rows_filtered for a partition; nothing of it was committed."""

    exit_code = 6


class ArchiveError(BiconicError, TransientError):
    """An archive file could not be written and verified after retries; the load was rolled back (its rows are
    not committed without their archive copy) and a re-run completes it."""

    exit_code = 7

    def __init__(self, where: str, message: str, *, attempts: int = 1) -> None:
        self.where = where
        self.attempts = attempts
        super().__init__(f"archive {where}: {message} (after {attempts} attempt{'s' if attempts != 1 else ''}); "
                         "nothing of its partition was committed, re-run to finish")


class PartialLoadError(BiconicError):
    """Some source partitions (files, sheets, tables) failed and were rolled back while the others committed.

    ``report`` is the load's report (``source_details`` lists each partition with its rows or its error);
    ``failures`` the (partition, error) pairs. A re-run skips what committed and retries the failed ones. The
    exit code is the first failure's.
    """

    def __init__(self, report: LoadReport, failures: list[tuple[str, BiconicError]]) -> None:
        self.report = report
        self.failures = failures
        self.exit_code = failures[0][1].exit_code
        first, error = failures[0]
        said = str(error) if str(error).startswith(first) else f"{first}: {error}"
        more = f" (and {len(failures) - 1} more: see the report)" if len(failures) > 1 else ""
        super().__init__(f"{len(failures)} of {report.source_partitions} source partitions failed and were rolled "
                         f"back, the others committed; re-run to retry them. {said}{more}")


class StorageError(BiconicError):
    """The local disk refused a file the engine writes (or a folder it needs): disk full, quota, read-only,
    permission denied, missing folder. ``path`` is the file or folder; the message says how much space is free
    there (see :func:`engine.storage.storage_error`). Not transient: someone has to free space or fix the folder."""

    exit_code = 8

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


class StoppedLoadError(BiconicError, TransientError):
    """A transient failure (an archive upload, a server gone) stopped a load of several source partitions
    part-way: those before it committed and stay, the failing one was rolled back and the rest never started.
    A re-run skips what committed and finishes the rest.

    ``error`` is the failure (this error's exit code is its), ``committed`` the partitions this run committed,
    ``stopped`` the one that failed and ``after`` how many were left after it.
    """

    def __init__(self, error: BiconicError, *, committed: list[str], rows: int, stopped: str, total: int,
                 after: int) -> None:
        self.error, self.committed, self.rows, self.stopped, self.after = error, committed, rows, stopped, after
        self.exit_code = error.exit_code
        shown = ", ".join(committed[:5]) + (f", ... and {len(committed) - 5} more" if len(committed) > 5 else "")
        what = f" ({shown}; {rows:,} rows)" if committed else ""
        rest = f" and the {after} after it" if after else ""
        said = str(error) if str(error).startswith(stopped) else f"{stopped}: {error}"
        super().__init__(f"{len(committed)} of {total} source partitions committed{what}; this one ({stopped}){rest} "
                         f"{'were' if rest else 'was'} not: re-run to finish. {said}")


class BeatRunningError(BiconicError):
    """Only one ``biconic beat`` may run per deployment (database): another holds the lock, or this one lost it
    (its connection dropped). The message names the holder when PostgreSQL can tell."""

    exit_code = 9
