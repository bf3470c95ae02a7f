"""Excel and OpenDocument workbooks as a source: one partition per sheet, every parse in a sandbox.

fastexcel (calamine) is fast but native, and on hostile input it aborts the process or allocates without
bound (a stray cell in column XFD asks for 512 GiB). So every parse, listing sheets included, runs in a
child process (``engine.sources.files.excel_worker``) under an address-space limit and a timeout. The child writes
the sheet as uncompressed Arrow IPC; the parent memory-maps it and unlinks it at once, so the engine holds at
most one sheet, as clean file pages, and a crash costs one ``HostileInputError``, never the engine.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import polars as pl
import pyarrow as pa

from engine.errors import HostileInputError, SourceError, SpecError
from engine.plan.columns import ROW_COLUMN
from engine.sources.base import Partition, file_fingerprint, reader_from_frame
from engine.sources.chunks import ChunkFactory, sliced_chunks
from engine.sources.files.content import content_hash, content_keys
from engine.sources.files.excel_types import check_dtypes, fastexcel_dtypes, typed
from engine.sources.files.workbook_checks import check_workbook

__all__ = ["CellErrors", "ExcelDType", "ExcelSource"]

#: The kinds fastexcel reads; ``dtypes`` takes any engine type name, read as the nearest of these.
ExcelDType = Literal["int", "float", "string", "boolean", "date", "datetime", "duration"]
#: What a cell holding a formula error (``#DIV/0!``, ``#N/A``...) does: null it and quarantine its row, or
#: keep the row with the cell null ("null" would read as YAML null in --option), or keep the row with the
#: error text as the cell's value (the column becomes text).
CellErrors = Literal["quarantine", "keep", "text"]

_log = logging.getLogger(__name__)
#: Run by file, not ``-m``: the child must not import the engine (see the worker's docstring).
_WORKER = Path(__file__).resolve().with_name("excel_worker.py")
_MIN_MEMORY_MB = 320
_STDERR_TAIL_BYTES = 64 * 1024
_MESSAGE_CHARS = 300
#: stderr lines that never explain a death: Rust backtrace hints and fastexcel's dtype fallback warnings.
_NOISE = ("note:", "stack backtrace:", "Could not determine dtype for column")


@dataclass(frozen=True, kw_only=True)
class ExcelSource:
    """Sheets of .xlsx/.xlsm/.xls/.xlsb/.ods workbooks, one partition each, read by fastexcel in a sandbox.

    ``ExcelSource(paths=(Path("orders.xlsx"),), sheets="*", header_row=2, dtypes={"id": "int"})``

    ``sheets``: ``None`` is each workbook's first sheet, ``"*"`` all of them, else one name or several.
    ``header_row`` is the 0-based spreadsheet row holding the headers (rows above it are skipped, blank or
    not), so ``ROW_COLUMN`` is the true spreadsheet row: ``header_row + 2`` for the first data row.
    ``header_row="auto"`` finds it: of the first 50 rows, the first with the most filled cells, none of them a
    number. ``skip_rows`` skips that many rows under the header (a units row, a separator).
    ``dtypes`` maps column names, as ``scan`` gives them, to engine type names (``engine.types``); unset
    columns are inferred from every row; a column fastexcel cannot give one type (dates and text, dates and
    durations) is text.
    ``cell_errors``: a cell holding a formula error (``#DIV/0!``, ``#N/A``...) is null, and its row is
    quarantined (``"quarantine"``, rule ``cell_error``) or kept (``"keep"``); or ``"text"``: the row is kept
    and the cell holds the error text (its column becomes text). Blank rows, formatted-but-empty ones included,
    are filtered: counted, never loaded. ``skip_hidden`` leaves hidden sheets out of ``sheets="*"``.
    ``memory_limit_mb`` and ``timeout_s`` bound each parse (one child process each).
    """

    paths: tuple[Path, ...]
    sheets: str | tuple[str, ...] | None = None
    header_row: int | Literal["auto"] = 0
    skip_rows: int = 0
    dtypes: Mapping[str, str] | None = None
    cell_errors: CellErrors = "quarantine"
    skip_hidden: bool = False
    memory_limit_mb: int = 4096
    timeout_s: float = 600.0
    #: the last sheet parsed (one slot): a partition-wide pass and the load then share one parse
    _last: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    #: what the report should hear: sheets skipped, columns read as text ("book.xlsx[Chart1]" -> note)
    _notes: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)
    #: the partitions (keys) whose sheet holds no row with a value
    _empty: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen, but normalise what callers naturally pass (a list, str paths) so equality stays meaningful.
        object.__setattr__(self, "paths", tuple(Path(p) for p in self.paths))
        if isinstance(self.sheets, list):
            object.__setattr__(self, "sheets", tuple(self.sheets))
        if isinstance(self.sheets, tuple) and "*" in self.sheets:
            object.__setattr__(self, "sheets", "*")  # Excel forbids '*' in sheet names: ("*",) means all
        if not self.paths:
            raise SpecError("paths", "no workbook given")
        if isinstance(self.sheets, tuple) and not self.sheets:
            raise SpecError("sheets", "empty list of sheets; use None for the first sheet or '*' for all")
        if self.header_row != "auto" and not (isinstance(self.header_row, int) and self.header_row >= 0):
            raise SpecError("header_row", f"must be 'auto' or >= 0 (a 0-based row), got {self.header_row!r}")
        if not (isinstance(self.skip_rows, int) and self.skip_rows >= 0):
            raise SpecError("skip_rows", f"must be >= 0 (rows under the header), got {self.skip_rows!r}")
        if self.memory_limit_mb < _MIN_MEMORY_MB:
            raise SpecError(
                "memory_limit_mb",
                f"must be >= {_MIN_MEMORY_MB} (Python, fastexcel and pyarrow take ~270 MB of address space "
                f"before any data), got {self.memory_limit_mb}",
            )
        if self.cell_errors not in get_args(CellErrors):
            raise SpecError("cell_errors", f"use one of {', '.join(get_args(CellErrors))}, got {self.cell_errors!r}")
        if not self.timeout_s > 0:
            raise SpecError("timeout_s", f"must be > 0, got {self.timeout_s}")
        check_dtypes(self.dtypes)

    def partitions(self) -> list[Partition]:
        """One partition per (workbook, sheet), in path then workbook order; listing runs in the sandbox. A sheet
        is keyed by its workbook's bytes and its name."""
        out: list[Partition] = []
        sizes = [_file_size(path) for path in self.paths]
        for path, size, (key, digest, stat) in zip(self.paths, sizes, content_keys(self.paths), strict=True):
            for sheet in self._chosen_sheets(path, self._sheet_names(path)):
                out.append(
                    Partition(
                        key=f"{key}[{sheet}]",
                        label=f"{path.name}[{sheet}]",
                        path=path,
                        fingerprint=digest,
                        size_bytes=size,
                        options={"sheet": sheet},
                        stat=stat,
                        former=((f"{path}#{sheet}", file_fingerprint(path, sheet)),),
                    )
                )
        return out

    def notes(self) -> list[str]:
        """What the report should say: non-worksheets (and hidden sheets, if asked) skipped, mixed columns."""
        return [f"{where}: {note}" for where, note in self._notes.items()]

    def scan(self, partition: Partition) -> pl.LazyFrame:
        """The sheet, parsed now in the sandbox, as a lazy frame over its memory-mapped Arrow data."""
        slot = (partition.key, partition.fingerprint)
        if self._last.get("slot") == slot:
            return self._last["frame"]  # type: ignore[no-any-return]
        self._last.clear()  # let the previous sheet's mapping go before parsing the next
        frame, facts = self._load(partition, schema_only=False)
        lazy = (
            frame.lazy()
            .with_row_index(ROW_COLUMN, offset=self._first_row(facts))
            .select(pl.exclude(ROW_COLUMN), pl.col(ROW_COLUMN).cast(pl.Int64))
        )
        lazy = typed(_checked(frame, lazy, facts, first=self._first_row(facts), cell_errors=self.cell_errors),
                     self.dtypes)
        if not facts.get("cell_errors") and (frame.height == 0 or not frame.width or not frame.select(
                pl.any_horizontal(pl.all().is_not_null()).any()).item()):
            self._empty.add(partition.key)
        if facts.get("mixed"):
            self._notes[partition.label] = (
                f"column(s) {_listing(facts['mixed'])} read as text (mixed types: dates, durations, numbers, text)"
            )
        self._last.update(slot=slot, frame=lazy)
        return lazy

    def empty(self, partition: Partition) -> str | None:
        """Why the sheet gave no rows, once scanned (None: it had some). Of ``sheets="*"`` an empty sheet (a
        workbook's unused Sheet2) is only noted: the workbook's other sheets are the data."""
        if partition.key not in self._empty:
            return None
        if self.sheets == "*":
            self._notes[partition.label] = "empty sheet: nothing loaded"
            return None
        return "no rows: the sheet is empty, or holds a header only or blank rows"

    def chunks(self, partition: Partition) -> Iterator[ChunkFactory]:
        """Row slices of about ``BICONIC_CHUNK_ROWS`` rows: bounded memory whatever the size."""
        yield from sliced_chunks(self.scan(partition))

    def read(self, partition: Partition, *, columns: list[str] | None = None) -> pa.RecordBatchReader:
        """The sheet as Arrow batches (``ROW_COLUMN`` only if asked for in ``columns``)."""
        return reader_from_frame(self.scan(partition), columns=columns)

    def schema(self) -> pa.Schema:
        """The first partition's schema, without ``ROW_COLUMN``: the whole sheet is parsed to infer it, but no
        rows cross to this process."""
        parts = self.partitions()
        if not parts:
            raise SourceError(self.paths[0].name, "no sheet to read")
        frame, facts = self._load(parts[0], schema_only=True)
        if self.cell_errors == "text":  # as scan gives them: a column holding an error text is text
            frame = frame.with_columns(pl.col(c).cast(pl.String) for c in facts.get("error_columns", ()))
        return reader_from_frame(typed(frame.lazy(), self.dtypes)).schema

    def _first_row(self, facts: Mapping[str, Any]) -> int:
        return int(facts.get("header_row") or 0) + 2 + self.skip_rows  # 1-based, under header and skipped rows

    # -- the sandbox -------------------------------------------------------------------------------------

    def _sheet_names(self, path: Path) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="biconic-excel-") as tmp:
            return self._run_worker(
                {"op": "sheets", "path": os.path.abspath(path)}, Path(tmp), label=path.name
            )

    def _chosen_sheets(self, path: Path, listing: Mapping[str, Any]) -> list[str]:
        available = [str(name) for name in listing["sheets"]]
        kinds: dict[str, str] = dict(listing.get("kinds") or {})
        if listing.get("reader"):
            self._notes[path.name] = f"read by the fallback reader ({listing['reader']}): the main one could not"
        hidden = set(listing.get("hidden") or ()) if self.skip_hidden else set()
        if self.sheets == "*":
            for name in available:
                if name in kinds or name in hidden:
                    why = kinds.get(name, "hidden, and skip_hidden is set")
                    self._notes[f"{path.name}[{name}]"] = f"sheet skipped ({why})"
            return [n for n in available if n not in kinds and n not in hidden]
        if self.sheets is None:
            if not available:
                raise SourceError(path.name, "the workbook has no sheets")
            return available[:1]
        wanted = (self.sheets,) if isinstance(self.sheets, str) else self.sheets
        missing = [name for name in wanted if name not in available]
        if missing:
            raise SourceError(path.name, f"sheet {_listing(missing)} not found; {_has_sheets(available)}")
        for name in wanted:
            if name in kinds:
                raise SourceError(path.name, f"sheet {name!r} is a {kinds[name]}, not a worksheet: no rows to read")
        return list(dict.fromkeys(wanted))

    def _load(self, partition: Partition, *, schema_only: bool) -> tuple[pl.DataFrame, dict[str, Any]]:
        _file_size(partition.file)  # a vanished file says so
        if content_hash(partition.file)[0] != partition.fingerprint:
            raise SourceError(
                partition.label, "the workbook changed since its partitions were listed; list them again"
            )
        check_workbook(partition.file, partition.label)  # a bomb is refused before the parser inflates it
        request = {
            "op": "read",
            "path": os.path.abspath(partition.file),
            "sheet": str(partition.options["sheet"]),
            "header_row": self.header_row,
            "skip_rows": self.skip_rows,
            "dtypes": fastexcel_dtypes(self.dtypes),
            "schema_only": schema_only,
        }
        with tempfile.TemporaryDirectory(prefix="biconic-excel-") as tmp:
            result = self._run_worker(request, Path(tmp), label=partition.label)
            # Leaving the block unlinks the file; the mapping (and so the frame) stays valid until dropped.
            return _map_ipc(Path(tmp) / str(result["file"])), result

    def _run_worker(self, request: dict[str, Any], work_dir: Path, *, label: str) -> dict[str, Any]:
        """Run one job in a child process; its result, or the error that explains its failure or death."""
        request = {**request, "out_dir": str(work_dir), "memory_limit_mb": self.memory_limit_mb}
        env = {
            **os.environ,
            "RUST_BACKTRACE": "0",  # keeps the last stderr line the panic or abort message
            # Under RLIMIT_AS, allocators reserving address space in big blocks (glibc's per-thread arenas,
            # pyarrow's default mimalloc) fail at some limits yet not at lower ones; plain malloc does not.
            "MALLOC_ARENA_MAX": "1",
            "ARROW_DEFAULT_MEMORY_POOL": "system",
        }
        log_path = work_dir / "stderr.txt"
        with open(log_path, "wb") as log:
            # start_new_session: a Ctrl-C meant for the engine reaches the child only through our kill().
            child = subprocess.Popen(
                [sys.executable, "-P", str(_WORKER), json.dumps(request)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=work_dir,
                start_new_session=True,
            )
            try:
                returncode = child.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
                raise HostileInputError(
                    label,
                    f"the Excel parser did not finish within {self.timeout_s:g} s and was killed "
                    "(hostile workbook, or raise timeout_s)",
                ) from None
            except BaseException:
                child.kill()
                child.wait()
                raise
        result_path = work_dir / "result.json"
        if result_path.exists():
            result: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
            _log.debug("excel worker %s %s: peak RSS %s kB", request["op"], label, result.get("peak_rss_kb"))
            if result.get("ok"):
                return result
            raise self._failure(result, label)
        raise self._death(returncode, _last_words(log_path), label)

    def _failure(self, result: Mapping[str, Any], label: str) -> SourceError:
        kind, message = str(result.get("kind")), _clip(str(result.get("message", "")))
        if kind == "missing_sheet":
            return SourceError(label, f"sheet not found; {_has_sheets([str(s) for s in result['sheets']])}")
        if kind == "memory":
            limit = self.memory_limit_mb
            return HostileInputError(
                label,
                f"the Excel parser exceeded memory_limit_mb={limit} ({message}); zip bomb? else raise it",
            )
        if kind == "crash":
            return HostileInputError(
                label, f"the Excel parser crashed: {message} (hostile or corrupt workbook?)"
            )
        if kind == "corrupt" and "password protected" in message.lower():
            return SourceError(
                label, "the workbook is password protected: save a copy without the password and load that"
            )
        if kind == "corrupt":
            hint = "truncated, corrupt, or not this format?"
            return SourceError(label, f"cannot read the workbook: {message} ({hint})")
        return SourceError(label, message)

    def _death(self, returncode: int, last_words: str, label: str) -> HostileInputError:
        said = f": {last_words}" if last_words else ""
        if returncode < 0:
            try:
                how = f"was killed by {signal.Signals(-returncode).name}"
            except ValueError:
                how = f"was killed by signal {-returncode}"
        else:
            how = f"exited with status {returncode} without a result"
        if "memory allocation of" in last_words:
            why = f"on exceeding memory_limit_mb={self.memory_limit_mb} (zip bomb, or a stray far-away cell?)"
        else:
            why = "(hostile or corrupt workbook?)"
        return HostileInputError(label, f"the Excel parser {how} {why}{said}")


def _checked(frame: pl.DataFrame, lazy: pl.LazyFrame, facts: Mapping[str, Any], *, first: int,
             cell_errors: CellErrors) -> pl.LazyFrame:
    """Blank rows filtered, rows with a formula error (``#DIV/0!``) quarantined; a clean sheet's frame
    carries no extra column (both are looked for on the parsed frame first)."""
    from engine.plan.frame import Plan

    by_column: dict[str, dict[int, str]] = {}  # column -> spreadsheet row -> "#DIV/0!"
    for row, column, text in facts.get("cell_errors", ()):
        by_column.setdefault(str(column), {})[first + int(row)] = str(text)
    erred = sorted({r for texts in by_column.values() for r in texts})
    blank = pl.all_horizontal([pl.col(c).is_null() for c in frame.columns]) if frame.width else None
    if blank is not None and erred:
        blank = blank & ~pl.col(ROW_COLUMN).is_in(erred)
    has_blank = blank is not None and bool(frame.lazy().with_row_index(ROW_COLUMN, offset=first)
                                           .select(blank.any()).collect().item())
    if cell_errors == "text" and by_column:  # the column becomes text, the error its value
        lazy = lazy.with_columns(
            _error_text(texts).fill_null(pl.col(column).cast(pl.String)).alias(column)
            for column, texts in by_column.items()
        )
    if not has_blank and (not by_column or cell_errors != "quarantine"):
        return lazy
    plan = Plan.start(lazy)
    if has_blank and blank is not None:
        plan.drop_where(blank)  # not a record: counted as filtered, like a blank CSV line
    for column, texts in by_column.items() if cell_errors == "quarantine" else ():
        text = _error_text(texts)
        plan.reject("cell_error", column, text.is_not_null(),
                    pl.concat_str(pl.lit("cell error "), text, pl.lit(f" in column {column}")))
    return plan.frame


def _error_text(texts: Mapping[int, str]) -> pl.Expr:
    """The error text of each row with one (``"#N/A"``), by spreadsheet row; null elsewhere."""
    return pl.col(ROW_COLUMN).replace_strict(list(texts), list(texts.values()), default=None,
                                             return_dtype=pl.String)


def _file_size(path: Path) -> int:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SourceError(path.name, f"file not found: {path}") from None
    except OSError as exc:
        raise SourceError(path.name, f"cannot open {path}: {exc.strerror}") from exc
    if not path.is_file():
        raise SourceError(path.name, f"not a file: {path}")
    return st.st_size


def _map_ipc(path: Path) -> pl.DataFrame:
    """Memory-map an Arrow IPC file into a frame without copying (strings are views into the map)."""
    import pyarrow.ipc

    source = pa.memory_map(str(path))
    try:
        table = pyarrow.ipc.open_file(source).read_all()
    finally:
        source.close()  # the buffers keep the mapping alive; this only releases the descriptor
    frame = pl.from_arrow(table, rechunk=False)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _last_words(log_path: Path) -> str:
    """The last line of the child's stderr that explains something, clipped to one short line."""
    try:
        with open(log_path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - _STDERR_TAIL_BYTES))
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    for line in reversed(text.splitlines()):
        stripped = line.strip()
        if stripped and not line[0].isspace() and not stripped.startswith(_NOISE):
            return _clip(stripped)
    return ""


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 1] + "…"


def _listing(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _has_sheets(names: list[str]) -> str:
    return f"the workbook has {_listing(names)}" if names else "the workbook has no sheets"
