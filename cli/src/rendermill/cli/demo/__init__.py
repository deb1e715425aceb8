"""``rendermill demo``: the bundled demo project rendered through the real stack."""

from __future__ import annotations

import asyncio
import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

import av
from aiohttp import web

from rendermill.cli import progress, synth
from rendermill.cli.client import Client
from rendermill.cli.stack import Stack, free_port
from rendermill.common import webhooks

MEDIA: dict[str, tuple[str, dict[str, Any]]] = {
    "/static/editor/intro.mp4": (
        "intro.mp4",
        {
            "kind": "video",
            "color": (40, 90, 200),
            "size": (1280, 720),
            "duration": 4.0,
            "tone_hz": 330.0,
        },
    ),
    "/static/editor/city.mp4": (
        "city.mp4",
        {
            "kind": "video",
            "color": (230, 140, 30),
            "size": (1280, 720),
            "duration": 4.0,
            "tone_hz": 440.0,
        },
    ),
    "/static/editor/pip.mp4": (
        "pip.mp4",
        {
            "kind": "video",
            "color": (30, 200, 90),
            "size": (320, 180),
            "duration": 5.0,
            "counter": True,
        },
    ),
    "/static/editor/music.m4a": (
        "music.m4a",
        {"kind": "audio", "tone_hz": 220.0, "duration": 8.0},
    ),
}


def project() -> dict[str, Any]:
    text = resources.files(__name__).joinpath("project.json").read_text("utf-8")
    return dict(json.loads(text))


def make_media(dest: Path) -> dict[str, Path]:
    """Generate the demo's source files into ``dest``; returns url -> path."""
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for url, (name, spec) in MEDIA.items():
        opts = dict(spec)
        kind = opts.pop("kind")
        path = dest / name
        if not path.exists():
            if kind == "video":
                synth.make_video(path, **opts)
            else:
                synth.make_audio(path, **opts)
        out[url] = path
    return out


class Receiver:
    """A local webhook receiver that checks every signature it gets."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.received: list[dict[str, Any]] = []
        self.got = asyncio.Event()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        webhooks.verify(self.secret, dict(request.headers), body)  # raises on a bad signature
        self.received.append(json.loads(body))
        self.got.set()
        return web.Response(status=204)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner:
            await self._runner.cleanup()


async def run(home: Path, out: Path, *, port: int, resolution: str, fps: int) -> int:
    started = time.perf_counter()
    print(f"rendermill demo: starting the stack in {home} (embedded Postgres, fs store)")
    async with Stack(home, port=port, log_path=home / "demo-stack.log") as stack:
        creds = await stack.create_tenant("demo")
        media = await asyncio.to_thread(make_media, home / "demo-media")
        async with (
            Client(creds.api_url, creds.api_key) as client,
            Receiver(creds.webhook_secret) as receiver,
        ):
            assets = {url: await client.upload(path) for url, path in media.items()}
            job = await client.submit(
                {
                    "project": project(),
                    "output": {"format": "mp4", "resolution": resolution, "fps": fps},
                    "media": assets,
                    "webhook_url": receiver.url,
                }
            )
            print(f"job {job['id']} accepted; following {creds.api_url}{job['events_url']}")
            bar = progress.bar(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% {postfix}")
            final: dict[str, Any] = {}
            async for event in client.events(job["id"]):
                data = event["data"]
                bar.n = round(data["progress"] * 100)
                bar.set_postfix_str(f"{data['stage']}: {data['message']}"[:60])
                final = data
            bar.close()
            if final.get("status") != "succeeded":
                err = final.get("error") or {}
                print(f"render failed: {err.get('message', final.get('status'))}")
                print(f"service logs: {home / 'demo-stack.log'}")
                return 1
            view = await client.job(job["id"])
            size = await client.download(view["result"]["download_url"], out)
            try:
                await asyncio.wait_for(receiver.got.wait(), timeout=30)
                hook = f"received and verified ({receiver.received[0]['type']})"
            except TimeoutError:
                hook = "not received within 30 s"
    with av.open(str(out)) as container:
        v = container.streams.video[0]
        a = container.streams.audio[0] if container.streams.audio else None
        duration = float(container.duration or 0) / 1_000_000
        print(
            f"wrote {out} ({size / 1e6:.2f} MB): {v.codec_context.width}x{v.codec_context.height} "
            f"{v.codec_context.name}, {duration:.2f} s"
            + (f", audio {a.codec_context.name} {a.codec_context.sample_rate} Hz" if a else "")
        )
    print(f"webhook: {hook}; total {time.perf_counter() - started:.1f} s")
    return 0
