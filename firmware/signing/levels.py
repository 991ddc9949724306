"""Signature levels and profiles the box offers, what each level requires, and which level a
request gets that names none: the one statement of these rules for the API, its OpenAPI document,
the console's settings page and the configuration."""

from __future__ import annotations

import enum
from typing import TypeVar

from ..errors import InvalidRequest


class Level(str, enum.Enum):
    """ETSI baseline levels. Each adds to the one before: timestamp, then LTV data, then archive TS."""

    B_B = "B-B"
    B_T = "B-T"
    B_LT = "B-LT"
    B_LTA = "B-LTA"

    @property
    def needs_timestamp(self) -> bool:
        return self is not Level.B_B

    @property
    def needs_revocation_data(self) -> bool:
        return self in (Level.B_LT, Level.B_LTA)


DEFAULT_LEVEL = Level.B_T  # [signing] default_level of a box whose box.toml names none

# From a hash the box makes a CMS; B-LTA needs the whole document (its archive timestamp covers the
# PDF's DSS), so only the PDF endpoint offers it.
HASH_LEVELS = (Level.B_B, Level.B_T, Level.B_LT)


def hash_level(default: Level) -> Level:
    """The level a hash request naming none gets when the box's default is ``default``."""
    return Level.B_LT if default is Level.B_LTA else default


class Profile(str, enum.Enum):
    PADES = "PAdES"  # CMS for a PDF /Contents: no signing-time attribute, LTV data goes to the DSS
    CADES = "CAdES"  # stand-alone detached CMS: signing-time, LTV data inside SignedData


E = TypeVar("E", bound=enum.Enum)


def parse_enum(enum_type: type[E], value: object, what: str) -> E:
    """The enum member for ``value``, or InvalidRequest listing the accepted values."""
    for member in enum_type:
        if member.value == value:
            return member
    accepted = ", ".join(m.value for m in enum_type)
    raise InvalidRequest(f"unknown {what} {value!r}; use one of {accepted}")
