"""Move ``fetch.end`` in a ``params.yaml`` text, keeping its comments and layout (``compoundwatch watch --end``)."""

from __future__ import annotations

import datetime as dt
import re

import yaml

from pipeline.errors import ConfigError

__all__ = ["with_fetch_end"]

_SECTION = re.compile(r"^fetch:\s*(#.*)?$")
_END = re.compile(r"^(?P<indent>\s+)end:(?P<space>\s*)(?P<value>\"[^\"]*\"|'[^']*'|[^\s#]+)(?P<rest>.*)$")


def with_fetch_end(text: str, end: dt.date) -> str:
    """``text`` with ``fetch.end`` set to ``end`` (quoted ISO date, as DVC wants); the rest byte-identical
    when the key is written in block style, else the file re-written by the YAML dumper (comments lost).

    Raises
    ------
    ConfigError
        When the text is not a YAML mapping.
    """
    lines = text.splitlines(keepends=True)
    in_fetch = False
    for i, line in enumerate(lines):
        if _SECTION.match(line.rstrip("\n")):
            in_fetch = True
            continue
        if in_fetch and line.strip() and not line[0].isspace():
            break
        m = _END.match(line.rstrip("\n")) if in_fetch else None
        if m:
            newline = line[len(line.rstrip("\n")):]
            lines[i] = f'{m["indent"]}end:{m["space"]}"{end.isoformat()}"{m["rest"]}{newline}'
            return "".join(lines)
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"the parameters are not valid YAML ({err})") from err
    if not isinstance(doc, dict):
        raise ConfigError("the parameters' top level must be a mapping of sections")
    doc.setdefault("fetch", {})["end"] = end.isoformat()
    return yaml.safe_dump(doc, sort_keys=False)
