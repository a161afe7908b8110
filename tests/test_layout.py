"""The written layout matches the code: every module of bench/, reports/ and sizing/ is named in
docs/architecture.md, and every folder of the product in README's Layout section. A file added or
moved without saying where it belongs fails here."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PRODUCT = ("bench", "reports", "sizing")


def product_modules() -> list[Path]:
    return [path.relative_to(REPO) for package in PRODUCT for path in sorted((REPO / package).rglob("*.py"))
            if path.name != "__init__.py" and ".venv" not in path.parts]


def named(path: Path, text: str, modules: list[Path]) -> bool:
    """``folder/name.py`` is in the text; or ``name.py`` where no other module has that file name."""
    if f"{path.parent.name}/{path.name}" in text:
        return True
    unique = sum(other.name == path.name for other in modules) == 1
    return unique and re.search(rf"(?<![\w/]){re.escape(path.name)}\b", text) is not None


def test_architecture_names_every_module_of_the_product():
    text = (REPO / "docs" / "architecture.md").read_text()
    modules = product_modules()
    missing = [str(path) for path in modules if not named(path, text, modules)]
    assert not missing, f"docs/architecture.md does not say where these belong: {missing}"


def test_readme_layout_names_every_folder_of_the_product():
    readme = (REPO / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    folders = sorted({str(path.parent) for path in product_modules()})
    missing = [folder for folder in folders if f"`{folder}/" not in layout]
    assert not missing, f"README's Layout section does not list: {missing}"
