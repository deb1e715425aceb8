from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest

from rendermill.common import errors
from rendermill.common.project import model, parse


def _action(**fields: Any) -> dict[str, Any]:
    return {"id": "a", "name": "clip", "start": 0, "end": 5, **fields}


def _project(*actions: dict[str, Any], **track: Any) -> dict[str, Any]:
    return {
        "tracks": [
            {
                "id": "t",
                "name": "main",
                "controllerName": "video",
                "url": "https://example.com/a.mp4",
                "actions": list(actions) or [_action()],
                **track,
            }
        ]
    }


def _problems(obj: object) -> list[errors.Problem]:
    with pytest.raises(errors.InvalidProject) as exc:
        parse.from_json(obj)
    return list(exc.value.problems)


def _paths(obj: object) -> list[str]:
    return [p.path for p in _problems(obj)]


def _only(obj: object) -> errors.Problem:
    problems = _problems(obj)
    assert len(problems) == 1, problems
    return problems[0]


def test_defaults() -> None:
    project = parse.from_json({"tracks": []})
    assert project == model.Project()


def test_full_action_mapping() -> None:
    project = parse.from_json(
        _project(
            _action(
                id="act",
                trimStart=1.5,
                playbackRate=2,
                loop=1,
                freeze=0.25,
                disabled=False,
                volume=[[0.5, 1, 2], [1]],
                fit="cover",
                x="10px",
                y="50%",
                blendMode="multiply",
                style={"opacity": 0.5},
                duration=12.5,
                volumeIndex=-1,
                z=3,
                width=1280,
                height=720,
                backgroundImage="url(blob:x)",
            )
        )
    )
    (action,) = project.tracks[0].actions
    assert action == model.Action(
        id="act",
        name="clip",
        start=0.0,
        end=5.0,
        trim_start=1.5,
        playback_rate=2.0,
        loop=True,
        freeze=0.25,
        volume=(model.VolumeStep(0.5, 1.0, 2.0), model.VolumeStep(1.0)),
        fit=model.Fit.COVER,
        x=model.Coord(10.0, "px"),
        y=model.Coord(50.0, "%"),
        blend_mode="multiply",
        opacity=0.5,
        duration_hint=12.5,
    )


def test_track_mapping_and_default_ids() -> None:
    obj = {
        "width": 1280,
        "height": 720.0,
        "backgroundColor": "#1a1a2e",
        "frameRate": 30,
        "duration": 30,
        "tracks": [
            {
                "controllerName": "audio",
                "url": "https://example.com/a.mp3",
                "muted": 1,
                "fileId": "f",
                "actions": [{"start": 0, "end": 1}],
            },
            {
                "controllerName": "image",
                "url": "https://example.com/a.png",
                "disabled": True,
            },
        ],
    }
    project = parse.from_json(obj)
    assert (project.width, project.height, project.background_color) == (1280, 720, "#1a1a2e")
    first, second = project.tracks
    assert (first.id, first.controller, first.muted, first.hidden) == (
        "track-0",
        model.Controller.AUDIO,
        True,
        False,
    )
    assert first.actions[0].id == "action-0-0"
    assert (second.controller, second.hidden, second.actions) == (model.Controller.IMAGE, True, ())


def test_non_numeric_start_is_reported_at_its_path() -> None:
    problem = _only(_project(_action(start="abc")))
    assert problem.path == "tracks[0].actions[0].start"
    assert problem.message == "must be a number of seconds, got 'abc'"


@pytest.mark.parametrize("start", ["3", True, None, [1], float("nan"), float("inf"), -1])
def test_start_must_be_a_non_negative_finite_number(start: object) -> None:
    assert _paths(_project(_action(start=start))) == ["tracks[0].actions[0].start"]


def test_end_before_start_is_allowed() -> None:
    project = parse.from_json(_project(_action(start=5, end=2)))
    assert not project.tracks[0].actions[0].active(3)


def test_negative_trim_start_and_bad_freeze() -> None:
    problems = _problems(_project(_action(trimStart=-1, freeze="x")))
    assert [(p.path, p.message) for p in problems] == [
        ("tracks[0].actions[0].trimStart", "must not be negative, got -1 seconds"),
        ("tracks[0].actions[0].freeze", "must be a number of seconds, got 'x'"),
    ]


def test_non_positive_playback_rate_is_kept_and_reads_as_one() -> None:
    action = parse.from_json(_project(_action(playbackRate=0))).tracks[0].actions[0]
    assert action.rate == 1.0


def test_an_absurd_playback_rate_is_refused() -> None:
    action = parse.from_json(_project(_action(playbackRate=1_000_000))).tracks[0].actions[0]
    assert action.rate == 1_000_000
    problem = _only(_project(_action(playbackRate=1e15)))
    assert problem.path == "tracks[0].actions[0].playbackRate"
    assert problem.message == (
        "must be at most 1000000 (a day of media in under a tenth of a second), got 1e+15"
    )


