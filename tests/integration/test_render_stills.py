"""Still pictures: sizes read off headers, photos decoded at the scale they are drawn,
pictures too large to draw refused before decoding, and a slideshow's photos decoded
only while they show."""

from __future__ import annotations

import gc
import struct
import time
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.frame import VideoFrame

from rendermill.cli import synth
from rendermill.common import errors, schemas
from rendermill.common.project import model
from rendermill.common.testing import clip, project, track
from rendermill.renderer import engine
from rendermill.renderer.engine import probe, still

SMALL = schemas.OutputSpec(resolution="320x180", fps=30)
GREEN = (0, 255, 0)
RED = (255, 0, 0)
IMAGE = model.Controller.IMAGE


def _decoded_size(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.width, frame.height


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("rgb.png", {}),
        ("rgba.png", {"alpha": 128}),
        ("lossless.webp", {}),
        ("lossy.webp", {"lossless": False}),
        ("alpha.webp", {"alpha": 128}),
    ],
)
def test_stored_size_is_read_off_the_header(
    tmp_path: Path, name: str, options: dict[str, object]
) -> None:
    path = synth.make_image(tmp_path / name, size=(321, 181), **options)  # type: ignore[arg-type]
    assert still.stored_size(path) == (321, 181) == _decoded_size(path)


def test_stored_size_of_other_files_is_unknown(tmp_path: Path) -> None:
    jpeg = synth.make_image(tmp_path / "photo.jpg", size=(64, 48))
    cut = tmp_path / "cut.png"
    cut.write_bytes(synth.make_image(tmp_path / "whole.png").read_bytes()[:20])
    assert still.stored_size(jpeg) is None
    assert still.stored_size(cut) is None
    assert still.stored_size(tmp_path / "missing.png") is None


def test_jpeg_scale_is_the_smallest_still_as_large_as_drawn() -> None:
    assert still.lowres((8064, 6048), (1440, 1080)) == 2
    assert still.scaled((8064, 6048), 2) == (2016, 1512)
    # Rounded up, as the decoder rounds: 750 / 4 is 187.5, decoded as 188 rows.
    assert still.scaled((1000, 750), 2) == (250, 188)
    assert still.lowres((1000, 750), (250, 188)) == 2
    assert still.lowres((1000, 750), (250, 189)) == 1
    # Never below 1/8, never above 1/1.
    assert still.lowres((8000, 8000), (10, 10)) == 3
    assert still.lowres((100, 100), (400, 400)) == 0


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR for ``width`` x ``height`` RGBA, then data that does
    not decode: only a reader of the header alone gets past it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    crc = struct.pack(">I", zlib.crc32(chunk))
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + crc + b"\0" * 64


def _webp_header(width: int, height: int) -> bytes:
    """A WebP VP8X header for a ``width`` x ``height`` canvas, then nothing decodable."""
    body = b"VP8X" + struct.pack("<I", 10) + b"\x10\0\0\0"
    body += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body += b"\0" * 64
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


