"""Malformed and odd projects: each is refused with its problems named, fails as a media
error naming its track, or renders the frames it should, in good time.

A small project with video, alpha, image and audio tracks is mutated at random (seeded,
so every run tries the same ones): fields set to wrong types, extreme numbers, unknown
names, other media files (damaged ones among them), tracks reordered.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from rendermill.cli import synth
from rendermill.common import errors, schemas
from rendermill.common.project import parse
from rendermill.renderer import engine

Json = dict[str, Any]

BASE: Json = {
    "id": "p",
    "name": "mutations",
    "width": 320,
    "height": 180,
    "backgroundColor": "#102030",
    "tracks": [
        {
            "id": "t1",
            "name": "clip",
            "controllerName": "video",
            "url": "/clip.mp4",
            "actions": [
                {"id": "a1", "name": "a", "start": 0, "end": 2, "trimStart": 0.5, "fit": "cover"},
                {
                    "id": "a2",
                    "name": "b",
                    "start": 1.5,
                    "end": 3,
                    "loop": True,
                    "playbackRate": 1.5,
                },
            ],
        },
        {
            "id": "t2",
            "name": "alpha",
            "controllerName": "video",
            "url": "/alpha.webm",
            "actions": [
                {"id": "a3", "name": "c", "start": 0.5, "end": 2.5, "x": "50%", "y": 10},
            ],
        },
        {
            "id": "t3",
            "name": "logo",
            "controllerName": "image",
            "url": "/logo.png",
            "actions": [
                {"id": "a4", "name": "d", "start": 0, "end": 1, "fit": "contain", "x": -10},
            ],
        },
        {
            "id": "t4",
            "name": "music",
            "controllerName": "audio",
            "url": "/music.wav",
            "actions": [
                {"id": "a5", "name": "e", "start": 0, "end": 3, "volume": [[0.2, 0, 1], [1, 1]]},
            ],
        },
    ],
}

VALUES: list[object] = [
    0, -1, -0.001, 1e-9, 0.5, 1, 2, 3.3, 1e3, 1e5, 1e6, 1e12, 1e300, -1e300, 2**31, 2**63,
    86399, "10", "50%", "-1000%", "1000000px", "abc", "", None, [], {}, True, False,
    [[0.5]], [[2, 1, 0.5]], [[0, 5, 1]], [[1, None, None]], [[-1]], [["x"]], [0.5],
    "normal", "multiply", "fill", "contain", "cover", "#fff", "transparent",
    {"opacity": 0.5}, {"opacity": 2},
]  # fmt: skip
ACTION_KEYS = [
    "start", "end", "trimStart", "playbackRate", "loop", "freeze", "volume", "fit",
    "x", "y", "width", "height", "disabled", "blendMode", "style", "duration", "id",
]  # fmt: skip
TRACK_KEYS = ["controllerName", "url", "hidden", "muted", "name", "id", "actions"]
TOP_KEYS = ["width", "height", "backgroundColor", "tracks"]
URLS = ["/clip.mp4", "/alpha.webm", "/logo.png", "/music.wav", "/cut.mp4", "/empty.mp4",
        "/text.png", "/noisy.mp4", "unbound"]  # fmt: skip


def mutate(doc: Json, rng: random.Random) -> Json:
    for _ in range(rng.randint(1, 6)):
        listed = doc["tracks"] if isinstance(doc.get("tracks"), list) else []
        tracks = [t for t in listed if isinstance(t, dict)]
        r = rng.random()
        if r < 0.6 and tracks:
            actions = rng.choice(tracks).get("actions")
            if isinstance(actions, list) and actions and isinstance(actions[0], dict):
                action = rng.choice(actions)
                key = rng.choice(ACTION_KEYS)
                action[key] = copy.deepcopy(rng.choice(VALUES))
        elif r < 0.8 and tracks:
            track = rng.choice(tracks)
            key = rng.choice(TRACK_KEYS)
            if key == "controllerName":
                track[key] = rng.choice(["video", "audio", "image", "text", 1])
            elif key == "url":
                track[key] = rng.choice(URLS)
            elif key == "actions" and track.get("actions"):
                track["actions"].append(copy.deepcopy(rng.choice(track["actions"])))
            else:
                track[key] = copy.deepcopy(rng.choice(VALUES))
        elif r < 0.9:
            doc[rng.choice(TOP_KEYS)] = copy.deepcopy(rng.choice([*VALUES, 2, 7, 17, 8192, 8193]))
        elif len(listed) > 1:
            i, j = rng.sample(range(len(listed)), 2)
            listed[i], listed[j] = listed[j], listed[i]
    return doc


def mutations(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    return [json.dumps(mutate(copy.deepcopy(BASE), rng)).encode() for _ in range(count)]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("mutation-media")
    clip = synth.make_video(d / "clip.mp4", size=(64, 36), duration=3.0, fps=10)
    whole = clip.read_bytes()
    (d / "cut.mp4").write_bytes(whole[: len(whole) // 2])
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.png").write_bytes(b"not a picture\n" * 10)
    noisy = bytearray(whole)
    for i in random.Random(0).sample(range(len(noisy) // 4, len(noisy)), 40):
        noisy[i] ^= 0xFF
    (d / "noisy.mp4").write_bytes(bytes(noisy))
    return {
        "/clip.mp4": clip,
        "/alpha.webm": synth.make_video(
            d / "alpha.webm", color=(0, 255, 0), size=(48, 48), duration=2.0, fps=10, alpha=True
        ),
        "/logo.png": synth.make_image(d / "logo.png", color=(0, 0, 255), size=(40, 20)),
        "/music.wav": synth.make_audio(d / "music.wav", tone_hz=330.0, duration=4.0),
        **{f"/{p.name}": p for p in (d / "cut.mp4", d / "empty.mp4", d / "text.png")},
        "/noisy.mp4": d / "noisy.mp4",
    }


def test_mutated_projects_are_parsed_or_refused_with_their_problems_named() -> None:
    accepted = 0
    for data in mutations(seed=1, count=1500):
        try:
            project, _ = parse.load(data)
        except errors.InvalidProject as exc:
            assert exc.problems
            assert all(p.message for p in exc.problems)
            continue
        accepted += 1
        assert 0.0 <= project.duration <= parse.MAX_SECONDS
        assert project.frame_count(60) >= 0
    # The mutations are not all refused (the test would then check little).
    assert 150 < accepted < 1350


@pytest.mark.parametrize("seed", range(4))
def test_mutated_projects_render_or_fail_naming_their_track(
    seed: int, media: dict[str, Path], tmp_path: Path
) -> None:
    rng = random.Random(seed)
    rendered = 0
    for i, data in enumerate(mutations(seed=100 + seed, count=60)):
        try:
            project, _ = parse.load(data)
        except errors.InvalidProject:
            continue
        formats: list[schemas.OutputFormat] = ["mp4", "mp4", "webm", "gif", "mov"]
        fmt = rng.choice(formats)
        output = schemas.OutputSpec(
            format=fmt,
            resolution=rng.choice(["64x36", "32x48", "16x16"]),
            fps=rng.choice([1, 5, 12]),
            effects=rng.random() < 0.5,
            copy=rng.choice(["auto", "never"]),
        )
        dest = tmp_path / f"{i}.{fmt}"
        try:
            result = engine.render(project, media, output, dest)
        except errors.MediaError as exc:
            # Named by the track's name, the file by its url as the project writes it.
            assert exc.message.startswith("track '"), exc.message
            assert exc.url and f"'{exc.url}'" in exc.message, exc.message
            assert not dest.exists()
            continue
        except errors.InvalidProject as exc:
            assert exc.problems
            continue
        rendered += 1
        assert result.frames == project.frame_count(output.fps)
        assert dest.stat().st_size == result.size_bytes > 0
    assert rendered >= 5
