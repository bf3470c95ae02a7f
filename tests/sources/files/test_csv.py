"""CSV and TSV through ``open_source``: options, encodings, typing with rejects, folders, globs, bad files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from engine.errors import SourceError, SpecError
from engine.plan.columns import REJECT_PREFIX, ROW_COLUMN
from engine.sources import open_source
from engine.sources.files.csv import CsvSource
from tests.sources._helpers import frames, one, visible

_frames, _one, _visible = frames, one, visible


def _rejects(df: pl.DataFrame) -> list[str | None]:
    """The first reject reason of each row (None when the row is fine)."""
    cols = [c for c in df.columns if c.startswith(REJECT_PREFIX)]
    if not cols:
        return [None] * df.height
    return df.select(pl.coalesce(cols)).to_series().to_list()


def test_polars_written_csv_is_typed(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    pl.DataFrame({
        "id": [1, 2, 3],
        "amount": [1.5, None, 3.25],
        "name": ["a", "b", None],
        "day": [dt.date(2024, 1, 1), dt.date(2024, 2, 1), dt.date(2024, 3, 1)],
        "ts": [dt.datetime(2024, 1, 1, 10), dt.datetime(2024, 1, 2, 11, 30), None],
        "flag": [True, False, True],
    }).write_csv(path)
    source = open_source(path)
    assert isinstance(source, CsvSource)
    parts = source.partitions()
    assert [p.label for p in parts] == ["orders.csv"]
    assert parts[0].size_bytes == path.stat().st_size
    df = source.scan(parts[0]).collect()
    assert df.schema["id"] == pl.Int64
    assert df.schema["amount"] == pl.Float64
    assert df.schema["name"] == pl.String
    assert df.schema["day"] == pl.Date
    assert df.schema["ts"] == pl.Datetime("us")
    assert df.schema["flag"] == pl.Boolean
    assert df[ROW_COLUMN].to_list() == [2, 3, 4]  # line numbers: the header is line 1
    assert _visible(df).rows() == [
        (1, 1.5, "a", dt.date(2024, 1, 1), dt.datetime(2024, 1, 1, 10), True),
        (2, None, "b", dt.date(2024, 2, 1), dt.datetime(2024, 1, 2, 11, 30), False),
        (3, 3.25, None, dt.date(2024, 3, 1), None, True),
    ]
    assert _rejects(df) == [None, None, None]


def test_non_iso_dates_stay_text(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("fecha\n01/02/2024\n31/12/2024\n")
    df = _one(path)
    assert df.schema["fecha"] == pl.String


def test_delimiter_and_quote_options(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_text("id;name;note\n1;'a;b';x\n2;plain;'it''s'\n", encoding="utf-8")
    df = _one(path, delimiter=";", quote_char="'")
    assert _visible(df).rows() == [(1, "a;b", "x"), (2, "plain", "it's")]


def test_no_header(tmp_path: Path) -> None:
    path = tmp_path / "nh.csv"
    path.write_text("1,a\n2,b\n")
    df = _one(path, has_header=False)
    assert _visible(df).columns == ["column_1", "column_2"]
    assert _visible(df).rows() == [(1, "a"), (2, "b")]
    assert df[ROW_COLUMN].to_list() == [1, 2]


def test_skip_rows_null_values_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "messy.csv"
    path.write_text("exported by tool\n\nid,city\n1,NA\n2,Madrid\n")
    df = _one(path, skip_rows=2, null_values=["NA"])
    assert _visible(df).rows() == [(1, None), (2, "Madrid")]
    assert df[ROW_COLUMN].to_list() == [4, 5]
    comment = tmp_path / "comment.csv"
    comment.write_text("# generated\nid,city\n1,Lima\n")
    assert _visible(_one(comment, comment_prefix="#")).rows() == [(1, "Lima")]


def test_null_values_as_a_single_string(tmp_path: Path) -> None:
    path = tmp_path / "na.csv"
    path.write_text("a,b\nNA,N\nx,A\n")
    df = _one(path, null_values="NA")
    assert _visible(df).rows() == [(None, "N"), ("x", "A")]


def test_tsv_by_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.tsv"
    path.write_text("id\tname\n1\ta, b\n2\tc\n")
    df = _one(path)
    assert _visible(df).rows() == [(1, "a, b"), (2, "c")]


def test_tsv_format_for_txt(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("id\tname\n1\tx\n")
    source = open_source(path, format="tsv")
    df = source.scan(source.partitions()[0]).collect()
    assert _visible(df).rows() == [(1, "x")]


TEXT = "id,name,price\n1,José Ñandú,1.5\n2,€uro café,2\n"


@pytest.mark.parametrize(("encoding", "option"), [
    ("utf-8", None),
    ("utf-8-sig", None),  # a BOM is not part of the first column name
    ("utf-8-sig", "utf-8-sig"),
    ("latin-1", "latin-1"),
    ("cp1252", "cp1252"),
    ("utf-16", "utf-16"),
])
def test_encodings(tmp_path: Path, encoding: str, option: str | None) -> None:
    text = TEXT if encoding != "latin-1" else TEXT.replace("€", "E")  # latin-1 has no euro sign
    path = tmp_path / f"enc_{encoding}.csv"
    path.write_bytes(text.encode(encoding))
    df = _one(path, **({"encoding": option} if option else {}))
    assert _visible(df).columns == ["id", "name", "price"]
    expected_euro = "€uro café" if encoding != "latin-1" else "Euro café"
    assert _visible(df).rows() == [(1, "José Ñandú", 1.5), (2, expected_euro, 2.0)]


def test_cp1252_euro_differs_from_latin1(tmp_path: Path) -> None:
    path = tmp_path / "cp.csv"
    path.write_bytes("name\n€\n".encode("cp1252"))
    assert _visible(_one(path, encoding="cp1252"))["name"].to_list() == ["€"]
    assert _visible(_one(path, encoding="latin-1"))["name"].to_list() == ["\x80"]


def test_latin1_read_as_utf8_is_a_source_error_or_lossy(tmp_path: Path) -> None:
    """Without the encoding option, latin-1 bytes are invalid UTF-8: scanning must not crash the sampler; the
    error (if any) surfaces when the data is read, naming the file."""
    path = tmp_path / "latin.csv"
    path.write_bytes("id,name\n1,José\n".encode("latin-1"))
    source = open_source(path)
    frame = source.scan(source.partitions()[0])
    with pytest.raises(pl.exceptions.ComputeError, match="(?i)utf-8"):
        frame.collect()


def test_unknown_encoding(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a\n1\n")
    with pytest.raises(SourceError, match="unknown encoding 'klingon'") as info:
        _one(path, encoding="klingon")
    assert info.value.source.endswith("x.csv")


def test_undecodable_bytes_for_the_given_encoding(tmp_path: Path) -> None:
    path = tmp_path / "bad_ascii.csv"
    path.write_bytes(b"a\n\xff\n")
    with pytest.raises(SourceError, match="not valid ascii") as info:
        _one(path, encoding="ascii")
    assert "bad_ascii.csv" in str(info.value)


def test_bad_value_after_the_sample_is_a_reject_not_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "typed.csv"
    path.write_text("id,amount\n1,1.5\n2,2.5\n3,oops\n4,4.5\n")
    df = _one(path, infer_rows=2)
    assert df.schema["amount"] == pl.Float64
    assert df["amount"].to_list() == [1.5, 2.5, None, 4.5]
    reasons = _rejects(df)
    assert reasons == [None, None, "oops is not a valid float64", None]
    assert [c for c in df.columns if c.startswith(REJECT_PREFIX) and c.endswith(":type:amount")]


def test_bad_value_far_past_the_default_sample(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    n = 12_000
    rows = [f"{i},{i * 2}" for i in range(n)] + ["x,1"]
    path.write_text("a,b\n" + "\n".join(rows) + "\n")
    df = _one(path)
    assert df.schema["a"] == pl.Int64
    assert df.height == n + 1
    reasons = _rejects(df)
    assert reasons[-1] == "x is not a valid int64"
    assert sum(r is not None for r in reasons) == 1


def test_dtypes_override(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_text("code,amount\n007,1\n008,x\n")
    df = _one(path, dtypes={"code": "text", "amount": "decimal(10,2)"})
    assert df["code"].to_list() == ["007", "008"]
    assert df.schema["amount"] == pl.Decimal(10, 2)
    reasons = _rejects(df)
    assert reasons[0] is None
    assert reasons[1] is not None and reasons[1].startswith("x is not a valid decimal")


def test_dtypes_errors(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_text("a\n1\n")
    with pytest.raises(SpecError) as info:
        _one(path, dtypes={"a": "int9"})
    assert info.value.path == "source.dtypes.a"
    with pytest.raises(SourceError, match="'zz'"):
        _one(path, dtypes={"zz": "int"})


@pytest.mark.parametrize(("option", "value"), [("delimiter", ";;"), ("delimiter", ""), ("quote_char", "''")])
def test_bad_single_character_options(tmp_path: Path, option: str, value: str) -> None:
    path = tmp_path / "o.csv"
    path.write_text("a\n1\n")
    with pytest.raises(SpecError) as info:
        _one(path, **{option: value})
    assert info.value.path == f"source.{option}"


def test_blank_and_duplicate_header_names_are_made_unique(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text('a,a,,"; DROP TABLE x; --"\n1,2,3,4\n')
    df = _one(path)
    assert _visible(df).columns == ["a", "a_2", "column_3", "; DROP TABLE x; --"]
    assert _visible(df).row(0) == (1, 2, 3, 4)


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("a,b\n")
    df = _one(path)
    assert _visible(df).columns == ["a", "b"]
    assert df.height == 0


def test_empty_file_is_a_source_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(SourceError) as info:
        _one(path)
    assert info.value.source == "empty.csv"
    assert "empty" in info.value.message


def test_folder_of_files(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in (2, 1, 3):
        pl.DataFrame({"n": [i, i * 10]}).write_csv(folder / f"part_{i}.csv")
    (folder / "README.md").write_text("not data")  # unknown extensions are ignored in folders
    frames = _frames(folder)
    assert [f["n"].to_list() for f in frames] == [[1, 10], [2, 20], [3, 30]]  # sorted by name
    labels = [p.label for p in open_source(folder).partitions()]
    assert labels == ["part_1.csv", "part_2.csv", "part_3.csv"]


def test_glob_of_files(tmp_path: Path) -> None:
    for name in ("orders_2024.csv", "orders_2025.csv", "customers.csv"):
        pl.DataFrame({"n": [len(name)]}).write_csv(tmp_path / name)
    source = open_source(str(tmp_path / "orders_*.csv"))
    assert [p.label for p in source.partitions()] == ["orders_2024.csv", "orders_2025.csv"]
    keys = {p.key for p in source.partitions()}
    assert len(keys) == 2


def test_glob_matching_nothing(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no file matches"):
        open_source(str(tmp_path / "*.csv"))


def test_missing_file_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        open_source(tmp_path / "nope.csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no readable files"):
        open_source(empty)


def test_mixed_formats_in_a_folder(tmp_path: Path) -> None:
    pl.DataFrame({"a": [1]}).write_csv(tmp_path / "a.csv")
    pl.DataFrame({"a": [1]}).write_parquet(tmp_path / "b.parquet")
    with pytest.raises(SpecError) as info:
        open_source(tmp_path)
    assert info.value.path == "source.format"


def test_unknown_extension_and_format(tmp_path: Path) -> None:
    path = tmp_path / "data.dat"
    path.write_text("a\n1\n")
    with pytest.raises(SpecError, match="cannot tell the format of data.dat"):
        open_source(path)
    with pytest.raises(SpecError, match="unknown format 'xml'"):
        open_source(path, format="xml")
    source = open_source(path, format="csv")
    assert _visible(source.scan(source.partitions()[0]).collect()).rows() == [(1,)]


def test_unknown_option_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("a\n1\n")
    with pytest.raises(SpecError) as info:
        open_source(path, options={"seperator": ";"})
    assert info.value.path == "source.seperator"
    assert "delimiter" in info.value.message  # lists the known ones


def test_fingerprint_changes_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("a\n1\n")
    before = open_source(path).partitions()[0].fingerprint
    assert open_source(path).partitions()[0].fingerprint == before
    path.write_text("a\n1\n2\n")
    assert open_source(path).partitions()[0].fingerprint != before


def test_read_and_schema_give_arrow_without_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    pl.DataFrame({"a": [1, 2], "b": ["x", "y"]}).write_csv(path)
    source = open_source(path)
    reader = source.read(source.partitions()[0], columns=["a", "b"])
    table = reader.read_all()
    assert table.column_names == ["a", "b"]
    assert table.num_rows == 2
    assert ROW_COLUMN not in source.schema().names


def test_columns_named_like_engine_bookkeeping_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "sneaky.csv"
    path.write_text("__biconic_row,__biconic_status,v\n99,x,1\n")
    df = _one(path)
    assert _visible(df).columns == ["_biconic_row", "_biconic_status", "v"]
    assert _visible(df).row(0) == (99, "x", 1)
    assert df[ROW_COLUMN].to_list() == [2]


def _chunked(path: Path, **options: Any) -> pl.DataFrame:
    source = open_source(path, options=options)
    frames, before = [], 0
    for make in source.chunks(source.partitions()[0]):
        df = make(before).collect()
        before += df.height
        frames.append(df)
    return pl.concat(frames, how="diagonal_relaxed")


@pytest.mark.parametrize(("content", "options"), [
    (b'id,name\r\n1,a\r\n2,"b\r\nc"\r\n3,d\r\n4,' + b"e" * 60 + b"\r\n5,f\r\n", {}),
    (b"# exported\nid,v\n1,a\n# a comment in the middle\n2,b\n3,c\n4,d\n5,e\n6,f\n", {"comment_prefix": "#"}),
    (b"junk\njunk 2\nid,v\n1,a\n2,b\n3,c\n4,d\n5,e\n6,f\n7,g\n", {"skip_rows": 2}),
    (b"id,v\n1,a\n2,b\n3,c\n4,d\n5,e\n6,no newline at the end", {}),
    (b"\xef\xbb\xbfid,v\n1,a\n2,b\n3,c\n4,d\n5,e\n", {}),
    (b"1,a\n2,b\n3,c\n4,d\n5,e\n6,f\n", {"has_header": False}),
    ("id;v\n1;é\n2;ñ\n3;€\n4;ü\n5;ö\n6;ä\n".encode("cp1252"), {"encoding": "cp1252", "delimiter": ";"}),
    (b"id,v\n1,'a\nb'\n2,'c,d'\n3,x\n4,y\n5,z\n", {"quote_char": "'"}),
    (b'id,v\n1,"a ""quoted""\nvalue"\n2,b\n3,"c\n\nd"\n4,e\n', {}),
    (b"id,v\n1,x\n2,oops\n3,y\n", {"dtypes": {"v": "int"}}),
    (b"id,v\n", {}),
])
def test_chunks_read_exactly_what_scan_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes,
                                             options: dict[str, Any]) -> None:
    """Chunk boundaries (here every ~16 bytes) must not change rows, values, rejects or row numbers: the
    pipeline matches partition-wide decisions made on ``scan`` to chunk rows by row number."""
    monkeypatch.setenv("BICONIC_CHUNK_MB", str(16 / (1 << 20)))
    path = tmp_path / "c.csv"
    path.write_bytes(content)
    scanned = _one(path, **options)
    chunked = _chunked(path, **options)
    assert chunked.columns == scanned.columns
    assert chunked.rows() == scanned.rows()


def test_hidden_and_lock_files_are_skipped(tmp_path: Path) -> None:
    pl.DataFrame({"n": [1]}).write_csv(tmp_path / "orders.csv")
    (tmp_path / "._orders.csv").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (tmp_path / "~$orders.csv").write_bytes(b"\x05owner lock")
    assert [p.label for p in open_source(tmp_path).partitions()] == ["orders.csv"]
    assert [p.label for p in open_source(str(tmp_path / "*orders.csv")).partitions()] == ["orders.csv"]


@pytest.mark.parametrize("content", [
    b'id,v\r\n1,a\n2,b\r3,"c\rd"\r\n4,e\r5,f',  # CRLF, LF and bare CR mixed, no final newline
    b"id,v\r1,a\r2,b\r3,c\r",  # old Mac: bare CR only
    b"id,v\n1,a\n2,b\n3,c\n4,d\r5,e\r\n",  # a late bare CR (past the head looked at), mended in its chunk
])
def test_mixed_line_endings_load_as_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes) -> None:
    """Polars ends records only at LF, so a bare CR used to merge rows ("found more fields than defined");
    a CR inside quotes stays in the value. Chunked (cut every ~16 bytes) and whole reads agree."""
    monkeypatch.setenv("BICONIC_CHUNK_MB", str(16 / (1 << 20)))
    path = tmp_path / "endings.csv"
    path.write_bytes(content)
    scanned = _visible(_one(path))
    monkeypatch.setattr("engine.sources.files.csv._HEAD", 8)  # chunks mend CRs the head did not show
    chunked = _visible(_chunked(path))
    assert chunked.rows() == scanned.rows()
    assert scanned.columns == ["id", "v"]
    assert scanned["id"].to_list() == list(range(1, scanned.height + 1))
    assert scanned.height >= 3
    if b'"c\rd"' in content:
        assert scanned["v"].to_list() == ["a", "b", "c\rd", "e", "f"]


@pytest.mark.parametrize("delimiter", [";", "\t", "|", ","])
def test_delimiter_is_sniffed_when_not_given(tmp_path: Path, delimiter: str) -> None:
    """A ``;`` file read with ``,`` used to load as one column named ``id;created_at;name``; a decimal comma
    in a ``;`` file and a delimiter inside quotes must not mislead the guess. The report says what was used."""
    path = tmp_path / "guess.csv"
    d = delimiter
    path.write_text(f'id{d}amount{d}name\n1{d}"1,5"{d}"a;b|c"\n2{d}"2,0"{d}x\n', encoding="utf-8")
    source = open_source(path)
    df = _visible(source.scan(source.partitions()[0]).collect())
    assert df.columns == ["id", "amount", "name"]
    assert df.rows() == [(1, "1,5", "a;b|c"), (2, "2,0", "x")]
    assert source.notes() == [f"guess.csv: delimiter {d!r} (sniffed; set --option delimiter=... to override)"]  # type: ignore[attr-defined]


def test_explicit_delimiter_is_respected(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_text("id;name\n1;a\n", encoding="utf-8")
    source = open_source(path, options={"delimiter": ","})
    assert _visible(source.scan(source.partitions()[0]).collect()).columns == ["id;name"]
    assert source.notes() == []  # type: ignore[attr-defined]


def test_a_whole_cp1252_file_is_detected_and_read_as_such(tmp_path: Path) -> None:
    """Read as UTF-8 every accented row used to be quarantined (0 rows loaded); the report says what was used."""
    path = tmp_path / "clientes.csv"
    lines = ["id,nombre"] + [f"{i},Peña Muñoz €{i}" if i % 3 else f"{i},Smith" for i in range(30)]
    path.write_bytes("\n".join(lines).encode("cp1252"))
    source = open_source(path)
    df = _visible(source.scan(source.partitions()[0]).collect())
    assert df["nombre"].to_list()[:3] == ["Smith", "Peña Muñoz €1", "Peña Muñoz €2"]
    assert source.notes()[0].startswith("clientes.csv: encoding cp1252 (detected")  # type: ignore[attr-defined]
    told = open_source(path, options={"encoding": "utf-8"})
    assert told._encoding(told.partitions()[0]) == "utf-8"  # type: ignore[attr-defined]  # told: no detection
    assert _visible(_chunked(path)).rows() == df.rows()


def test_another_legacy_encoding_is_a_one_line_hint(tmp_path: Path) -> None:
    path = tmp_path / "ru.csv"
    path.write_bytes(("id,name\n" + "".join(f"{i},Москва Санкт-Петербург {i}\n" for i in range(20))).encode("cp1251"))
    with pytest.raises(SourceError, match=r"not UTF-8, it looks like cp1251: try --option encoding=cp1251") as info:
        _one(path)
    assert info.value.source == "ru.csv" and "\n" not in str(info.value)
    assert _visible(_one(path, encoding="cp1251"))["name"][0] == "Москва Санкт-Петербург 0"


@pytest.mark.parametrize(("head", "expected"), [
    (b"id,name\n1,ok\n2,bad\xff\n3,fine\n", None),  # one bad line: its row is quarantined
    ("id,n\n1,é\n2,ü\n".encode() + b"3,caf\xe9\n" * 5, None),  # valid UTF-8 accents: a few bad bytes
    (b"id,n\n" + b"1,caf\xe9\n" * 5, "cp1252"),
])
def test_legacy_encoding_guess(head: bytes, expected: str | None) -> None:
    from engine.sources.files.sniff import legacy_encoding

    assert legacy_encoding(head, complete=True) == expected


def test_bare_cr_copy_is_exact_across_its_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The LF copy is made in blocks: a CR at a block's end waits for the next byte (CRLF stays one line end),
    and the quote parity carries over, so a quoted CR split from its quotes stays in its value."""
    monkeypatch.setattr("engine.sources.files.local._CHUNK", 3)
    path = tmp_path / "mac.csv"
    path.write_bytes(b'id,v\r1,"a\rb"\r2,c\r\n3,"d\r\ne"\r4,f')
    df = _visible(_one(path))
    assert df.rows() == [(1, "a\rb"), (2, "c"), (3, "d\r\ne"), (4, "f")]
