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

#: examples per operation and phase (the coverage phase adds every edge case of each parameter on top)
EXAMPLES = "10"


def fuzz(api: Api, tmp_path: Path, *extra: str, token: str | None = None, phases: str = "coverage,fuzzing",
         examples: str = EXAMPLES) -> subprocess.CompletedProcess[str]:
    schemathesis = Path(sys.executable).with_name("st")
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    return subprocess.run(
        [str(schemathesis), "run", f"{api.url}/openapi.json", *auth, "--checks", "all", "--max-examples", examples,
         "--phases", phases, "--workers", "2", "--seed", "1", "--no-color", *extra],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)


def passed(run: subprocess.CompletedProcess[str], at_least: int) -> None:
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    generated = re.search(r"(\d+) generated", run.stdout)
    assert generated and int(generated.group(1)) >= at_least, run.stdout[-3000:]  # it did test something


#: a structured query's body has rules across its fields (``between`` takes two values, ``limit`` at most
#: BICONIC_API_PAGE_MAX) that OpenAPI cannot state: a schema-valid body may rightly get 422 there
QUERY = "/query$"


def test_a_connections_token_gets_answers_within_the_schema_everywhere(api: Api, tmp_path: Path) -> None:
    token = api.token("fuzz-tenant")
    passed(fuzz(api, tmp_path, "--exclude-path-regex", QUERY, token=token), 200)
    passed(fuzz(api, tmp_path, "--include-path-regex", QUERY, "--exclude-checks", "positive_data_acceptance",
                token=token), 20)


def test_without_a_token_every_endpoint_answers_401_within_the_schema(api: Api, tmp_path: Path) -> None:
    passed(fuzz(api, tmp_path, phases="fuzzing", examples="5"), 50)


def test_an_admin_token_gets_no_server_error_nor_undocumented_answer(api: Api, tmp_path: Path) -> None:
    # an admin may name any source and send any SQL: schema-valid nonsense there is a 400, as it should be; its
    # uploads are the same code as a connection's (fuzzed above)
    passed(fuzz(api, tmp_path, "--exclude-checks", "positive_data_acceptance", "--exclude-path-regex", "^/v1/uploads",
                token=api.token(scope="admin"), phases="fuzzing", examples="5"), 30)
