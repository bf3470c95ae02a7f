"""``split_mb``: a big CSV/NDJSON file listed as byte ranges that cover it exactly, cut only between records,
each read with the whole file's columns, types and row numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from engine.errors import SpecError
from engine.plan.columns import ROW_COLUMN
from engine.sources import open_source
from engine.sources.base import Partition
from engine.sources.files.ranges import byte_ranges, count_records, split_bytes
from tests.sources._helpers import visible

#: about 1 KiB per range: small files still split in several
_SPLIT = 0.001


def _read(source: Any, part: Partition) -> pl.DataFrame:
    """One partition's rows as the pipeline reads them: chunk by chunk, rows numbered on."""
    frames, before = [], 0
    for factory in source.chunks(part):
        df = factory(before).collect()
        before += df.height
        frames.append(df)
    return pl.concat(frames)


def _all(path: Path, **options: Any) -> tuple[list[Partition], pl.DataFrame]:
    source = open_source(path, options=options)
    parts = source.partitions()
    return parts, pl.concat([_read(source, p) for p in parts])


def _same_rows(path: Path, **options: Any) -> list[Partition]:
    """Split and whole readings hold the same rows, row numbers, columns and types; the ranges tile the file."""
    parts, split = _all(path, split_mb=_SPLIT, **options)
    _, whole = _all(path, **options)
    assert len(parts) > 1
    assert split.schema == whole.schema
    assert split.sort(ROW_COLUMN).equals(whole.sort(ROW_COLUMN))
    assert split[ROW_COLUMN].to_list() == whole[ROW_COLUMN].to_list()
    spans = [p.span for p in parts]
    assert spans[0] is not None and spans[0][0] == 0
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False) if a and b)
    assert spans[-1] is not None and spans[-1][1] == path.stat().st_size
    assert sum(p.size_bytes for p in parts) == path.stat().st_size
    return parts


def _csv_lines(n: int, *, newline: str = "\n") -> str:
    rows = [f'{i},"note {i}{newline}second line, with a comma",{i * 1.5}' if i % 7 == 0
            else f'{i},"say ""hi"" {i}",{i * 1.5}' for i in range(n)]
    return newline.join(["id,note,amount", *rows]) + newline


def test_quoted_newlines_are_never_cut(tmp_path: Path) -> None:
    path = tmp_path / "notes.csv"
    path.write_text(_csv_lines(400))
    parts = _same_rows(path)
    data = path.read_bytes()
    for p in parts[1:]:
        assert p.span is not None
        assert data[p.span[0] - 1:p.span[0]] == b"\n"
        assert data.count(b'"', 0, p.span[0]) % 2 == 0  # every cut lies outside quotes


def test_crlf_and_no_trailing_newline(tmp_path: Path) -> None:
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(_csv_lines(300, newline="\r\n").encode())
    _same_rows(crlf)
    bare = tmp_path / "bare.csv"
    bare.write_text(_csv_lines(300).rstrip("\n"))
    _same_rows(bare)
    _, split = _all(bare, split_mb=_SPLIT)
    assert split["id"].to_list()[-1] == 299  # the last record, with no newline, is read


def test_header_and_skipped_rows_only_in_the_first_range(tmp_path: Path) -> None:
    path = tmp_path / "skipped.txt"
    path.write_text("exported by a tool\n" + _csv_lines(300))
    source = open_source(path, format="csv", options={"skip_rows": 1, "split_mb": _SPLIT})
    whole = open_source(path, format="csv", options={"skip_rows": 1})
    parts = source.partitions()
    got = pl.concat([_read(source, p) for p in parts])
    want = _read(whole, whole.partitions()[0])
    assert len(parts) > 1 and got.equals(want)
    assert got[ROW_COLUMN].to_list()[:2] == [3, 4]  # line 1 skipped, line 2 the header
    assert "id" in got.columns and got.schema["amount"] == pl.Float64
    assert got.filter(pl.col("id").cast(pl.String) == "id").height == 0  # the header is no row


def test_a_range_scans_alone_with_the_files_types(tmp_path: Path) -> None:
    path = tmp_path / "typed.csv"
    path.write_text(_csv_lines(300))
    source = open_source(path, options={"split_mb": _SPLIT})
    parts = source.partitions()
    last = visible(source.scan(parts[-1]).collect())
    assert last.schema == visible(_read(source, parts[0])).schema
    assert last["id"].to_list()[-1] == 299


def test_a_file_smaller_than_the_split_keeps_its_whole_key(tmp_path: Path) -> None:
    path = tmp_path / "tiny.csv"
    path.write_text("a,b\n1,2\n")
    split = open_source(path, options={"split_mb": 1}).partitions()
    whole = open_source(path).partitions()
    assert [(p.key, p.label, p.span, p.origin) for p in split] == [(p.key, p.label, None, p.origin) for p in whole]


