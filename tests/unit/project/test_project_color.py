from __future__ import annotations

import pytest

from rendermill.common.project import color


@pytest.mark.parametrize(
    ("text", "rgba"),
    [
        ("transparent", (0, 0, 0, 0)),
        ("  Transparent ", (0, 0, 0, 0)),
        ("black", (0, 0, 0, 255)),
        ("White", (255, 255, 255, 255)),
        ("rebeccapurple", (102, 51, 153, 255)),
        ("grey", (128, 128, 128, 255)),
        ("#000", (0, 0, 0, 255)),
        ("#f80", (255, 136, 0, 255)),
        ("#f808", (255, 136, 0, 136)),
        ("#1a1a2e", (26, 26, 46, 255)),
        ("#1A1A2E80", (26, 26, 46, 128)),
        ("rgb(255, 0, 128)", (255, 0, 128, 255)),
        ("rgba(255,0,128,0.5)", (255, 0, 128, 128)),
        ("rgba(255, 0, 128, 0)", (255, 0, 128, 0)),
        ("rgb(100%, 0%, 50%)", (255, 0, 128, 255)),
        ("rgba(0, 0, 0, 25%)", (0, 0, 0, 64)),
        ("rgb(255 0 128 / 50%)", (255, 0, 128, 128)),
        ("rgb(300, -5, 127.6)", (255, 0, 128, 255)),
        ("hsl(0, 100%, 50%)", (255, 0, 0, 255)),
        ("hsl(120deg 100% 25%)", (0, 128, 0, 255)),
        ("hsla(240, 100%, 50%, 0.5)", (0, 0, 255, 128)),
    ],
)
def test_parses_css_colours(text: str, rgba: tuple[int, int, int, int]) -> None:
    assert color.parse_color(text) == rgba


@pytest.mark.parametrize(
    "text",
    [
        "",
        "notacolour",
        "#12",
        "#12345",
        "#gggggg",
        "rgb(1, 2)",
        "rgb(1, 2, 3, 4, 5)",
        "rgb(a, b, c)",
        "rgb(1, 2, 3 / 0.5)",
        "rgb(1deg, 2, 3)",
        "hsl(10, 20, 30)",
        "currentcolor",
        "url(x.png)",
    ],
)
def test_rejects_non_colours_with_a_helpful_message(text: str) -> None:
    with pytest.raises(ValueError, match="is not a colour"):
        color.parse_color(text)


def test_message_names_the_accepted_forms() -> None:
    with pytest.raises(ValueError) as info:
        color.parse_color("blurple")
    assert "'blurple'" in str(info.value)
    assert "#rrggbb" in str(info.value)


def test_huge_exponent_clamps_instead_of_overflowing() -> None:
    assert color.parse_color("rgb(1e999, 0, 0)") == (255, 0, 0, 255)


def test_named_colours_cover_the_basic_sixteen() -> None:
    basic = [
        "black",
        "silver",
        "gray",
        "white",
        "maroon",
        "red",
        "purple",
        "fuchsia",
        "green",
        "lime",
        "olive",
        "yellow",
        "navy",
        "blue",
        "teal",
        "aqua",
    ]
    for name in basic:
        assert color.parse_color(name)[3] == 255
    assert len(color.NAMED) == 148
