"""The role keeps its side of docs/contract.md, and its inputs stay documented.

- every app variable of the contract has a role variable whose default (defaults/main.yml,
  rendered) equals the app's own default (Settings.defaults()) and the contract's;
- every native-library variable of the contract is in celery_stable_native_env with its value;
- the env file template writes all of them, and never the test-only fault hooks;
- every default has a comment above it and an argument_specs entry with a type and the same
  default.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

ROLE = Path(__file__).resolve().parent.parent
TOP = ROLE.parent.parent
CONTRACT = TOP / "docs" / "contract.md"
APP_SRC = TOP / "app" / "src"
ENV_TEMPLATE = ROLE / "templates" / "etc" / "celery-stable" / "celery-stable.env.j2"
TEST_ONLY = {"CELERY_STABLE_FAULT_HOOKS"}


def table_rows(section_start: str) -> list[list[str]]:
    """Rows of the first Markdown table after the line starting with section_start."""
    lines = CONTRACT.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(section_start))
    rows, inside = [], False
    for line in lines[start:]:
        if line.startswith("|"):
            inside = True
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not set(cells[0]) <= {"-", " "}:
                rows.append(cells)
        elif inside:
            break
    return rows[1:]  # without the header


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]*)`", cell)


def contract_app_variables() -> dict[str, tuple[str, str]]:
    """CELERY_STABLE_X -> (default as the contract spells it, role variable)."""
    result = {}
    for row in table_rows("App variables"):
        (name,) = ticked(row[0])
        default = ticked(row[1])
        role_var = ticked(row[2])
        result[name] = (default[0] if default else "", role_var[0] if role_var else "")
    return result


def contract_native_variables() -> dict[str, str]:
    result = {}
    for row in table_rows("Native-library variables"):
        (value,) = ticked(row[1])
        for name in ticked(row[0]):
            result[name] = value
    return result


def role_defaults() -> dict[str, Any]:
    """defaults/main.yml with its templates rendered (every password empty, as shipped)."""
    raw = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    values: dict[str, Any] = dict(raw)
    context = {"role_path": str(ROLE)}
    for _ in range(10):
        changed = False
        for key, value in values.items():
            if isinstance(value, str) and "{{" in value:
                try:
                    rendered = env.from_string(value).render({**values, **context})
                except jinja2.UndefinedError:
                    continue
                if rendered != value:
                    values[key] = rendered
                    changed = True
        if not changed:
            break
    return values


def app_defaults() -> dict[str, str]:
    if not (APP_SRC / "celery_stable" / "settings.py").exists():
        pytest.skip("the app's settings.py does not exist yet")
    sys.path.insert(0, str(APP_SRC))
    try:
        from celery_stable.settings import Settings
    finally:
        sys.path.remove(str(APP_SRC))
    return Settings.defaults()


def test_every_app_variable_has_a_role_variable_with_the_same_default() -> None:
    contract = contract_app_variables()
    app = app_defaults()
    defaults = role_defaults()
    assert set(app) - TEST_ONLY == set(contract), "the contract's table and the app disagree"
    for name, (contract_default, role_var) in contract.items():
        assert role_var, f"{name} has no role variable in the contract"
        assert role_var in defaults, f"{role_var} ({name}) is not in defaults/main.yml"
        role_value = str(defaults[role_var]).strip()
        assert role_value == app[name], f"{role_var}={role_value!r} but the app defaults {name}={app[name]!r}"
        assert contract_default == app[name], f"{name}: contract says {contract_default!r}, app {app[name]!r}"


def test_every_native_variable_is_in_the_role_with_the_contract_value() -> None:
    native = contract_native_variables()
    assert native, "no native-library table found in the contract"
    assert role_defaults()["celery_stable_native_env"] == native


def test_the_env_template_writes_every_contract_variable_and_no_test_hook() -> None:
    template = ENV_TEMPLATE.read_text()
    written = set(re.findall(r"^(CELERY_STABLE_[A-Z_]+)=", template, re.MULTILINE))
    assert written == set(contract_app_variables())
    assert not written & TEST_ONLY
    assert "celery_stable_native_env" in template


def test_every_default_is_commented_typed_and_specified_with_the_same_default() -> None:
    text = (ROLE / "defaults" / "main.yml").read_text().splitlines()
    defaults = yaml.safe_load("\n".join(text))
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert set(options) == set(defaults)
    for number, line in enumerate(text):
        match = re.match(r"^(celery_stable_\w+):", line)
        if match:
            assert text[number - 1].startswith("#"), f"{match[1]} has no comment above it"
    for name, value in defaults.items():
        assert name.startswith("celery_stable_"), name
        spec = options[name]
        assert spec.get("type"), f"{name} has no type in argument_specs"
        assert spec.get("description"), f"{name} has no description in argument_specs"
        assert "default" in spec, f"{name} has no default in argument_specs"
        assert spec["default"] == value, f"{name}: argument_specs {spec['default']!r} != defaults {value!r}"
