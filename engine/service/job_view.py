"""A job as the API shows it to a tenant: state, progress, counts, and errors in words that make sense over
HTTP — never the server's folders (an upload is named by its file), nor a hint to run a CLI command.

>>> clean_error("/srv/biconic/uploads/tus/8c0e/q.csv: unknown encoding 'x'", "8c0e")
"q.csv: unknown encoding 'x'"
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

__all__ = ["clean_error", "file_name", "load_ids_of", "rejected_row", "shown_job", "shown_list"]

#: an absolute path's folders (``/srv/x/y/``), up to the file name
_FOLDERS = re.compile(r"(?<![\w.:/])/(?:[^/\s'\"]+/)+")
#: the CLI hint a rejected load's message ends with, and the load id in it
_CLI_HINT = re.compile(r"biconic quarantine \S+ --load ([0-9a-fA-F-]{8,64})")
_COUNTS = ("rows_in", "rows_loaded", "rows_quarantined", "rows_filtered")


def file_name(source: Any) -> Any:
    """A source as the API shows it: the file's name, not where the server keeps it."""
    return str(source).rstrip("/").rsplit("/", 1)[-1] if isinstance(source, str) else source


def clean_error(text: str | None, job_id: str) -> str | None:
    """An error line without the server's folders; the quarantine hint as the API's own endpoint."""
    if not text:
        return text
    return _CLI_HINT.sub(f"GET /v1/imports/{job_id}/quarantine", _FOLDERS.sub("", text))


def load_ids_of(job: dict[str, Any]) -> list[str]:
    """The loads of a job: from its reports, and from a rejected load's error (a load that failed on its
    rejected rows committed nothing and has no report, but kept a sample of them under its id)."""
    found = [i for r in job.get("reports") or [] for i in r.get("load_ids", []) if i]
    errors = [job.get("error") or "", *(t.get("error") or "" for t in job.get("tasks", []))]
    for text in errors:
        found.extend(m.group(1) for m in _CLI_HINT.finditer(text))
    return list(dict.fromkeys(found))


def shown_job(job: dict[str, Any]) -> dict[str, Any]:
    """A job (``engine.jobs.client.describe``) as the API shows it."""
    reports = job.get("reports") or []
    total = {k: sum(int(r.get(k) or 0) for r in reports) for k in _COUNTS}
    job_id = str(job["job_id"])
    return {"job_id": job_id, "state": job["state"], "dataset": job["dataset"],
            "connection_id": job["connection_id"], "submitted_at": job["submitted_at"],
            "started_at": job["started_at"], "finished_at": job["finished_at"], **total,
            "progress": job["progress"], "error": clean_error(job["error"], job_id), "error_type": job["error_type"],
            "load_ids": load_ids_of(job),
            "partitions": [{"label": file_name(t["label"]), "state": t["state"], "attempts": t["attempts"],
                            "rows_loaded": t["rows_loaded"], "error": clean_error(t["error"], job_id)}
                           for t in job["tasks"]]}


def shown_list(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``engine.jobs.client.list_jobs`` rows with their errors cleaned."""
    return [{**j, "error": clean_error(j.get("error"), str(j["job_id"]))} for j in jobs]


def rejected_row(row: dict[str, Any]) -> dict[str, Any]:
    """A quarantined row as the API shows it: its values parsed, its source a file name."""
    raw = row.get("raw")
    try:
        values = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        values = raw
    stamp = row.get("quarantined_at")
    return {"load_id": row["load_id"], "source": file_name(row["source"]), "row_number": row["row_number"],
            "rule": row["rule"], "column": row["column_name"], "reason": row["reason"], "values": values,
            "quarantined_at": stamp.isoformat() if isinstance(stamp, dt.datetime) else stamp,
            "superseded": row.get("superseded_by") is not None}
