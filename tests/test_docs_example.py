"""The example test of docs/testing.md runs as a platform developer would
run it: copied into a fresh directory and run by pytest with only the
installed `mailer` plugin (no conftest, pytest-asyncio in strict mode)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "testing.md"


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.DOTALL | re.MULTILINE)


def test_docs_have_one_python_example_with_tests() -> None:
    [example] = python_blocks(DOC.read_text(encoding="utf-8"))
    assert "async def test_" in example


def test_docs_example_passes_in_a_fresh_directory(tmp_path: Path) -> None:
    [example] = python_blocks(DOC.read_text(encoding="utf-8"))
    (tmp_path / "test_copied_example.py").write_text(example, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_copied_example.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b2 passed\b", result.stdout), result.stdout
