"""JSON arrays and NDJSON through ``open_source``: typing, nested values, folders, malformed files."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from engine.errors import SourceError, SpecError
from engine.plan.columns import ROW_COLUMN
from engine.sources import open_source
from engine.sources.files.json import JsonSource
from tests.sources._helpers import frames, one, visible

_frames, _one, _visible = frames, one, visible


def test_ndjson_written_by_polars(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    pl.DataFrame({"id": [1, 2, 3], "v": [1.5, None, 2.0], "s": ["a", "b", None]}).write_ndjson(path)
    source = open_source(path)
    assert isinstance(source, JsonSource) and source.lines
    df = source.scan(source.partitions()[0]).collect()
    assert df[ROW_COLUMN].to_list() == [1, 2, 3]
    assert df.schema["id"] == pl.Int64 and df.schema["v"] == pl.Float64 and df.schema["s"] == pl.String
    assert _visible(df).rows() == [(1, 1.5, "a"), (2, None, "b"), (3, 2.0, None)]


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson"])
def test_jsonl_extension(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"e{suffix}"
    path.write_text('{"a": 1}\n{"a": 2}\n')
    assert _visible(_one(path))["a"].to_list() == [1, 2]


def test_json_array(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"id": 1, "name": "Ñandú"}, {"id": 2, "name": "€"}]), encoding="utf-8")
    df = _one(path)
    assert _visible(df).rows() == [(1, "Ñandú"), (2, "€")]
    assert df[ROW_COLUMN].to_list() == [1, 2]


def test_fields_missing_from_some_rows_become_null(tmp_path: Path) -> None:
    path = tmp_path / "sparse.ndjson"
    path.write_text('{"a": 1}\n{"a": 2, "extra": "z"}\n{"b": true}\n')
    df = _visible(_one(path))
    assert set(df.columns) == {"a", "extra", "b"}
    assert df["a"].to_list() == [1, 2, None]
    assert df["extra"].to_list() == [None, "z", None]
    assert df["b"].to_list() == [None, None, True]


def test_nested_values_are_kept_for_the_guard(tmp_path: Path) -> None:
    path = tmp_path / "nested.ndjson"
    path.write_text('{"a": {"b": [1, 2]}, "tags": ["x", "y"]}\n{"a": null, "tags": []}\n')
    df = _visible(_one(path))
    assert isinstance(df.schema["a"], pl.Struct)
    assert isinstance(df.schema["tags"], pl.List)
    assert df["tags"].to_list() == [["x", "y"], []]


def test_lone_surrogate_arrives_as_nul_for_the_guard(tmp_path: Path) -> None:
    path = tmp_path / "sur.ndjson"
    path.write_text('{"s": "x\\ud800y"}\n{"s": "ok"}\n')
    s = _one(path)["s"].to_list()
    assert s[1] == "ok"
    assert "\x00" in s[0] or "\ufffd" in s[0]


def test_ndjson_format_option_for_a_json_extension(tmp_path: Path) -> None:
    path = tmp_path / "lines.json"
    path.write_text('{"a": 1}\n{"a": 2}\n')
    source = open_source(path, format="ndjson")
    assert _visible(source.scan(source.partitions()[0]).collect())["a"].to_list() == [1, 2]
    with pytest.raises(SourceError) as info:
        _one(path)  # read as one JSON document it is malformed
    assert info.value.source == "lines.json"


def test_folder_and_glob(tmp_path: Path) -> None:
    for i in range(3):
        pl.DataFrame({"n": [i]}).write_ndjson(tmp_path / f"p{i}.ndjson")
    assert [f["n"].to_list() for f in _frames(tmp_path)] == [[0], [1], [2]]
    assert [f["n"].to_list() for f in _frames(str(tmp_path / "p[12].ndjson"))] == [[1], [2]]


@pytest.mark.parametrize(("name", "content"), [
    ("truncated.json", '[{"a": 1}, {"a": '),
    ("truncated.ndjson", '{"a": 1}\n{"a": \n'),
    ("garbage.json", "\x00\x01\x02 not json at all"),
    ("empty.json", ""),
    ("empty.ndjson", ""),
])
def test_malformed_json_is_a_source_error_naming_the_file(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SourceError) as info:
        _one(path)
    assert info.value.source == name
    assert name in str(info.value)


def test_unknown_option(tmp_path: Path) -> None:
    path = tmp_path / "a.ndjson"
    path.write_text('{"a": 1}\n')
    with pytest.raises(SpecError) as info:
        open_source(path, options={"delimiter": ","})
    assert info.value.path == "source.delimiter"


def test_dates_in_json_stay_text_until_parsed(tmp_path: Path) -> None:
    path = tmp_path / "d.ndjson"
    path.write_text('{"day": "2024-01-31"}\n')
    df = _one(path)
    assert df.schema["day"] in (pl.String, pl.Date)
    value = df["day"][0]
    assert value in ("2024-01-31", dt.date(2024, 1, 31))


def test_ndjson_value_of_another_type_after_the_sample_is_a_reject(tmp_path: Path) -> None:
    from engine.plan.columns import REJECT_PREFIX

    path = tmp_path / "late.ndjson"
    path.write_text('{"n": 1, "f": 1.5, "b": true, "s": null}\n'
                    '{"n": "oops", "f": 2, "b": false, "s": "x"}\n'
                    '{"n": 3, "f": 1e300, "b": null, "s": "y"}\n')
    df = _one(path, infer_rows=1)
    assert df.schema["n"] == pl.Int64 and df.schema["f"] == pl.Float64 and df.schema["b"] == pl.Boolean
    assert df["n"].to_list() == [1, None, 3]
    assert df["f"].to_list() == [1.5, 2.0, 1e300]
    assert df["b"].to_list() == [True, False, None]
    assert df["s"].to_list() == [None, "x", "y"]
    rejects = [c for c in df.columns if c.startswith(REJECT_PREFIX)]
    reasons = df.select(pl.coalesce(rejects)).to_series().to_list()
    assert reasons == [None, "oops is not a valid int64", None]


def test_ndjson_chunks_read_exactly_what_scan_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BICONIC_CHUNK_MB", str(20 / (1 << 20)))
    path = tmp_path / "c.ndjson"
    path.write_text('{"n": 1, "s": "a\\nb"}\n\n{"n": "bad", "s": "ñ"}\r\n'
                    '{"n": 3, "s": null, "x": {"k": [1]}}\n'
                    '{"n": 4}\n{"n": 5, "s": "last"}')
    source = open_source(path, options={"infer_rows": 1})
    part = source.partitions()[0]
    scanned = source.scan(part).collect()
    frames, before = [], 0
    for make in source.chunks(part):
        df = make(before).collect()
        before += df.height
        frames.append(df)
    assert len(frames) > 1
    chunked = pl.concat(frames, how="diagonal_relaxed")
    assert chunked.columns == scanned.columns
    assert chunked.rows() == scanned.rows()
    assert scanned["n"].to_list() == [1, None, 3, 4, 5]
