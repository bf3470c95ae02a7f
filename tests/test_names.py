"""Column-name normalisation and identifier quoting: hostile, long, blank, duplicate and unicode names."""

from __future__ import annotations

import pytest

from engine.names import MAX_IDENTIFIER_BYTES, normalize_names, qualified, quote_ident, shorten, unique_names


def _fits(name: str) -> bool:
    return 0 < len(name.encode("utf-8")) <= MAX_IDENTIFIER_BYTES


def test_normalize_names_docstring_example() -> None:
    assert normalize_names(["Fecha Pedido", "Importe (€)", "", "Fecha Pedido"]) == [
        "fecha_pedido", "importe", "column_3", "fecha_pedido_2"]


def test_normalize_names_sql_injection_like_names_become_plain_words() -> None:
    out = normalize_names(['"; DROP TABLE x; --', "a'b", "x\"y", "semi;colon",
                           "Robert'); DROP TABLE students;--"])
    assert out == ["drop_table_x", "a_b", "x_y", "semi_colon", "robert_drop_table_students"]
    for name in out:
        assert all(ch.isalnum() or ch == "_" for ch in name)


def test_normalize_names_leading_digit_gets_prefix() -> None:
    assert normalize_names(["1st place", "2024"]) == ["c_1st_place", "c_2024"]


def test_normalize_names_blank_and_symbol_only_names_get_positions() -> None:
    assert normalize_names(["", "   ", "€", "ok"]) == ["column_1", "column_2", "column_3", "ok"]


def test_normalize_names_duplicates_after_normalising_are_numbered() -> None:
    assert normalize_names(["Name", "name", "NAME ", "n-a-m-e"]) == ["name", "name_2", "name_3", "n_a_m_e"]


def test_normalize_names_keeps_unicode_letters_and_folds_compatibility_forms() -> None:
    assert normalize_names(["Año", "Ñandú Total", "ｆｕｌｌ", "Straße", "日付"]) == [
        "año", "ñandú_total", "full", "straße", "日付"]


def test_normalize_names_long_ascii_names_are_shortened_and_distinct() -> None:
    a = "a" * 70
    b = "a" * 69 + "b"
    out = normalize_names([a, b])
    assert all(_fits(n) for n in out)
    assert len(out[0].encode()) == MAX_IDENTIFIER_BYTES
    assert out[0] != out[1]
    assert out[0].startswith("a" * 50)


def test_normalize_names_long_multibyte_names_never_split_a_character() -> None:
    names = ["é" * 40, "é" * 39 + "x", "日" * 30, "a" + "é" * 40]  # 80, 79, 90, 81 bytes
    out = normalize_names(names)
    assert len(set(out)) == len(out)
    for n in out:
        assert _fits(n)
        n.encode("utf-8").decode("utf-8")  # valid UTF-8, no half character
        assert "\ufffd" not in n


def test_normalize_names_long_duplicates_stay_within_limit() -> None:
    out = normalize_names(["x" * 80, "x" * 80, "x" * 80])
    assert len(set(out)) == 3
    assert all(_fits(n) for n in out)


def test_unique_names_docstring_example() -> None:
    assert unique_names(["a", "", "a"]) == ["a", "column_2", "a_2"]


def test_unique_names_avoids_existing_suffixes() -> None:
    out = unique_names(["a", "a_2", "a", "a"])
    assert out[:2] == ["a", "a_2"]
    assert len(set(out)) == 4


def test_unique_names_is_deterministic() -> None:
    names = ["x", "", "x", " ", "x_2"]
    assert unique_names(names) == unique_names(names)


def test_shorten_leaves_short_names_alone() -> None:
    assert shorten("orders") == "orders"
    assert shorten("a" * 63) == "a" * 63


def test_shorten_hashes_the_whole_name() -> None:
    long1, long2 = "p" * 60 + "_one", "p" * 60 + "_two"
    s1, s2 = shorten(long1), shorten(long2)
    assert s1 != s2
    assert len(s1.encode()) <= 63 and len(s2.encode()) <= 63
    assert shorten(long1) == s1  # stable


def test_shorten_respects_a_custom_limit_with_multibyte_text() -> None:
    out = shorten("ñ" * 20, limit=20)
    assert len(out.encode()) <= 20
    assert out.startswith("ñ")


def test_quote_ident_doubles_quotes() -> None:
    assert quote_ident('a"b') == '"a""b"'
    assert quote_ident('"; DROP TABLE x; --') == '"""; DROP TABLE x; --"'
    assert quote_ident("Ñandú") == '"Ñandú"'


def test_quote_ident_refuses_nul() -> None:
    with pytest.raises(ValueError, match="NUL"):
        quote_ident("a\x00b")


def test_qualified_splits_schema() -> None:
    assert qualified("s.t") == '"s"."t"'
    assert qualified("t") == '"t"'
    assert qualified('we"ird.ta"ble') == '"we""ird"."ta""ble"'


def test_unique_names_never_yields_engine_bookkeeping_names() -> None:
    out = unique_names(["__biconic_row", "__biconic_status", "_biconic_row", "__biconic_x"])
    assert not any(n.startswith("__biconic_") for n in out)
    assert len(set(out)) == 4
    assert out[0] == "_biconic_row"