def test_unknown_controller_names_the_track() -> None:
    problem = _only(_project(controllerName="foo"))
    assert problem.path == "tracks[0].controllerName"
    assert problem.message == "unknown controller 'foo' on track 'main': use video, audio or image"


def test_missing_controller_and_url() -> None:
    obj = _project()
    del obj["tracks"][0]["controllerName"]
    del obj["tracks"][0]["url"]
    assert _paths(obj) == ["tracks[0].controllerName", "tracks[0].url"]


def test_empty_url_is_a_problem() -> None:
    assert _paths(_project(url="  ")) == ["tracks[0].url"]


@pytest.mark.parametrize(
    ("value", "coord"),
    [
        (12, model.Coord(12.0, "px")),
        (-3.5, model.Coord(-3.5, "px")),
        ("40px", model.Coord(40.0, "px")),
        (" -2.5PX ", model.Coord(-2.5, "px")),
        ("50%", model.Coord(50.0, "%")),
        ("12.5 %", model.Coord(12.5, "%")),
        (None, model.Coord()),
    ],
)
def test_x_and_y(value: object, coord: model.Coord) -> None:
    action = parse.from_json(_project(_action(x=value, y=value))).tracks[0].actions[0]
    assert action.x == coord
    assert action.y == coord


@pytest.mark.parametrize("value", ["10", "left", "10em", "px", True, [1], "1e999px"])
def test_bad_x_names_the_action(value: object) -> None:
    problem = _only(_project(_action(x=value)))
    assert problem.path == "tracks[0].actions[0].x"
    assert "action 'clip'" in problem.message
    assert "'Npx' or 'P%'" in problem.message or "between" in problem.message


def test_volume_steps() -> None:
    steps = [[0, 0, 32], [1, 32, 40.5], [0.5, None, 3], [4, 20.5], [0.2]]
    action = parse.from_json(_project(_action(volume=steps))).tracks[0].actions[0]
    assert action.volume == (
        model.VolumeStep(0.0, 0.0, 32.0),
        model.VolumeStep(1.0, 32.0, 40.5),
        model.VolumeStep(0.5, None, 3.0),
        model.VolumeStep(4.0, 20.5),
        model.VolumeStep(0.2),
    )
    assert action.gain_at(1) == 0.0  # the first covering step wins
    assert action.gain_at(35) == 1.0
    assert action.gain_at(41) == 1.0  # gain 4 clamps


def test_bad_volume_steps_are_reported_per_step() -> None:
    steps = [[1, 0], "loud", [], [None, 1], [1, "2", True], [1, 2, 3, 4]]
    problems = _problems(_project(_action(volume=steps)))
    assert [p.path for p in problems] == [
        "tracks[0].actions[0].volume[1]",
        "tracks[0].actions[0].volume[2]",
        "tracks[0].actions[0].volume[3]",
        "tracks[0].actions[0].volume[4]",
        "tracks[0].actions[0].volume[5]",
    ]
    assert problems[2].message == "gain must be a number, got null"
    assert problems[3].message == (
        "start must be a number of seconds or null, got '2'; "
        "end must be a number of seconds or null, got true"
    )


def test_volume_must_be_a_list() -> None:
    assert _paths(_project(_action(volume=0.5))) == ["tracks[0].actions[0].volume"]


@pytest.mark.parametrize(
    ("value", "fit"),
    [
        ("fill", model.Fit.FILL),
        ("contain", model.Fit.CONTAIN),
        ("cover", model.Fit.COVER),
        ("none", model.Fit.NONE),
        ("normal", model.Fit.NONE),
        (None, model.Fit.NONE),
    ],
)
def test_fit(value: object, fit: model.Fit) -> None:
    assert parse.from_json(_project(_action(fit=value))).tracks[0].actions[0].fit == fit


@pytest.mark.parametrize(
    ("value", "expected"), [(0, False), (1, True), (True, True), (False, False), (None, False)]
)
def test_loop_accepts_the_editors_zero_and_one(value: object, expected: bool) -> None:
    assert parse.from_json(_project(_action(loop=value))).tracks[0].actions[0].loop is expected


def test_loop_refuses_strings() -> None:
    assert _paths(_project(_action(loop="false"))) == ["tracks[0].actions[0].loop"]


def test_opacity_out_of_range_and_style_not_an_object() -> None:
    obj = _project(_action(style={"opacity": 2}), _action(style="opacity: 1"))
    assert _paths(obj) == [
        "tracks[0].actions[0].style.opacity",
        "tracks[0].actions[1].style",
    ]


