"""One project rendered end to end: services as processes, driven like a client would."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from rendermill.cli import synth
from rendermill.cli.client import Client
from rendermill.cli.demo import Receiver
from rendermill.cli.stack import Stack, free_port
from rendermill.common import cpus, db, jobs

pytestmark = pytest.mark.e2e

RED = (220, 30, 30)
BLUE = (30, 60, 220)


def _mean_rgb(path: Path, t: float) -> npt.NDArray[np.float64]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        for frame in c.decode(stream):
            if frame.time is not None and frame.time >= t - 1e-6:
                rgb = np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.float64)
                return np.asarray(rgb.mean(axis=(0, 1)), dtype=np.float64)
    raise AssertionError(f"no frame at {t}")


async def test_two_clip_project_end_to_end(db_url: str, tmp_path: Path) -> None:
    red = synth.make_video(tmp_path / "red.mp4", color=RED, duration=2.0, tone_hz=440)
    blue = synth.make_video(tmp_path / "blue.mp4", color=BLUE, duration=2.0, tone_hz=660)
    project = {
        "id": "e2e",
        "name": "two clips",
        "width": 320,
        "height": 180,
        "tracks": [
            {
                "id": "t0",
                "name": "first",
                "controllerName": "video",
                "url": "blob:https://editor.example/red",
                "actions": [{"id": "a0", "start": 0, "end": 1.5, "fit": "fill"}],
            },
            {
                "id": "t1",
                "name": "second",
                "controllerName": "video",
                "url": "/static/blue.mp4",
                "actions": [
                    {"id": "a1", "start": 1.5, "end": 3.0, "trimStart": 0.5, "fit": "fill"}
                ],
            },
        ],
    }
    async with Stack(
        tmp_path / "home",
        port=free_port(),
        database_url=db_url,
        log_path=tmp_path / "stack.log",
        metrics=True,
    ) as stack:
        creds = await stack.create_tenant("e2e")
        async with (
            Client(creds.api_url, creds.api_key) as client,
            Receiver(creds.webhook_secret) as receiver,
        ):
            media = {
                "blob:https://editor.example/red": await client.upload(red, "video/mp4"),
                "/static/blue.mp4": await client.upload(blue, "video/mp4"),
            }
            job = await client.submit(
                {
                    "project": project,
                    "output": {"format": "mp4", "resolution": "320x180", "fps": 30},
                    "media": media,
                    "webhook_url": receiver.url,
                }
            )
            assert job["status"] == "queued"
            events = [e async for e in client.events(job["id"])]
            types = [e["type"] for e in events]
            assert types[0] == "job.queued" and types[-1] == "job.succeeded", types
            assert "job.started" in types and "job.progress" in types
            seqs = [e["seq"] for e in events]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
            view = await client.job(job["id"])
            assert view["status"] == "succeeded" and view["progress"] == 1.0
            out = tmp_path / "out.mp4"
            size = await client.download(view["result"]["download_url"], out)
            assert size == view["result"]["size_bytes"]
            await asyncio.wait_for(receiver.got.wait(), timeout=30)
            # The delivery log says so too (the notifier records it just after sending).
            async with asyncio.timeout(10):
                while True:
                    (message,) = (await client.webhooks(job["id"]))["messages"]
                    if message["status"] == "delivered":
                        break
                    await asyncio.sleep(0.1)
            assert message["event_type"] == "job.succeeded" and message["url"] == receiver.url
            assert [a["status_code"] for a in message["log"]] == [204]
            for name, counter in (
                ("scheduler", 'rendermill_launches_total{launcher="local",tier="normal"} 1.0'),
                ("scheduler", 'rendermill_queue_wait_seconds_count{tier="normal"} 1.0'),
                ("scheduler", 'rendermill_jobs_finished_total{status="succeeded"} 1.0'),
                ("scheduler", 'rendermill_render_seconds_count{outcome="ok"} 1.0'),
                ("scheduler", "rendermill_render_realtime_factor_count 1.0"),
                # The renderer was given every CPU this machine lets it use.
                (
                    "scheduler",
                    f'rendermill_render_peak_rss_bytes_count{{cpus="{cpus.usable()}"}} 1.0',
                ),
                ("scheduler", 'rendermill_jobs{status="running"}'),
                ("notifier", 'rendermill_webhook_attempts_total{outcome="delivered"} 1.0'),
            ):
                url = f"http://127.0.0.1:{stack.metrics_ports[name]}/metrics"
                # The notifier counts a delivery just after the receiver has it: poll.
                async with asyncio.timeout(10):
                    while True:
                        async with client.session.get(url) as resp:
                            if counter in await resp.text():
                                break
                        await asyncio.sleep(0.1)
        stack.check()

    # Verified by Receiver (it raises on a bad signature, and the notifier would retry).
    assert receiver.received[0]["type"] == "job.succeeded"
    assert receiver.received[0]["data"]["job_id"] == job["id"]

    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (320, 180)
        assert v.codec_context.name == "h264"
        assert c.streams.audio and c.streams.audio[0].codec_context.name == "aac"
        frames = sum(1 for _ in c.decode(v))
    assert abs(frames - 90) <= 1
    assert np.allclose(_mean_rgb(out, 0.5), RED, atol=25)
    assert np.allclose(_mean_rgb(out, 2.5), BLUE, atol=25)


async def test_corrupt_media_fails_the_job_with_a_message_naming_the_track(
    db_url: str, tmp_path: Path
) -> None:
    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    project = {
        "width": 320,
        "height": 180,
        "tracks": [
            {
                "id": "t0",
                "name": "interview",
                "controllerName": "video",
                "url": "/media/broken.mp4",
                "actions": [{"id": "a0", "start": 0, "end": 1}],
            }
        ],
    }
    async with Stack(
        tmp_path / "home", port=free_port(), database_url=db_url, log_path=tmp_path / "stack.log"
    ) as stack:
        creds = await stack.create_tenant("e2e")
        async with Client(creds.api_url, creds.api_key) as client:
            asset = await client.upload(garbage)
            job = await client.submit(
                {
                    "project": project,
                    "output": {"resolution": "320x180"},
                    "media": {"/media/broken.mp4": asset},
                }
            )
            events = [e async for e in client.events(job["id"])]
            view = await client.job(job["id"])
    assert events[-1]["type"] == "job.failed"
    assert view["status"] == "failed" and view["attempt"] == 1  # permanent: not retried
    assert view["error"]["code"] == "media_error"
    assert "interview" in view["error"]["message"]


async def test_cancel_stops_a_running_render(db_url: str, tmp_path: Path) -> None:
    clip = synth.make_video(tmp_path / "clip.mp4", color=RED, duration=1.0, tone_hz=440)
    # Ten minutes of a looping clip: far longer than the test waits.
    project = {
        "width": 320,
        "height": 180,
        "tracks": [
            {
                "id": "t0",
                "name": "loop",
                "controllerName": "video",
                "url": "/media/clip.mp4",
                "actions": [{"id": "a0", "start": 0, "end": 600, "loop": True, "x": 8}],
            }
        ],
    }
    async with Stack(
        tmp_path / "home", port=free_port(), database_url=db_url, log_path=tmp_path / "stack.log"
    ) as stack:
        creds = await stack.create_tenant("e2e")
        async with (
            Client(creds.api_url, creds.api_key) as client,
            Receiver(creds.webhook_secret) as receiver,
        ):
            job = await client.submit(
                {
                    "project": project,
                    "output": {"resolution": "320x180"},
                    "media": {"/media/clip.mp4": await client.upload(clip)},
                    "webhook_url": receiver.url,
                }
            )
            seen: list[str] = []
            async for event in client.events(job["id"]):
                seen.append(event["type"])
                if event["type"] == "job.progress" and event["data"].get("frames_done"):
                    canceled = await client.cancel(job["id"])
                    assert canceled["status"] == "canceled"
                    stopping = asyncio.get_running_loop().time()
            assert seen[-1] == "job.canceled", seen
            await asyncio.wait_for(receiver.got.wait(), timeout=30)
            # The render process ends within seconds and the attempt is recorded.
            conn = await db.connect(db_url)
            try:
                async with asyncio.timeout(20):
                    while True:
                        attempts = await jobs.list_attempts(conn, uuid.UUID(job["id"]))
                        if attempts and attempts[-1].finished_at is not None:
                            break
                        await asyncio.sleep(0.2)
            finally:
                await conn.close()
            view = await client.job(job["id"])
            took = asyncio.get_running_loop().time() - stopping
        stack.check()
    assert took < 15
    assert [a.attempt for a in attempts] == [1]  # not retried
    assert view["status"] == "canceled" and view["attempt"] == 1 and view["result"] is None
    assert receiver.received[0]["type"] == "job.canceled"
