"""What a benchmark ran on: the machine and the versions of every tool, kept beside its figures."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from run import Db

ROOT = Path(__file__).resolve().parents[1]


def versions(db: Db) -> dict[str, str]:
    out: dict[str, str] = {"python": platform.python_version()}
    for name in ("polars", "pyarrow", "adbc-driver-postgresql", "adbc-driver-manager", "dlt", "pandas",
                 "sqlalchemy", "psycopg2-binary", "fastexcel", "numpy", "duckdb", "duckdb-ext-postgres"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["postgresql"] = db.sql("SHOW server_version")
    out["psql"] = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    return out


def machine() -> dict[str, Any]:
    import psutil

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    engine_at = subprocess.run([sys.executable, "-c", "import engine; print(engine.__file__)"],
                               capture_output=True, text=True).stdout.strip()
    git = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                         text=True).stdout.strip()
    return {"cores": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1), "cpu": cpu,
            "kernel": platform.release(), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "engine_commit": git,
            "engine_module": engine_at}
