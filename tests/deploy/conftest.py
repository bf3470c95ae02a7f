"""The deploy tests run Debian's ``promtool`` (package ``prometheus``): in CI (``CI`` set) a missing promtool fails
them, elsewhere it skips them."""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/services installs it (apt-get install prometheus)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path
