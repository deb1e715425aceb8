"""Reading the light of embedded ICC profiles: the colorants of real profiles, the three
file formats that carry one, and profiles that must be left alone."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from rendermill.cli import synth
from rendermill.common.testing import clip, track
from rendermill.renderer.engine import icc, probe

# The colorants of Apple's "Display P3" profile (macOS, iOS), as its rXYZ, gXYZ and bXYZ
# tags store them.
APPLE_DISPLAY_P3 = np.array(
    [[0.51512, 0.29198, 0.15710], [0.24120, 0.69225, 0.06657], [-0.00105, 0.04189, 0.78407]]
)
# The colorants of the sRGB IEC61966-2.1 profile most software embeds.
SRGB = np.array(
    [[0.43607, 0.38515, 0.14307], [0.22249, 0.71687, 0.06061], [0.01392, 0.09708, 0.71410]]
)


def test_colorants_are_those_real_profiles_carry() -> None:
    assert np.allclose(icc.colorants(icc.PRIMARIES_DISPLAY_P3), APPLE_DISPLAY_P3, atol=2e-4)
    assert np.allclose(icc.colorants(icc.PRIMARIES_BT709), SRGB, atol=2e-4)


def test_light_of_display_p3_and_srgb_profiles() -> None:
    assert icc.light(synth.icc_profile("p3")) == (icc.PRIMARIES_DISPLAY_P3, icc.TRANSFER_SRGB)
    assert icc.light(synth.icc_profile("bt709")) == (icc.PRIMARIES_BT709, icc.TRANSFER_SRGB)


def test_profiles_that_are_not_rgb_matrices_are_left_alone() -> None:
    profile = bytearray(synth.icc_profile("p3"))
    grey = bytes(profile[:16]) + b"GRAY" + bytes(profile[20:])
    assert icc.light(grey) is None
    # Colorants of no known gamut (red moved by 0.01).
    (at,) = struct.unpack_from(">I", profile, bytes(profile).index(b"rXYZ") + 4)
    red_x = struct.unpack_from(">i", profile, at + 8)[0] + 655
    struct.pack_into(">i", profile, at + 8, red_x)
    assert icc.light(bytes(profile)) is None
    assert icc.light(b"") is None
    assert icc.light(bytes(profile[:140])) is None


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_profile_is_read_from_png_and_jpeg(tmp_path: Path, suffix: str) -> None:
    p3 = synth.make_image(tmp_path / f"p3{suffix}", size=(16, 16), display_p3=True)
    assert icc.read_profile(p3) == synth.icc_profile("p3")
    plain = synth.make_image(tmp_path / f"plain{suffix}", size=(16, 16))
    assert icc.read_profile(plain) is None


def test_profile_is_read_from_a_webp_iccp_chunk(tmp_path: Path) -> None:
    profile = synth.icc_profile("p3")
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x20, 0, 0, 0]) + bytes(6)
    iccp = b"ICCP" + struct.pack("<I", len(profile)) + profile + bytes(len(profile) & 1)
    body = b"WEBP" + vp8x + iccp
    path = tmp_path / "p3.webp"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert icc.read_profile(path) == profile


def test_unreadable_files_have_no_profile(tmp_path: Path) -> None:
    assert icc.read_profile(tmp_path / "missing.png") is None
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 5) + b"iCCPnoNUL")
    assert icc.read_profile(broken) is None


def test_a_png_profile_is_inflated_to_a_bounded_size(tmp_path: Path) -> None:
    # 64 MB of zeros compress to about 64 KB: a chunk made to exhaust memory.
    bomb = zlib.compress(bytes(64 << 20), 9)
    body = b"bomb\0\0" + bomb
    chunk = struct.pack(">I", len(body)) + b"iCCP" + body + struct.pack(">I", zlib.crc32(body))
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    profile = icc.read_profile(path)
    assert profile is not None and len(profile) == 1 << 20
    assert icc.light(profile) is None


def test_light_names_for_spans() -> None:
    assert icc.light_name(icc.TRANSFER_HLG, icc.PRIMARIES_BT2020) == "hlg"
    assert icc.light_name(icc.TRANSFER_PQ, icc.PRIMARIES_UNSPECIFIED) == "pq"
    assert icc.light_name(icc.TRANSFER_BT2020_10, icc.PRIMARIES_BT2020) == "bt2020"
    assert icc.light_name(icc.TRANSFER_SRGB, icc.PRIMARIES_DISPLAY_P3) == "p3"
    assert icc.light_name(icc.TRANSFER_BT709, icc.PRIMARIES_BT709) == "sdr"


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_display_p3_image_is_probed_in_its_primaries(tmp_path: Path, suffix: str) -> None:
    path = synth.make_image(tmp_path / f"p3{suffix}", size=(16, 16), display_p3=True)
    source = probe.Source(track=track("p3", clip(0.0, 1.0)), path=path)
    media = probe.probe(source, picture=True, sound=False)
    assert media.still is not None and media.video is not None
    assert media.video.light == "p3"
    # The picture a track decodes when it shows it is tagged the same way.
    assert media.still.picture().color_primaries == icc.PRIMARIES_DISPLAY_P3
