"""The declarative spec as typed, frozen pydantic models: steps, rules, source, target, one load.

A pipeline file holds one load (``source`` + ``target`` + ``steps`` + ``rules``) or several under ``loads:``::

    source: {path: data/orders_*.csv, delimiter: ";", encoding: latin-1}
    target: {table: orders, connection_id: 7, partition_by: "fecha:month", mode: merge, key: [order_id]}
    steps:
      - rename: {Fecha: fecha}
      - parse_date: {column: fecha, format: "%d/%m/%Y"}
    rules:
      - not_null: [order_id]

Models forbid unknown fields; every check raises a :class:`pydantic_core.PydanticCustomError` whose message
is the engine's own wording, and :mod:`engine.spec.parse` turns a validation error into a
:class:`~engine.errors.SpecError` naming the exact path (``steps[2].parse_number.thousands``).
"""



import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, NoReturn, TypeAlias

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from engine.ids import ConnectionId, parse_connection_id
from engine.index_set import parse_index
from engine.spec.limits import RejectLimit
from engine.types import parse_type

__all__ = [
    "CONTRACTS", "GRANULARITIES", "LAYOUTS", "MODES", "Allowed", "Cast", "Castable", "Dedupe", "Derive",
    "FillNull", "Filter", "Granularity", "LoadSpec", "Mode", "NotNull", "ParseDate", "ParseNumber", "Pipeline",
    "Range", "Regex", "Rename", "Rule", "Select", "SourceSpec", "Step", "TargetSpec", "Trim", "Unique", "fail",
]

Mode: TypeAlias = Literal["append", "replace", "merge"]
Granularity: TypeAlias = Literal["day", "week", "month", "year"]
Contract: TypeAlias = Literal["evolve", "freeze"]
#: ``table``: one typed column per field; ``document``: the seed's generic table, each row one jsonb document
Layout: TypeAlias = Literal["table", "document"]
MODES: tuple[str, ...] = ("append", "replace", "merge")
LAYOUTS: tuple[str, ...] = ("table", "document")
GRANULARITIES: tuple[str, ...] = ("day", "week", "month", "year")
CONTRACTS: tuple[str, ...] = ("evolve", "freeze")


def fail(message: str, *, field: str | None = None) -> NoReturn:
    """Refuse a value with the engine's wording; ``field`` names the field a model-wide check is about."""
    raise PydanticCustomError("spec", "{message}", {"message": message, "field": field})


