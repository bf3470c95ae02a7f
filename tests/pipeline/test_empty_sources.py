"""Empty sources beyond CSV: an empty sheet, an empty JSON or NDJSON file and a 0-row Parquet file fail in one
line naming the file unless ``allow_empty``; the unused sheets of a ``*`` workbook are only noted."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import engine
from engine.errors import EmptySourceError
from tests.sources.files.test_excel import write_xlsx
from tests.support import Sql

pytestmark = pytest.mark.postgres


def _empty_files(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    files = {
        "header only sheet": write_xlsx(folder / "header.xlsx", {"Data": [["day", "qty"]]}),
        "blank sheet": write_xlsx(folder / "blank.xlsx", {"Data": []}),
        "ndjson": folder / "empty.ndjson",
        "json array": folder / "empty.json",
        "parquet": folder / "empty.parquet",
    }
    files["ndjson"].write_text("\n\n")
    files["json array"].write_text("[]")
    pl.DataFrame({"day": [], "qty": []}, schema={"day": pl.Date, "qty": pl.Int64}).write_parquet(files["parquet"])
    return files


@pytest.mark.parametrize("kind", ["header only sheet", "blank sheet", "ndjson", "json array", "parquet"])
def test_an_empty_file_of_any_format_fails_unless_allowed(tmp_path: Path, pg_dsn: str, table: str,
                                                          kind: str) -> None:
    path = _empty_files(tmp_path / "in")[kind]
    with pytest.raises(EmptySourceError, match=rf"^{path.name}.*no rows") as caught:
        engine.load(path, into=table, dsn=pg_dsn, archive="off")
    assert "\n" not in str(caught.value) and "--allow-empty" in str(caught.value)
    report = engine.load(path, into=table, dsn=pg_dsn, archive="off", allow_empty=True)
    assert (report.rows_in - report.rows_filtered, report.rows_loaded) == (0, 0)


def test_the_unused_sheets_of_a_star_workbook_are_noted_not_refused(tmp_path: Path, pg_dsn: str, table: str,
                                                                     sql: Sql) -> None:
    book = write_xlsx(tmp_path / "book.xlsx", {"Data": [["day", "qty"], ["2026-01-01", 1], ["2026-01-02", 2]],
                                               "Sheet2": [], "Sheet3": []})
    report = engine.load(book, into=table, dsn=pg_dsn, archive="off", sheet="*")
    assert report.rows_loaded == 2
    assert sql(f'SELECT count(*) FROM "{table}"')[0][0] == 2
    assert {"book.xlsx[Sheet2]: empty sheet: nothing loaded",
            "book.xlsx[Sheet3]: empty sheet: nothing loaded"} <= set(report.notes)
