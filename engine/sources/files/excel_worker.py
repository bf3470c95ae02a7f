"""The sandboxed half of the Excel source: fastexcel runs here, in a child process, never in the engine.

calamine (fastexcel's parser) can abort the whole process from native code on hostile input (zip bombs,
a stray cell in column XFD makes it allocate 512 GiB), so ``engine.sources.files.excel`` runs each parse as::

    python -P engine/sources/files/excel_worker.py '<request json>'

(run by file, not ``-m``, so the child skips ``engine/__init__.py``: importing the whole engine would cost
~400 MB of address space and 0.4 s before the limit is even set; ``-P`` keeps ``engine/sources/files`` off the
path, where ``json.py`` and ``csv.py`` would shadow the standard library).

The child caps its own address space (``RLIMIT_AS``) before importing anything heavy, does one job, and
reports through files in ``request["out_dir"]``: ``result.json`` always (unless it dies), plus ``sheet.arrow``
(uncompressed Arrow IPC, strings as ``string_view``) so the parent can memory-map the sheet without copying.
Jobs: ``{"op": "sheets"}`` lists the sheet names; ``{"op": "read", "sheet", "header_row" (or ``"auto"``),
"skip_rows", "dtypes", "schema_only"}`` writes one sheet, and reports the header row used, the columns read
as text for mixed types (``mixed``) and the formula error cells (``cell_errors``: data row, column, ``"#N/A"``).
"""

from __future__ import annotations

import importlib.util
import json
import re
import resource
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import fastexcel
    import pyarrow as pa

__all__ = ["IPC_FILE", "RESULT_FILE", "main"]

RESULT_FILE = "result.json"
IPC_FILE = "sheet.arrow"
#: Rows per IPC record batch; small enough that compacting one batch's strings costs little memory.
_BATCH_ROWS = 65_536
#: rows looked at to find the header row (``header_row="auto"``)
_DETECT_ROWS = 50
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_ALIAS = re.compile(r"^(.*)_([1-9][0-9]*)$", re.DOTALL)
_UNTYPED = re.compile(r"could not determine dtype for column (.*)$", re.MULTILINE)
_ERROR_CELL = re.compile(r"got 'Error\((\w+)\)'")
_MACRO_SHEET = "Unrecognized sheet:type"
#: calamine's CellErrorType names, as Excel shows them
_ERROR_TEXT = {
    "Div0": "#DIV/0!", "NA": "#N/A", "Name": "#NAME?", "Null": "#NULL!", "Num": "#NUM!", "Ref": "#REF!",
    "Value": "#VALUE!", "GettingData": "#GETTING_DATA",
}


class _Failure(Exception):
    """A failure the parent reports by ``kind`` (see ``ExcelSource._failure``), with ``extra`` facts."""

    def __init__(self, kind: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.extra = extra


def _limit_memory(megabytes: int) -> None:
    """Cap the address space so a bomb ends in MemoryError or an allocation abort, not in the OOM killer."""
    wanted = megabytes * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))


