"""The lock files say what pyproject.toml asks for, and the test venv holds exactly the lock.

`make run` installs requirements/base.txt and `make test` requirements/dev.txt, with hashes and no
resolution (Makefile); `make lock` regenerates both with pip-compile. These tests fail when someone
edits pyproject.toml's requirements without `make lock` (a requirement the lock lacks or pins
outside its range, or a lock entry pyproject no longer asks for), and when the venv has drifted from
the lock (`make clean test` rebuilds it).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
BASE, DEV = REPO / "requirements/base.txt", REPO / "requirements/dev.txt"
DEV_EXTRAS = ("dev", "s3", "ssh")  # Makefile's `make lock`: dev.txt = base + these extras
DIRECT = "imgpipe (pyproject.toml)"  # pip-compile's annotation of a requirement pyproject names
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ \\]+)")
NOT_FROZEN = {"pip", "setuptools", "wheel"}  # `pip freeze` leaves these out


def pins(lock: Path) -> dict[str, Version]:
    """{canonical name: pinned version} of a pip-compile lock."""
    found = {}
    for line in lock.read_text().splitlines():
        if match := PIN.match(line):
            found[canonicalize_name(match[1])] = Version(match[2])
    return found


def direct_names(lock: Path) -> set[str]:
    """The packages pip-compile annotated as asked for by pyproject.toml itself."""
    names, current = set(), None
    for line in lock.read_text().splitlines():
        if match := PIN.match(line):
            current = canonicalize_name(match[1])
        elif current and line.strip().lstrip("#").strip() in (f"via {DIRECT}", DIRECT):
            names.add(current)
    return names


def requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        found += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return found


@pytest.mark.parametrize(("lock", "extras"), [(BASE, ()), (DEV, DEV_EXTRAS)], ids=["base", "dev"])
def test_every_requirement_is_pinned_inside_its_range(lock: Path, extras: tuple[str, ...]):
    pinned = pins(lock)
    wrong = [
        f"{r} (lock: {pinned.get(canonicalize_name(r.name), 'missing')})"
        for r in requirements(*extras)
        if canonicalize_name(r.name) not in pinned or not r.specifier.contains(pinned[canonicalize_name(r.name)], prereleases=True)
    ]
    assert not wrong, f"{lock.relative_to(REPO)} is stale for pyproject.toml: {wrong}; run `make lock`"


@pytest.mark.parametrize(("lock", "extras"), [(BASE, ()), (DEV, DEV_EXTRAS)], ids=["base", "dev"])
def test_the_lock_asks_for_nothing_pyproject_does_not(lock: Path, extras: tuple[str, ...]):
    asked = {canonicalize_name(r.name) for r in requirements(*extras)}
    assert direct_names(lock) == asked, f"{lock.relative_to(REPO)} and pyproject.toml disagree; run `make lock`"


def test_extras_of_requirements_are_in_the_lock():
    """`dvc[s3]` and `dvc[ssh]` are only useful with their plugins pinned too."""
    assert {"dvc-s3", "dvc-ssh", "moto"} <= set(pins(DEV))


def test_dev_lock_agrees_with_the_base_lock():
    base, dev = pins(BASE), pins(DEV)
    assert {name: dev.get(name) for name in base} == base


def test_the_build_backend_is_in_both_locks():
    """Makefile installs imgpipe with --no-build-isolation, from the lock's setuptools."""
    build = [Requirement(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]]
    for lock in (BASE, DEV):
        pinned = pins(lock)
        for r in build:
            assert r.specifier.contains(pinned[canonicalize_name(r.name)]), f"{lock.name}: {r}"


def test_every_pin_carries_hashes():
    for lock in (BASE, DEV):
        entries = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text())
        unhashed = [e.split()[0] for e in entries if PIN.match(e) and "--hash=sha256:" not in e]
        assert not unhashed, f"{lock.name}: {unhashed}"


def test_the_venv_holds_exactly_the_dev_lock():
    """What `make test` installed: `pip freeze` equals the lock's pins (imgpipe itself aside)."""
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable", "--disable-pip-version-check"],
        capture_output=True, text=True, check=True,
    ).stdout
    installed = {}
    for line in frozen.splitlines():
        name, _, version = line.partition("==")
        if version:
            installed[canonicalize_name(name)] = Version(version)
    locked = {name: version for name, version in pins(DEV).items() if name not in NOT_FROZEN}
    diff = sorted(
        f"{name}: venv {installed.get(name, '-')}, lock {locked.get(name, '-')}"
        for name in set(installed) | set(locked)
        if installed.get(name) != locked.get(name)
    )
    assert not diff, f"{sys.prefix} differs from requirements/dev.txt ({len(diff)}): {diff[:20]}; run `make clean test`"
