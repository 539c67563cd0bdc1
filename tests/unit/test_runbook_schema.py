"""The shipped JSON Schema (for editors) agrees with the parser on good and bad runbooks."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from evac.errors import ConfigError
from evac.yamldoc import load_text
from tests.unit.enginekit import runbook

SCHEMA = json.loads(resources.files("evac").joinpath("schema/runbook.schema.json").read_text())
ROOT = Path(__file__).parents[2]


def examples() -> list[str]:
    shipped = [p.read_text() for p in sorted((ROOT / "runbooks").glob("*.yaml"))]
    docs = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "runbooks.md").read_text(), re.S)
    return shipped + docs


def test_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("text", examples())
def test_shipped_and_documented_runbooks_satisfy_the_schema_and_the_parser(text: str) -> None:
    jsonschema.validate(load_text(text, "rb.yaml"), SCHEMA)
    runbook(text)


@pytest.mark.parametrize(
    "text",
    [
        "name: t\nstep: []\n",
        "name: t\nsteps:\n  - {id: a, action: ok}\n",
        "name: t\nsteps:\n  - {id: a, action: x.y, retry: {attempts: 0}}\n",
        "name: t\nsteps:\n  - {id: a, action: x.y, on_failure: retry}\n",
    ],
)
def test_runbooks_the_parser_rejects_the_schema_rejects_too(text: str) -> None:
    with pytest.raises(ConfigError):
        runbook(text)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(load_text(text, "rb.yaml"), SCHEMA)
