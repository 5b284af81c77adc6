"""The reference documentation keeps up with the code: every configuration
key appears in the README's configuration example, and the files the
README's examples use exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mailer.config import Config, load_config

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def config_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            keys |= config_keys(kind, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def documented_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted keys of the README's TOML example, commented-out ones too."""
    keys: set[str] = set()
    for name, value in data.items():
        if isinstance(value, dict) and prefix + name not in ("limits.domains", "tls.domains"):
            keys |= documented_keys(value, f"{prefix}{name}.")
        keys.add(f"{prefix}{name}")
    return keys


def readme_toml(*, commented: bool = False) -> str:
    """The README's TOML example; with ``commented`` its commented-out keys
    (``# key = value``) count too."""
    [block] = re.findall(r"^```toml\n(.*?)^```$", README, flags=re.DOTALL | re.MULTILINE)
    return re.sub(r"^# (\w+ = )", r"\1", block, flags=re.MULTILINE) if commented else block


def test_every_config_key_is_in_the_readme_example() -> None:
    data = tomllib.loads(readme_toml(commented=True))
    documented = documented_keys(data)
    # regions.<name>.<field>: documented through one region
    documented |= {"regions"} | {
        "regions." + k.split(".", 2)[2] for k in documented if k.startswith("regions.azure.")
    }
    missing = {k for k in config_keys(Config) if k not in documented}
    assert missing == set()


def test_the_readme_example_is_a_valid_configuration() -> None:
    data = tomllib.loads(readme_toml())
    config = load_config(environ={}, overrides=data)
    assert config.metrics.destinations == ("gmail.com", "outlook.com", "yahoo.com")


def test_files_the_readme_examples_name_exist() -> None:
    for path in re.findall(r"\b(examples/[\w.-]+)", README):
        assert (ROOT / path).is_file(), path
