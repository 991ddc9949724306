"""`esignbox`, the box's one command: the firmware's commands with the other faces wired in.

The firmware (firmware/) is the layer below the faces, so it never imports them; this module is
the only place that knows all of them: it adds the USB-provisioning commands (provisioning/) and
hands `serve` the function that starts the admin console (webui/).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from firmware import cli as firmware_cli
from provisioning import add_commands as add_provisioning_commands

if TYPE_CHECKING:  # the signing services load pyHanko: only `serve` needs them at run time
    from firmware.box import Box
    from firmware.config import BoxConfig

__all__ = ["main", "parser"]


def _start_console(config: BoxConfig, box: Box | None) -> firmware_cli.ConsoleHandle:
    # optional heavy dependency: webui (Jinja, TLS, nginx control) is needed by `serve` alone, not every command.
    from webui import ConsoleError, start_console

    try:
        return start_console(config, box, out=lambda text: print(text, flush=True))
    except ConsoleError as exc:
        raise firmware_cli.ConsoleFailure(str(exc)) from exc


def parser() -> argparse.ArgumentParser:
    return firmware_cli.parser(console=_start_console, extensions=[add_provisioning_commands])


def main(argv: list[str] | None = None) -> int:
    return firmware_cli.run(parser(), argv)
