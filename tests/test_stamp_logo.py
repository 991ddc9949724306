"""The stamp logo as the console and provisioning install it: validated, then written crash-safely."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from firmware.config import BoxConfig, ConfigError
from firmware.errors import InvalidRequest
from firmware.signing.stamp_logo import MAX_LOGO_BYTES, install_stamp_logo, load_stamp_logo, remove_stamp_logo

BOX_TOML = '[token]\nmodule = "none.so"\nlabel = "t"\n[signing]\n'


def png(width: int, height: int, mode: str = "RGBA", colour=(200, 0, 0, 255), fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), colour if mode == "RGBA" else colour[:3]).save(out, fmt)
    return out.getvalue()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    (tmp_path / "box.toml").write_text(BOX_TOML)
    return tmp_path


def test_a_png_is_installed_where_box_toml_says_and_decoded_once(state_dir):
    path = install_stamp_logo(state_dir, png(64, 32))
    assert path == state_dir / "stamp-logo.png" == BoxConfig.load(state_dir).stamp_logo_file
    assert path.read_bytes() == png(64, 32)
    assert not list(state_dir.glob(".stamp-logo.png.tmp-*"))  # the temporary file was renamed
    logo = load_stamp_logo(path)
    assert (logo.width, logo.height) == (64, 32) and logo.alpha is None  # fully opaque: no soft mask

    translucent = install_stamp_logo(state_dir, png(10, 10, colour=(0, 0, 0, 0)))
    assert load_stamp_logo(translucent).alpha is not None
    remove_stamp_logo(state_dir)
    assert load_stamp_logo(path) is None


@pytest.mark.parametrize("body, complaint", [
    (png(10, 10, mode="RGB", fmt="JPEG"), "must be a PNG"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "not a readable PNG"),
    (png(2000, 10), "at most 1024"),
    (b"\x89PNG\r\n\x1a\n" + bytes(MAX_LOGO_BYTES), "over 512 KiB"),
])
def test_anything_else_is_refused_and_nothing_written(state_dir, body, complaint):
    with pytest.raises(InvalidRequest, match=complaint):
        install_stamp_logo(state_dir, body)
    assert not (state_dir / "stamp-logo.png").exists()


def test_logo_file_outside_the_state_dir_is_a_config_error(state_dir):
    (state_dir / "box.toml").write_text(BOX_TOML + 'stamp_logo_file = "../elsewhere.png"\n')
    with pytest.raises(ConfigError, match="outside the state directory"):
        BoxConfig.load(state_dir)
