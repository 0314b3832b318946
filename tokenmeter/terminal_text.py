"""Text a person's terminal shows as text. Values in tables and letters come from gateways and producers: a model
or team named with an ANSI escape or a carriage return would otherwise clear or recolour the screen, or print its
own figures over a row's (hostile32). Control characters (C0, DEL, C1) are written as escapes; JSON and CSV output
keep values exact and do not use this."""

from __future__ import annotations

_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0)) if c not in (0x0a,)}
_CONTROL[0x0a] = "\\n"


def for_terminal(text: str) -> str:
    """`text` with its control characters escaped (`\\x1b`, `\\x0d`, `\\n`), everything else as it is."""
    return text.translate(_CONTROL)
