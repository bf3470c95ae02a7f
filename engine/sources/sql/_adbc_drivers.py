"""Finding an ADBC driver by name and connecting it: a Python driver package (``adbc_driver_sqlite``, or its short
name ``sqlite``) through the package's own public ``dbapi.connect``, or a library path or manifest name through
``adbc_driver_manager`` (see :mod:`~engine.sources.sql.adbc`)."""

from __future__ import annotations

import importlib
import inspect
import os
import re
from typing import Any

from engine.errors import SpecError

__all__ = ["driver_package", "package_connect", "package_dbapi", "short_name"]

#: short driver names -> packages
_SHORT = {"sqlite": "adbc_driver_sqlite", "postgresql": "adbc_driver_postgresql",
          "postgres": "adbc_driver_postgresql", "snowflake": "adbc_driver_snowflake",
          "bigquery": "adbc_driver_bigquery", "flightsql": "adbc_driver_flightsql"}


def driver_package(driver: str) -> str | None:
    """The Python package of a driver name (None for a library path or a driver-manager name)."""
    name = _SHORT.get(driver.lower(), driver)
    return name if re.fullmatch(r"adbc_driver_\w+", name) else None


def package_dbapi(package: str) -> Any:
    """The DB-API module of a driver package, or a clear error naming the extra that installs it."""
    try:
        return importlib.import_module(f"{package}.dbapi")
    except ImportError as exc:
        extra = package.removeprefix("adbc_driver_")
        raise SpecError("source.driver", f"the ADBC driver {package} is not installed: pip install "
                                         f"'biconic-engine[{extra}]' (or {package.replace('_', '-')})") from exc


def package_connect(dbapi: Any, uri: str | None, db_kwargs: dict[str, str]) -> Any:
    """A connection through the package's public ``dbapi.connect``, which differs between drivers: SQLite's
    takes no driver options (they are then set on its database, which refuses the ones it does not know, as
    at creation), BigQuery's no URI (it then goes with the options, as the driver manager passes it)."""
    accepts = inspect.signature(dbapi.connect).parameters
    options: dict[str, str] = dict(db_kwargs)
    kwargs: dict[str, Any] = {}
    if "uri" in accepts:
        if uri is None and accepts["uri"].default is inspect.Parameter.empty:
            raise SpecError("source.uri", f"the {dbapi.__name__.split('.')[0]} driver needs a URI: set uri or uri_env")
        kwargs["uri"] = uri
    elif uri is not None:
        options["uri"] = uri
    if "db_kwargs" in accepts:
        kwargs["db_kwargs"] = options or None
    conn = dbapi.connect(**kwargs, autocommit=True)
    if options and "db_kwargs" not in accepts:
        try:
            conn.adbc_database.set_options(**options)
        except BaseException:
            conn.close()
            raise
    return conn


def short_name(driver: str) -> str:
    """The driver as labels show it (``sqlite``), from a package, short name or library path."""
    package = driver_package(driver)
    if package:
        return package.removeprefix("adbc_driver_")
    stem = os.path.basename(driver)
    m = re.match(r"(?:lib)?adbc_driver_(\w+?)(?:\.\w+)*$", stem)
    return m.group(1) if m else stem
