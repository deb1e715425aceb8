"""``rendermill validate`` on real and broken project files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rendermill.cli.main import main
from rendermill.common.project import container

EXAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "examples" / "stoked"


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", *args])
    return int(exit_info.value.code or 0), capsys.readouterr().out


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="shared examples not present")
def test_every_example_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    for path in sorted(EXAMPLES.glob("*.sue*")):
        code, out = _run(capsys, str(path))
        assert code == 0, out
        assert "valid" in out


def test_problems_are_listed_with_paths_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "tracks": [
                    {"controllerName": "laser", "url": "/a.mp4", "actions": []},
                    {"controllerName": "video", "url": "/b.mp4", "actions": [{"start": "x"}]},
                ]
            }
        )
    )
    code, out = _run(capsys, str(bad))
    assert code == 1
    assert "tracks[0].controllerName" in out
    assert "tracks[1].actions[0].start" in out
    assert "tracks[1].actions[0].end" in out


def test_truncated_container_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = {"tracks": [{"controllerName": "video", "url": "clip.mp4", "actions": []}]}
    data = container.build(json.dumps(project).encode(), [("clip.mp4", "video/mp4", b"x" * 500)])
    path = tmp_path / "cut.sue"
    path.write_bytes(data[:-100])
    code, out = _run(capsys, str(path))
    assert code == 1 and "clip.mp4" in out
