"""The declarative pipeline spec: YAML or dicts in, typed frozen objects out, every error naming its path.

A pipeline file holds one load (``source`` + ``target`` + ``steps`` + ``rules``) or several under ``loads:``::

    source: {path: data/orders_*.csv, delimiter: ";", encoding: latin-1}
    target: {table: orders, connection_id: 7, partition_by: "fecha:month", mode: merge, key: [order_id]}
    steps:
      - rename: {Fecha: fecha}
      - parse_date: {column: fecha, format: "%d/%m/%Y"}
      - parse_number: {column: importe, decimal: ",", thousands: "."}
      - derive: {total: "importe * 1.21"}
      - filter: "importe > 0"
    rules:
      - not_null: [order_id]
      - range: {column: importe, min: 0}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

from engine.errors import SpecError
from engine.types import parse_type

__all__ = [
    "Allowed", "Cast", "Castable", "Dedupe", "Derive", "FillNull", "Filter", "LoadSpec", "Mode", "NotNull",
    "ParseDate", "ParseNumber", "Pipeline", "Range", "Regex", "Rename", "Rule", "Select", "SourceSpec", "Step",
    "TargetSpec", "Trim", "Unique", "load_pipeline_file", "parse_load", "parse_pipeline",
]

Mode: TypeAlias = Literal["append", "replace", "merge"]
Granularity: TypeAlias = Literal["day", "week", "month", "year"]
Contract: TypeAlias = Literal["evolve", "freeze"]
MODES: tuple[str, ...] = ("append", "replace", "merge")
#: ``table``: one typed column per field; ``document``: the seed's generic table, each row one jsonb document
LAYOUTS: tuple[str, ...] = ("table", "document")
GRANULARITIES: tuple[str, ...] = ("day", "week", "month", "year")
CONTRACTS: tuple[str, ...] = ("evolve", "freeze")


# --- steps -------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Select:
    """Keep only these columns, in this order."""
    columns: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Rename:
    """Rename columns: ``{old: new}``."""
    mapping: Mapping[str, str]


@dataclass(frozen=True, kw_only=True)
class Cast:
    """Cast columns to types (``{amount: "decimal(12,2)"}``); values that do not convert are quarantined."""
    types: Mapping[str, str]


@dataclass(frozen=True, kw_only=True)
class Derive:
    """New or replaced columns from SQL expressions (``{total: "price * qty"}``), evaluated by Polars."""
    exprs: Mapping[str, str]


@dataclass(frozen=True, kw_only=True)
class Filter:
    """Keep rows where the SQL predicate is true; the others are counted as filtered, not quarantined."""
    expr: str


@dataclass(frozen=True, kw_only=True)
class FillNull:
    """Replace nulls: ``{city: "unknown", qty: 0}``."""
    values: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class Trim:
    """Strip surrounding whitespace, optionally collapse inner runs, change case and Unicode-normalise."""
    columns: tuple[str, ...]
    case: Literal["lower", "upper", "title"] | None = None
    collapse_spaces: bool = False
    unicode: Literal["NFC", "NFKC", "NFD", "NFKD"] | None = None


@dataclass(frozen=True, kw_only=True)
class ParseDate:
    """Parse text into a date or timestamp with an explicit strftime ``format`` (``%d/%m/%Y``)."""
    column: str
    format: str
    into: str | None = None
    kind: Literal["date", "datetime"] = "date"


@dataclass(frozen=True, kw_only=True)
class ParseNumber:
    """Parse text numbers with explicit separators (Spanish ``1.234,56``: decimal ``,`` thousands ``.``)."""
    column: str
    decimal: str = "."
    thousands: str | None = None
    into: str | None = None
    type: str = "float64"


@dataclass(frozen=True, kw_only=True)
class Dedupe:
    """Keep one row per key (the first or last seen); the others are counted as filtered."""
    keys: tuple[str, ...]
    keep: Literal["first", "last"] = "first"


Step: TypeAlias = Select | Rename | Cast | Derive | Filter | FillNull | Trim | ParseDate | ParseNumber | Dedupe


# --- rules -------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class NotNull:
    """These columns must have a value."""
    columns: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Unique:
    """The combination of these columns must be unique within the source partition; repeats are quarantined."""
    columns: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Range:
    """``min <= column <= max`` (either bound optional); nulls pass (use not_null for those)."""
    column: str
    min: Any = None
    max: Any = None


@dataclass(frozen=True, kw_only=True)
class Regex:
    """Text must match the pattern (Rust regex syntax, searched; anchor with ^...$)."""
    column: str
    pattern: str


@dataclass(frozen=True, kw_only=True)
class Allowed:
    """Values must be one of ``values``."""
    column: str
    values: tuple[Any, ...]


@dataclass(frozen=True, kw_only=True)
class Castable:
    """Values must convert to ``type`` (the column itself is left unchanged)."""
    column: str
    type: str


Rule: TypeAlias = NotNull | Unique | Range | Regex | Allowed | Castable


@dataclass(frozen=True, kw_only=True)
class Pipeline:
    """The transformation and validation part of a load."""
    steps: tuple[Step, ...] = ()
    rules: tuple[Rule, ...] = ()
    normalize_names: bool = True

    def fingerprint(self) -> str:
        """A hash that changes whenever the steps, rules or naming change (part of the load key)."""
        payload = json.dumps(
            {"steps": [[type(s).__name__, asdict(s)] for s in self.steps],
             "rules": [[type(r).__name__, asdict(r)] for r in self.rules],
             "normalize_names": self.normalize_names},
            sort_keys=True, default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class SourceSpec:
    """Where the rows come from: a file, folder or glob, and reader options for its format."""
    path: str
    format: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class TargetSpec:
    """Where the rows go and how they are stored."""
    table: str
    connection_id: int | None = None
    partition_by: str | None = None
    granularity: Granularity = "month"
    hash_partitions: int = 0
    mode: Mode = "append"
    key: tuple[str, ...] = ()
    contract: Contract = "evolve"
    dsn: str | None = None
    #: archive URL (folder or s3://bucket/prefix); None = BICONIC_ARCHIVE_URL or the data folder; "off" = none
    archive: str | None = None
    layout: str = "table"


@dataclass(frozen=True, kw_only=True)
class LoadSpec:
    """One complete load: source, target and pipeline."""
    source: SourceSpec
    target: TargetSpec
    pipeline: Pipeline = field(default_factory=Pipeline)


# --- parsing -----------------------------------------------------------------------------------------------
def _names(value: Any, path: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise SpecError(path, f"expected a column name or a non-empty list of names, got {value!r}")


def _mapping(value: Any, path: str, *, str_values: bool = True) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not value:
        raise SpecError(path, f"expected a non-empty mapping, got {value!r}")
    for k, v in value.items():
        if not isinstance(k, str):
            raise SpecError(path, f"keys must be column names, got {k!r}")
        if str_values and not isinstance(v, str):
            raise SpecError(f"{path}.{k}", f"expected text, got {v!r}")
    return dict(value)


def _fields(value: Any, path: str, required: Sequence[str], optional: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(path, f"expected a mapping with {', '.join(required)}, got {value!r}")
    unknown = sorted(set(value) - set(required) - set(optional))
    if unknown:
        raise SpecError(f"{path}.{unknown[0]}", f"unknown option; expected one of {', '.join([*required, *optional])}")
    for name in required:
        if name not in value:
            raise SpecError(f"{path}.{name}", "is required")
    return dict(value)


def _check_type(name: Any, path: str) -> str:
    if not isinstance(name, str):
        raise SpecError(path, f"expected a type name, got {name!r}")
    try:
        parse_type(name)
    except ValueError as exc:
        raise SpecError(path, str(exc)) from None
    return name


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(path, f"expected text, got {value!r}")
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(path, f"expected true or false, got {value!r}")
    return value


def _choice(value: Any, path: str, choices: Sequence[str]) -> Any:
    if value not in choices:
        raise SpecError(path, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def _parse_step(item: Any, path: str) -> Step:
    if not isinstance(item, Mapping) or len(item) != 1:
        raise SpecError(path, f"a step is a mapping with one key (the step kind), got {item!r}")
    kind, arg = next(iter(item.items()))
    p = f"{path}.{kind}"
    if kind == "select":
        return Select(columns=_names(arg, p))
    if kind == "rename":
        return Rename(mapping=_mapping(arg, p))
    if kind == "cast":
        types = _mapping(arg, p)
        for col, t in types.items():
            _check_type(t, f"{p}.{col}")
        return Cast(types=types)
    if kind == "derive":
        return Derive(exprs=_mapping(arg, p))
    if kind == "filter":
        if not isinstance(arg, str) or not arg.strip():
            raise SpecError(p, f"expected a SQL predicate, got {arg!r}")
        return Filter(expr=arg)
    if kind == "fill_null":
        return FillNull(values=_mapping(arg, p, str_values=False))
    if kind in ("trim", "normalize"):
        if not isinstance(arg, Mapping):
            return Trim(columns=_names(arg, p))
        f = _fields(arg, p, ["columns"], ["case", "collapse_spaces", "unicode"])
        if f.get("case") is not None:
            _choice(f["case"], f"{p}.case", ["lower", "upper", "title"])
        if f.get("unicode") is not None:
            _choice(f["unicode"], f"{p}.unicode", ["NFC", "NFKC", "NFD", "NFKD"])
        return Trim(columns=_names(f["columns"], f"{p}.columns"), case=f.get("case"),
                    collapse_spaces=_bool(f.get("collapse_spaces", False), f"{p}.collapse_spaces"),
                    unicode=f.get("unicode"))
    if kind == "parse_date":
        f = _fields(arg, p, ["column", "format"], ["into", "kind"])
        _choice(f.get("kind", "date"), f"{p}.kind", ["date", "datetime"])
        for name in ("column", "format", *(["into"] if f.get("into") is not None else [])):
            _text(f[name], f"{p}.{name}")
        return ParseDate(column=f["column"], format=f["format"], into=f.get("into"), kind=f.get("kind", "date"))
    if kind == "parse_number":
        f = _fields(arg, p, ["column"], ["decimal", "thousands", "into", "type"])
        _check_type(f.get("type", "float64"), f"{p}.type")
        for name in ("column", *(n for n in ("decimal", "thousands", "into") if f.get(n) is not None)):
            _text(f[name], f"{p}.{name}")
        decimal = f.get("decimal", ".")
        if f.get("thousands") == decimal:
            raise SpecError(f"{p}.thousands", f"must differ from the decimal separator {decimal!r}")
        return ParseNumber(column=f["column"], decimal=f.get("decimal", "."), thousands=f.get("thousands"),
                           into=f.get("into"), type=f.get("type", "float64"))
    if kind == "dedupe":
        if isinstance(arg, Mapping):
            f = _fields(arg, p, ["keys"], ["keep"])
            return Dedupe(keys=_names(f["keys"], f"{p}.keys"), keep=_choice(f.get("keep", "first"),
                          f"{p}.keep", ["first", "last"]))
        return Dedupe(keys=_names(arg, p))
    raise SpecError(p, "unknown step; known steps: cast, dedupe, derive, fill_null, filter, normalize, "
                       "parse_date, parse_number, rename, select, trim")


def _parse_rule(item: Any, path: str) -> Rule:
    if not isinstance(item, Mapping) or len(item) != 1:
        raise SpecError(path, f"a rule is a mapping with one key (the rule kind), got {item!r}")
    kind, arg = next(iter(item.items()))
    p = f"{path}.{kind}"
    if kind == "not_null":
        return NotNull(columns=_names(arg, p))
    if kind == "unique":
        return Unique(columns=_names(arg, p))
    if kind == "range":
        f = _fields(arg, p, ["column"], ["min", "max"])
        if f.get("min") is None and f.get("max") is None:
            raise SpecError(p, "give min, max or both")
        return Range(column=_text(f["column"], f"{p}.column"), min=f.get("min"), max=f.get("max"))
    if kind == "regex":
        f = _fields(arg, p, ["column", "pattern"], [])
        import polars as pl

        try:  # checked by the engine that runs it: Rust regex syntax, not Python's
            pl.select(pl.lit("").str.contains(_text(f["pattern"], f"{p}.pattern")))
        except pl.exceptions.PolarsError as exc:
            detail = " ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip())
            raise SpecError(f"{p}.pattern", f"invalid regular expression: {detail[:200]}") from None
        return Regex(column=_text(f["column"], f"{p}.column"), pattern=f["pattern"])
    if kind in ("allowed", "allowed_values"):
        f = _fields(arg, p, ["column", "values"], [])
        if not isinstance(f["values"], Sequence) or isinstance(f["values"], str) or not f["values"]:
            raise SpecError(f"{p}.values", "expected a non-empty list")
        return Allowed(column=_text(f["column"], f"{p}.column"), values=tuple(f["values"]))
    if kind == "castable":
        f = _fields(arg, p, ["column", "type"], [])
        return Castable(column=_text(f["column"], f"{p}.column"), type=_check_type(f["type"], f"{p}.type"))
    raise SpecError(p, "unknown rule; known rules: allowed, castable, not_null, range, regex, unique")


def parse_pipeline(data: Mapping[str, Any] | None, path: str = "") -> Pipeline:
    """Steps and rules from a mapping (``{"steps": [...], "rules": [...]}``)."""
    if not data:
        return Pipeline()
    prefix = f"{path}." if path else ""
    unknown = sorted(set(data) - _LOAD_KEYS)
    if unknown:  # a typo such as ``step:`` must not silently drop every step
        raise SpecError(f"{prefix}{unknown[0]}", "unknown key; expected steps, rules, normalize_names")
    steps_raw = data.get("steps") or []
    rules_raw = data.get("rules") or []
    if not isinstance(steps_raw, list):
        raise SpecError(f"{prefix}steps", "expected a list of steps")
    if not isinstance(rules_raw, list):
        raise SpecError(f"{prefix}rules", "expected a list of rules")
    steps = tuple(_parse_step(s, f"{prefix}steps[{i}]") for i, s in enumerate(steps_raw))
    rules = tuple(_parse_rule(r, f"{prefix}rules[{i}]") for i, r in enumerate(rules_raw))
    return Pipeline(steps=steps, rules=rules,
                    normalize_names=_bool(data.get("normalize_names", True), f"{prefix}normalize_names"))


_SOURCE_KEYS = {"path", "format"}
_TARGET_KEYS = {"table", "connection_id", "partition_by", "hash_partitions", "mode", "key", "contract", "dsn"}
_LOAD_KEYS = {"source", "target", "steps", "rules", "normalize_names"}


def parse_load(data: Any, path: str = "", *, base_dir: Path | None = None) -> LoadSpec:
    """One load from a mapping; relative source paths are resolved against ``base_dir``."""
    if not isinstance(data, Mapping):
        raise SpecError(path or "<root>", "expected a mapping with source and target")
    prefix = f"{path}." if path else ""
    unknown = sorted(set(data) - _LOAD_KEYS)
    if unknown:
        raise SpecError(f"{prefix}{unknown[0]}", f"unknown key; expected {', '.join(sorted(_LOAD_KEYS))}")
    src = data.get("source")
    if isinstance(src, str):
        src = {"path": src}
    if not isinstance(src, Mapping) or not isinstance(src.get("path"), str):
        raise SpecError(f"{prefix}source.path", "is required (a file, folder or glob)")
    src_path = src["path"]
    if base_dir is not None and "://" not in src_path and not Path(src_path).is_absolute():
        src_path = str(base_dir / src_path)
    source = SourceSpec(path=src_path, format=src.get("format"),
                        options={k: v for k, v in src.items() if k not in _SOURCE_KEYS})
    tgt = data.get("target")
    if isinstance(tgt, str):
        tgt = {"table": tgt}
    if not isinstance(tgt, Mapping) or not isinstance(tgt.get("table"), str) or not tgt["table"].strip():
        raise SpecError(f"{prefix}target.table", "is required")
    bad = sorted(set(tgt) - _TARGET_KEYS)
    if bad:
        raise SpecError(f"{prefix}target.{bad[0]}", f"unknown key; expected {', '.join(sorted(_TARGET_KEYS))}")
    target = make_target(tgt, f"{prefix}target")
    return LoadSpec(source=source, target=target, pipeline=parse_pipeline(data, path))


def make_target(tgt: Mapping[str, Any], path: str = "target") -> TargetSpec:
    """Check and build a TargetSpec (shared by the spec file, the Python API and the CLI)."""
    partition_by, granularity = split_partition_by(tgt.get("partition_by"), f"{path}.partition_by")
    mode = _choice(tgt.get("mode", "append"), f"{path}.mode", MODES)
    key = _names(tgt["key"], f"{path}.key") if tgt.get("key") else ()
    if mode == "merge" and not key:
        raise SpecError(f"{path}.key", "merge mode needs the key column(s) to upsert on")
    layout = _choice(tgt.get("layout", "table") or "table", f"{path}.layout", LAYOUTS)
    if layout == "document" and mode == "merge":
        raise SpecError(f"{path}.layout", "the document layout has no key columns to merge on; use append or replace")
    hp = tgt.get("hash_partitions", 0) or 0
    if not isinstance(hp, int) or isinstance(hp, bool) or hp < 0 or hp > 1024:
        raise SpecError(f"{path}.hash_partitions", f"expected a whole number 0..1024, got {hp!r}")
    cid = tgt.get("connection_id")
    if cid is not None:
        try:
            if isinstance(cid, bool) or (isinstance(cid, float) and not cid.is_integer()):
                raise ValueError(cid)  # int() would silently turn True into 1 and 7.9 into 7
            cid = int(cid)
            if not -(2**63) <= cid < 2**63:
                raise ValueError(cid)  # connection_id is a bigint column
        except (TypeError, ValueError):
            raise SpecError(f"{path}.connection_id",
                            f"expected a whole number that fits a bigint, got {cid!r}") from None
    return TargetSpec(
        table=str(tgt["table"]), connection_id=cid, partition_by=partition_by, granularity=granularity,
        hash_partitions=hp, mode=mode, key=key,
        contract=_choice(tgt.get("contract", "evolve"), f"{path}.contract", CONTRACTS), dsn=tgt.get("dsn"),
        archive=_archive_setting(tgt.get("archive"), f"{path}.archive"), layout=layout,
    )


def _archive_setting(value: Any, path: str) -> str | None:
    """``archive: false`` (YAML) or ``"off"`` turn archiving off; a string is the archive URL."""
    if value is None or value is True:
        return None
    if value is False:
        return "off"
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise SpecError(path, f"expected an archive URL (a folder or s3://bucket/prefix) or false, got {value!r}")


def split_partition_by(value: Any, path: str) -> tuple[str | None, Granularity]:
    """``"created_at:week" -> ("created_at", "week")``; the granularity defaults to month."""
    if value is None:
        return None, "month"
    if not isinstance(value, str) or not value.strip():
        raise SpecError(path, f"expected COLUMN or COLUMN:day|week|month|year, got {value!r}")
    column, sep, gran = value.rpartition(":")
    if not sep or gran not in GRANULARITIES:
        return value, "month"
    return column, _choice(gran, path, GRANULARITIES)


def load_pipeline_file(path: str | Path) -> list[LoadSpec]:
    """Every load declared in a pipeline YAML file (one load, or several under ``loads:``)."""
    import yaml

    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(str(file), "pipeline file not found") from None
    except yaml.YAMLError as exc:
        raise SpecError(str(file), f"not valid YAML: {exc}".replace("\n", " ")) from None
    base = file.parent.resolve()
    if isinstance(data, Mapping) and "loads" in data:
        loads = data["loads"]
        if not isinstance(loads, list) or not loads:
            raise SpecError("loads", "expected a non-empty list of loads")
        return [parse_load(item, f"loads[{i}]", base_dir=base) for i, item in enumerate(loads)]
    return [parse_load(data, base_dir=base)]


def read_pipeline_spec(path: str | Path) -> Pipeline:
    """Steps and rules only, from a YAML file (what ``biconic load --spec`` takes)."""
    import yaml

    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise SpecError(str(file), "spec file not found") from None
    except yaml.YAMLError as exc:
        raise SpecError(str(file), f"not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(data, Mapping):
        raise SpecError(str(file), "expected a mapping with steps and/or rules")
    unknown = sorted(set(data) - {"steps", "rules", "normalize_names"})
    if unknown:
        raise SpecError(unknown[0], "unknown key in a spec file; expected steps, rules, normalize_names")
    return parse_pipeline(data)
