"""The real editor exports in ../shared/examples/stoked parse as the contract says."""

from __future__ import annotations

from pathlib import Path

import pytest

from rendermill.common.project import container, model, parse

EXAMPLES = Path(__file__).resolve().parents[3] / ".." / "shared" / "examples" / "stoked"

V, A, IMG = model.Controller.VIDEO, model.Controller.AUDIO, model.Controller.IMAGE
EXPECTED = {
    "stoked-ui.sue": (5, [V, V, V, V, A], 40.0, "#000"),
    "stoked-ui-2.sue": (5, [V, V, V, V, A], 40.0, "transparent"),
    "stoked-ui-3.sue": (5, [V, V, V, V, A], 40.0, "transparent"),
    "stoked-ui-3.suer": (5, [V, V, V, V, A], 40.0, "transparent"),
    "sample-project.sue.json": (4, [V, IMG, V, A], 30.0, "#1a1a2e"),
}


def _example(name: str) -> bytes:
    if not EXAMPLES.is_dir():
        pytest.skip(f"no example projects at {EXAMPLES}")
    return (EXAMPLES / name).read_bytes()


def test_every_example_is_expected() -> None:
    if not EXAMPLES.is_dir():
        pytest.skip(f"no example projects at {EXAMPLES}")
    present = {p.name for p in EXAMPLES.iterdir() if p.name != "README.md"}
    assert present == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_parses(name: str) -> None:
    tracks, controllers, duration, background = EXPECTED[name]
    project, files = parse.load(_example(name))
    assert files == []
    assert len(project.tracks) == tracks
    assert [t.controller for t in project.tracks] == controllers
    assert project.duration == duration
    assert project.frame_count(30) == round(duration * 30)
    assert (project.width, project.height) == (1920, 1080)
    assert project.background_color == background


def test_demo_project_details() -> None:
    project, _ = parse.load(_example("stoked-ui.sue"))
    trailer, alpha, logo, reverse, music = project.tracks
    assert trailer.actions[0].fit == model.Fit.FILL
    assert trailer.actions[0].trim_start == 29.5
    assert trailer.actions[0].volume == (
        model.VolumeStep(0.0, 0.0, 32.0),
        model.VolumeStep(1.0, 32.0, 40.5),
        model.VolumeStep(0.0, 40.5),
    )
    assert alpha.actions[0].loop is False
    assert logo.actions[0].fit == model.Fit.NONE
    assert reverse.actions[0].volume == (model.VolumeStep(0.5, 0.0),)
    assert music.actions[0].duration_hint == pytest.approx(213.97199546)
    # Every url is an http(s) URL, so the server can fetch them all.
    assert parse.unresolved(project, {}) == []


def test_demo_project_in_a_container() -> None:
    json_bytes, _ = container.split(_example("stoked-ui.sue"))
    names = ["vast-multiverse.mp4", "background-alpha.webm", "stoked-ui.webm"]
    names += ["stoked-ui-reverse.webm", "funeral.mp3"]
    files = [(n, "video/mp4", n.encode() * 3) for n in names]
    project, embedded = parse.load(container.build(json_bytes, files))
    assert [t.embedded for t in project.tracks] == names
    assert [f.name for f in embedded] == names


def test_sample_project_needs_its_media_uploaded() -> None:
    project, _ = parse.load(_example("sample-project.sue.json"))
    media = {t.url: f"asset-{i}" for i, t in enumerate(project.tracks)}
    assert len(parse.unresolved(project, {})) == 4
    assert parse.unresolved(project, media) == []
    logo = project.tracks[1].actions[0]
    assert (logo.x, logo.y, logo.fit) == (model.Coord(760.0), model.Coord(100.0), model.Fit.CONTAIN)
