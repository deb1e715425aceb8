from __future__ import annotations

import struct

import msgspec
import pytest

from rendermill.common import errors
from rendermill.common.project import container, model, parse

PROJECT = {
    "id": "p1",
    "name": "demo",
    "tracks": [
        {
            "id": "t-clip",
            "name": "clip",
            "controllerName": "video",
            "url": "blob:https://localhost:5199/8d8fb5c4",
            "actions": [{"start": 0, "end": 2}],
        },
        {
            "id": "t-logo",
            "name": "logo",
            "controllerName": "video",
            "url": "/static/editor/stoked-ui.webm",
            "actions": [{"start": 0, "end": 2}],
        },
        {
            "id": "t-reverse",
            "name": "reverse logo",
            "controllerName": "video",
            "url": "/static/editor/stoked-ui-reverse.webm",
            "actions": [{"start": 1, "end": 3}],
        },
        {
            "id": "t-music",
            "name": "music",
            "controllerName": "audio",
            "url": "/static/editor/funeral%20march.mp3",
            "actions": [{"start": 0, "end": 3}],
        },
    ],
}

FILES = [
    ("stoked-ui.webm", "video/webm", b"logo-bytes"),
    ("stoked-ui-reverse.webm", "video/webm", b"reverse-logo-bytes!"),
    ("funeral march.mp3", "audio/mpeg", b"\x00\x01\x02"),
    ("unused.png", "image/png", b""),
]


def _container() -> bytes:
    return container.build(msgspec.json.encode(PROJECT), FILES)


def _problem(exc: pytest.ExceptionInfo[errors.InvalidProject]) -> errors.Problem:
    assert len(exc.value.problems) == 1
    return exc.value.problems[0]


def test_plain_json_passes_through() -> None:
    data = b'  \n{"tracks": []}'
    assert container.split(data) == (data, [])


def test_plain_json_with_byte_order_mark_loses_the_mark() -> None:
    assert container.split(b'\xef\xbb\xbf{"tracks": []}') == (b'{"tracks": []}', [])


def test_build_then_split_round_trips() -> None:
    data = _container()
    json_bytes, files = container.split(data)
    header = msgspec.json.decode(json_bytes)
    assert header["tracks"] == PROJECT["tracks"]
    assert header["filesMeta"] == [
        {"name": name, "size": len(content), "type": type_} for name, type_, content in FILES
    ]
    assert [(f.name, f.type, data[f.offset : f.offset + f.size]) for f in files] == FILES
    assert files[0].offset == 4 + len(json_bytes)


def test_load_matches_embedded_files_to_tracks() -> None:
    project, files = parse.load(_container())
    assert [f.name for f in files] == [name for name, _, _ in FILES]
    assert project.files == tuple(files)
    by_id = {t.id: t.embedded for t in project.tracks}
    assert by_id == {
        "t-clip": None,
        # "stoked-ui" is also inside this url; the longer, exact name wins.
        "t-reverse": "stoked-ui-reverse.webm",
        "t-logo": "stoked-ui.webm",
        "t-music": "funeral march.mp3",
    }


def test_embedded_tracks_are_resolved() -> None:
    project, _ = parse.load(_container())
    problems = parse.unresolved(project, {})
    assert [p.path for p in problems] == ["tracks[0].url"]
    assert "blob:" in problems[0].message


def test_container_with_no_files() -> None:
    data = container.build(b'{"tracks": []}', [])
    json_bytes, files = container.split(data)
    assert files == []
    assert msgspec.json.decode(json_bytes) == {"tracks": [], "filesMeta": []}


def test_container_whose_length_starts_like_json_is_still_a_container() -> None:
    # 0x7b is '{': a container with 123 + 256*k bytes of JSON begins with '{'.
    base = msgspec.json.encode({"tracks": [], "filesMeta": [], "pad": ""})
    padded = msgspec.json.encode({"tracks": [], "filesMeta": [], "pad": "x" * (0x17B - len(base))})
    assert len(padded) == 0x17B
    data = struct.pack("<I", len(padded)) + padded
    assert data[:1] == b"{"
    assert container.split(data) == (padded, [])


def test_too_short() -> None:
    with pytest.raises(errors.InvalidProject) as exc:
        container.split(b"\x01\x00")
    assert "not a project file" in _problem(exc).message


def test_header_promises_more_json_than_there_is() -> None:
    data = struct.pack("<I", 5000) + b'{"tracks": []}'
    with pytest.raises(errors.InvalidProject) as exc:
        container.split(data)
    message = _problem(exc).message
    assert message.startswith(
        "truncated container: header says 5000 bytes of JSON but only 14 follow"
    )


def test_embedded_file_cut_short_is_named() -> None:
    data = _container()[:-10]
    with pytest.raises(errors.InvalidProject) as exc:
        container.split(data)
    problem = _problem(exc)
    # The last non-empty file is funeral march.mp3 (3 bytes); cutting 10 bytes also takes
    # 7 from stoked-ui-reverse.webm, which is the first one cut short.
    assert problem.path == "filesMeta[1]"
    assert "'stoked-ui-reverse.webm' is cut short by 7 bytes" in problem.message
    assert "1 file(s) after it are missing" in problem.message


def test_trailing_bytes_are_inconsistent() -> None:
    with pytest.raises(errors.InvalidProject) as exc:
        container.split(_container() + b"junk")
    problem = _problem(exc)
    assert problem.path == "filesMeta"
    assert "inconsistent container" in problem.message
    assert "4 unaccounted for" in problem.message


def test_container_json_that_does_not_decode() -> None:
    body = b'{"tracks": [1,'
    with pytest.raises(errors.InvalidProject) as exc:
        container.split(struct.pack("<I", len(body)) + body)
    assert "does not decode" in _problem(exc).message


def test_container_json_that_is_not_an_object() -> None:
    body = b"[1, 2]"
    with pytest.raises(errors.InvalidProject) as exc:
        container.split(struct.pack("<I", len(body)) + body)
    assert "must be an object" in _problem(exc).message


def test_malformed_files_meta_reports_every_entry() -> None:
    body = msgspec.json.encode(
        {"filesMeta": [{"name": "a.mp4", "size": -1}, "b.mp4", {"size": 2, "type": 7}]}
    )
    with pytest.raises(errors.InvalidProject) as exc:
        container.split(struct.pack("<I", len(body)) + body + b"xx")
    assert [p.path for p in exc.value.problems] == [
        "filesMeta[0].size",
        "filesMeta[1]",
        "filesMeta[2].name",
        "filesMeta[2].type",
    ]


def test_embedded_file_offsets_are_absolute() -> None:
    data = _container()
    _, files = container.split(data)
    expected = [
        model.EmbeddedFile(name=name, size=len(content), type=type_, offset=0)
        for name, type_, content in FILES
    ]
    assert [msgspec.structs.replace(f, offset=0) for f in files] == expected
    offsets = [f.offset for f in files]
    assert offsets == sorted(offsets)
    assert files[-1].offset + files[-1].size == len(data)


def test_build_rejects_non_object_json() -> None:
    with pytest.raises(ValueError, match="must be an object"):
        container.build(b"[]", [])
