"""CSS colour strings to RGBA, for ``backgroundColor``.

Accepts what a browser would for a background colour, minus the forms that need context
(``currentcolor``, ``inherit``) or a colour-management pipeline (``lab()``, ``color()``):
``transparent``, the CSS named colours, ``#rgb``, ``#rgba``, ``#rrggbb``, ``#rrggbbaa``,
``rgb()``/``rgba()`` and ``hsl()``/``hsla()`` in both the comma and the space syntax.
Out-of-range channels clamp, as in CSS.
"""

from __future__ import annotations

import math
import re

RGBA = tuple[int, int, int, int]

# CSS Color Module Level 4, named colours (all 148, lower case).
NAMED: dict[str, tuple[int, int, int]] = {
    "aliceblue": (240, 248, 255),
    "antiquewhite": (250, 235, 215),
    "aqua": (0, 255, 255),
    "aquamarine": (127, 255, 212),
    "azure": (240, 255, 255),
    "beige": (245, 245, 220),
    "bisque": (255, 228, 196),
    "black": (0, 0, 0),
    "blanchedalmond": (255, 235, 205),
    "blue": (0, 0, 255),
    "blueviolet": (138, 43, 226),
    "brown": (165, 42, 42),
    "burlywood": (222, 184, 135),
    "cadetblue": (95, 158, 160),
    "chartreuse": (127, 255, 0),
    "chocolate": (210, 105, 30),
    "coral": (255, 127, 80),
    "cornflowerblue": (100, 149, 237),
    "cornsilk": (255, 248, 220),
    "crimson": (220, 20, 60),
    "cyan": (0, 255, 255),
    "darkblue": (0, 0, 139),
    "darkcyan": (0, 139, 139),
    "darkgoldenrod": (184, 134, 11),
    "darkgray": (169, 169, 169),
    "darkgreen": (0, 100, 0),
    "darkgrey": (169, 169, 169),
    "darkkhaki": (189, 183, 107),
    "darkmagenta": (139, 0, 139),
    "darkolivegreen": (85, 107, 47),
    "darkorange": (255, 140, 0),
    "darkorchid": (153, 50, 204),
    "darkred": (139, 0, 0),
    "darksalmon": (233, 150, 122),
    "darkseagreen": (143, 188, 143),
    "darkslateblue": (72, 61, 139),
    "darkslategray": (47, 79, 79),
    "darkslategrey": (47, 79, 79),
    "darkturquoise": (0, 206, 209),
    "darkviolet": (148, 0, 211),
    "deeppink": (255, 20, 147),
    "deepskyblue": (0, 191, 255),
    "dimgray": (105, 105, 105),
    "dimgrey": (105, 105, 105),
    "dodgerblue": (30, 144, 255),
    "firebrick": (178, 34, 34),
    "floralwhite": (255, 250, 240),
    "forestgreen": (34, 139, 34),
    "fuchsia": (255, 0, 255),
    "gainsboro": (220, 220, 220),
    "ghostwhite": (248, 248, 255),
    "gold": (255, 215, 0),
    "goldenrod": (218, 165, 32),
    "gray": (128, 128, 128),
    "green": (0, 128, 0),
    "greenyellow": (173, 255, 47),
    "grey": (128, 128, 128),
    "honeydew": (240, 255, 240),
    "hotpink": (255, 105, 180),
    "indianred": (205, 92, 92),
    "indigo": (75, 0, 130),
    "ivory": (255, 255, 240),
    "khaki": (240, 230, 140),
    "lavender": (230, 230, 250),
    "lavenderblush": (255, 240, 245),
    "lawngreen": (124, 252, 0),
    "lemonchiffon": (255, 250, 205),
    "lightblue": (173, 216, 230),
    "lightcoral": (240, 128, 128),
    "lightcyan": (224, 255, 255),
    "lightgoldenrodyellow": (250, 250, 210),
    "lightgray": (211, 211, 211),
    "lightgreen": (144, 238, 144),
    "lightgrey": (211, 211, 211),
    "lightpink": (255, 182, 193),
    "lightsalmon": (255, 160, 122),
    "lightseagreen": (32, 178, 170),
    "lightskyblue": (135, 206, 250),
    "lightslategray": (119, 136, 153),
    "lightslategrey": (119, 136, 153),
    "lightsteelblue": (176, 196, 222),
    "lightyellow": (255, 255, 224),
    "lime": (0, 255, 0),
    "limegreen": (50, 205, 50),
    "linen": (250, 240, 230),
    "magenta": (255, 0, 255),
    "maroon": (128, 0, 0),
    "mediumaquamarine": (102, 205, 170),
    "mediumblue": (0, 0, 205),
    "mediumorchid": (186, 85, 211),
    "mediumpurple": (147, 112, 219),
    "mediumseagreen": (60, 179, 113),
    "mediumslateblue": (123, 104, 238),
    "mediumspringgreen": (0, 250, 154),
    "mediumturquoise": (72, 209, 204),
    "mediumvioletred": (199, 21, 133),
    "midnightblue": (25, 25, 112),
    "mintcream": (245, 255, 250),
    "mistyrose": (255, 228, 225),
    "moccasin": (255, 228, 181),
    "navajowhite": (255, 222, 173),
    "navy": (0, 0, 128),
    "oldlace": (253, 245, 230),
    "olive": (128, 128, 0),
    "olivedrab": (107, 142, 35),
    "orange": (255, 165, 0),
    "orangered": (255, 69, 0),
    "orchid": (218, 112, 214),
    "palegoldenrod": (238, 232, 170),
    "palegreen": (152, 251, 152),
    "paleturquoise": (175, 238, 238),
    "palevioletred": (219, 112, 147),
    "papayawhip": (255, 239, 213),
    "peachpuff": (255, 218, 185),
    "peru": (205, 133, 63),
    "pink": (255, 192, 203),
    "plum": (221, 160, 221),
    "powderblue": (176, 224, 230),
    "purple": (128, 0, 128),
    "rebeccapurple": (102, 51, 153),
    "red": (255, 0, 0),
    "rosybrown": (188, 143, 143),
    "royalblue": (65, 105, 225),
    "saddlebrown": (139, 69, 19),
    "salmon": (250, 128, 114),
    "sandybrown": (244, 164, 96),
    "seagreen": (46, 139, 87),
    "seashell": (255, 245, 238),
    "sienna": (160, 82, 45),
    "silver": (192, 192, 192),
    "skyblue": (135, 206, 235),
    "slateblue": (106, 90, 205),
    "slategray": (112, 128, 144),
    "slategrey": (112, 128, 144),
    "snow": (255, 250, 250),
    "springgreen": (0, 255, 127),
    "steelblue": (70, 130, 180),
    "tan": (210, 180, 140),
    "teal": (0, 128, 128),
    "thistle": (216, 191, 216),
    "tomato": (255, 99, 71),
    "turquoise": (64, 224, 208),
    "violet": (238, 130, 238),
    "wheat": (245, 222, 179),
    "white": (255, 255, 255),
    "whitesmoke": (245, 245, 245),
    "yellow": (255, 255, 0),
    "yellowgreen": (154, 205, 50),
}

