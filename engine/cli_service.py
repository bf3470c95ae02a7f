"""``biconic serve`` and ``biconic tokens``: the HTTP service (see :mod:`engine.service`) and its API tokens."""

from __future__ import annotations

import atexit
import json
import os
import shutil

import click

from engine.cli_options import dsn_option, json_option

__all__ = ["serve", "tokens"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port to listen on.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Server processes (each answers requests; imports run on `biconic worker`).")
@click.option("--root-path", default=None, envvar="BICONIC_API_ROOT_PATH",
              help="Path the API is served under behind a reverse proxy, e.g. /biconic.")
@click.option("--forwarded-allow-ips", default="127.0.0.1", show_default=True, metavar="IPS",
              help="Proxies whose X-Forwarded-Proto/For headers are trusted (comma-separated, or '*'): tus "
                   "Location headers then carry the scheme and host the client used.")
@click.option("--log-level", default=None, type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              help="Log level [default: BICONIC_LOG_LEVEL, else info].")
@dsn_option
def serve(host: str, port: int, workers: int, root_path: str | None, forwarded_allow_ips: str, log_level: str | None,
          dsn: str | None) -> None:
    """Serve the HTTP API: tus uploads, imports, dataset reads (OpenAPI at /openapi.json, docs at /docs).

    \b
    Imports are queued for `biconic worker` (same BICONIC_BROKER_URL and BICONIC_PG_DSN).
    Example:
      biconic tokens create --connection 7 --json
      biconic serve --port 8000 --workers 2
    """
    import uvicorn

    from engine.logs import configure_logging, uvicorn_log_config, wants_json
    from engine.postgres.server import resolve_dsn
    from engine.settings import settings

    if workers < 1:
        raise click.BadParameter("expected 1 or more", param_hint="--workers")
    # every server process builds its app from the environment: give them the resolved warehouse (the embedded
    # server is started once, here, not once per process)
    os.environ["BICONIC_PG_DSN"] = resolve_dsn(dsn)
    if root_path is not None:
        os.environ["BICONIC_API_ROOT_PATH"] = root_path
    if workers > 1:  # every server process records into one folder, whichever answers /metrics shows them all
        from engine.metrics import use_multiprocess
        from engine.settings import settings

        folder = settings().data_path / "metrics" / f"serve-{os.getpid()}"
        use_multiprocess(folder)
        atexit.register(shutil.rmtree, folder, True)
    click.echo(f"biconic serve: http://{host}:{port}{root_path or ''}/docs", err=True)
    level = (log_level or settings().log_level or "info").lower()
    configure_logging(level)
    uvicorn.run("engine.service.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level=level, log_config=uvicorn_log_config(level, wants_json()), proxy_headers=True,
                forwarded_allow_ips=forwarded_allow_ips,
                server_header=False, timeout_graceful_shutdown=10)


@click.group()
def tokens() -> None:
    """Make, list and revoke the API's bearer tokens (stored hashed; a token is shown once)."""


@tokens.command("create")
@click.option("--connection", "connection_id", default=None, metavar="ID",
              help="The connection the token sees and touches (an integer, a UUID or a text id).")
@click.option("--scope", type=click.Choice(["read", "write", "admin"]), default="write", show_default=True,
              help="read: reads only; write: also uploads and imports; admin: every connection and raw SQL "
                   "(no --connection).")
@click.option("--note", default=None, help="What the token is for (shown by `tokens list`).")
@json_option('{"token": ..., "token_id": ...}')
@dsn_option
def create(connection_id: str | None, scope: str, note: str | None, as_json: bool, dsn: str | None) -> None:
    """Make a token. It is printed once: only its hash is kept."""
    from engine.postgres.server import resolve_dsn
    from engine.service.tokens import create_token

    made = create_token(resolve_dsn(dsn), connection_id=connection_id, scope=scope, note=note)
    if as_json:
        click.echo(json.dumps(made))
        return
    click.echo(made["token"])
    whom = f"connection {made['connection_id']}" if made["connection_id"] is not None else "every connection"
    click.echo(f"token {made['token_id']} ({scope}, {whom}): shown once, keep it now", err=True)


@tokens.command("revoke")
@click.argument("token_id")
@dsn_option
def revoke(token_id: str, dsn: str | None) -> None:
    """Revoke a token by its id (or the token itself): its next request gets 401."""
    from engine.postgres.server import resolve_dsn
    from engine.service.tokens import revoke_token

    done = revoke_token(resolve_dsn(dsn), token_id)
    click.echo(f"revoked {token_id}" if done else f"{token_id} was already revoked")


@tokens.command("list")
@json_option("the tokens (never the tokens themselves)")
@dsn_option
def list_(as_json: bool, dsn: str | None) -> None:
    """Every token's id, connection, scope, note and dates."""
    from engine.postgres.server import resolve_dsn
    from engine.service.tokens import list_tokens

    rows = list_tokens(resolve_dsn(dsn))
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        state = f"revoked {row['revoked_at'][:19]}" if row["revoked_at"] else "active"
        whom = row["connection_id"] if row["connection_id"] is not None else "*"
        click.echo(f"{row['token_id']}  {row['scope']:<5}  connection {whom}  {state}  {row['note'] or ''}")
