"""The package layout of docs/design.md holds: the import-linter contract in
pyproject.toml is kept, and every package the contract names is described."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contract_is_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_every_layered_package_is_in_the_design_document() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    [contract] = config["tool"]["importlinter"]["contracts"]
    design = (ROOT / "docs" / "design.md").read_text()
    for layer in contract["layers"]:
        for name in re.split(r"\s*\|\s*", layer):
            assert f"`{name.strip('()')}`" in design, name


def test_product_code_does_not_import_the_test_kit() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "mailer").rglob("*.py")
        if "testing" not in path.parts
        and path.name != "pytest_plugin.py"
        and re.search(r"^\s*(from|import) mailer\.testing\b", path.read_text(), re.M)
    ]
    assert offenders == []
