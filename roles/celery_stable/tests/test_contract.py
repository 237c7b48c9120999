"""The role keeps its side of docs/contract.md, against the runtime's own table of variables.

- every variable of the runtime's table (app/runtime/src/celery_stable/settings.py, `VARIABLES`)
  that names a role variable has it in defaults/main.yml, with the table's default (except the
  app module, which has none in the table, and the give-up task: there the role's is the demo's);
- the env file template writes every variable of the table, and the native-library and app
  variables from their dicts; rendered with the role's defaults, it passes the table's check;
- the contract's tables say the same as the runtime's table and the role's defaults;
- every default has a comment above it, an argument_specs entry with a type and the same
  default, and a row in the role README's variable table.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jinja2
import yaml

ROLE = Path(__file__).resolve().parent.parent
TOP = ROLE.parent.parent
CONTRACT = TOP / "docs" / "contract.md"
SETTINGS = TOP / "app" / "runtime" / "src" / "celery_stable" / "settings.py"
ENV_TEMPLATE = ROLE / "templates" / "etc" / "celery-stable" / "celery-stable.env.j2"
# Where the role's default is the demo's, not the runtime's: the app to protect (the runtime has
# no default), its give-up task and the commands it runs (the runtime's default is none).
DEMO_DEFAULTS = {
    "CELERY_STABLE_APP_MODULE": "video_renderer.celery_app",
    "CELERY_STABLE_GIVEUP_TASK": "video_renderer.mark_given_up",
    "CELERY_STABLE_REQUIRED_COMMANDS": "ffmpeg",
    "CELERY_STABLE_APP_WRITE_PATHS": "/var/lib/celery-stable/videos",
}


def runtime_settings() -> ModuleType:
    """settings.py as the preflight runs it: one stdlib-only file, imported by path."""
    spec = importlib.util.spec_from_file_location("celery_stable_settings_under_test", SETTINGS)
    assert spec and spec.loader, SETTINGS
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def table_rows(section_start: str, document: Path = CONTRACT) -> list[list[str]]:
    """Rows of the first Markdown table after the line starting with section_start."""
    lines = document.read_text().splitlines()
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


def role_defaults() -> dict[str, Any]:
    """defaults/main.yml with its templates rendered (every password empty, as shipped)."""
    raw = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["urlencode"] = lambda value: value
    values: dict[str, Any] = dict(raw)
    context = {"role_path": str(ROLE)}

    def render(value: Any) -> Any:
        if isinstance(value, str) and "{{" in value:
            return env.from_string(value).render({**values, **context})
        if isinstance(value, dict):
            return {key: render(item) for key, item in value.items()}
        if isinstance(value, list):
            return [render(item) for item in value]
        return value

    for _ in range(10):
        changed = False
        for key, value in values.items():
            try:
                rendered = render(value)
            except jinja2.UndefinedError:
                continue
            if rendered != value:
                values[key] = rendered
                changed = True
        if not changed:
            break
    return values


def render_env_file(overrides: dict[str, Any] | None = None) -> str:
    """The env template with the role's defaults, as Ansible would write it."""
    values = {**role_defaults(), **(overrides or {})}
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True)
    env.filters["comment"] = lambda text: f"# {text}"
    app_is_wheel = (Path(values["celery_stable_app_source"]) / "pyproject.toml").is_file()
    values["_celery_stable_app_path"] = "" if app_is_wheel else values["celery_stable_prefix"] + "/app"
    values["ansible_managed"] = "Ansible managed"
    # vars/main.yml adds verification to a rediss:// URL; the defaults are redis://.
    values["_celery_stable_broker_url"] = values["celery_stable_broker_url"]
    return env.from_string(ENV_TEMPLATE.read_text()).render(values)


def test_every_table_variable_has_its_role_variable_with_the_same_default() -> None:
    settings = runtime_settings()
    defaults = role_defaults()
    for variable in settings.VARIABLES:
        if variable.role_var is None:
            continue  # derived by the role (CELERY_STABLE_APP_PATH)
        assert variable.role_var in defaults, f"{variable.role_var} ({variable.env}) is not in defaults"
        value = defaults[variable.role_var]
        # A list is written space-separated (the env template's join).
        role_value = " ".join(value) if isinstance(value, list) else str(value).strip()
        want = DEMO_DEFAULTS.get(variable.env, variable.default)
        assert role_value == want, f"{variable.role_var}={role_value!r}, the runtime's {variable.env}={want!r}"


def test_the_env_template_writes_every_table_variable() -> None:
    settings = runtime_settings()
    template = ENV_TEMPLATE.read_text()
    written = set(re.findall(r"^(CELERY_[A-Z_]+)=", template, re.MULTILINE))
    assert written == {variable.env for variable in settings.VARIABLES if variable.in_env_file}
    assert "celery_stable_native_env" in template
    assert "celery_stable_app_env" in template


def test_the_env_file_of_the_defaults_passes_the_runtimes_check() -> None:
    settings = runtime_settings()
    text = render_env_file()
    env = settings.parse_env_file(text)
    assert settings.parse_all(env, "the inventory")[1] == []
    defaults = role_defaults()
    for name, value in {**defaults["celery_stable_native_env"], **defaults["celery_stable_app_env"]}.items():
        assert env[name] == str(value), name
    # Written only when set: Celery would otherwise take an empty backend for the app's own.
    assert "CELERY_RESULT_BACKEND" not in env
    assert render_env_file({"celery_stable_result_backend": "redis://h/1"}).count("CELERY_RESULT_BACKEND=") == 1


def test_a_plain_directory_app_gets_its_path() -> None:
    settings = runtime_settings()
    plain = TOP / "app" / "runtime" / "tests" / "plainapp"
    env = settings.parse_env_file(render_env_file({"celery_stable_app_source": str(plain)}))
    assert env["CELERY_STABLE_APP_PATH"] == "/opt/celery-stable/app"


def test_the_contract_tables_say_what_the_runtime_and_the_role_say() -> None:
    settings = runtime_settings()
    defaults = role_defaults()
    rows = {ticked(row[0])[0]: row for row in table_rows("Runtime variables")}
    assert set(rows) == {variable.env for variable in settings.VARIABLES}
    for variable in settings.VARIABLES:
        row = rows[variable.env]
        default = ticked(row[1])
        role_var = [name for name in ticked(row[2]) if name.startswith("celery_stable_")]
        if variable.default:
            assert default == [variable.default], f"{variable.env}: contract {default}, runtime {variable.default!r}"
        else:
            assert not default, f"{variable.env}: contract {default}, the runtime has none"
        assert (role_var[0] if role_var else None) == variable.role_var, variable.env
    native = {}
    for row in table_rows("Native-library variables"):
        (value,) = ticked(row[1])
        for name in ticked(row[0]):
            native[name] = value
    assert native == defaults["celery_stable_native_env"]


def test_every_default_is_commented_typed_specified_and_in_the_readme() -> None:
    text = (ROLE / "defaults" / "main.yml").read_text().splitlines()
    defaults = yaml.safe_load("\n".join(text))
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    readme_vars = {ticked(row[0])[0] for row in table_rows("## Role variables", ROLE / "README.md")}
    assert set(options) == set(defaults)
    assert readme_vars == set(defaults), f"README table: {readme_vars ^ set(defaults)}"
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
        if "choices" in spec:
            assert value in spec["choices"], f"{name}: default {value!r} not among its choices"
