"""The broker role's inputs agree everywhere they are written: each default has a comment above
it, a type, a description and the same default in meta/argument_specs.yml (both entry points),
and a row in the README's variable table."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parent.parent


def readme_variables() -> set[str]:
    lines = (ROLE / "README.md").read_text().splitlines()
    start = lines.index("## Role variables")
    names = set()
    for line in lines[start:]:
        if line.startswith("## ") and line != "## Role variables":
            break
        if match := re.match(r"^\| `(celery_stable_broker_\w+)`", line):
            names.add(match[1])
    return names


def test_every_default_is_commented_typed_specified_and_in_the_readme() -> None:
    text = (ROLE / "defaults" / "main.yml").read_text().splitlines()
    defaults = yaml.safe_load("\n".join(text))
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    assert specs["main"]["options"] == specs["preflight"]["options"]
    options = specs["main"]["options"]
    assert set(options) == set(defaults)
    assert readme_variables() == set(defaults)
    for number, line in enumerate(text):
        if match := re.match(r"^(celery_stable_broker_\w+):", line):
            assert text[number - 1].startswith("#"), f"{match[1]} has no comment above it"
    for name, value in defaults.items():
        spec = options[name]
        assert spec.get("type") and spec.get("description"), name
        assert spec.get("default") == value, f"{name}: argument_specs {spec.get('default')!r} != {value!r}"
