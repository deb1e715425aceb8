"""HDR and wide-gamut video mapped through a 3D LUT sampled from swscale's own mapping:
the same colours as swscale's per-pixel mapping, within interpolation's error."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
import structlog.testing
from av.video.frame import VideoFrame
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter

from rendermill.cli import synth
from rendermill.common.testing import clip, track
from rendermill.renderer import tables
from rendermill.renderer.engine import compose, lut, probe

# Colours from dark to bright and saturated, as BT.709 values: each light carries them.
COLOURS = [(16, 16, 16), (128, 128, 128), (255, 255, 255), (220, 40, 90), (40, 200, 70)]


def _first_frame(path: Path) -> VideoFrame:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    assert isinstance(frame, VideoFrame)
    return frame


def _planes(frame: VideoFrame) -> list[npt.NDArray[np.uint8]]:
    out = []
    for plane in frame.planes:
        rows = np.frombuffer(memoryview(plane), np.uint8, count=plane.line_size * plane.height)
        out.append(rows.reshape(plane.height, plane.line_size)[:, : plane.width].copy())
    return out


def _swscale(frame: VideoFrame) -> VideoFrame:
    """swscale's own per-pixel mapping, as compose asked for it before."""
    mapping = compose.colour_mapping(frame)
    assert mapping is not None
    return VideoReformatter().reformat(
        frame,
        frame.width,
        frame.height,
        "yuv420p",
        dst_colorspace=Colorspace.ITU709,
        interpolation=Interpolation.BILINEAR | Interpolation.ACCURATE_RND,
        **mapping,
    )


