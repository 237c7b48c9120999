"""Check the requirements files the role installs in one ``uv pip install --require-hashes``.

    check_requirements.py VARIABLE=PATH [VARIABLE=PATH ...]

Run by the role's preflight on the controller (tasks/controller_check.yml), with
ansible-playbook's own Python, before any change: standard library only. Prints one line per
problem, naming the role variable and the fix, and exits 2; exits 0 when the files can be
installed together. What it refuses is what uv would refuse later, on every host, after the
role had already changed them:

- a requirement without ``--hash`` (uv's hash-checking mode needs one for every requirement);
- a requirement not pinned with ``==`` (hash-checking mode installs exact versions only);
- ``-r``/``-c``/``-e`` lines (the file is shipped to the hosts alone; what it names is not);
- one package pinned to two versions by two files (uv: "your requirements are unsatisfiable").

The same pin in two files is fine, with the same hashes or not (uv takes the hashes both allow).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

FIX_HASHES = (
    "compile it with hashes: `uv pip compile --generate-hashes requirements.in -o "
    "requirements.txt` (as app/runtime/requirements.txt is)"
)
NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)$")
NESTED = ("-r", "--requirement", "-c", "--constraint", "-e", "--editable")


def logical_lines(text: str) -> list[str]:
    """Lines with ``\\`` continuations joined and comments dropped, as pip reads them."""
    joined = re.sub(r"\\\s*\n", " ", text)
    lines = []
    for raw in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if line:
            lines.append(line)
    return lines


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check(variable: str, path: Path, pins: dict[str, tuple[str, str]]) -> list[str]:
    """Problems of one file; records its pins in ``pins`` (name -> (version, variable))."""
    if not path.is_file():
        return [
            f"{variable}: {path} does not exist on the controller. Point {variable} at a pinned, "
            "hashed requirements file"
            + (", or set it to '' when the app needs nothing beyond the runtime's requirements."
               if variable == "celery_stable_app_requirements" else ".")
        ]  # fmt: skip
    problems, unhashed, unpinned = [], [], []
    for line in logical_lines(path.read_text(encoding="utf-8")):
        if line.startswith("-"):
            option = line.split()[0].split("=")[0]
            if option in NESTED:
                problems.append(
                    f"{variable}: {path} has `{line.split()[0]} ...`: the file is shipped to the "
                    "hosts alone, so what it names would be missing there. Put those "
                    "requirements in the file itself (pinned, with hashes)."
                )
            continue  # --index-url, --find-links...: options, not requirements
        match = NAME.match(line)
        if not match:
            problems.append(f"{variable}: {path}: cannot read the requirement {line[:60]!r}.")
            continue
        name, rest = match[1], match[3]
        if "--hash=" not in rest:
            unhashed.append(name)
        pin = re.match(r"^==\s*([^\s;,]+)\s*(;.*?)?(\s--hash=.*)?$", rest)
        if not pin or "*" in pin[1]:
            unpinned.append(name)
            continue
        if pin[2]:
            continue  # a pin for some platforms only (environment marker): not compared
        key = normalize(name)
        version = pin[1]
        if key in pins and pins[key][0] != version:
            other_version, other_variable = pins[key]
            problems.append(
                f"{variable} pins {name}=={version} but {other_variable} pins "
                f"{name}=={other_version}: the venv gets both files in one install and uv "
                f"refuses two versions of one package. Pin {name}=={other_version} in "
                f"{variable} (then compile it again with --generate-hashes), or drop it there."
            )
        pins.setdefault(key, (version, variable))
    if unhashed:
        problems.append(
            f"{variable}: {path} has requirements without --hash: {', '.join(unhashed)}. The "
            f"venv is installed in uv's --require-hashes mode; {FIX_HASHES}."
        )
    if unpinned:
        problems.append(
            f"{variable}: {path} has requirements not pinned with ==: {', '.join(unpinned)}. "
            f"Hash-checking mode installs exact versions only; {FIX_HASHES}."
        )
    return problems


def main(argv: list[str]) -> int:
    if not argv or any("=" not in arg for arg in argv):
        print("usage: check_requirements.py VARIABLE=PATH [VARIABLE=PATH ...]", file=sys.stderr)
        return 2
    pins: dict[str, tuple[str, str]] = {}
    problems = []
    for arg in argv:
        variable, _, path = arg.partition("=")
        problems += check(variable, Path(path), pins)
    for problem in problems:
        print(problem)
    return 2 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