def _unique_names() -> Callable[[Sequence[str]], list[str]]:
    """``engine.names.unique_names``, loaded from its file so that the engine package is not imported."""
    spec = importlib.util.spec_from_file_location(
        "_biconic_names", Path(__file__).resolve().parents[2] / "names.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    unique: Callable[[Sequence[str]], list[str]] = module.unique_names
    return unique


def _integral_floats() -> Callable[..., pa.RecordBatch]:
    """``engine.sources.files.integral.integral_floats``, loaded from its file like :func:`_unique_names`."""
    here = Path(__file__).resolve()
    spec = importlib.util.spec_from_file_location("_biconic_integral", here.with_name("integral.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    integral: Callable[..., pa.RecordBatch] = module.integral_floats
    return integral


def _peak_rss_kb() -> int | None:
    """This process's peak RSS (VmHWM; ``ru_maxrss`` would include the parent's, inherited at fork)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _list_sheets(path: str, original: str) -> dict[str, Any]:
    """The sheet names, which of them are not worksheets (``{"Chart1": "chart sheet"}``), which are hidden;
    those facts from the ``original`` workbook when ``path`` is its relabelled copy."""
    import fastexcel

    names = list(fastexcel.read_excel(path).sheet_names)
    kinds, hidden = _sibling("_xlsx_parts").sheet_facts(original) or _xls_sheet_facts(original, names)
    return {"ok": True, "sheets": names, "kinds": kinds, "hidden": hidden}


def _xls_sheet_facts(path: str, names: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """For a BIFF .xls, xlrd (when installed) lists worksheets only: the others are chart or macro sheets."""
    if importlib.util.find_spec("xlrd") is None:
        return {}, []
    try:
        worksheets, hidden = _fallback().sheet_names(path)
    except Exception:  # not a BIFF file, or one xlrd cannot read: fastexcel's listing stands
        return {}, []
    return {n: "chart or macro sheet" for n in names if n not in worksheets}, hidden


def _raw_names(
    reader: fastexcel.ExcelReader, sheet: str, header_row: int, columns: Sequence[fastexcel.ColumnInfo]
) -> list[str]:
    """The header cells as written ('' for blanks), undoing fastexcel's ``a, a -> a, a_1`` renaming.

    fastexcel suffixes repeated headers itself, so ``a_1`` may be a literal header or a second ``a``; only
    when such a name occurs do we pay for a second parse that reads the header row's cells as text.
    """
    names = [c.name if c.column_name_from == "looked_up" else "" for c in columns]
    suspects: dict[int, str] = {}
    seen: set[str] = set()
    for i, column in enumerate(columns):
        match = _ALIAS.match(column.name)
        if match and column.column_name_from == "looked_up":
            base, n = match.group(1), int(match.group(2))
            if base in seen and all(f"{base}_{k}" in seen for k in range(1, n)):
                suspects[i] = base
        seen.add(column.name)
    if not suspects:
        return names
    header = reader.load_sheet(
        sheet, header_row=None, skip_rows=header_row, n_rows=1, dtypes="string", schema_sample_rows=1
    )
    batch = header.to_arrow()
    cells: dict[int, Any] = {}
    if batch.num_rows:
        cells = {c.absolute_index: batch.column(j)[0].as_py() for j, c in enumerate(header.selected_columns)}
    for i, base in suspects.items():
        if cells.get(columns[i].absolute_index) != names[i]:
            names[i] = base
    return names


def _header_past_the_end(exc: BaseException, path: str, sheet: str, header_row: int) -> bool:
    """Whether ``exc`` is calamine's panic for a header row below a .xls/.ods sheet's last row (an empty
    sheet for us, as it is for .xlsx); checked on a fresh reader, since the panicked one may be broken."""
    if type(exc).__name__ != "PanicException" or header_row == 0:
        return False
    import fastexcel

    try:
        whole = fastexcel.read_excel(path).load_sheet(sheet, header_row=None, skip_rows=0, n_rows=1)
    except BaseException:  # the original panic is the one to report
        return False
    return whole.total_height <= header_row


def _view_type(arrow_type: pa.DataType) -> pa.DataType:
    import pyarrow as pa

    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_null(arrow_type):
        return pa.string_view()
    return arrow_type


def _as_view(column: pa.Array, target: pa.DataType) -> pa.Array:
    """``column`` as ``target``; strings are copied first so a batch carries only its own characters."""
    import pyarrow as pa

    if column.type == target:
        return column
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), target)
    # A view array cast from a slice still points into the whole sheet's character buffer, and the IPC
    # writer would write that whole buffer with every batch; concatenating compacts the slice.
    compact = pa.concat_arrays([column, pa.array([], column.type)])
    return compact.cast(target)


def _write_ipc(batch: pa.RecordBatch | None, names: list[str], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.ipc

    if batch is None:
        batch = pa.record_batch([], schema=pa.schema([]))
    schema = pa.schema([pa.field(n, _view_type(t)) for n, t in zip(names, batch.schema.types, strict=True)])
    with pa.OSFile(str(path), "wb") as sink, pyarrow.ipc.new_file(sink, schema) as writer:
        for start in range(0, batch.num_rows, _BATCH_ROWS):
            piece = batch.slice(start, _BATCH_ROWS)
            arrays = [_as_view(piece.column(i), f.type) for i, f in enumerate(schema)]
            writer.write_batch(pa.record_batch(arrays, schema=schema))


def _read_sheet(
    path: str,
    sheet: str,
    *,
    header_row: int | None,
    skip_rows: int,
    dtypes: Mapping[str, str] | None,
    schema_only: bool,
    out: Path,
) -> dict[str, Any]:
    """Write the sheet; ``header_row=None`` finds the header first (:func:`_detect_header`)."""
    import fastexcel

    reader = fastexcel.read_excel(path)
    wanted: dict[str, str] = dict(dtypes or {})

    def load(types: Mapping[str, str] | Mapping[int, str]) -> fastexcel.ExcelSheet:
        # skip_rows (0 by default) pins the header to the absolute row ``header_row`` (fastexcel otherwise
        # starts at the first non-empty row, and the spreadsheet row numbers would be unknowable);
        # schema_sample_rows=None infers types from every row: a late text cell in a number column is no null.
        return reader.load_sheet(
            sheet,
            header_row=header_row,
            skip_rows=skip_rows,
            schema_sample_rows=None,
            dtypes=cast("fastexcel.DTypeMap", {**mixed, **types}) if types or mixed else None,
        )

    mixed: dict[str, str] = {}
    try:
        if header_row is None:
            header_row = _detect_header(reader, sheet)
        loaded = _load_mixed(load, dict(wanted), mixed)  # fastexcel's names equal ours nearly always
    except fastexcel.SheetNotFoundError:
        raise _Failure(
            "missing_sheet", f"sheet {sheet!r} not found", sheets=list(reader.sheet_names)
        ) from None
    except BaseException as exc:
        if header_row is None or not _header_past_the_end(exc, path, sheet, header_row):
            raise
        _write_ipc(None, [], out / IPC_FILE)
        return {"ok": True, "rows": 0, "columns": [], "file": IPC_FILE, "header_row": header_row}
    columns = loaded.selected_columns
    names = _unique_names()(_raw_names(reader, sheet, header_row, columns))
    _check_dtypes(wanted, names)
    # Our names differ from fastexcel's for blank and repeated headers: then reload, typing by position.
    pairs = list(zip(columns, names, strict=True))
    if any((c.name if c.name in wanted else None) != (n if n in wanted else None) for c, n in pairs):
        loaded = load({c.index: wanted[n] for c, n in pairs if n in wanted})
    batch, errors = loaded.to_arrow_with_errors()
    batch, ods = _with_ods_errors(path, sheet, batch, loaded.selected_columns, header_row + 1 + skip_rows)
    batch = _integral_floats()(batch, keep={i for i, n in enumerate(names) if n in wanted})  # before any slice
    if schema_only:
        batch = batch.slice(0, 0)
    _write_ipc(batch, names, out / IPC_FILE)
    return {
        "ok": True, "rows": batch.num_rows, "columns": names, "file": IPC_FILE, "header_row": header_row,
        "mixed": [n for c, n in pairs if c.name in mixed and n not in wanted],
        **_error_facts(_cell_errors(errors, names) + [[r, names[c], t] for r, c, t in ods], schema_only),
    }


def _error_facts(cells: list[list[Any]], schema_only: bool) -> dict[str, Any]:
    """The error cells, or for a schema only the columns that hold one (they may become text)."""
    return {"cell_errors": [] if schema_only else cells, "error_columns": sorted({str(c[1]) for c in cells})}


def _check_dtypes(wanted: Mapping[str, str], names: Sequence[str]) -> None:
    unknown = [k for k in wanted if k not in names]
    if unknown and names:  # a sheet with no columns at all is empty, not mistyped
        listed = ", ".join(repr(n) for n in names) or "none"
        missing = ", ".join(map(repr, unknown))
        raise _Failure("bad_dtypes", f"dtypes names column(s) {missing} not in the sheet; columns: {listed}")


def _detect_header(reader: fastexcel.ExcelReader, sheet: str) -> int:
    """The header's 0-based row: of the sheet's first 50 rows, the first with the most filled cells, none of
    them a number (a title row above a table has fewer cells; data rows hold numbers); row 0 if none."""
    top = reader.load_sheet(
        sheet, header_row=None, skip_rows=0, n_rows=_DETECT_ROWS, dtypes="string", schema_sample_rows=1
    ).to_arrow()
    best, widest = 0, 0
    for i, row in enumerate(top.to_pylist()):
        filled = [str(v) for v in row.values() if v is not None and str(v).strip()]
        if len(filled) > widest and not any(_NUMBER.fullmatch(v.strip()) for v in filled):
            best, widest = i, len(filled)
    return best


def _load_mixed(
    load: Callable[[Mapping[str, str]], fastexcel.ExcelSheet], wanted: dict[str, str], mixed: dict[str, str]
) -> fastexcel.ExcelSheet:
    """The sheet, with each column fastexcel cannot type (dates and text, only error cells...) read as text.

    fastexcel names one such column per failure, so each one costs a parse; ``mixed`` collects them.
    """
    import fastexcel

    while True:
        try:
            return load(wanted)
        except (fastexcel.UnsupportedColumnTypeCombinationError, fastexcel.CalamineCellError) as exc:
            found = _UNTYPED.search(str(exc))
            if found is None or found.group(1) in mixed or found.group(1) in wanted:
                raise
            mixed[found.group(1)] = "string"


def _cell_errors(errors: fastexcel.CellErrors | None, names: Sequence[str]) -> list[list[Any]]:
    """``[data row, column, "#DIV/0!"]`` for each cell holding a formula error (or a value of another type)."""
    out: list[list[Any]] = []
    for error in errors.errors if errors is not None else ():
        row, col = error.offset_position
        found = _ERROR_CELL.search(error.detail)
        text = _ERROR_TEXT.get(found.group(1), f"#{found.group(1).upper()}") if found else error.detail
        out.append([row, names[col], text])
    return out


def _handle(request: Mapping[str, Any], out: Path) -> dict[str, Any]:
    path = str(request["path"])
    header_row = None if request.get("header_row") == "auto" else int(request.get("header_row", 0))
    skip_rows = int(request.get("skip_rows", 0))
    try:
        if request["op"] == "sheets":
            return _list_sheets(path, str(request.get("original", path)))
        return _read_sheet(
            path,
            str(request["sheet"]),
            header_row=header_row,
            skip_rows=skip_rows,
            dtypes=request.get("dtypes"),
            schema_only=bool(request.get("schema_only", False)),
            out=out,
        )
    except (_Failure, MemoryError, OSError, SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:  # calamine's errors and panics: a legacy .xls gets a second reader
        if _MACRO_SHEET in str(exc) and not request.get("relabelled"):
            relabelled = _sibling("_xlsx_parts").macro_sheets_relabelled(path, out)
            return _handle({**request, "path": relabelled, "relabelled": True, "original": path}, out)
        version = _biff(path, exc)
        if version is None:
            raise
        return _read_legacy(request, out, version=version, header_row=header_row, skip_rows=skip_rows, cause=exc)


def _biff(path: str, exc: BaseException) -> str | None:
    """The BIFF version of a legacy .xls that calamine failed on (not for want of a sheet or a password)."""
    import fastexcel

    if isinstance(exc, fastexcel.SheetNotFoundError) or "password protected" in str(exc).lower():
        return None
    return _fallback().biff_version(path)  # type: ignore[no-any-return]


def _read_legacy(
    request: Mapping[str, Any], out: Path, *, version: str, header_row: int | None, skip_rows: int,
    cause: BaseException,
) -> dict[str, Any]:
    """The job done by xlrd instead; without it, or when it fails too, an error naming the BIFF version."""
    fallback = _fallback()
    path, why = str(request["path"]), _first_line(cause)
    if importlib.util.find_spec("xlrd") is None:
        raise _Failure("legacy", f"a {version} workbook the Excel reader cannot read ({why}); install xlrd "
                                 "(pip install xlrd) to read it with the fallback reader, or save it as .xlsx")
    try:
        if request["op"] == "sheets":
            names, hidden = fallback.sheet_names(path)
            return {"ok": True, "sheets": names, "kinds": {}, "hidden": hidden, "reader": f"xlrd, {version}"}
        sheet = str(request["sheet"])
        header, batch, errors, used = fallback.read_sheet(path, sheet, header_row=header_row, skip_rows=skip_rows)
    except LookupError:
        raise _Failure("missing_sheet", f"sheet {request['sheet']!r} not found",
                       sheets=fallback.sheet_names(path)[0]) from None
    except Exception as exc:
        raise _Failure("legacy", f"cannot read this {version} workbook: {why}; xlrd: {_first_line(exc)}") from exc
    names = _unique_names()(header)
    if request.get("schema_only"):
        batch = batch.slice(0, 0)
    _write_ipc(batch if batch.num_columns else None, names, out / IPC_FILE)
    return {
        "ok": True, "rows": batch.num_rows, "columns": names, "file": IPC_FILE, "header_row": used,
        "mixed": [], "reader": f"xlrd, {version}",
        **_error_facts([[r, names[c], t] for r, c, t in errors], bool(request.get("schema_only"))),
    }


def _fallback() -> Any:
    """``_xls_fallback``, loaded from its file (the engine package is not imported here)."""
    return _sibling("_xls_fallback")


def _sibling(name: str) -> Any:
    where = Path(__file__).resolve().with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_biconic{name}", where)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _with_ods_errors(
    path: str, sheet: str, batch: pa.RecordBatch, columns: Sequence[fastexcel.ColumnInfo], first: int
) -> tuple[pa.RecordBatch, list[tuple[int, int, str]]]:
    """An .ods sheet's error cells, which calamine reads as 0, nulled; with their (data row, column index)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = _sibling("_ods_errors").error_cells(path, sheet) if path.lower().endswith(".ods") else []
    where = {c.absolute_index: i for i, c in enumerate(columns)}
    cells = [(r - first, where[c], t) for r, c, t in found if c in where and 0 <= r - first < batch.num_rows]
    arrays = list(batch.columns)
    for i in {c for _, c, _ in cells}:
        mask = [False] * batch.num_rows
        for r, c, _ in cells:
            mask[r] = mask[r] or c == i
        arrays[i] = pc.if_else(pa.array(mask), pa.nulls(batch.num_rows, arrays[i].type), arrays[i])
    return pa.record_batch(arrays, schema=batch.schema), cells


def _run(request: Mapping[str, Any], out: Path) -> dict[str, Any]:
    try:
        return _handle(request, out)
    except _Failure as failure:
        return {"ok": False, "kind": failure.kind, "message": failure.message, **failure.extra}
    except MemoryError as exc:  # pyarrow's ArrowMemoryError is one too
        return {"ok": False, "kind": "memory", "message": _first_line(exc)}
    except OSError as exc:
        return {"ok": False, "kind": "io", "message": _first_line(exc)}
    except Exception as exc:
        import fastexcel

        kind = "corrupt" if isinstance(exc, fastexcel.FastExcelError) else "internal"
        return {"ok": False, "kind": kind, "message": _first_line(exc)}
    except BaseException as exc:  # pyo3's PanicException: a Rust panic inside the parser
        if isinstance(exc, SystemExit | KeyboardInterrupt):
            raise
        return {"ok": False, "kind": "crash", "message": _first_line(exc)}


def main(argv: Sequence[str]) -> int:
    """Run one request (``argv[1]``, JSON) and write ``result.json``; exit 0 on success, 2 on failure."""
    request = json.loads(argv[1])
    _limit_memory(int(request["memory_limit_mb"]))
    out = Path(request["out_dir"])
    result = _run(request, out)
    result["peak_rss_kb"] = _peak_rss_kb()
    (out / RESULT_FILE).write_text(json.dumps(result), encoding="utf-8")
    return 0 if result["ok"] else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