@pytest.mark.parametrize("light", ["hlg", "pq", "bt2020", "p3"])
def test_the_lut_maps_as_swscale_does(tmp_path: Path, light: synth.Light) -> None:
    path = synth.make_wide_video(tmp_path / f"{light}.mp4", COLOURS, light, size=(320, 180))
    frame = _first_frame(path)
    expected = _planes(_swscale(frame))
    scaler = compose.Scaler(2)
    matrix = lut.matrix_name(frame.colorspace)
    assert matrix is not None
    mapper = scaler.mapper(frame, matrix, full_range=False, alpha=False)
    assert mapper is not None
    mapped = mapper.map(frame)
    assert (mapped.format.name, mapped.width, mapped.height) == ("yuv420p", 320, 180)
    assert (mapped.colorspace, mapped.color_range, mapped.color_trc) == (1, 1, 1)
    assert mapped.color_primaries == 1
    for index, (got, want) in enumerate(zip(_planes(mapped), expected, strict=True)):
        diff = np.abs(got.astype(np.int16) - want)
        # Inside each stripe the two mappings agree within the table's interpolation.
        width = got.shape[1]
        for k in range(len(COLOURS)):
            inside = diff[:, k * width // len(COLOURS) + 4 : (k + 1) * width // len(COLOURS) - 4]
            assert int(inside.max()) <= 2, (light, index, COLOURS[k])
        # At the stripes' hard edges a pixel's colour mixes two through its chroma, and
        # the two reconstruct that chroma differently (swscale keeps luma closer there,
        # up to 30 levels on a white-to-rose edge); on the whole they stay close.
        mse = float(np.mean(diff.astype(np.float64) ** 2))
        assert 10 * np.log10(255**2 / mse) > 36, (light, index)


def test_video_is_shrunk_then_mapped_at_the_size_drawn(tmp_path: Path) -> None:
    path = synth.make_wide_video(tmp_path / "hlg.mp4", COLOURS, "hlg", size=(320, 180))
    scaler = compose.Scaler(2)
    compose.convert(_first_frame(path), 160, 90, alpha=False, scaler=scaler)
    # Shrunk in its own format, mapped at the size drawn, no conversion after.
    assert scaler.kinds() == ["sws", "lut", "sws"]


def _decoded_still(path: Path) -> VideoFrame:
    """A still as the renderer decodes it, its ICC profile's primaries in its tags."""
    media = probe.probe(
        probe.Source(track=track("s", clip(0.0, 0.1)), path=path), picture=True, sound=False
    )
    assert media.still is not None
    return media.still.picture()


@pytest.mark.parametrize(("suffix", "alpha"), [(".png", None), (".png", 128), (".jpg", None)])
def test_display_p3_stills_map_as_swscale_does(
    tmp_path: Path, suffix: str, alpha: int | None
) -> None:
    # macOS screenshots (PNG) and iPhone photos (JPEG) are Display P3: RGB pictures, or
    # full-range YUV ones, some with alpha.
    path = synth.make_image(
        tmp_path / f"p3{suffix}", color=(220, 40, 90), size=(64, 36), alpha=alpha, display_p3=True
    )
    scaler = compose.Scaler(2)
    with_alpha = alpha is not None
    layer = compose.convert(
        _decoded_still(path), 64, 36, alpha=with_alpha, still=True, scaler=scaler
    )
    assert "lut" in scaler.kinds()
    frame = _decoded_still(path)
    mapping = compose.colour_mapping(frame)
    assert mapping is not None
    reference = VideoReformatter().reformat(
        frame,
        64,
        36,
        "yuva420p" if with_alpha else "yuv420p",
        src_colorspace=compose.source_colorspace(frame, still=True),
        dst_colorspace=Colorspace.ITU709,
        dst_color_range=ColorRange.MPEG,
        interpolation=Interpolation.BILINEAR | Interpolation.ACCURATE_RND,
        **mapping,
    )
    for got, want in zip([layer.y, layer.u, layer.v], _planes(reference)[:3], strict=True):
        assert int(np.abs(got.astype(np.int16) - want).max()) <= 2
    if with_alpha:
        # Back from 16 bits the alpha is dithered (128 or 129), as through swscale's.
        assert layer.alpha is not None
        assert int(np.abs(layer.alpha.astype(np.int16) - 128).max()) <= 1
        assert int(np.abs(layer.alpha.astype(np.int16) - _planes(reference)[3]).max()) <= 1


def test_stills_of_many_sizes_share_one_table(tmp_path: Path) -> None:
    # swscale would set its mapping up again for each size, in about 1.5 s.
    lut.table.cache_clear()
    scaler = compose.Scaler(2)
    for width, height in ((64, 36), (80, 50), (96, 60)):
        path = synth.make_image(tmp_path / f"{width}.png", size=(width, height), display_p3=True)
        compose.convert(_decoded_still(path), width, height, alpha=False, still=True, scaler=scaler)
    assert lut.table.cache_info().misses == 1
    assert scaler.kinds().count("lut") == 3


def test_the_table_is_made_once_per_light_and_its_file_is_gone(tmp_path: Path) -> None:
    before = set(Path(tempfile.gettempdir()).glob("rendermill-*.cube"))
    lut.table.cache_clear()
    scaler = compose.Scaler(2)
    for size in ((320, 180), (160, 90)):
        path = synth.make_wide_video(tmp_path / f"{size[0]}.mp4", COLOURS, "hlg", size=size)
        frame = _first_frame(path)
        compose.convert(frame, *size, alpha=False, scaler=scaler)
    assert lut.table.cache_info().misses == 1
    assert scaler.kinds().count("lut") == 2
    assert set(Path(tempfile.gettempdir()).glob("rendermill-*.cube")) == before


def test_the_table_samples_swscale_on_a_grid_red_fastest() -> None:
    cube = lut.table(18, 9, 1, 1)  # HLG BT.2020 to BT.709
    lines = cube.splitlines()
    assert lines[0] == f"LUT_3D_SIZE {lut.SIZE}"
    rows = np.array([[float(v) for v in line.split()] for line in lines[1:]])
    assert rows.shape == (lut.SIZE**3, 3)
    assert rows.min() >= 0.0 and rows.max() <= 1.0
    # Black stays black; greys stay grey, brighter as the signal grows, and HLG's
    # reference white (75 % signal) becomes SDR white; pure BT.2020 red, outside BT.709,
    # comes out the reddest BT.709 can show.
    grid = rows.reshape(lut.SIZE, lut.SIZE, lut.SIZE, 3)  # [blue][green][red]
    assert np.allclose(grid[0, 0, 0], 0.0, atol=1e-3)
    greys = np.array([grid[i, i, i] for i in range(lut.SIZE)])
    assert np.allclose(greys, greys[:, :1], atol=2e-3)
    white = round(0.75 * (lut.SIZE - 1))
    assert np.all(np.diff(greys[:white, 0]) > 0)
    assert np.all(greys[white] > 0.97)
    red = grid[0, 0, -1]
    assert red[0] > 0.99 and red[0] > 4 * max(red[1], red[2])


def test_without_a_writable_temporary_directory_swscale_maps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = synth.make_wide_video(tmp_path / "hlg.mp4", COLOURS, "hlg", size=(320, 180))
    frame = _first_frame(path)
    expected = _planes(_swscale(_first_frame(path)))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    scaler = compose.Scaler(2)
    for _ in range(2):
        layer = compose.convert(frame, 320, 180, alpha=False, scaler=scaler)
        assert "lut" not in scaler.kinds()
        # swscale's own mapping, pixel for pixel.
        assert np.array_equal(layer.y, expected[0])


HLG_TO_709 = (18, 9, 1, 1)


def _hlg_frame(tmp_path: Path, size: tuple[int, int] = (320, 180)) -> VideoFrame:
    path = synth.make_wide_video(tmp_path / "hlg.mp4", COLOURS, "hlg", size=size)
    return _first_frame(path)


def _no_table_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any table made from here on fails the test: it must be read from a kept file."""

    def not_again(*light: int) -> str:
        raise AssertionError(f"table {light} made again")

    monkeypatch.setattr(lut, "sample", not_again)
    monkeypatch.setattr(lut, "table", not_again)


def test_a_table_is_kept_in_the_cache_and_read_by_later_renders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Made once on a machine: a later process reads the kept file and maps the same."""
    frame = _hlg_frame(tmp_path)
    cache = tmp_path / "cache"
    tables = lut.Tables(cache)
    first = compose.convert(frame, 320, 180, alpha=False, scaler=compose.Scaler(2, tables))
    kept = tables.path(HLG_TO_709)
    assert kept is not None and kept.parent == cache
    assert kept.read_text() == lut.table(*HLG_TO_709)
    assert kept.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in cache.iterdir()] == [kept.name]  # nothing left aside
    # The same as without a cache.
    fresh = compose.convert(frame, 320, 180, alpha=False, scaler=compose.Scaler(2))
    assert np.array_equal(fresh.y, first.y) and np.array_equal(fresh.u, first.u)

    _no_table_made(monkeypatch)
    scaler = compose.Scaler(2, lut.Tables(cache))
    again = compose.convert(frame, 320, 180, alpha=False, scaler=scaler)
    assert "lut" in scaler.kinds()
    for a, b in zip((first.y, first.u, first.v), (again.y, again.u, again.v), strict=True):
        assert np.array_equal(a, b)