def test_range_keys_labels_origins_and_former(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(_csv_lines(300))
    whole = open_source(path).partitions()[0]
    parts = open_source(path, options={"split_mb": _SPLIT}).partitions()
    first = parts[0]
    assert first.span is not None
    start, end = first.span
    assert first.key == f"{whole.key}@{start}-{end}" and first.fingerprint == whole.fingerprint
    assert first.label == f"orders.csv[bytes {start}-{end}]"
    assert first.origin == f"{path.resolve()}@{start}-{end}"
    assert (whole.key, whole.fingerprint) in first.former  # loaded whole before: counts as loaded
    assert len({p.origin for p in parts}) == len(parts)


def test_rows_before_counts_whole_file_records(tmp_path: Path) -> None:
    path = tmp_path / "count.csv"
    path.write_text(_csv_lines(300))
    parts = open_source(path, options={"split_mb": _SPLIT}).partitions()
    data = path.read_bytes()
    body = data.index(b"\n") + 1
    for p in parts[1:]:
        assert p.span is not None
        assert p.rows_before == count_records(data[body:p.span[0]], b'"')
    assert count_records(b'a,"x\ny"\n\nb\n', b'"') == 3  # a blank line is a row of nulls to Polars


def test_ndjson_splits_on_lines_and_skips_blank_lines_in_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    lines = [f'{{"id": {i}, "text": "line\\nnot a newline {i}"}}' + ("\n\n  " if i % 9 == 0 else "")
             for i in range(300)]
    path.write_text("\n".join(lines) + "\n")
    parts = _same_rows(path)
    assert all(p.label.startswith("events.ndjson[bytes ") for p in parts)
    source = open_source(path, options={"split_mb": _SPLIT})
    assert source.scan(parts[-1]).collect().equals(_read(source, parts[-1]))  # a range scans alone too


def test_every_range_covers_the_file_for_many_sizes(tmp_path: Path) -> None:
    path = tmp_path / "sizes.csv"
    path.write_text(_csv_lines(200))
    size = path.stat().st_size
    for split in (1, 50, 333, 1000, size - 1, size, size * 2):
        ranges = byte_ranges(path, split=split, quote=b'"', body=len("id,note,amount\n"))
        assert ranges[0].start == 0 and ranges[-1].end == size
        assert all(a.end == b.start and a.start < a.end for a, b in zip(ranges, ranges[1:], strict=False))


@pytest.mark.parametrize("value", [-1, "big", True, float("nan")])
def test_split_mb_must_be_a_positive_number(tmp_path: Path, value: Any) -> None:
    path = tmp_path / "a.csv"
    path.write_text("a\n1\n")
    with pytest.raises(SpecError, match="source.split_mb") as caught:
        open_source(path, options={"split_mb": value})
    assert "\n" not in str(caught.value)


def test_split_mb_refuses_what_it_cannot_split(tmp_path: Path) -> None:
    array = tmp_path / "a.json"
    array.write_text('[{"a": 1}]')
    with pytest.raises(SpecError, match="NDJSON"):
        open_source(array, options={"split_mb": 1})
    latin = tmp_path / "b.csv"
    latin.write_bytes("a\né\n".encode("latin-1"))
    with pytest.raises(SpecError, match="UTF-8"):
        open_source(latin, options={"split_mb": 1, "encoding": "latin-1"})
    assert split_bytes(0) is None and split_bytes(None) is None and split_bytes(0.5) == 1 << 19


def test_ranges_are_remembered_beside_the_content_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every job task of a split file lists its ranges: the pass over the file runs once, not once per task."""
    from engine.sources.files import ranges

    path = tmp_path / "kept.csv"
    path.write_text(_csv_lines(200))
    first = byte_ranges(path, split=500, quote=b'"', body=15)
    ranges._found.clear()  # a new process

    def no_pass(*_: Any) -> None:
        raise AssertionError("the file was scanned again")

    monkeypatch.setattr(ranges, "_scan", no_pass)
    assert byte_ranges(path, split=500, quote=b'"', body=15) == first
    path.write_text(_csv_lines(201))  # another stat: scanned again
    ranges._found.clear()
    with pytest.raises(AssertionError, match="scanned again"):
        byte_ranges(path, split=500, quote=b'"', body=15)


def test_comment_lines_in_the_data_are_not_rows(tmp_path: Path) -> None:
    """Polars skips comment lines without numbering them: the rows before a range leave them out too."""
    path = tmp_path / "commented.csv"
    lines = _csv_lines(300).splitlines()
    path.write_text("\n".join(line if i % 5 else f"# note {i}\n{line}" for i, line in enumerate(lines)) + "\n")
    _same_rows(path, comment_prefix="#")
    assert count_records(b'#x\n1,"\n#y"\n#z\n2\n', b'"', comment=b"#") == 2


def test_a_split_file_is_hashed_once_not_once_per_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.sources.files import content

    path = tmp_path / "hashed.csv"
    path.write_text(_csv_lines(300))
    calls: list[object] = []
    real = content.hash_stream

    def counted(stream: Any, **kw: Any) -> str:
        calls.append(stream)
        return real(stream, **kw)

    monkeypatch.setattr(content, "hash_stream", counted)
    source = open_source(path, options={"split_mb": _SPLIT})
    parts = source.partitions()
    for p in parts:
        _read(source, p)
    assert len(parts) > 1 and len(calls) == 1
