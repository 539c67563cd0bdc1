"""One driver per fuzz module (``TARGET``), set up once: a tmp inventory, App, journal,
web app or Slack bot serve every case of the module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz.cases import Driver, Target


@pytest.fixture(scope="module")
def drive(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driver]:
    target: Target = request.module.TARGET
    with target.open(tmp_path_factory.mktemp("fuzz")) as driver:
        yield driver
