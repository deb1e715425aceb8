"""The real Stoked UI example projects render, with generated stand-ins for their media.

Each file in the shared ``examples/stoked`` directory is parsed and rendered small and
slow (192x108 at 5 fps) with stand-in media of the names and lengths the file expects:
solid colours (with alpha where the name says so) and tones. The checks follow
TIMELINE.md: which stand-in is visible where at a few times, and when sound plays.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from rendermill.cli import synth
from rendermill.common import schemas
from rendermill.common.project import model, parse
from rendermill.renderer import engine

EXAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "examples" / "stoked"
FPS = 5
SIZE = (192, 108)
RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
YELLOW = (255, 255, 0)

Picture = npt.NDArray[np.uint8]
Json = dict[str, Any]

# Per media file name: the stand-in's colour and tone (None: no sound).
_PICTURES: dict[str, tuple[tuple[int, int, int], float | None]] = {
    "vast-multiverse.mp4": (RED, 440.0),
    "background-alpha.webm": (GREEN, None),
    "stoked-ui.webm": (BLUE, None),
    "stoked-ui-reverse.webm": (YELLOW, None),
    "main-video.mp4": (RED, 440.0),
    "overlay-video.mp4": (BLUE, None),
    "intro-logo.png": (GREEN, None),
}
_TONES = {"funeral.mp3": 330.0, "background-music.mp3": 660.0}


def _example_files() -> list[Path]:
    if not EXAMPLES.is_dir():
        return []
    return sorted(p for p in EXAMPLES.iterdir() if p.suffix != ".md")


def near(picture: Picture, box: tuple[int, int, int, int], rgb: tuple[int, int, int]) -> bool:
    x0, y0, x1, y1 = box
    actual = picture[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
    return bool(np.all(np.abs(actual - rgb) <= 24))


def _stand_in(directory: Path, track: Json) -> Path:
    """A file like the one ``track`` plays: its name, its length, its picture's shape."""
    name = str(track["url"]).rsplit("/", 1)[-1]
    path = directory / name
    if path.exists():
        return path
    actions: list[Json] = track.get("actions", [])
    hints = [float(a["duration"]) for a in actions if isinstance(a.get("duration"), int | float)]
    length = (
        max(hints)
        if hints
        else max(
            float(a.get("trimStart", 0)) + float(a["end"]) - float(a["start"]) + 1.0
            for a in actions
        )
    )
    if track["controllerName"] == "audio":
        # 8 kHz mono keeps a 214 s stand-in quick to write.
        return synth.make_audio(
            path, tone_hz=_TONES[name], duration=length, rate=8000, layout="mono"
        )
    colour, tone = _PICTURES[name]
    shapes = [(int(a["width"]), int(a["height"])) for a in actions if "width" in a]
    w, h = shapes[0] if shapes else (64, 36)
    if any(a.get("fit", "none") not in ("fill", "contain", "cover") for a in actions):
        # Drawn at its intrinsic size: the stand-in must have the real one.
        size = (w, h)
    else:
        # Only the aspect ratio matters: keep it tiny.
        size = (64, 2 * round(32 * h / w))
    if track["controllerName"] == "image":
        return synth.make_image(path, color=colour, size=size)
    return synth.make_video(
        path,
        color=colour,
        size=size,
        duration=length,
        fps=1 if size[0] > 640 else 2,
        tone_hz=tone,
        audio_rate=22050,
        audio_layout="mono",
        alpha="alpha" in name,
    )


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Json], dict[str, Path]]:
    directory = tmp_path_factory.mktemp("stand-ins")

    def make(document: Json) -> dict[str, Path]:
        return {str(t["url"]): _stand_in(directory, t) for t in document["tracks"]}

    return make


def _render(
    path: Path, stand_ins: Callable[[Json], dict[str, Path]], dest: Path
) -> tuple[model.Project, synth.Decoded]:
    data = path.read_bytes()
    project, _ = parse.load(data)
    sources = stand_ins(json.loads(data))
    output = schemas.OutputSpec(resolution=f"{SIZE[0]}x{SIZE[1]}", fps=FPS)
    result = engine.render(project, sources, output, dest)
    out = synth.Decoded(dest, FPS)
    assert result.frames == len(out.frames) == math.ceil(project.duration * FPS)
    return project, out