_HEX = re.compile(r"#([0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})")
_FUNC = re.compile(r"(rgba?|hsla?)\((.*)\)", re.DOTALL)
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?"
_COMPONENT = re.compile(rf"({_NUMBER})(%|deg)?")

_EXPECTED = (
    "use a CSS colour: a name such as 'black', 'transparent', '#rrggbb', '#rgb', "
    "'#rrggbbaa', 'rgb(r, g, b)', 'rgba(r, g, b, a)' or 'hsl(h, s%, l%)'"
)


def parse_color(s: str) -> RGBA:
    """Return ``s`` as ``(r, g, b, a)``, each 0..255.

    Case and surrounding whitespace do not matter. Raises ``ValueError`` naming the
    accepted forms when ``s`` is not a colour this parser understands.
    """
    text = s.strip().lower()
    if text == "transparent":
        return (0, 0, 0, 0)
    if (rgb := NAMED.get(text)) is not None:
        return (*rgb, 255)
    if (m := _HEX.fullmatch(text)) is not None:
        return _hex(m.group(1))
    if (m := _FUNC.fullmatch(text)) is not None:
        return _function(s, m.group(1), m.group(2))
    raise ValueError(f"{_shorten(s)} is not a colour: {_EXPECTED}")


def _hex(digits: str) -> RGBA:
    if len(digits) <= 4:
        digits = "".join(c * 2 for c in digits)
    if len(digits) == 6:
        digits += "ff"
    r, g, b, a = (int(digits[i : i + 2], 16) for i in range(0, 8, 2))
    return (r, g, b, a)


