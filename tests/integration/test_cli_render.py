"""``rendermill render``: a project file rendered on this machine, its media bound on the
command line, found under ``--base`` or embedded in a ``.sue`` container; exit codes 2
for a project or options it cannot take and 3 for unreadable media."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from rendermill.cli import synth
from rendermill.cli.main import main
from rendermill.common.project import container

FPS = 15


def _project(*tracks: dict[str, Any]) -> dict[str, Any]:
    return {"id": "p", "name": "cli", "width": 320, "height": 180, "tracks": list(tracks)}


def _track(name: str, controller: str, url: str, end: float = 1.0) -> dict[str, Any]:
    action = {"id": f"a-{name}", "start": 0, "end": end, "fit": "fill"}
    return {"id": name, "name": name, "controllerName": controller, "url": url, "actions": [action]}


def _render(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["render", *args])
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli-media")
    return synth.make_video(d / "clip.mp4", color=(0, 200, 0), duration=1.0, tone_hz=330.0)


def test_media_bound_with_media_and_base_render_with_a_progress_bar(
    tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "public"
    (base / "static").mkdir(parents=True)
    synth.make_audio(base / "static" / "music.m4a", tone_hz=220.0, duration=1.0)
    project = tmp_path / "project.json"
    blob = "blob:https://app.example/1f2e"
    project.write_text(
        json.dumps(
            _project(_track("clip", "video", blob), _track("music", "audio", "/static/music.m4a"))
        )
    )
    out = tmp_path / "out.mp4"
    code, stdout, stderr = _render(
        capsys,
        str(project),
        "-o",
        str(out),
        "--media",
        f"{blob}={clip}",
        "--base",
        str(base),
        "--resolution",
        "320x180",
        "--fps",
        str(FPS),
        "--copy",
        "never",
        "--cpus",
        "1",
    )
    assert code == 0, stderr
    assert re.search(r"wrote .*out\.mp4: 320x180 mp4, 15 frames, 1\.000 s", stdout)
    assert "compose" in stdout
    # The bar, on stderr: it counts frames to the end. Not a terminal here, so it is
    # written as whole lines (the first and the last), not redrawn with carriage returns.
    assert "15/15" in stderr
    assert "\r" not in stderr
    assert [line.split("|")[0] for line in stderr.splitlines() if "frame" in line] == ["0%", "100%"]
    decoded = synth.Decoded(out, FPS)
    assert len(decoded.frames) == FPS
    assert decoded.frames[7][90, 160, 1] > 150  # the green clip shows
    # One CPU given: x264 ran one thread.
    found = re.search(rb"(?<![a-z_])threads=(\d+) ", out.read_bytes())
    assert found is not None and found.group(1) == b"1"


def test_a_sue_container_needs_no_bindings(
    tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The editor names a track's url after the embedded file (without its extension).
    document = _project(_track("clip", "video", "blob:https://app.example/clip"))
    sue = tmp_path / "project.sue"
    sue.write_bytes(
        container.build(
            json.dumps(document).encode(), [("clip.mp4", "video/mp4", clip.read_bytes())]
        )
    )
    out = tmp_path / "out.webm"
    code, stdout, stderr = _render(
        capsys, str(sue), "-o", str(out), "--resolution", "320x180", "--fps", str(FPS), "--quiet"
    )
    assert code == 0, stderr
    assert "320x180 webm, 15 frames" in stdout
    assert len(synth.Decoded(out, FPS).frames) == FPS


def test_every_url_left_unbound_is_listed_with_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project.json"
    project.write_text(
        json.dumps(
            _project(
                _track("intro", "video", "/clips/intro.mp4"), _track("bed", "audio", "bed.mp3")
            )
        )
    )
    code, _, stderr = _render(capsys, str(project), "-o", str(tmp_path / "out.mp4"), "--quiet")
    assert code == 2
    assert "2 problem(s)" in stderr
    assert "tracks[0].url: track 'intro' plays '/clips/intro.mp4'" in stderr
    assert "tracks[1].url: track 'bed' plays 'bed.mp3'" in stderr
    assert "--media 'bed.mp3=PATH' or pass --base DIR" in stderr
    assert not (tmp_path / "out.mp4").exists()


def test_unreadable_media_exits_3_naming_the_track_and_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "holiday.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 40)
    project = tmp_path / "project.json"
    project.write_text(json.dumps(_project(_track("holiday", "video", "/holiday.mp4"))))
    out = tmp_path / "out.mp4"
    code, _, stderr = _render(
        capsys, str(project), "-o", str(out), "--media", f"/holiday.mp4={junk}", "--quiet"
    )
    assert code == 3
    assert "holiday" in stderr and "holiday.mp4" in stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--cpus", "-1"], "argument --cpus: '-1' is not a number of CPUs"),
        (["--fps", "0"], "--fps 0: must be at least 1"),
        (["--fps", "61"], "--fps 61: must be at most 60"),
        (["--poster", "-1"], "--poster -1.0: must be at least 0.0"),
        (["--resolution", "huge"], "huge"),
        (["--media", "nothing-here"], "--media 'nothing-here': use URL=PATH"),
        (["--media", "/a.mp4=/no/such/file.mp4"], "--media /a.mp4: no file at /no/such/file.mp4"),
    ],
)
def test_bad_options_exit_2(
    tmp_path: Path,
    clip: Path,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    message: str,
) -> None:
    project = tmp_path / "project.json"
    project.write_text(json.dumps(_project(_track("clip", "video", "/a.mp4"))))
    code, _, stderr = _render(capsys, str(project), "-o", str(tmp_path / "o.mp4"), *options)
    assert code == 2
    assert message in stderr


def test_an_output_name_without_a_known_suffix_needs_format(
    tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project.json"
    project.write_text(json.dumps(_project(_track("clip", "video", "/a.mp4"))))
    args = [str(project), "-o", str(tmp_path / "out.video"), "--media", f"/a.mp4={clip}"]
    code, _, stderr = _render(capsys, *args, "--quiet")
    assert code == 2
    assert "cannot tell the format from 'out.video': use --format" in stderr
    code, stdout, stderr = _render(
        capsys, *args, "--format", "mov", "--resolution", "320x180", "--fps", str(FPS), "--quiet"
    )
    assert code == 0, stderr
    assert "320x180 mov" in stdout


def test_hdr_tables_are_kept_in_the_cache_dir_for_later_renders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    synth.make_wide_video(tmp_path / "hlg.mp4", [(220, 40, 90)], "hlg", duration=0.2)
    project = tmp_path / "project.json"
    project.write_text(json.dumps(_project(_track("phone", "video", "/hlg.mp4", end=0.2))))
    cache = tmp_path / "cache"
    args = [str(project), "--base", str(tmp_path), "--resolution", "320x180", "--quiet"]
    args += ["--fps", str(FPS)]
    code, _, stderr = _render(
        capsys, *args, "-o", str(tmp_path / "a.mp4"), "--cache-dir", str(cache)
    )
    assert code == 0, stderr
    [kept] = cache.iterdir()
    assert kept.suffix == ".cube" and "-18-9-1-1" in kept.name  # HLG, BT.2020 to BT.709
    made = kept.stat().st_ino  # a table made again would be a new file renamed there
    # RENDERMILL_CACHE_DIR names it too; the next render reads the table kept there.
    monkeypatch.setenv("RENDERMILL_CACHE_DIR", str(cache))
    code, _, stderr = _render(capsys, *args, "-o", str(tmp_path / "b.mp4"))
    assert code == 0, stderr
    assert [p.name for p in cache.iterdir()] == [kept.name]
    assert kept.stat().st_ino == made
    for name in ("a.mp4", "b.mp4"):
        frame = synth.Decoded(tmp_path / name, FPS).frames[2]
        assert abs(int(frame[90, 160, 0]) - 220) <= 8 and int(frame[90, 160, 1]) < 60


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("missing/out.mp4", r"out\.mp4: there is no directory .*missing: create it first"),
        # A directory where the file would go: the muxer cannot open it.
        ("taken.mp4", r"taken\.mp4: cannot write the render: Is a directory"),
        ("/proc/out.mp4", r"/proc/out\.mp4: cannot write the render: "),
    ],
)
def test_an_output_that_cannot_be_written_is_an_error_not_a_traceback(
    tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str], output: str, message: str
) -> None:
    project = tmp_path / "project.json"
    project.write_text(json.dumps(_project(_track("clip", "video", "/clip.mp4"))))
    out = output if output.startswith("/") else str(tmp_path / output)
    (tmp_path / "taken.mp4").mkdir()
    code, _, stderr = _render(
        capsys, str(project), "-o", out, "--media", f"/clip.mp4={clip}", "--quiet"
    )
    assert code == 2
    assert re.search(message, stderr), stderr
    assert "Traceback" not in stderr
