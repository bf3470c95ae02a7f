"""Reading specs: YAML files and dicts into the models of :mod:`engine.spec.models`, every error a
:class:`~engine.errors.SpecError` naming its exact path.

>>> parse_pipeline({"steps": [{"select": ["a", "b"]}], "rules": [{"not_null": "a"}]}).steps
(Select(columns=('a', 'b')),)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from engine.errors import SpecError
from engine.redact import unexpand
from engine.spec.env import interpolate
from engine.spec.models import (
    Allowed,
    Cast,
    Castable,
    Dedupe,
    Derive,
    FillNull,
    Filter,
    LoadSpec,
    NotNull,
    ParseDate,
    ParseNumber,
    Pipeline,
    Range,
    Regex,
    Rename,
    Rule,
    Select,
    SourceSpec,
    Step,
    TargetSpec,
    Trim,
    Unique,
    split_partition_by,
)

__all__ = ["load_pipeline_file", "make_target", "parse_load", "parse_pipeline", "read_pipeline_file",
           "read_pipeline_spec", "replace_target", "spec_error"]

#: step key -> (model, the field a shorthand value fills, or None when the value is the model's fields)
_STEPS: dict[str, tuple[type[BaseModel], str | None]] = {
    "select": (Select, "columns"), "rename": (Rename, "mapping"), "cast": (Cast, "types"),
    "derive": (Derive, "exprs"), "filter": (Filter, "expr"), "fill_null": (FillNull, "values"),
    "trim": (Trim, None), "normalize": (Trim, None), "parse_date": (ParseDate, None),
    "parse_number": (ParseNumber, None), "dedupe": (Dedupe, None),
}
#: steps that also take a plain value for one field (``trim: [a, b]``, ``dedupe: [id]``)
_SHORTHAND = {"trim": "columns", "normalize": "columns", "dedupe": "keys"}
_RULES: dict[str, tuple[type[BaseModel], str | None]] = {
    "not_null": (NotNull, "columns"), "unique": (Unique, "columns"), "range": (Range, None),
    "regex": (Regex, None), "allowed": (Allowed, None), "allowed_values": (Allowed, None),
    "castable": (Castable, None),
}
_SOURCE_KEYS = {"path", "format"}
#: what a target may set in a spec file; the granularity is written as ``partition_by: COLUMN:week``
_TARGET_KEYS = set(TargetSpec.model_fields) - {"granularity"}
_LOAD_KEYS = {"source", "target", "steps", "rules", "normalize_names"}


def _path(base: str, loc: tuple[int | str, ...]) -> str:
    out = base
    for part in loc:
        out = f"{out}[{part}]" if isinstance(part, int) else (f"{out}.{part}" if out else str(part))
    return out


def _message(error: Any, model: type[BaseModel]) -> str:
    """A pydantic error in the engine's wording."""
    kind = error["type"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return f"unknown option; expected one of {', '.join(model.model_fields)}"
    if kind == "literal_error":
        expected = str(error.get("ctx", {}).get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"expected one of {expected}, got {error.get('input')!r}"
    return str(error["msg"])


def spec_error(exc: ValidationError, path: str, model: type[BaseModel], *, shorthand: str | None = None) -> SpecError:
    """The first error of a validation as a SpecError at its exact path (under ``path``). For a model filled
    from one value (``select: [a, b]``), ``shorthand`` is that value's field, which the path leaves out."""
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    if shorthand is not None and loc[:1] == (shorthand,):
        loc = loc[1:]
    field = (error.get("ctx") or {}).get("field")
    if field is not None:  # a check about the whole model ("") or another field of it
        loc = (*loc[:-1], *([field] if field else []))
    return SpecError(_path(path, loc), _message(error, model))


def _build(model: type[BaseModel], value: Any, path: str, *, field: str | None) -> Any:
    """Validate ``value`` into ``model``: a mapping of its fields, or the one value of ``field``."""
    data = {field: value} if field is not None else value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise spec_error(exc, path, model, shorthand=field) from exc


def _one_key(item: Any, path: str, what: str) -> tuple[str, Any]:
    if not isinstance(item, Mapping) or len(item) != 1:
        raise SpecError(path, f"a {what} is a mapping with one key (the {what} kind), got {item!r}")
    kind, arg = next(iter(item.items()))
    return str(kind), arg


def _parse(item: Any, path: str, what: str, table: dict[str, tuple[type[BaseModel], str | None]],
           known: str) -> Any:
    kind, arg = _one_key(item, path, what)
    p = f"{path}.{kind}"
    if kind not in table:
        raise SpecError(p, f"unknown {what}; known {what}s: {known}")
    model, field = table[kind]
    if field is None and kind in _SHORTHAND and not isinstance(arg, Mapping):
        field = _SHORTHAND[kind]
    if field is None and not isinstance(arg, Mapping):
        required = [n for n, f in model.model_fields.items() if f.is_required()]
        raise SpecError(p, f"expected a mapping with {', '.join(required)}, got {arg!r}")
    return _build(model, arg, p, field=field)


def _parse_step(item: Any, path: str) -> Step:
    return _parse(item, path, "step", _STEPS, "cast, dedupe, derive, fill_null, filter, normalize, parse_date, "  # type: ignore[no-any-return]
                  "parse_number, rename, select, trim")


def _parse_rule(item: Any, path: str) -> Rule:
    return _parse(item, path, "rule", _RULES, "allowed, castable, not_null, range, regex, unique")  # type: ignore[no-any-return]


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
    try:
        return Pipeline(steps=steps, rules=rules, normalize_names=data.get("normalize_names", True))
    except ValidationError as exc:
        raise spec_error(exc, path, Pipeline) from exc


def make_target(tgt: Mapping[str, Any], path: str = "target") -> TargetSpec:
    """Check and build a TargetSpec (shared by the spec file, the Python API and the CLI)."""
    values = dict(tgt)
    try:
        values["partition_by"], values["granularity"] = split_partition_by(tgt.get("partition_by"))
    except PydanticCustomError as exc:
        raise SpecError(f"{path}.partition_by", exc.message()) from exc
    try:
        return TargetSpec.model_validate(values)
    except ValidationError as exc:
        raise spec_error(exc, path, TargetSpec) from exc


def replace_target(target: TargetSpec, updates: Mapping[str, Any], path: str = "target") -> TargetSpec:
    """``target`` with some fields replaced (``biconic run --archive ...``), checked like the file's own."""
    if not updates:
        return target
    try:
        return TargetSpec.model_validate({**dict(target), **updates})
    except ValidationError as exc:
        raise spec_error(exc, path, TargetSpec) from exc


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
    if base_dir is not None and "://" not in src_path and not src_path.startswith("env:") \
            and not Path(src_path).is_absolute():
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


def _read_yaml(path: str | Path, what: str) -> Any:
    import yaml

    file = Path(path)
    try:
        return yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(str(file), f"{what} not found") from None
    except yaml.YAMLError as exc:
        raise SpecError(str(file), f"not valid YAML: {exc}".replace("\n", " ")) from exc


def read_pipeline_file(path: str | Path) -> tuple[list[LoadSpec], dict[str, str]]:
    """Every load declared in a pipeline YAML file (one load, or several under ``loads:``), after ``${VAR}``
    interpolation, and the values read from the environment (value -> ``${VAR}``) to keep out of messages."""
    data, used = interpolate(_read_yaml(path, "pipeline file"))
    base = Path(path).parent.resolve()
    try:
        if isinstance(data, Mapping) and "loads" in data:
            loads = data["loads"]
            if not isinstance(loads, list) or not loads:
                raise SpecError("loads", "expected a non-empty list of loads")
            return [parse_load(item, f"loads[{i}]", base_dir=base) for i, item in enumerate(loads)], used
        return [parse_load(data, base_dir=base)], used
    except SpecError as exc:
        if not used:
            raise
        raise _unexpanded(exc, used) from None  # the cause (pydantic's error) shows the values


def load_pipeline_file(path: str | Path) -> list[LoadSpec]:
    """Every load declared in a pipeline YAML file (see :func:`read_pipeline_file`)."""
    return read_pipeline_file(path)[0]


def _unexpanded(exc: SpecError, used: dict[str, str]) -> SpecError:
    """``exc`` with the values taken from the environment shown as their ``${VAR}``."""
    return SpecError(exc.path, unexpand(exc.message, used))


def read_pipeline_spec(path: str | Path) -> Pipeline:
    """Steps and rules only, from a YAML file (what ``biconic load --spec`` takes), ``${VAR}`` interpolated."""
    data, used = interpolate(_read_yaml(path, "spec file") or {})
    if not isinstance(data, Mapping):
        raise SpecError(str(path), "expected a mapping with steps and/or rules")
    unknown = sorted(set(data) - {"steps", "rules", "normalize_names"})
    if unknown:
        raise SpecError(unknown[0], "unknown key in a spec file; expected steps, rules, normalize_names")
    try:
        return parse_pipeline(data)
    except SpecError as exc:
        if not used:
            raise
        raise _unexpanded(exc, used) from None  # the cause (pydantic's error) shows the values