def _check_multiverse(out: synth.Decoded) -> None:
    # Tracks bottom to top: trailer (fill, 11-36 s), tunnel alpha (fill, 0-15.3 s), sui
    # logo (none, 1920x1080: the whole canvas, 0-12 s), reverse logo (none, 35.7-40 s,
    # its media ends at 39.68 s and then holds), and an audio track.
    whole = (0, 0, *SIZE)
    assert len(out.frames) == 200
    for t in (0.0, 6.0, 11.8):
        assert near(out.at(t), whole, BLUE), t
    # The tunnel's stand-in is opaque on its left half only: the trailer shows through.
    assert near(out.at(13.0), (0, 0, 90, 108), GREEN)
    assert near(out.at(13.0), (102, 0, 192, 108), RED)
    for t in (16.0, 30.0, 35.6):
        assert near(out.at(t), whole, RED), t
    for t in (35.8, 38.0, 39.8):
        assert near(out.at(t), whole, YELLOW), t
    # funeral (audio clock: s = t - 2.5) is muted for 14 <= s < 20.5, i.e. t in
    # [16.5, 23); the trailer (timeline clock) sounds only for 32 <= t < 36.
    assert out.rms(0.5, 2.9) < 0.01
    assert out.level_at(330, 5.0, 6.0) > 0.4
    assert out.rms(17.0, 22.5) < 0.01
    assert out.level_at(330, 24.0, 25.0) > 0.4
    assert out.level_at(440, 24.0, 25.0) < 0.01
    assert out.level_at(440, 33.0, 34.0) > 0.4
    assert out.level_at(330, 33.0, 34.0) > 0.4
    assert out.level_at(440, 36.5, 37.5) < 0.01
    assert out.rms(37.8, 40.0) < 0.01


def _check_sample(out: synth.Decoded) -> None:
    # Background video (cover, 16:9: the whole canvas), a 2:1 logo (editor contain:
    # 2160x1080 at (760, 100), so (76, 10) onwards at this scale) for 0-3 s, a 16:9 PiP
    # (contain: 1920x1080 at (1400, 780), so (140, 78) onwards) for 10-25 s.
    assert len(out.frames) == 150
    logo = out.at(1.0)
    assert near(logo, (80, 14, 188, 104), GREEN)
    assert near(logo, (0, 0, 72, 108), RED)
    assert near(logo, (80, 0, 188, 6), RED)
    for t in (5.0, 9.8, 25.0, 29.8):
        assert near(out.at(t), (0, 0, *SIZE), RED), t
    pip = out.at(15.0)
    assert near(pip, (144, 82, 190, 106), BLUE)
    assert near(pip, (0, 0, 136, 108), RED)
    assert near(pip, (144, 0, 190, 74), RED)
    # The music's volume [[0, 0], ...] was written as keyframes, but read as editor
    # steps the first one, gain 0 from 0 s on, covers everything: it never sounds.
    assert out.level_at(440, 1.0, 3.0) > 0.4
    assert out.level_at(660, 1.0, 3.0) < 0.01
    assert out.level_at(660, 10.0, 12.0) < 0.01


@pytest.mark.parametrize("path", _example_files(), ids=lambda p: p.name)
def test_example_project_renders(
    path: Path, stand_ins: Callable[[Json], dict[str, Path]], tmp_path: Path
) -> None:
    project, out = _render(path, stand_ins, tmp_path / "out.mp4")
    if path.name.startswith("sample-project"):
        _check_sample(out)
    else:
        assert project.name == "Stoked UI - Multiverse"
        _check_multiverse(out)


def test_examples_are_present() -> None:
    if not EXAMPLES.is_dir():
        pytest.skip(f"no example projects at {EXAMPLES}")
    assert len(_example_files()) >= 5