def _function(original: str, name: str, body: str) -> RGBA:
    parts = _split_arguments(body)
    if parts is None or len(parts) not in (3, 4):
        raise ValueError(
            f"{_shorten(original)} is not a colour: {name}() takes three values and an "
            f"optional alpha, as in '{name}(255, 128, 0)' or '{name}(255 128 0 / 50%)'"
        )
    values: list[tuple[float, str]] = []
    for part in parts:
        m = _COMPONENT.fullmatch(part)
        if m is None:
            raise ValueError(
                f"{_shorten(original)} is not a colour: {_shorten(part)} is not a number "
                "or a percentage"
            )
        values.append((float(m.group(1)), m.group(2) or ""))
    alpha = 255
    if len(values) == 4:
        value, unit = values[3]
        if unit == "deg":
            raise ValueError(f"{_shorten(original)} is not a colour: alpha cannot be an angle")
        fraction = value / 100.0 if unit == "%" else value
        alpha = _clamp_byte(fraction * 255.0)
    if name.startswith("rgb"):
        channels = []
        for value, unit in values[:3]:
            if unit == "deg":
                raise ValueError(
                    f"{_shorten(original)} is not a colour: rgb() channels are 0..255 or "
                    "percentages, not angles"
                )
            channels.append(_clamp_byte(value * 255.0 / 100.0 if unit == "%" else value))
        return (channels[0], channels[1], channels[2], alpha)
    (hue, hue_unit), (sat, sat_unit), (light, light_unit) = values[:3]
    if hue_unit == "%" or sat_unit != "%" or light_unit != "%":
        raise ValueError(
            f"{_shorten(original)} is not a colour: hsl() takes a hue in degrees and "
            "saturation and lightness as percentages, as in 'hsl(120, 50%, 25%)'"
        )
    r, g, b = _hsl_to_rgb(hue, sat / 100.0, light / 100.0)
    return (r, g, b, alpha)


def _split_arguments(body: str) -> list[str] | None:
    """Split either ``a, b, c[, d]`` or ``a b c[ / d]`` into components."""
    body = body.strip()
    if "," in body:
        if "/" in body:
            return None
        return [p.strip() for p in body.split(",")]
    head, slash, alpha = body.partition("/")
    parts = head.split()
    if slash:
        if len(alpha.split()) != 1:
            return None
        parts.append(alpha.strip())
    return parts


def _hsl_to_rgb(hue: float, sat: float, light: float) -> tuple[int, int, int]:
    # The CSS Color 4 reference algorithm.
    hue %= 360.0
    sat = min(1.0, max(0.0, sat))
    light = min(1.0, max(0.0, light))

    def channel(n: float) -> int:
        k = (n + hue / 30.0) % 12.0
        amount = sat * min(light, 1.0 - light)
        return _clamp_byte(255.0 * (light - amount * max(-1.0, min(k - 3.0, 9.0 - k, 1.0))))

    return (channel(0), channel(8), channel(4))


def _clamp_byte(value: float) -> int:
    # Clamp before rounding ("1e999" parses to inf); round half up, as browsers do.
    return math.floor(min(255.0, max(0.0, value)) + 0.5)


def _shorten(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")
