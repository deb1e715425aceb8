"""One render attempt (the renderer service) against real Postgres, store and media."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp import web

from rendermill.cli import synth
from rendermill.common import db, errors, jobs, launch, schemas, settings, tenants
from rendermill.common.project import parse
from rendermill.common.schemas import JobStatus
from rendermill.common.store import fs, source_key
from rendermill.common.testing import Outage
from rendermill.renderer import service


def _project(url: str, end: float = 2.0) -> dict[str, Any]:
    raw = {
        "width": 320,
        "height": 180,
        "tracks": [
            {
                "name": "clip",
                "controllerName": "video",
                "url": url,
                "actions": [{"start": 0, "end": end, "fit": "fill", "loop": True}],
            }
        ],
    }
    return dict(msgspec.to_builtins(parse.from_json(raw)))


async def _job(
    pool: asyncpg.Pool,
    store: fs.FsStore,
    media_file: Path | None,
    url: str,
    end: float = 2.0,
    *,
    sha256: str | None = None,
) -> tuple[jobs.Job, tenants.Tenant]:
    async with pool.acquire() as conn:
        tenant, _ = await tenants.create(conn, "t")
        media: dict[str, str] = {}
        if media_file is not None:
            asset_id = uuid.uuid4()
            key = source_key(str(tenant.id), str(asset_id), media_file.name)
            size = await store.put_file(key, media_file)
            await tenants.insert_asset(
                conn,
                asset_id=asset_id,
                tenant_id=tenant.id,
                object_key=key,
                name=media_file.name,
                content_type="video/mp4",
                size=size,
                sha256=sha256 if sha256 is not None else service._sha256(media_file),
            )
            media[url] = str(asset_id)
        job, _ = await jobs.create(
            conn,
            tenant_id=tenant.id,
            project=_project(url, end),
            output=schemas.OutputSpec(resolution="320x180", fps=30, poster=0.5),
            media=media,
        )
        await jobs.start_attempt(conn, job.id, 1)
        await jobs.insert_attempt(conn, job.id, 1, "local")
    return job, tenant


async def _attempt(
    pool: asyncpg.Pool,
    cfg: settings.Renderer,
    media_file: Path | None,
    url: str,
    end: float = 2.0,
    *,
    sha256: str | None = None,
    store: fs.FsStore | None = None,
) -> tuple[jobs.Job, tenants.Tenant, service.Attempt]:
    """A job of one track playing ``media_file`` at ``url``, and its first attempt, with
    ``store`` (by default the one ``cfg`` names)."""
    store = store or _store(cfg)
    job, tenant = await _job(pool, store, media_file, url, end, sha256=sha256)
    return job, tenant, service.Attempt(cfg, pool, store, job.id, 1)


def _scratch(tmp: Path) -> Path:
    """A fresh scratch directory of one attempt."""
    scratch = tmp / "scratch" / "one"
    scratch.mkdir(parents=True)
    return scratch


def _store(cfg: settings.Renderer) -> fs.FsStore:
    """The filesystem store ``cfg`` names, as the renderer opens it."""
    return fs.FsStore(cfg.store_root, signing_key="k", public_url="http://x")


def _cfg(db_url: str, tmp: Path, **extra: object) -> settings.Renderer:
    return settings.load(
        settings.Renderer,
        env={},
        overrides={
            "database_url": db_url,
            "store_path": str(tmp / "store"),
            "scratch_dir": str(tmp / "scratch"),
            "url_signing_key": "k",
            "progress_interval": 0.2,
            **extra,
        },
    )


async def test_attempt_renders_uploads_and_records_the_result(
    pool: asyncpg.Pool, db_url: str, tmp_path: Path
) -> None:
    cfg = _cfg(db_url, tmp_path)
    clip = synth.make_video(tmp_path / "clip.mp4", color=(0, 200, 0), duration=1.0)
    job, tenant, attempt = await _attempt(pool, cfg, clip, "blob:editor/1", end=3.0)
    assert await attempt.run(_scratch(tmp_path)) == JobStatus.SUCCEEDED
    async with pool.acquire() as conn:
        done = await jobs.get(conn, job.id)
        events = await jobs.events_after(conn, job.id, 0)
    assert done.status == JobStatus.SUCCEEDED and done.result is not None
    result = done.result
    assert result["frames"] == 90 and (result["width"], result["height"]) == (320, 180)
    assert result["object_key"] == f"outputs/{tenant.id}/{job.id}/output.mp4"
    assert (cfg.store_root / result["object_key"]).stat().st_size == result["size_bytes"]
    assert result["poster_key"] and (cfg.store_root / result["poster_key"]).is_file()
    progress = [e.data for e in events if e.type == "job.progress"]
    # Written at most once per interval, so short stages may not show; order always holds.
    assert progress and {p["stage"] for p in progress} <= {"fetching", "rendering", "uploading"}
    fractions = [p["progress"] for p in progress]
    assert fractions == sorted(fractions)
    assert [e.type for e in events][-1] == "job.succeeded"


async def test_an_hdr_clip_s_table_is_kept_in_the_cache_dir(
    pool: asyncpg.Pool, db_url: str, tmp_path: Path
) -> None:
    """RENDERMILL_CACHE_DIR: the table an HLG phone clip is mapped through is kept there
    for the next render on the machine."""
    cache = tmp_path / "cache"
    cfg = _cfg(db_url, tmp_path, cache_dir=str(cache))
    clip = synth.make_wide_video(tmp_path / "hlg.mp4", [(220, 40, 90)], "hlg", duration=0.5)
    _, _, attempt = await _attempt(pool, cfg, clip, "blob:editor/hlg", end=0.5)
    assert await attempt.run(_scratch(tmp_path)) == JobStatus.SUCCEEDED
    assert [p.name.endswith("-18-9-1-1.cube") for p in cache.iterdir()] == [True]


async def test_cancel_during_upload_leaves_no_output_behind(
    pool: asyncpg.Pool, db_url: str, tmp_path: Path
) -> None:
    cfg = _cfg(db_url, tmp_path)

    class CancelingStore(fs.FsStore):
        """Stores the output, and the client cancels the job right then."""

        async def put_file(self, key: str, path: Path) -> int:
            size = await super().put_file(key, path)
            if key.endswith("output.mp4"):
                async with pool.acquire() as conn:
                    await jobs.finish(conn, job.id, JobStatus.CANCELED, expect=(JobStatus.RUNNING,))
            return size

    store = CancelingStore(cfg.store_root, signing_key="k", public_url="http://x")
    clip = synth.make_video(tmp_path / "clip.mp4", duration=1.0)
    job, tenant, attempt = await _attempt(pool, cfg, clip, "blob:editor/1", 1.0, store=store)
    with pytest.raises(errors.Conflict):
        await attempt.run(_scratch(tmp_path))
    # Output and poster were both stored, then deleted when the result could not be
    # recorded.
    outputs = cfg.store_root / "outputs" / str(tenant.id) / str(job.id)
    assert outputs.is_dir() and not [p for p in outputs.rglob("*") if p.is_file()]
    async with pool.acquire() as conn:
        assert (await jobs.get(conn, job.id)).status == JobStatus.CANCELED


async def test_unresolvable_url_fails_as_media_error(
    pool: asyncpg.Pool, db_url: str, tmp_path: Path
) -> None:
    cfg = _cfg(db_url, tmp_path)
    _, _, attempt = await _attempt(pool, cfg, None, "/not/uploaded.mp4")
    with pytest.raises(errors.MediaError, match="resolves to no media"):
        await attempt.run(tmp_path)


async def test_sources_over_the_scratch_limit_fail_as_invalid(
    pool: asyncpg.Pool, db_url: str, tmp_path: Path
) -> None:
    cfg = _cfg(db_url, tmp_path, max_scratch_bytes=1000)
    clip = synth.make_video(tmp_path / "clip.mp4", duration=1.0)
    _, _, attempt = await _attempt(pool, cfg, clip, "/a.mp4")
    with pytest.raises(errors.InvalidProject, match="scratch limit"):
        await attempt.run(tmp_path)


async def test_sigterm_mid_render_exits_transient_and_cleans_scratch(
    pool: asyncpg.Pool, db_url: str, tmp_path: Path
) -> None:
    cfg = _cfg(db_url, tmp_path)
    store = _store(cfg)
    clip = synth.make_video(tmp_path / "clip.mp4", duration=1.0, size=(640, 360))
    job, _ = await _job(pool, store, clip, "/a.mp4", end=600.0)
    env = {
        **os.environ,
        **settings.to_env(cfg),
        "RENDERMILL_SCRATCH_DIR": str(tmp_path / "scratch"),
        "RENDERMILL_PROGRESS_INTERVAL": "0.2",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rendermill.renderer",
        "--job",
        str(job.id),
        "--attempt",
        "1",
        env=env,
    )
    async with asyncio.timeout(60):
        while True:  # wait until frames are being rendered
            async with pool.acquire() as conn:
                current = await jobs.get(conn, job.id)
            if current.frames_done > 0:
                break
            await asyncio.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    rc = await asyncio.wait_for(proc.wait(), timeout=30)
    assert rc == launch.EXIT_TRANSIENT
    async with pool.acquire() as conn:
        assert (await jobs.get(conn, job.id)).status == JobStatus.RUNNING  # for the scheduler
    assert list((tmp_path / "scratch").iterdir()) == []


async def test_a_job_missing_from_the_database_says_which_database_to_check(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A renderer pointed at another database than the scheduler's finds no job: an
    infrastructure failure whose log line names the database (without credentials)."""
    cfg = _cfg(db_url, tmp_path, job_id=str(uuid.uuid4()), attempt=1)
    assert await service.main(cfg) == launch.EXIT_INFRA
    out = capsys.readouterr().out
    assert "render_job_not_found" in out and "RENDERMILL_DATABASE_URL" in out
    assert "render_crashed" not in out
    assert db.describe("postgresql://u:secret@db.internal:6543/render") == (
        "postgresql://db.internal:6543/render"
    )


