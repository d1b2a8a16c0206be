"""Editing agent.toml as text, keeping the installer's comments and everything else (pure).

``setup`` writes what ``scan`` found into the config: the ``[[buses]]`` table of the scanned
bus and the ``[[meters]]`` on it are replaced (with their ``[meters.s0]`` sub-tables), every
other table and comment stays. The result is validated by the caller with ``load_config``
before anything is written.
"""

from __future__ import annotations

import json
import re
import tomllib

__all__ = ["replace_bus", "set_gateway_id", "split_blocks"]

_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-]+)\s*\]\]?\s*(#.*)?$")


def split_blocks(text: str) -> list[tuple[str | None, str]]:
    """``(header name, text)`` per table; the first block (top-level keys) has name None.

    Comment lines directly above a header belong to the table below them."""
    blocks: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in text.splitlines(keepends=True):
        match = _HEADER.match(line)
        if match is None:
            blocks[-1][1].append(line)
            continue
        lead: list[str] = []
        current = blocks[-1][1]
        while current and current[-1].lstrip().startswith("#"):
            lead.insert(0, current.pop())
        blocks.append((match.group(1), [*lead, line]))
    return [(name, "".join(lines)) for name, lines in blocks]


def _belongs_to_bus(name: str | None, block: str, bus: str, owner: list[bool]) -> bool:
    """True for the bus table named ``bus`` and meter tables on it (and their sub-tables);
    ``owner`` carries whether the last ``[[meters]]`` was dropped, for ``[meters.s0]``."""
    if name == "buses":
        return bool(_parsed(block, "buses").get("name") == bus)
    if name == "meters":
        owner[0] = _parsed(block, "meters").get("bus") == bus
        return owner[0]
    return name is not None and name.startswith("meters.") and owner[0]


def _parsed(block: str, key: str) -> dict[str, object]:
    try:
        entries = tomllib.loads(block).get(key, [])
    except tomllib.TOMLDecodeError:
        return {}
    return entries[0] if isinstance(entries, list) and entries else {}


def replace_bus(text: str, bus: str, snippet: str) -> str:
    """``text`` without the bus named ``bus`` and its meters, with ``snippet`` appended."""
    owner = [False]
    kept = [block for name, block in split_blocks(text)
            if not _belongs_to_bus(name, block, bus, owner)]
    body = "".join(kept).rstrip("\n")
    return (body + "\n\n" if body else "") + snippet


def set_gateway_id(text: str, gateway_id: str) -> str:
    """Set the top-level ``gateway_id`` (added when missing)."""
    blocks = split_blocks(text)
    top = blocks[0][1]
    line = f"gateway_id = {json.dumps(gateway_id)}\n"
    if re.search(r"(?m)^\s*gateway_id\s*=", top):
        top = re.sub(r"(?m)^\s*gateway_id\s*=.*$\n?", line, top, count=1)
    else:
        top = line + top
    return top + "".join(block for _name, block in blocks[1:])
