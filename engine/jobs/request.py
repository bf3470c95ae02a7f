"""What a job is asked to do, as plain JSON that travels through the broker: a path with ``engine.load``'s
arguments, or a pipeline YAML file with ``engine.run``'s overrides. The worker builds the load specs from it
the same way the CLI would, so a job and a ``biconic load`` of the same arguments load the same rows under the
same ledger keys (a job and a later CLI run of the same import skip each other's committed partitions).

The copy stored in ``biconic.jobs`` has its secrets masked; the broker's copy is the real one (workers need
the DSN), and lives only until the task is acknowledged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine.ids import ConnectionId, parse_connection_id
from engine.postgres.server import resolve_dsn
from engine.redact import redact
from engine.spec.models import LoadSpec
from engine.spec.parse import read_pipeline_file, replace_target

__all__ = ["JobRequest", "LOAD_OPTIONS"]

#: the keyword arguments of ``engine.load`` a job may carry (data in Python and progress cannot travel)
LOAD_OPTIONS = ("into", "connection_id", "connection_override", "partition_by", "hash_partitions", "mode", "key",
                "spec", "sheet", "format", "options", "contract", "dsn", "archive", "layout", "source_name",
                "max_rejected", "allow_empty", "indexes")


@dataclass
class JobRequest:
    """A load (``path`` + ``load`` arguments) or a pipeline file (``path`` + ``dsn``/``archive``/``contract``)."""
    kind: Literal["load", "pipeline"]
    path: str
    load: dict[str, Any] = field(default_factory=dict)
    dsn: str | None = None
    archive: str | bool | None = None
    contract: str | None = None
    full_refresh: bool = False

    def to_json(self) -> dict[str, Any]:
        """The broker's copy (with secrets: only workers read it)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRequest:
        return cls(**data)

    def shown(self) -> dict[str, Any]:
        """The stored and printed copy: every URL's password masked."""
        data = self.to_json()
        data["path"] = redact(self.path)
        data["dsn"] = redact(self.dsn) if self.dsn else None
        data["load"] = {k: redact(v) if isinstance(v, str) else v for k, v in self.load.items()}
        return data

    def specs(self) -> list[LoadSpec]:
        """The load specs, in order (one for a load; one per load of a pipeline file); bad arguments fail here."""
        if self.kind == "load":
            from engine.pipeline import load_spec

            options = dict(self.load)
            into = options.pop("into")
            if isinstance(options.get("spec"), str) and Path(options["spec"]).suffix in (".yaml", ".yml"):
                options["spec"] = Path(options["spec"])
            return [load_spec(self.path, into, **options)]
        overrides: dict[str, Any] = {}
        if self.archive is not None:
            overrides["archive"] = self.archive
        if self.contract is not None:
            overrides["contract"] = self.contract
        specs, _ = read_pipeline_file(self.path)
        out = []
        for spec in specs:
            updates = {**overrides, **({"dsn": self.dsn} if self.dsn and not spec.target.dsn else {})}
            out.append(spec.model_copy(update={"target": replace_target(spec.target, updates)}))
        return out

    def jobs_dsn(self) -> str:
        """Where the job's history lives: the DSN the job was submitted with, else the default warehouse."""
        return resolve_dsn(self.dsn if self.kind == "pipeline" else self.load.get("dsn") or self.dsn)

    def connection(self) -> ConnectionId | None:
        """The connection the job loads for (its fairness bucket), when one was given."""
        value = self.load.get("connection_id")
        return parse_connection_id(value) if value is not None else None