@pytest.mark.parametrize(
    ("name", "data", "size"),
    [
        ("huge.png", _png_header(12000, 12000), "12000x12000"),
        ("huge.webp", _webp_header(16000, 9000), "16000x9000"),
    ],
)
def test_a_picture_too_large_to_draw_is_refused_before_it_is_decoded(
    tmp_path: Path, name: str, data: bytes, size: str
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    proj = project(track("huge", clip(0.0, 1.0), controller=IMAGE))
    started = time.perf_counter()
    with pytest.raises(errors.MediaError) as caught:
        engine.render(proj, {"huge": path}, SMALL, tmp_path / "out.mp4")
    assert time.perf_counter() - started < 5
    message = caught.value.message
    assert "track 'track huge'" in message and "'huge'" in message
    assert f"{size} pixels" in message and "scale it down" in message
    assert not (tmp_path / "out.mp4").exists()


def test_a_jpeg_is_bounded_by_its_stored_size_whatever_its_scale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Drawn at 320x180, this 1280x720 photo would decode at 1/4; the bound (lowered
    # here below its stored size, as a 12-megapixel test picture would be slow to make)
    # still refuses it, before decoding.
    photo = synth.make_image(tmp_path / "photo.jpg", size=(1280, 720))
    proj = project(track("photo", clip(0.0, 0.2, fit=model.Fit.FILL), controller=IMAGE))
    monkeypatch.setattr(probe, "MAX_PIXELS", 1280 * 720 - 1)
    with pytest.raises(errors.MediaError, match="is a picture of 1280x720 pixels"):
        engine.render(proj, {"photo": photo}, SMALL, tmp_path / "out.mp4")
    monkeypatch.setattr(probe, "MAX_PIXELS", 1280 * 720)
    engine.render(proj, {"photo": photo}, SMALL, tmp_path / "out.mp4")


def test_a_large_photo_is_decoded_at_the_scale_it_is_drawn(tmp_path: Path) -> None:
    # 2560x1280 stored, turned a quarter by EXIF (6): shown 1280x2560, drawn filling the
    # 320x180 canvas, which 1/4 of its size (640x320 stored, 320x640 shown) still covers.
    photo = synth.make_image(
        tmp_path / "photo.jpg", color=GREEN, corner=RED, size=(2560, 1280), exif_orientation=6
    )
    proj = project(track("photo", clip(0.0, 0.2, fit=model.Fit.FILL), controller=IMAGE))
    source = probe.Source(track=proj.tracks[0], path=photo)

    def drawn(shown: tuple[int, int]) -> tuple[int, int]:
        assert shown == (1280, 2560)
        return 320, 180

    media = probe.probe(source, picture=True, sound=False, drawn=drawn)
    assert media.still is not None and media.video is not None
    # Placed by its stored size, decoded at a quarter of it.
    assert (media.still.width, media.still.height) == (2560, 1280)
    assert (media.video.width, media.video.height) == (2560, 1280)
    assert media.still.options["lowres"] == "2"
    assert _size(media.still.picture()) == (640, 320)
    # Without knowing how it is drawn, it is decoded whole.
    whole = probe.probe(source, picture=True, sound=False)
    assert whole.still is not None and "lowres" not in whole.still.options

    engine.render(proj, {"photo": photo}, SMALL, tmp_path / "out.mp4")
    picture = synth.Decoded(tmp_path / "out.mp4", 30).at(0.0).astype(np.float64)
    # EXIF 6 turns the stored top-left quarter into the top-right one.
    assert np.abs(picture[4:86, 164:316].mean(axis=(0, 1)) - RED).max() < 24
    assert np.abs(picture[4:86, 4:156].mean(axis=(0, 1)) - GREEN).max() < 24
    assert np.abs(picture[94:176, 4:316].mean(axis=(0, 1)) - GREEN).max() < 24


def _size(frame: VideoFrame) -> tuple[int, int]:
    return frame.width, frame.height


def test_a_slideshow_holds_one_decoded_photo_at_a_time(tmp_path: Path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    sizes = [(640 + 16 * k, 400) for k in range(len(colours))]
    tracks, sources = [], {}
    for k, (rgb, size) in enumerate(zip(colours, sizes, strict=True)):
        name = f"photo{k}"
        sources[name] = synth.make_image(tmp_path / f"{name}.jpg", color=rgb, size=size)
        action = clip(0.2 * k, 0.2 * (k + 1), fit=model.Fit.FILL)
        tracks.append(track(name, action, controller=IMAGE))
    proj = project(*tracks)
    # Drawn at 320x180, each is decoded at half its size.
    decoded = {(w // 2, h // 2) for w, h in sizes}
    alive: list[int] = []

    def progress(done: int, total: int) -> None:
        frames = [o for o in gc.get_objects() if isinstance(o, VideoFrame)]
        alive.append(sum(_size(f) in decoded for f in frames))

    dest = tmp_path / "slides.mp4"
    engine.render(proj, sources, SMALL, dest, on_progress=progress)
    # Each photo is decoded when it starts showing and let go when it ends.
    assert max(alive) == 1, alive
    out = synth.Decoded(dest, 30)
    for k, rgb in enumerate(colours):
        shown = out.at(0.2 * k + 0.1).reshape(-1, 3).mean(axis=0)
        assert np.abs(shown - rgb).max() < 16, (k, shown)