def test_bad_duration_hint_is_dropped() -> None:
    action = parse.from_json(_project(_action(duration="long"))).tracks[0].actions[0]
    assert action.duration_hint is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("width", 0),
        ("width", 1.5),
        ("width", 9000),
        ("width", "1920"),
        ("height", True),
        ("height", -1080),
    ],
)
def test_canvas_size_is_bounded(field: str, value: object) -> None:
    assert _paths({"tracks": [], field: value}) == [field]


def test_background_colour_is_validated() -> None:
    problem = _only({"tracks": [], "backgroundColor": "blurple"})
    assert problem.path == "backgroundColor"
    assert "'blurple' is not a colour" in problem.message
    assert _paths({"tracks": [], "backgroundColor": 0}) == ["backgroundColor"]


def test_tracks_are_required() -> None:
    assert _paths({}) == ["tracks"]
    assert _paths({"tracks": {}}) == ["tracks"]


def test_project_must_be_an_object() -> None:
    problem = _only([1, 2])
    assert problem.path == ""
    assert problem.message == "a project must be a JSON object, got a list"


def test_every_problem_is_reported_and_siblings_still_parse() -> None:
    obj: dict[str, Any] = {
        "width": "wide",
        "backgroundColor": "nope",
        "tracks": [
            "not a track",
            {
                "name": "ok",
                "controllerName": "video",
                "url": "https://example.com/a.mp4",
                "actions": [_action(), 7, _action(start="abc", end=None, trimStart=-2)],
            },
            {
                "name": "bad",
                "controllerName": "foo",
                "url": "https://example.com/b.mp4",
                "actions": [_action(x="left")],
            },
        ],
    }
    assert _paths(obj) == [
        "width",
        "backgroundColor",
        "tracks[0]",
        "tracks[1].actions[1]",
        "tracks[1].actions[2].start",
        "tracks[1].actions[2].end",
        "tracks[1].actions[2].trimStart",
        "tracks[2].controllerName",
        "tracks[2].actions[0].x",
    ]
    with pytest.raises(errors.InvalidProject) as exc:
        parse.from_json(obj)
    assert exc.value.message.startswith("9 problems; the first: width: ")


def test_from_json_does_not_modify_its_input() -> None:
    obj = _project(_action(x="5%", volume=[[1, 2]]))
    before = copy.deepcopy(obj)
    parse.from_json(obj)
    assert obj == before


def test_load_plain_json_and_bad_json() -> None:
    project, files = parse.load(msgspec.json.encode(_project()))
    assert files == []
    assert project.files == ()
    assert project.tracks[0].embedded is None
    with pytest.raises(errors.InvalidProject) as exc:
        parse.load(b'{"tracks": [')
    assert "not valid JSON" in exc.value.problems[0].message


def _track(url: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": url,
        "controllerName": "video",
        "url": url,
        "actions": [_action()],
        **fields,
    }


def test_unresolved_blob_url_without_media() -> None:
    project = parse.from_json({"tracks": [_track("blob:https://localhost:5199/8d8f")]})
    (problem,) = parse.unresolved(project, {})
    assert problem.path == "tracks[0].url"
    assert "only exists inside the browser that created it" in problem.message
    assert "media map under this exact url" in problem.message
    assert parse.unresolved(project, {"blob:https://localhost:5199/8d8f": "asset-1"}) == []


def test_unresolved_kinds_of_url() -> None:
    urls = [
        "https://example.com/a.mp4",
        "HTTP://example.com/a.mp4",
        "/static/editor/a.mp4",
        "a.mp4",
        "file:///home/me/a.mp4",
        "blob:null/1",
        "/mapped.mp4",
        "http://[::1/broken.mp4",
    ]
    project = parse.from_json({"tracks": [_track(u) for u in urls]})
    problems = parse.unresolved(project, {"/mapped.mp4": "asset-9"})
    assert [p.path for p in problems] == [
        "tracks[2].url",
        "tracks[3].url",
        "tracks[4].url",
        "tracks[5].url",
    ]
    assert "upload the file and map this exact url" in problems[0].message
    assert "file on the machine that made the project" in problems[2].message
    relative = parse.unresolved(project, {"/mapped.mp4": "asset-9"}, root_relative_ok=True)
    assert [p.path for p in relative] == ["tracks[3].url", "tracks[4].url", "tracks[5].url"]


def test_unresolved_skips_tracks_that_never_render() -> None:
    tracks = [
        _track("blob:a", actions=[]),
        _track("blob:b", actions=[_action(disabled=True), _action(start=3, end=3)]),
        _track("blob:c", hidden=True),
        _track("blob:d", controllerName="audio", muted=True),
        _track("blob:e", muted=True),  # a muted video still has a picture
    ]
    project = parse.from_json({"tracks": tracks})
    assert [p.path for p in parse.unresolved(project, {})] == ["tracks[4].url"]
