"""schemathesis against the served ``/openapi.json``: no 5xx, no answer outside the documented schema (status,
content type, headers, body), for every endpoint, with a connection's token, an admin's, and none."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.conftest import Api

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

#: examples per operation and phase: enough to reach every parameter's edge cases in ~15 s a run
EXAMPLES = "25"


def fuzz(api: Api, tmp_path: Path, *extra: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    schemathesis = Path(sys.executable).with_name("st")
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    return subprocess.run(
        [str(schemathesis), "run", f"{api.url}/openapi.json", *auth, "--checks", "all", "--max-examples", EXAMPLES,
         "--phases", "examples,coverage,fuzzing", "--workers", "2", "--seed", "1", "--no-color", *extra],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)


#: a structured query's body has rules across its fields (``between`` takes two values, ``limit`` at most
#: BICONIC_API_PAGE_MAX) that OpenAPI cannot state: a schema-valid body may rightly get 422 there
QUERY = "/query$"


@pytest.mark.parametrize("who", ["connection", "nobody"])
def test_the_api_answers_every_generated_request_within_its_schema(api: Api, tmp_path: Path, who: str) -> None:
    token = api.token("fuzz-tenant") if who == "connection" else None
    for scope in (["--exclude-path-regex", QUERY],
                  ["--include-path-regex", QUERY, "--exclude-checks", "positive_data_acceptance"]):
        run = fuzz(api, tmp_path, *scope, token=token)
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        generated = re.search(r"(\d+) generated", run.stdout)
        assert generated and int(generated.group(1)) > 50, run.stdout[-3000:]  # it did test something


def test_an_admin_token_gets_no_server_error_nor_undocumented_answer(api: Api, tmp_path: Path) -> None:
    # an admin may name any source and send any SQL: schema-valid nonsense there is a 400, as it should be
    run = fuzz(api, tmp_path, "--exclude-checks", "positive_data_acceptance", token=api.token(scope="admin"))
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
