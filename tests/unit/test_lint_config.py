"""The lint configuration stays true to the project it lints."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_sqlfluff_renders_the_models_with_the_vars_dbt_uses():
    """sqlfluff's stand-in ``var()`` reads a copy of dbt_project.yml's vars: a new or changed var must be
    copied, or the linted SQL is not the SQL dbt builds."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".sqlfluff")
    linted = ast.literal_eval(config["sqlfluff:templater:jinja:context"]["dbt_vars"])
    built = yaml.safe_load((ROOT / "dbt_project" / "dbt_project.yml").read_text())["vars"]
    assert {name: linted.get(name) for name in built} == built