def _cache_holding(tmp_path: Path, text: str) -> tuple[lut.Tables, Path]:
    """A cache whose HLG table's file holds ``text``."""
    tables = lut.Tables(tmp_path / "cache")
    kept = tables.path(HLG_TO_709)
    assert kept is not None
    kept.parent.mkdir()
    kept.write_text(text)
    return tables, kept


def _maps_as_without_a_cache(frame: VideoFrame, layer: compose.Layer) -> bool:
    fresh = compose.convert(frame, 320, 180, alpha=False, scaler=compose.Scaler(2))
    return np.array_equal(layer.y, fresh.y) and np.array_equal(layer.v, fresh.v)


def test_a_kept_table_cut_short_is_made_again(tmp_path: Path) -> None:
    frame = _hlg_frame(tmp_path)
    tables, kept = _cache_holding(tmp_path, lut.table(*HLG_TO_709)[:100_000])
    layer = compose.convert(frame, 320, 180, alpha=False, scaler=compose.Scaler(2, tables))
    assert kept.read_text() == lut.table(*HLG_TO_709)
    assert _maps_as_without_a_cache(frame, layer)


def test_a_kept_table_that_cannot_be_read_is_replaced(tmp_path: Path) -> None:
    frame = _hlg_frame(tmp_path)
    good = lut.table(*HLG_TO_709)
    tables, kept = _cache_holding(tmp_path, "not a table\n".ljust(len(good), "#"))
    assert kept.stat().st_size == len(good)
    scaler = compose.Scaler(2, tables)
    with structlog.testing.capture_logs() as logs:
        layer = compose.convert(frame, 320, 180, alpha=False, scaler=scaler)
    assert "lut" in scaler.kinds()
    assert [e["path"] for e in logs if e["event"] == "lut_table_unreadable"] == [str(kept)]
    assert _maps_as_without_a_cache(frame, layer)
    # Gone, so that the next render makes it again.
    assert not kept.exists()
    compose.convert(frame, 160, 90, alpha=False, scaler=compose.Scaler(2, lut.Tables(kept.parent)))
    assert kept.read_text() == good


def test_a_cache_keeps_what_is_used_and_sweeps_what_is_not(tmp_path: Path) -> None:
    """Tables unused for UNUSED_FOR (another swscale's, say) and files half written by a
    killed render go when a table is next written; a table in use stays."""
    cache = tmp_path / "cache"
    cache.mkdir()
    old = time.time() - lut.UNUSED_FOR - 60
    files = {
        "rendermill-v1-sws9.1.100-65-18-9-1-1.cube": old,  # another swscale's, unused
        "rendermill-v1-sws9.1.100-65-16-9-1-1.cube": time.time(),  # used lately
        ".table-dead.tmp": time.time() - lut.HALF_WRITTEN_FOR - 60,
        ".table-live.tmp": time.time(),
    }
    for name, when in files.items():
        (cache / name).write_text("x")
        os.utime(cache / name, (when, when))
    frame = _hlg_frame(tmp_path, (160, 90))
    tables = lut.Tables(cache)
    compose.convert(frame, 160, 90, alpha=False, scaler=compose.Scaler(2, tables))
    kept = tables.path(HLG_TO_709)
    assert kept is not None
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [kept.name, "rendermill-v1-sws9.1.100-65-16-9-1-1.cube", ".table-live.tmp"]
    )
    # Reading a kept table marks it used.
    os.utime(kept, (old, old))
    compose.convert(frame, 160, 90, alpha=False, scaler=compose.Scaler(2, lut.Tables(cache)))
    assert kept.stat().st_mtime > time.time() - 60


