"""``${VAR}`` in pipeline and spec files: interpolated after YAML parsing, ``$${VAR}`` a literal, an unset
variable a one-line error naming it and the field, and the values never echoed back in errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import SpecError
from engine.spec.env import interpolate
from engine.spec.models import Filter
from engine.spec.parse import load_pipeline_file, read_pipeline_file, read_pipeline_spec


def test_string_values_are_interpolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERS_TABLE", "sales.orders")
    monkeypatch.setenv("CONN", "7")
    monkeypatch.setenv("YAML_LOOKING", "{a: [1, 2]}")  # a value is text: it never changes the file's structure
    file = tmp_path / "p.yaml"
    file.write_text("source: {path: 'postgresql://app@db/shop?table=x', comment: '${YAML_LOOKING}'}\n"
                    "target: {table: '${ORDERS_TABLE}', connection_id: '${CONN}'}\n"
                    "steps: [{filter: \"note != '$${ORDERS_TABLE}'\"}]\n")
    [spec], used = read_pipeline_file(file)
    assert spec.target.table == "sales.orders" and spec.target.connection_id == 7
    assert spec.source.options["comment"] == "{a: [1, 2]}"
    assert spec.pipeline.steps == (Filter(expr="note != '${ORDERS_TABLE}'"),)  # $${...} is a literal
    assert used == {"sales.orders": "${ORDERS_TABLE}", "7": "${CONN}", "{a: [1, 2]}": "${YAML_LOOKING}"}


def test_an_unset_variable_names_it_and_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    file = tmp_path / "p.yaml"
    file.write_text("loads:\n  - {source: a.csv, target: t}\n"
                    "  - {source: b.csv, target: {table: t, archive: 's3://${NOT_SET_HERE}/x'}}\n")
    with pytest.raises(SpecError) as info:
        load_pipeline_file(file)
    assert str(info.value) == "loads[1].target.archive: environment variable NOT_SET_HERE is not set"
    file.write_text("source: a.csv\ntarget: '${1BAD}'\n")
    with pytest.raises(SpecError, match=r"^target: \$\{1BAD\} is not an environment variable name"):
        load_pipeline_file(file)


def test_errors_show_the_variable_not_its_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOAD_MODE", "Sup3rSecretValue")
    file = tmp_path / "p.yaml"
    file.write_text("source: a.csv\ntarget: {table: t, mode: '${LOAD_MODE}'}\n")
    with pytest.raises(SpecError) as info:
        load_pipeline_file(file)
    assert "Sup3rSecretValue" not in str(info.value) and "${LOAD_MODE}" in str(info.value), str(info.value)
    assert info.value.__cause__ is None  # pydantic's error would show the value in a traceback


def test_spec_files_are_interpolated_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIN_AMOUNT", "10")
    file = tmp_path / "spec.yaml"
    file.write_text("steps: [{filter: 'amount > ${MIN_AMOUNT}'}]\n")
    assert read_pipeline_spec(file).steps == (Filter(expr="amount > 10"),)


def test_keys_and_other_values_are_left_alone() -> None:
    assert interpolate({"${K}": 1, "n": 2.5, "b": True, "l": [None]}) == ({"${K}": 1, "n": 2.5, "b": True,
                                                                          "l": [None]}, {})
