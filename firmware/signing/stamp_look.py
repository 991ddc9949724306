"""What the box's visible signature looks like: an opaque panel with a border, the organisation's
logo on the left and the text beside it.

The panel is opaque on purpose: a stamp placed over table rows or a footer must stay readable,
so nothing of the page shows through it. Colours and logo come from box.toml's [signing]
section (stamp_background, stamp_border, stamp_logo_file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyhanko import stamp
from pyhanko.pdf_utils import generic, layout
from pyhanko.pdf_utils.content import PdfContent, ResourceType
from pyhanko.pdf_utils.generic import pdf_name

from ..config import BoxConfig, ConfigError, SigningSettings
from .stamp_logo import StampLogo, load_stamp_logo

__all__ = ["StampLook", "parse_colour", "stamp_style"]

_COLOUR = re.compile(r"#([0-9a-fA-F]{6})")
_MARGIN = 4.0  # points between the border, the logo and the text
_MAX_LOGO_SHARE = 0.35  # of the stamp's width: the text keeps the rest


def parse_colour(value: str) -> tuple[float, float, float]:
    """``#rrggbb`` as PDF's 0-1 RGB components; ValueError for anything else."""
    match = _COLOUR.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a colour; write it as #rrggbb")
    digits = match.group(1)
    red, green, blue = (int(digits[i:i + 2], 16) / 255 for i in (0, 2, 4))
    return red, green, blue


@dataclass(frozen=True)
class StampLook:
    text: str  # shown above signer and time when a request gives no stamp_text
    background: tuple[float, float, float]
    border: tuple[float, float, float]
    logo: StampLogo | None = None

    @classmethod
    def default(cls) -> StampLook:
        """box.toml's defaults: for signers with no box.toml, such as the local agent."""
        return cls("", parse_colour(SigningSettings.stamp_background), parse_colour(SigningSettings.stamp_border))

    @classmethod
    def from_config(cls, config: BoxConfig) -> StampLook:
        """The look box.toml's [signing] section asks for; ConfigError names a bad setting."""
        colours = {}
        for name in ("stamp_background", "stamp_border"):
            try:
                colours[name] = parse_colour(getattr(config, name))
            except ValueError as exc:
                raise ConfigError(f"[signing] {name}: {exc}") from None
        return cls(config.stamp_text, colours["stamp_background"], colours["stamp_border"],
                   load_stamp_logo(config.stamp_logo_file))


def _number(value: int) -> generic.NumberObject:
    return generic.NumberObject(value)  # type: ignore[no-untyped-call]  # pyHanko leaves __new__ unannotated


class _Panel(PdfContent):
    """The stamp's background: an opaque rectangle of the whole stamp, and the logo on it."""

    def __init__(self, look: StampLook, width: float, height: float, logo_box: tuple[float, float, float, float]):
        super().__init__(box=layout.BoxConstraints(width, height))
        self._look = look
        self._logo_box = logo_box  # x, y, width, height

    def _logo_image(self, logo: StampLogo) -> generic.IndirectObject:
        writer = self._ensure_writer

        def image(data: bytes, colour_space: str) -> generic.StreamObject:
            return generic.StreamObject(
                {
                    pdf_name("/Type"): pdf_name("/XObject"),
                    pdf_name("/Subtype"): pdf_name("/Image"),
                    pdf_name("/Width"): _number(logo.width),
                    pdf_name("/Height"): _number(logo.height),
                    pdf_name("/ColorSpace"): pdf_name(colour_space),
                    pdf_name("/BitsPerComponent"): _number(8),
                    pdf_name("/Filter"): pdf_name("/FlateDecode"),
                },
                encoded_data=data,
            )

        rgb = image(logo.rgb, "/DeviceRGB")
        if logo.alpha is not None:
            rgb[pdf_name("/SMask")] = writer.add_object(image(logo.alpha, "/DeviceGray"))
        return writer.add_object(rgb)

    def render(self) -> bytes:
        width, height = self.box.width, self.box.height
        commands = [b"q %g %g %g rg 0 0 %g %g re f Q" % (*self._look.background, width, height)]
        if self._look.logo is not None:
            self.set_resource(ResourceType.XOBJECT, pdf_name("/Logo"), self._logo_image(self._look.logo))
            x, y, logo_width, logo_height = self._logo_box
            commands.append(b"q %g 0 0 %g %g %g cm /Logo Do Q" % (logo_width, logo_height, x, y))
        return b" ".join(commands)


def _logo_box(logo: StampLogo | None, width: float, height: float) -> tuple[float, float, float, float]:
    """Where the logo goes (x, y, width, height): full height less margins, left-aligned."""
    if logo is None:
        return 0.0, 0.0, 0.0, 0.0
    logo_height = max(height - 2 * _MARGIN, 1.0)
    logo_width = logo_height * logo.width / logo.height
    if logo_width > _MAX_LOGO_SHARE * width:
        logo_width = _MAX_LOGO_SHARE * width
        logo_height = logo_width * logo.height / logo.width
    return _MARGIN, (height - logo_height) / 2, logo_width, logo_height


def stamp_style(look: StampLook, text: str | None, width: float, height: float) -> stamp.TextStampStyle:
    """The pyHanko style that draws ``look`` in a stamp of ``width`` x ``height`` points.

    ``text`` (or the look's default) is taken literally; pyHanko adds signer and time.
    """
    text = text or look.text
    prefix = text.replace("%", "%%") + "\n" if text else ""
    logo_box = _logo_box(look.logo, width, height)
    text_left = _MARGIN + (logo_box[2] + _MARGIN if look.logo is not None else 0.0)
    return stamp.TextStampStyle(
        stamp_text=prefix + "Signed by %(signer)s\n%(ts)s",
        border_width=1,
        border_color=look.border,
        background=_Panel(look, width, height, logo_box),
        background_opacity=1.0,
        background_layout=layout.SimpleBoxLayoutRule(
            x_align=layout.AxisAlignment.ALIGN_MIN, y_align=layout.AxisAlignment.ALIGN_MIN
        ),
        inner_content_layout=layout.SimpleBoxLayoutRule(
            x_align=layout.AxisAlignment.ALIGN_MIN,
            y_align=layout.AxisAlignment.ALIGN_MID,
            # pyHanko annotates margins as int; its layout arithmetic takes the reals PDF uses
            margins=layout.Margins(
                left=text_left, right=_MARGIN, top=_MARGIN, bottom=_MARGIN  # type: ignore[arg-type]
            ),
        ),
    )
