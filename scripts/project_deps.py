"""The project's own dependencies, read from pyproject.toml: for scripts/setup-venv.sh and the floor check.

    python scripts/project_deps.py --all-but-torch     # one requirement a line (core and every extra)
    python scripts/project_deps.py --all-but-torch --names   # their names only
    python scripts/project_deps.py --check-torch 2.5.1  # exit 1, one line, when that torch is below the floor
    python scripts/project_deps.py --versions           # what is installed of each, one line
    python scripts/project_deps.py --floors             # each requirement's floor, as NAME==VERSION
    python scripts/project_deps.py --at-floors          # exit 1 naming each one installed above its floor

Runs on the standard library alone, before the project is installed (``tomli`` before Python 3.11,
except for --check-torch, which reads the torch floor with a pattern).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:>=\s*([0-9][0-9A-Za-z.]*))?")


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def requirements(path: Path = PYPROJECT) -> list[str]:
    """Core dependencies, then each extra's, in file order; an extra that names the project itself
    (``gpusizer[report,gpu,dev]``) adds nothing of its own."""
    project = _load_toml(path)["project"]
    found = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        found += [req for req in extra if not req.startswith(project["name"])]
    return list(dict.fromkeys(found))


def name_of(requirement: str) -> str:
    return REQUIREMENT.match(requirement).group(1)


def floor_of(requirement: str) -> str | None:
    return REQUIREMENT.match(requirement).group(2)


def release(version: str) -> tuple[int, ...]:
    """``2.6.0+cu124`` -> (2, 6, 0): the numeric release, the local label and any pre-release dropped."""
    numbers = re.match(r"^\s*(\d+(?:\.\d+)*)", version)
    return tuple(int(part) for part in numbers.group(1).split(".")) if numbers else ()


def is_prerelease(version: str) -> bool:
    """``2.6.0a0+ecf3bae`` (NVIDIA's containers) and ``2.6.0rc1``, ``2.6.0.dev20250101`` are
    pre-releases: by PEP 440 below 2.6.0, so ``>=2.6`` does not admit them."""
    return re.search(r"(a|b|rc|c|dev)\d*", version.split("+")[0].lower()) is not None


def below(installed: str, floor: str) -> bool:
    """PEP 440's order for these shapes: the release compared padded with zeros; a pre-release of the
    floor's own release is below it."""
    have, need = release(installed), release(floor)
    width = max(len(have), len(need))
    have, need = have + (0,) * (width - len(have)), need + (0,) * (width - len(need))
    return have < need or (have == need and is_prerelease(installed))


def torch_floor(path: Path = PYPROJECT) -> str:
    """Read with a pattern, not TOML: the system Python that is checked may have neither tomllib nor tomli."""
    return re.search(r'"torch\s*>=\s*([0-9][0-9.]*)"', path.read_text(encoding="utf-8")).group(1)


def check_torch(installed: str) -> str | None:
    floor = torch_floor()
    if below(installed, floor):
        return (f"torch {installed} is installed, and gpusizer needs torch >= {floor} (FSDP2's public fully_shard "
                f"is the newest torch feature it uses); set-up never replaces an installed torch (a cloud image's "
                f"CUDA build): upgrade it (pip install 'torch>={floor}'), or make the venv from a Python without "
                f"torch (make setup PYTHON=/path/to/python3)")
    return None


def above_floor(reqs: list[str]) -> list[str]:
    """Requirements but torch (held at whatever is installed) whose installed release is not their floor."""
    wrong = []
    for req in reqs:
        name, floor = name_of(req), floor_of(req)
        if name == "torch" or floor is None:
            continue
        have = installed_version(name)
        if have is None or release(have)[: len(release(floor))] != release(floor):
            wrong.append(f"{name} {have} (floor {floor})")
    return wrong


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--all-but-torch", action="store_true")
    parser.add_argument("--names", action="store_true", help="with --all-but-torch: names only, no ranges")
    action.add_argument("--check-torch", metavar="VERSION")
    action.add_argument("--versions", action="store_true")
    action.add_argument("--floors", action="store_true")
    action.add_argument("--at-floors", action="store_true")
    args = parser.parse_args(argv)
    if args.check_torch:
        problem = check_torch(args.check_torch)
        if problem:
            print(f"gpusizer setup: ERROR: {problem}", file=sys.stderr)
            return 1
        return 0
    reqs = requirements()
    if args.all_but_torch:
        print("\n".join(name_of(req) if args.names else req for req in reqs if name_of(req) != "torch"))
    elif args.versions:
        print("installed: " + ", ".join(f"{name_of(req)} {installed_version(name_of(req))}" for req in reqs))
    elif args.at_floors:
        wrong = above_floor(reqs)
        if wrong:
            print("not at the floor: " + ", ".join(wrong), file=sys.stderr)
            return 1
    else:
        print("\n".join(f"{name_of(req)}=={floor_of(req)}" for req in reqs if floor_of(req)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
