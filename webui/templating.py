"""The console's Jinja environment and the few filters its pages share."""

from __future__ import annotations

from pathlib import Path

import jinja2
from markupsafe import Markup, escape

__all__ = ["counted", "environment", "fingerprint"]

TEMPLATES = Path(__file__).parent / "templates"


def counted(count: int, noun: str) -> str:
    """"1 call", "2 calls": a number with its noun, for the console's sentences."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def fingerprint(value: str) -> Markup:
    """A colon-separated fingerprint that breaks between bytes on a narrow screen, never inside one."""
    return Markup(":<wbr>").join(escape(part) for part in value.split(":"))


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["counted"] = counted
    env.filters["fingerprint"] = fingerprint
    return env