async def test_an_upload_that_is_not_the_file_recorded_fails_as_media_error(
    pool: asyncpg.Pool, db_url: str, tmp_path: Path
) -> None:
    # A direct upload whose client declared another file's SHA-256 (or a stored file that
    # changed since): the render fails naming the track, and renders nothing.
    cfg = _cfg(db_url, tmp_path)
    clip = synth.make_video(tmp_path / "clip.mp4", duration=1.0)
    _, _, attempt = await _attempt(pool, cfg, clip, "blob:editor/1", 1.0, sha256="ab" * 32)
    with pytest.raises(errors.MediaError, match=r"track 'clip'.*is not the one uploaded"):
        await attempt.run(_scratch(tmp_path))


async def test_an_upload_recorded_without_a_digest_is_rendered(
    pool: asyncpg.Pool, db_url: str, tmp_path: Path
) -> None:
    # A direct upload whose client declared no SHA-256 has none to check against.
    cfg = _cfg(db_url, tmp_path)
    clip = synth.make_video(tmp_path / "clip.mp4", duration=1.0)
    _, _, attempt = await _attempt(pool, cfg, clip, "blob:editor/1", 1.0, sha256="")
    assert await attempt.run(_scratch(tmp_path)) == JobStatus.SUCCEEDED


@pytest.fixture
async def media_site(tmp_path: Path) -> AsyncIterator[str]:
    """An HTTP server on this machine serving a clip at /clip.mp4 (404 elsewhere)."""
    clip = synth.make_video(tmp_path / "served.mp4", color=(0, 0, 200), duration=1.0)

    async def serve(_: web.Request) -> web.FileResponse:
        return web.FileResponse(clip)

    app = web.Application()
    app.router.add_get("/clip.mp4", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_an_http_source_is_fetched_and_rendered(
    pool: asyncpg.Pool, db_url: str, tmp_path: Path, media_site: str
) -> None:
    cfg = _cfg(db_url, tmp_path, allow_private_sources=True)
    job, _, attempt = await _attempt(pool, cfg, None, f"{media_site}/clip.mp4", end=1.0)
    assert await attempt.run(_scratch(tmp_path)) == JobStatus.SUCCEEDED
    async with pool.acquire() as conn:
        done = await jobs.get(conn, job.id)
    assert done.result is not None and done.result["frames"] == 30


@pytest.mark.parametrize(
    ("path", "extra", "error", "match"),
    [
        ("/gone.mp4", {"allow_private_sources": True}, errors.MediaError, "failed with HTTP 404"),
        (
            "/clip.mp4",
            {"allow_private_sources": True, "max_source_bytes": 1000},
            errors.MediaError,
            "larger than the source limit",
        ),
        ("/clip.mp4", {}, errors.InvalidInput, "non-public address"),
    ],
)
async def test_an_http_source_that_cannot_be_used_fails_naming_it(
    pool: asyncpg.Pool,
    db_url: str,
    tmp_path: Path,
    media_site: str,
    path: str,
    extra: dict[str, object],
    error: type[Exception],
    match: str,
) -> None:
    cfg = _cfg(db_url, tmp_path, **extra)
    _, _, attempt = await _attempt(pool, cfg, None, f"{media_site}{path}", end=1.0)
    with pytest.raises(error, match=match):
        await attempt.run(_scratch(tmp_path))


async def test_a_database_outage_after_the_upload_does_not_cost_the_render(
    pool: asyncpg.Pool, db_url: str, outage: Outage, tmp_path: Path
) -> None:
    # The attempt reaches PostgreSQL through a proxy, cut as soon as the output is
    # stored and opened again 2 s later: the result is recorded then, not lost.
    cfg = _cfg(db_url, tmp_path)
    clip = synth.make_video(tmp_path / "clip.mp4", color=(0, 200, 0), duration=1.0)
    loop = asyncio.get_running_loop()
    outages: list[float] = []

    class CutAfterOutput(fs.FsStore):
        async def put_file(self, key: str, path: Path) -> int:
            size = await super().put_file(key, path)
            if key.endswith("output.mp4"):
                await outage.cut()
                outages.append(loop.time())
                loop.call_later(2.0, lambda: asyncio.ensure_future(outage.restore()))
            return size

    store = CutAfterOutput(cfg.store_root, signing_key="k", public_url="http://x")
    job, _ = await _job(pool, store, clip, "blob:editor/1")
    async with db.pool(outage.dsn, max_size=3) as proxied:
        attempt = service.Attempt(cfg, proxied, store, job.id, 1)
        assert await attempt.run(_scratch(tmp_path)) == JobStatus.SUCCEEDED
    assert outages and loop.time() - outages[0] >= 2.0
    async with pool.acquire() as conn:
        done = await jobs.get(conn, job.id)
    assert done.status == JobStatus.SUCCEEDED and done.result is not None
    assert (cfg.store_root / done.result["object_key"]).is_file()


async def test_a_result_recorded_by_a_try_whose_answer_was_lost_keeps_its_output(
    pool: asyncpg.Pool, db_url: str, tmp_path: Path
) -> None:
    # The state a broken connection leaves when it drops between COMMIT and its answer:
    # the result is recorded, the attempt does not know it. Recording again must find
    # it there, not take the job for superseded and delete the output it points at.
    cfg = _cfg(db_url, tmp_path)
    clip = synth.make_video(tmp_path / "clip.mp4", color=(0, 200, 0), duration=1.0)

    class RecordedBehindItsBack(fs.FsStore):
        async def put_file(self, key: str, path: Path) -> int:
            size = await super().put_file(key, path)
            if key.endswith("output.mp4"):
                async with pool.acquire() as conn:
                    result = {"object_key": key, "sha256": service._sha256(path)}
                    await jobs.finish(conn, job.id, JobStatus.SUCCEEDED, result=result)
            return size

    store = RecordedBehindItsBack(cfg.store_root, signing_key="k", public_url="http://x")
    job, _ = await _job(pool, store, clip, "blob:editor/1")
    attempt = service.Attempt(cfg, pool, store, job.id, 1)
    assert await attempt.run(_scratch(tmp_path)) == JobStatus.SUCCEEDED
    async with pool.acquire() as conn:
        done = await jobs.get(conn, job.id)
    assert done.status == JobStatus.SUCCEEDED and done.result is not None
    assert (cfg.store_root / done.result["object_key"]).is_file()