# --- the value checks (run before pydantic's own, so the wording is ours) -------------------------------------
def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    fail(f"expected a column name or a non-empty list of names, got {value!r}")


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not value:
        fail(f"expected a non-empty mapping, got {value!r}")
    for k in value:
        if not isinstance(k, str):
            fail(f"keys must be column names, got {k!r}")
    return dict(value)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        fail(f"expected text, got {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        fail(f"expected true or false, got {value!r}")
    return value


def _type_name(value: Any) -> str:
    name = _text(value)
    try:
        parse_type(name)
    except ValueError as exc:
        fail(str(exc))
    return name


def _regex(value: Any) -> str:
    import polars as pl

    pattern = _text(value)
    try:  # checked by the engine that runs it: Rust regex syntax, not Python's
        pl.select(pl.lit("").str.contains(pattern))
    except pl.exceptions.PolarsError as exc:
        detail = " ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip())
        fail(f"invalid regular expression: {detail[:200]}")
    return pattern


def _values(value: Any) -> tuple[Any, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        fail("expected a non-empty list")
    return tuple(value)


Names = Annotated[tuple[str, ...], BeforeValidator(_names)]
Text = Annotated[str, BeforeValidator(_text)]
Flag = Annotated[bool, BeforeValidator(_bool)]
TypeName = Annotated[str, BeforeValidator(_type_name)]
TextMap = Annotated[dict[str, Text], BeforeValidator(_mapping)]
TypeMap = Annotated[dict[str, TypeName], BeforeValidator(_mapping)]
AnyMap = Annotated[dict[str, Any], BeforeValidator(_mapping)]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- steps -----------------------------------------------------------------------------------------------------
class Select(_Spec):
    """Keep only these columns, in this order."""
    columns: Names


class Rename(_Spec):
    """Rename columns: ``{old: new}``."""
    mapping: TextMap


class Cast(_Spec):
    """Cast columns to types (``{amount: "decimal(12,2)"}``); values that do not convert are quarantined."""
    types: TypeMap


class Derive(_Spec):
    """New or replaced columns from SQL expressions (``{total: "price * qty"}``), evaluated by Polars."""
    exprs: TextMap


class Filter(_Spec):
    """Keep rows where the SQL predicate is true; the others are counted as filtered, not quarantined."""
    expr: str

    @field_validator("expr", mode="before")
    @classmethod
    def _predicate(cls, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            fail(f"expected a SQL predicate, got {value!r}")
        return value


class FillNull(_Spec):
    """Replace nulls: ``{city: "unknown", qty: 0}``."""
    values: AnyMap


class Trim(_Spec):
    """Strip surrounding whitespace, optionally collapse inner runs, change case and Unicode-normalise."""
    columns: Names
    case: Literal["lower", "upper", "title"] | None = None
    collapse_spaces: Flag = False
    unicode: Literal["NFC", "NFKC", "NFD", "NFKD"] | None = None


class ParseDate(_Spec):
    """Parse text into a date or timestamp with an explicit strftime ``format`` (``%d/%m/%Y``)."""
    column: Text
    format: Text
    into: Text | None = None
    kind: Literal["date", "datetime"] = "date"


class ParseNumber(_Spec):
    """Parse text numbers with explicit separators (Spanish ``1.234,56``: decimal ``,`` thousands ``.``)."""
    column: Text
    decimal: Text = "."
    thousands: Text | None = Field(default=None, validate_default=True)
    into: Text | None = None
    type: TypeName = "float64"

    @field_validator("type")
    @classmethod
    def _a_number(cls, value: str) -> str:
        dtype = parse_type(value)
        if not dtype.is_numeric():
            fail(f"parse_number makes numbers: use an integer, float or decimal(p,s) type, got {value!r}")
        if dtype.is_decimal() and "(" not in value:  # decimal(38,0): every fraction would be dropped
            fail(f"give the digits kept, e.g. decimal(12,2): a bare {value!r} keeps no decimals")
        return value

    @field_validator("thousands")
    @classmethod
    def _differs(cls, value: str | None, info: ValidationInfo) -> str | None:
        decimal = info.data.get("decimal", ".")
        if value is not None and value == decimal:
            fail(f"must differ from the decimal separator {decimal!r}")
        return value


class Dedupe(_Spec):
    """Keep one row per key (the first or last seen); the others are counted as filtered."""
    keys: Names
    keep: Literal["first", "last"] = "first"


Step: TypeAlias = Select | Rename | Cast | Derive | Filter | FillNull | Trim | ParseDate | ParseNumber | Dedupe


# --- rules -----------------------------------------------------------------------------------------------------
class NotNull(_Spec):
    """These columns must have a value."""
    columns: Names


class Unique(_Spec):
    """The combination of these columns must be unique within the source partition; repeats are quarantined."""
    columns: Names


class Range(_Spec):
    """``min <= column <= max`` (either bound optional); nulls pass (use not_null for those)."""
    column: Text
    min: Any = None
    max: Any = Field(default=None, validate_default=True)

    @field_validator("max")
    @classmethod
    def _a_bound(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.data.get("min") is None and "column" in info.data:
            fail("give min, max or both", field="")
        return value


class Regex(_Spec):
    """Text must match the pattern (Rust regex syntax, searched; anchor with ^...$)."""
    column: Text
    pattern: Annotated[str, BeforeValidator(_regex)]


class Allowed(_Spec):
    """Values must be one of ``values``."""
    column: Text
    values: Annotated[tuple[Any, ...], BeforeValidator(_values)]


class Castable(_Spec):
    """Values must convert to ``type`` (the column itself is left unchanged)."""
    column: Text
    type: TypeName


Rule: TypeAlias = NotNull | Unique | Range | Regex | Allowed | Castable


class Pipeline(_Spec):
    """The transformation and validation part of a load."""
    steps: tuple[Step, ...] = ()
    rules: tuple[Rule, ...] = ()
    normalize_names: Flag = True

    def fingerprint(self) -> str:
        """A hash that changes whenever the steps, rules or naming change (part of the load key)."""
        payload = json.dumps(
            {"steps": [[type(s).__name__, s.model_dump()] for s in self.steps],
             "rules": [[type(r).__name__, r.model_dump()] for r in self.rules],
             "normalize_names": self.normalize_names},
            sort_keys=True, default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


# --- source and target -----------------------------------------------------------------------------------------
class SourceSpec(_Spec):
    """Where the rows come from: a file, folder or glob (or a database/API URL), and reader options."""
    path: str
    format: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


def _connection_id(value: Any) -> ConnectionId | None:
    if value is None:
        return None
    try:
        return parse_connection_id(value)
    except ValueError as exc:
        fail(str(exc))


def _indexes(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
        fail(f"expected a list of indexes like 'btree(connection_id, created_at desc)', got {value!r}")
    try:
        return tuple(parse_index(t).text() for t in texts)
    except ValueError as exc:
        fail(str(exc))


def _hash_partitions(value: Any) -> int:
    value = value or 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value > 1024:
        fail(f"expected a whole number 0..1024, got {value!r}")
    return value


def _archive(value: Any) -> str | None:
    """``archive: false`` (YAML) or ``"off"`` turn archiving off; a string is the archive URL."""
    if value is None or value is True:
        return None
    if value is False:
        return "off"
    if isinstance(value, str) and value.strip():
        return value.strip()
    fail(f"expected an archive URL (a folder or s3://bucket/prefix) or false, got {value!r}")


def _max_rejected(value: Any) -> RejectLimit:
    try:
        return RejectLimit.parse(value)
    except ValueError as exc:
        fail(str(exc))


def split_partition_by(value: Any) -> tuple[str | None, Granularity]:
    """``"created_at:week" -> ("created_at", "week")``; the granularity defaults to month."""
    if value is None:
        return None, "month"
    if not isinstance(value, str) or not value.strip():
        fail(f"expected COLUMN or COLUMN:day|week|month|year, got {value!r}")
    column, sep, gran = value.rpartition(":")
    if not sep:
        return value, "month"
    if gran.strip().lower() in GRANULARITIES:
        return column, gran.strip().lower()  # type: ignore[return-value]
    if column and gran.strip().isalpha():  # "created_at:quarter" is a typo, not a column of that name
        fail(f"unknown grain {gran.strip()!r} in {value!r}; use COLUMN:GRAIN with one of {', '.join(GRANULARITIES)}")
    return value, "month"


class TargetSpec(_Spec):
    """Where the rows go and how they are stored (``partition_by`` may carry ``:day|week|month|year``)."""
    table: str
    connection_id: Annotated[ConnectionId | None, BeforeValidator(_connection_id)] = None
    #: the given connection_id replaces the rows' own connection_id values (else differing values are an error)
    connection_override: bool = False
    partition_by: str | None = None
    granularity: Granularity = "month"
    hash_partitions: Annotated[int, BeforeValidator(_hash_partitions)] = 0
    mode: Mode = "append"
    key: tuple[str, ...] = Field(default=(), validate_default=True)
    contract: Contract = "evolve"
    dsn: str | None = None
    #: archive URL (folder or s3://bucket/prefix); None = BICONIC_ARCHIVE_URL or the data folder; "off" = none
    archive: Annotated[str | None, BeforeValidator(_archive)] = None
    layout: Layout = Field(default="table", validate_default=True)
    #: rejected rows a source partition may have before it fails: a share (0.5, "50%"), a count, or "off"
    max_rejected: Annotated[RejectLimit, BeforeValidator(_max_rejected)] = RejectLimit()
    #: a file with no rows (0 bytes, a header only, blank lines) loads as a 0-row success instead of failing
    allow_empty: bool = False
    #: the table's indexes, ``method(column [asc|desc], ...)``; None = BRIN on the time column and a B-tree on
    #: (connection_id, time DESC); [] = none (:mod:`engine.index_set`)
    indexes: Annotated[tuple[str, ...] | None, BeforeValidator(_indexes)] = None

    @field_validator("key", mode="before")
    @classmethod
    def _key(cls, value: Any, info: ValidationInfo) -> tuple[str, ...]:
        key = _names(value) if value else ()
        if info.data.get("mode") == "merge" and not key:
            fail("merge mode needs the key column(s) to upsert on")
        return key

    @field_validator("layout", mode="before")
    @classmethod
    def _layout(cls, value: Any, info: ValidationInfo) -> Any:
        value = value or "table"
        if value == "document" and info.data.get("mode") == "merge":
            fail("the document layout has no key columns to merge on; use append or replace")
        return value


class LoadSpec(_Spec):
    """One complete load: source, target and pipeline."""
    source: SourceSpec
    target: TargetSpec
    pipeline: Pipeline = Field(default_factory=Pipeline)
