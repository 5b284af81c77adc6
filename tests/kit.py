"""Recipients for tests: the one helper every test module uses."""

from __future__ import annotations

from mailer.enqueue import RecipientInput


def people(*names: str, domain: str = "dest.test") -> list[RecipientInput]:
    """One recipient per name: ``name@domain`` (or the name itself when it
    is an address), displayed as the local part, with ``token`` = the
    local part for the templates."""
    found = []
    for name in names:
        address = name if "@" in name else f"{name}@{domain}"
        local = address.partition("@")[0]
        found.append(RecipientInput(address, local, {"token": local}))
    return found


def numbered(n: int, domain: str = "dest.test") -> list[RecipientInput]:
    """``person0@domain`` … with non-ASCII display names and tokens
    ``t0`` …, for tests that need many recipients."""
    return [
        RecipientInput(f"person{i}@{domain}", f"Jürgen Weiß {i}", {"token": f"t{i}"})
        for i in range(n)
    ]
