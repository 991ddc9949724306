"""The organisation's seal or logo in the visible PDF stamp: one PNG in the state directory.

The console's upload page and the provisioning manifest both install it through
`install_stamp_logo`, which refuses anything but a small, sane PNG before a byte reaches the
disk and writes it crash-safely. The image is decoded once, when the signing service is
assembled, into Flate-compressed pixel data; each signature then embeds those bytes as they
are, so a logo costs a signature no image work.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..config import BoxConfig, ConfigError
from ..durable import write_durable
from ..errors import InvalidRequest

__all__ = ["MAX_LOGO_BYTES", "MAX_LOGO_SIDE", "StampLogo", "decode_logo", "install_stamp_logo", "load_stamp_logo",
           "remove_stamp_logo"]

MAX_LOGO_BYTES = 512 * 1024
MAX_LOGO_SIDE = 1024  # pixels, either side: a stamp is a few centimetres wide
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class StampLogo:
    """Pixels ready for a PDF image XObject: 8-bit RGB, and the alpha channel if it has one."""

    width: int
    height: int
    rgb: bytes  # Flate-compressed
    alpha: bytes | None  # Flate-compressed 8-bit grey, or None if fully opaque


def decode_logo(png: bytes) -> StampLogo:
    """Check ``png`` (PNG only, at most MAX_LOGO_BYTES and MAX_LOGO_SIDE) and decode it."""
    if len(png) > MAX_LOGO_BYTES:
        raise InvalidRequest(f"the stamp logo is over {MAX_LOGO_BYTES // 1024} KiB; send a smaller PNG")
    if not png.startswith(_PNG_SIGNATURE):
        raise InvalidRequest("the stamp logo must be a PNG image")
    try:
        image = Image.open(io.BytesIO(png), formats=["PNG"])
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidRequest(f"the stamp logo is not a readable PNG: {exc}") from None
    # The header gives the size: check it before decoding a single pixel.
    if max(image.size) > MAX_LOGO_SIDE:
        raise InvalidRequest(
            f"the stamp logo is {image.width}x{image.height} pixels; at most {MAX_LOGO_SIDE} on either side"
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, zlib.error) as exc:
        raise InvalidRequest(f"the stamp logo is not a readable PNG: {exc}") from None
    rgba = image.convert("RGBA")
    alpha = rgba.getchannel("A")
    opaque = alpha.getextrema() == (255, 255)
    return StampLogo(
        width=rgba.width,
        height=rgba.height,
        rgb=zlib.compress(rgba.convert("RGB").tobytes()),
        alpha=None if opaque else zlib.compress(alpha.tobytes()),
    )


def _logo_path(state_dir: Path) -> Path:
    return BoxConfig.load(state_dir).stamp_logo_file


def install_stamp_logo(state_dir: Path, png: bytes) -> Path:
    """Validate ``png`` and make it the stamp logo ([signing] stamp_logo_file); returns its path.

    The running signing service shows it from its next reassembly (as after any settings change).
    """
    decode_logo(png)
    path = _logo_path(state_dir)
    write_durable(path, png)
    return path


def remove_stamp_logo(state_dir: Path) -> None:
    """Stamps show no logo from the signing service's next reassembly."""
    _logo_path(state_dir).unlink(missing_ok=True)


def load_stamp_logo(path: Path) -> StampLogo | None:
    """The installed logo, or None if there is none; a damaged file stops the box with a message."""
    if not path.exists():
        return None
    try:
        return decode_logo(path.read_bytes())
    except InvalidRequest as exc:
        raise ConfigError(f"{path}: {exc}; install another logo or remove the file") from exc
