"""What the HTML looks like regardless of the brand colour: readable buttons and links (WCAG AA)."""

from __future__ import annotations

import pytest
from hub_email.render import DEFAULT_COLOUR, contrast_ratio, palette

from hub import Branding


@pytest.mark.parametrize(
    "colour", ["#1f5fa8", "#ffcc00", "#ffffff", "#000", "#e30613", "#7fdbff", "#767676", "#808080", "#ff7f00"]
)
def test_button_text_and_links_are_readable_on_any_brand_colour(colour) -> None:
    colours = palette(Branding(colour=colour))
    assert contrast_ratio(colours.brand, colours.on_brand) >= 4.5
    assert contrast_ratio(colours.link, "#ffffff") >= 4.5


def test_light_brand_colour_gets_dark_button_text() -> None:
    assert palette(Branding(colour="#ffcc00")).on_brand == "#000000"
    assert palette(Branding(colour="#1f5fa8")).on_brand == "#ffffff"


def test_light_brand_colour_is_not_used_for_links() -> None:
    assert palette(Branding(colour="#ffcc00")).link == DEFAULT_COLOUR
    assert palette(Branding(colour="#0b6e4f")).link == "#0b6e4f"


@pytest.mark.parametrize("colour", ["red", "rgb(0,0,0)", "#12345", "#1f5fa8;background:url(x)"])
def test_anything_but_a_hex_colour_falls_back_to_the_default(colour) -> None:
    assert palette(Branding(colour=colour)).brand == DEFAULT_COLOUR
