"""The project's own promises: set-up files agree, the Quick start holds two
commands, CI runs the same one, lint is clean, nothing targets a LAN address."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(text: str) -> tuple[str, str]:
    name, _, spec = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", text.strip()).group(1, 0, 2)
    return _normalise(name), spec.replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_requirement(r) for r in project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted.update(_requirement(r) for r in extra)
    wanted["python"] = project["requires-python"]
    return wanted


def environment_requirements() -> tuple[dict[str, str], list[str]]:
    """The conda and pip entries of environment.yml (a plain list of strings)."""
    conda, pip = {}, []
    in_pip = False
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("\ndependencies:\n", 1)[1].splitlines():
        entry = re.match(r"^(\s*)- (.+?)\s*(#.*)?$", line)
        if not entry:
            continue
        indent, item = len(entry.group(1)), entry.group(2)
        if item == "pip:":
            in_pip = True
            continue
        if in_pip and indent > 2:
            pip.append(item)
        else:
            in_pip = False
            name, spec = _requirement(item)
            conda[name] = spec
    return conda, pip


def test_environment_yml_matches_pyproject():
    conda, pip = environment_requirements()
    assert "-e ." in pip, "environment.yml must install chatlib from the repo (pip: -e .)"
    listed = dict(conda)
    listed.update(_requirement(p) for p in pip if not p.startswith("-"))
    listed.pop("pip", None)
    assert listed == pyproject_requirements()


def test_quick_start_has_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"^#+\s*Quick start.*?^```[^\n]*\n(.*?)^```", readme, re.M | re.S | re.I)
    assert block, "README.md needs a 'Quick start' heading followed by a code block"
    commands = [c for c in block.group(1).splitlines() if c.strip() and not c.startswith("#")]
    assert len(commands) == 2, commands
    ci = (ROOT / ".ci" / "run").read_text()
    run_lines = [line.strip() for line in ci.splitlines()]
    assert commands[1].strip() in run_lines, ".ci/run must run the README's test command"


def test_lint_is_clean():
    ruff = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr


PRIVATE_RANGES = r"192\.168|10\.\d{1,3}|172\.(?:1[6-9]|2\d|3[01])"
LAN_OR_PUBLIC = re.compile(rf"\b(?:{PRIVATE_RANGES})\.\d{{1,3}}\.\d{{1,3}}\b")


def test_no_lan_address_outside_the_seed_copy():
    """The seed's 192.168.1.110 lives only in docs/seed and in text about it."""
    offenders = []
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if not path.is_file() or parts[0] in {".git", ".venv", "docs", "test-artifacts"}:
            continue
        if path.suffix not in {".py", ".ipynb", ".toml", ".yml", ".cfg", ""}:
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if LAN_OR_PUBLIC.search(line) and "seed" not in line.lower():
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_loopback_guard_refuses_other_addresses():
    """conftest's audit hook is what keeps every other test on 127.0.0.0/8."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(PermissionError, match="127.0.0.0/8"):
            sock.sendto(b"x", ("192.0.2.1", 9))  # TEST-NET-1: documentation only
        sock.sendto(b"x", ("127.0.0.1", 9))  # loopback is fine