def test_a_kept_table_is_read_where_the_cache_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache made by another user (or mounted read-only) still serves its tables."""
    frame = _hlg_frame(tmp_path, (160, 90))
    cache = tmp_path / "cache"
    compose.convert(frame, 160, 90, alpha=False, scaler=compose.Scaler(2, lut.Tables(cache)))

    def refused(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "utime", refused)
    monkeypatch.setattr(tempfile, "mkstemp", refused)
    _no_table_made(monkeypatch)
    tables = lut.Tables(cache)
    # Another light cannot be written there; the kept one is still read.
    assert tables.keep((16, 9, 1, 1)) is None
    scaler = compose.Scaler(2, tables)
    for size in ((160, 90), (80, 46)):
        compose.convert(frame, *size, alpha=False, scaler=scaler)
    assert scaler.kinds().count("lut") == 2


def test_a_kept_table_stays_when_the_pictures_are_what_is_refused(tmp_path: Path) -> None:
    """A mapping that fails with a fresh table too is no fault of the kept one."""
    tables, kept = _cache_holding(tmp_path, lut.table(*HLG_TO_709))
    given: list[Path] = []

    def refuse(cube: Path) -> lut.Mapper:
        given.append(cube)
        raise av.FFmpegError(22, "Invalid argument")

    with pytest.raises(av.FFmpegError):
        tables.mapper(HLG_TO_709, refuse)
    assert given[0] == kept and len(given) == 2 and given[1] != kept
    assert kept.read_text() == lut.table(*HLG_TO_709)


def test_a_cache_that_cannot_be_written_costs_only_time(tmp_path: Path) -> None:
    frame = _hlg_frame(tmp_path)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    scaler = compose.Scaler(2, lut.Tables(blocked / "cache"))
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            layer = compose.convert(frame, 320, 180, alpha=False, scaler=scaler)
    # Mapped through the table all the same, from a temporary file.
    assert "lut" in scaler.kinds()
    assert _maps_as_without_a_cache(frame, layer)
    warned = [e for e in logs if e["event"] == "lut_cache_unwritable"]
    assert len(warned) == 1 and warned[0]["directory"] == str(blocked / "cache")


def test_the_table_is_the_same_every_time_it_is_made() -> None:
    """swscale on several threads maps the first points of each slice to grey; the
    table is sampled on one."""
    made = [lut.sample(*HLG_TO_709) for _ in range(3)]
    assert made[0] == made[1] == made[2]
    size = lut.SIZE
    out = np.array(made[0].split()[2:], np.float64).reshape(size, size, size, 3)
    axis = np.linspace(0.0, 1.0, size)
    blue, green, red = np.meshgrid(axis, axis, axis, indexing="ij")
    points = np.stack((red, green, blue), axis=-1)
    # Every clearly coloured point stays coloured.
    coloured = (np.ptp(points, axis=-1) >= 0.25) & (points.max(axis=-1) >= 0.3)
    assert float(np.ptp(out, axis=-1)[coloured].min()) > 0.1


def test_the_common_tables_made_ahead_serve_phone_video_and_p3_pictures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the images run at build time: afterwards no HLG, PQ or Display P3 picture
    needs a table made."""
    cache = tmp_path / "cache"
    assert tables.main([str(cache)]) == 0
    said = capsys.readouterr().out
    assert all(f"{name}: {cache}" in said for name in tables.COMMON)
    assert len(list(cache.iterdir())) == len(tables.COMMON)
    videos = [
        _first_frame(synth.make_wide_video(tmp_path / f"{light}.mp4", COLOURS, light))
        for light in ("hlg", "pq")
    ]
    photo = synth.make_image(tmp_path / "p3.jpg", size=(64, 36), display_p3=True)
    screenshot = synth.make_image(tmp_path / "p3.png", size=(64, 36), display_p3=True)
    stills = [_decoded_still(photo), _decoded_still(screenshot)]
    _no_table_made(monkeypatch)
    scaler = compose.Scaler(2, lut.Tables(cache))
    for frame in videos:
        compose.convert(frame, 160, 90, alpha=False, scaler=scaler)
    for still in stills:
        compose.convert(still, 64, 36, alpha=False, still=True, scaler=scaler)
    assert scaler.kinds().count("lut") == 4
