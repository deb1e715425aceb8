"""One render attempt: load the job, fetch sources once, render, upload, record the result.

Exit codes (the launch contract): 0 done; 2 invalid project; 3 unreadable media;
75 transient (retry); 137 out of memory; anything else is an infrastructure failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import resource
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import structlog

from rendermill.common import db, errors, jobs, lifecycle, netguard, schemas, settings, telemetry
from rendermill.common import logging as rlog
from rendermill.common import tenants as tenants_repo
from rendermill.common.launch import (
    EXIT_BAD_MEDIA,
    EXIT_INFRA,
    EXIT_INVALID_PROJECT,
    EXIT_KILLED,
    EXIT_OK,
    EXIT_TRANSIENT,
)
from rendermill.common.project import model
from rendermill.common.schemas import JobStatus, Stage
from rendermill.common.store import Store, open_store, output_key
from rendermill.renderer import engine

log = rlog.get(__name__)
tracer = telemetry.tracer("rendermill.renderer")

CONTENT_TYPES = {
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mov": "video/quicktime",
    "gif": "image/gif",
}
# Share of overall progress each stage spans.
_BANDS = {Stage.FETCHING: (0.0, 0.05), Stage.RENDERING: (0.05, 0.95), Stage.UPLOADING: (0.95, 1.0)}


class Stopped(Exception):
    """The process was asked to stop (SIGTERM) while rendering."""


class Stalled(Exception):
    """The render made no progress for too long (a source that hangs the decoder)."""


class Progress:
    """Latest progress, written by the render thread, read by the reporter task."""

    def __init__(self, stop: threading.Event) -> None:
        self.stage = Stage.FETCHING
        self.done = 0
        self.total = 0
        self.message = "fetching sources"
        self.started = time.monotonic()
        self.stage_started = self.started
        self._stop = stop

    def set_stage(self, stage: Stage, message: str) -> None:
        self.stage, self.message = stage, message
        self.done = self.total = 0 if stage != Stage.RENDERING else self.done
        self.stage_started = time.monotonic()

    def on_frames(self, done: int, total: int) -> None:
        if self._stop.is_set():
            raise Stopped
        self.done, self.total = done, total

    def fraction(self) -> float:
        lo, hi = _BANDS.get(self.stage, (0.0, 1.0))
        within = self.done / self.total if self.total else 0.0
        return lo + (hi - lo) * within

    def text(self) -> str:
        if self.stage != Stage.RENDERING or not self.total:
            return self.message
        elapsed = time.monotonic() - self.stage_started
        eta = elapsed / self.done * (self.total - self.done) if self.done else None
        eta_text = f", about {eta:.0f} s left" if eta is not None else ""
        return f"rendering frame {self.done}/{self.total}{eta_text}"


class Attempt:
    def __init__(
        self,
        cfg: settings.Renderer,
        pool: asyncpg.Pool,
        store: Store,
        job_id: uuid.UUID,
        attempt: int,
    ) -> None:
        self.cfg = cfg
        self.pool = pool
        self.store = store
        self.job_id = job_id
        self.attempt = attempt
        self.stop_render = threading.Event()
        self.progress = Progress(self.stop_render)
        self.scratch_used = 0

    async def _report_loop(self) -> None:
        """Write progress (at most once per interval, only when it changed) and heartbeats;
        stop the render when the job moved on or the render stalls."""
        last: tuple[Any, ...] | None = None
        next_beat = 0.0
        last_change = time.monotonic()
        while True:
            p = self.progress
            state = (p.stage, p.done, p.total, p.message)
            now = time.monotonic()
            try:
                if state != last:
                    last, last_change = state, now
                    async with self.pool.acquire() as conn:
                        await jobs.report_progress(
                            conn,
                            self.job_id,
                            self.attempt,
                            stage=p.stage,
                            progress=p.fraction(),
                            frames_done=p.done,
                            frames_total=p.total,
                            message=p.text(),
                        )
                if now >= next_beat:
                    next_beat = now + self.cfg.heartbeat_interval
                    async with self.pool.acquire() as conn:
                        await jobs.heartbeat(conn, self.job_id, self.attempt)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                # Postgres restarting: keep rendering; the heartbeat resumes when it's back.
                log.warning("progress_write_failed", error=repr(exc))
            if p.stage == Stage.RENDERING and now - last_change > self.cfg.stall_timeout:
                self.stop_render.set()
                raise Stalled(f"no render progress for {self.cfg.stall_timeout:.0f} s")
            await asyncio.sleep(self.cfg.progress_interval)

    async def run(self, scratch: Path) -> schemas.JobStatus:
        """Render the job and record its result; returns the job's status.

        Whatever was stored is deleted again when the result is not recorded (the job
        was canceled or taken over while uploading, or recording failed): an output no
        job points at would never be served nor cleaned up.
        """
        stored: list[str] = []
        try:
            return await self._run(scratch, stored)
        except BaseException:
            for key in stored:
                with contextlib.suppress(OSError, errors.RendermillError):
                    await self.store.delete(key)
            raise

    async def _run(self, scratch: Path, stored: list[str]) -> schemas.JobStatus:
        async with self.pool.acquire() as conn:
            job = await jobs.get(conn, self.job_id)
        if job.status != JobStatus.RUNNING or job.attempt != self.attempt:
            log.warning("attempt_not_current", status=job.status.value, current=job.attempt)
            return job.status
        project = msgspec.convert(job.project, model.Project)
        output = msgspec.convert(job.output, schemas.OutputSpec)
        reporter = asyncio.create_task(self._report_loop())
        try:
            with tracer.start_as_current_span("fetch") as span:
                sources = await self.fetch(job, project, scratch / "sources")
                span.set_attribute("sources", len(sources))
            fmt = output.format
            out_path = scratch / f"output.{fmt}"
            frames = project.frame_count(output.fps)
            self.progress.set_stage(Stage.RENDERING, "rendering")
            with tracer.start_as_current_span(
                "render",
                attributes={
                    "frames": frames,
                    "format": output.format,
                    "resolution": output.resolution,
                    "fps": output.fps,
                },
            ) as span:
                started = time.perf_counter()
                threads = engine.Threads.of(self.cfg.cpus)
                work = asyncio.ensure_future(
                    asyncio.to_thread(
                        engine.render,
                        project,
                        sources,
                        output,
                        out_path,
                        on_progress=self.progress.on_frames,
                        threads=threads,
                        cache_dir=settings.cache_dir(self.cfg.cache_dir),
                    )
                )
                # The reporter ends only by failing (job moved on, or a stall): that wins.
                await asyncio.wait([work, reporter], return_when=asyncio.FIRST_COMPLETED)
                if reporter.done() and not work.done():
                    reporter.result()
                result = await work
                took = time.perf_counter() - started
                # This process renders one job: its peak is the render's, what a pod or
                # task running it must have room for.
                peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                span.set_attribute("copied", result.copied)
                span.set_attribute("realtime_factor", result.duration / took if took else 0.0)
                span.set_attribute("cpus", threads.cpus)
                span.set_attribute("peak_rss_mb", round(peak_mb, 1))
            log.info(
                "render_done",
                frames=result.frames,
                duration_ms=int(took * 1000),
                realtime_factor=round(result.duration / took, 2) if took else None,
                cpus=threads.cpus,
                peak_rss_mb=round(peak_mb, 1),
            )
            self.progress.set_stage(Stage.UPLOADING, "uploading the result")
            with tracer.start_as_current_span("upload") as span:
                key = output_key(str(job.tenant_id), str(job.id), f"output.{fmt}")
                digest = await asyncio.to_thread(_sha256, out_path)
                size = await self.store.put_file(key, out_path)
                stored.append(key)
                span.set_attribute("bytes", size)
                poster_key = None
                poster = out_path.with_suffix(".jpg")
                if output.poster is not None and poster.is_file():
                    poster_key = output_key(str(job.tenant_id), str(job.id), "poster.jpg")
                    await self.store.put_file(poster_key, poster)
                    stored.append(poster_key)
            record = {
                "object_key": key,
                "size_bytes": size,
                "duration": result.duration,
                "width": result.width,
                "height": result.height,
                "frames": result.frames,
                "sha256": digest,
                "content_type": CONTENT_TYPES.get(fmt, "application/octet-stream"),
                "copied": result.copied,
                "poster_key": poster_key,
                # For the scheduler's metrics; not part of what the API shows.
                "cpus": threads.cpus,
                "peak_rss_bytes": int(peak_mb * 1024 * 1024),
            }

            # Heartbeats go on while the result is recorded: see _record.
            return await self._record(record)
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter

    async def _record(self, record: dict[str, Any]) -> JobStatus:
        """Record ``record`` as the job's result.

        The output is rendered and stored: a database restarting now must not cost the
        render. Recording waits for it to come back (a SIGTERM meanwhile cancels the
        attempt, and the stored output is removed as for any failure); the caller keeps
        the heartbeats going, so that the scheduler finds the attempt alive when it can
        look again.
        """

        async def finish() -> JobStatus:
            async with self.pool.acquire() as conn:
                try:
                    await jobs.finish(
                        conn, self.job_id, JobStatus.SUCCEEDED, result=record, message="complete"
                    )
                except errors.Conflict:
                    # A try whose answer a broken connection swallowed may have been
                    # recorded: then this result is the job's, and its output must stay.
                    now = await jobs.get(conn, self.job_id)
                    if not _recorded(now, self.attempt, record):
                        raise
            return JobStatus.SUCCEEDED

        status = await lifecycle.through_outages(asyncio.Event(), "record_result", finish)
        assert status is not None  # the event is never set
        return status

    async def fetch(self, job: jobs.Job, project: model.Project, dest: Path) -> dict[str, Path]:
        """Each url the render needs, fetched once into ``dest``."""
        dest.mkdir(parents=True, exist_ok=True)
        out: dict[str, Path] = {}
        by_asset: dict[str, Path] = {}
        needed = [t for t in project.tracks if t.renders]
        for i, url in enumerate(dict.fromkeys(t.url for t in needed)):
            track = next(t for t in needed if t.url == url)
            local = dest / f"{i:03d}{_suffix(url)}"
            asset_id = job.media.get(url)
            if asset_id is not None and asset_id in by_asset:
                out[url] = by_asset[asset_id]  # several urls, one upload: one copy
                continue
            try:
                if asset_id is not None:
                    async with self.pool.acquire() as conn:
                        asset = await tenants_repo.get_asset(
                            conn, uuid.UUID(asset_id), job.tenant_id
                        )
                    self._reserve(asset.size, track, url)
                    local = local.with_suffix(Path(asset.name).suffix or local.suffix)
                    await self.store.get_file(asset.object_key, local)
                    await self._verify(asset, local, track, url)
                    by_asset[asset_id] = local
                elif url.startswith(("http://", "https://")):
                    await self._download(url, local, track)
                else:
                    raise errors.MediaError(
                        f"track {track.name or track.id!r}: {url!r} resolves to no media; "
                        "upload the file and map this url to it",
                        track=track.id,
                        url=url,
                    )
            except errors.NotFound as exc:
                raise errors.MediaError(
                    f"track {track.name or track.id!r}: the uploaded file for {url!r} is gone",
                    track=track.id,
                    url=url,
                ) from exc
            out[url] = local
        return out

    async def _verify(
        self, asset: tenants_repo.Asset, local: Path, track: model.Track, url: str
    ) -> None:
        """Check a fetched upload against the SHA-256 recorded for it (computed by the
        gateway, or declared by the client of a direct upload; none when a direct upload
        declared none): a file that changed in the store, or a direct upload whose bytes
        are not the ones its client hashed, fails the job instead of rendering."""
        recorded = asset.sha256.lower()
        if len(recorded) != 64:
            return
        digest = await asyncio.to_thread(_sha256, local)
        if digest != recorded:
            raise errors.MediaError(
                f"track {track.name or track.id!r}: the uploaded file for {url!r} is not the "
                f"one uploaded: its SHA-256 is {digest}, but {recorded} was recorded for "
                "it; upload the file again",
                track=track.id,
                url=url,
            )

    def _reserve(self, size: int, track: model.Track, url: str) -> None:
        """Count ``size`` bytes against the scratch limit; a job whose sources do not fit
        fails as invalid (it would never fit)."""
        self.scratch_used += size
        if self.scratch_used > self.cfg.max_scratch_bytes:
            raise errors.InvalidProject(
                [
                    errors.Problem(
                        "media",
                        f"the sources exceed the renderer's scratch limit of "
                        f"{self.cfg.max_scratch_bytes / 1e9:.1f} GB (at track "
                        f"{track.name or track.id!r}, {url!r})",
                    )
                ]
            )

    async def _download(self, url: str, local: Path, track: model.Track) -> None:
        # Imported here: most sources come from the store, and aiohttp is about a tenth
        # of the start-up of a render process, which runs one attempt.
        import aiohttp

        await netguard.check_url(
            url, allow_private=self.cfg.allow_private_sources, what="source url"
        )
        timeout = aiohttp.ClientTimeout(total=self.cfg.fetch_timeout, sock_read=30)
        size = 0
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url, allow_redirects=False) as resp,
            ):
                if resp.status >= 400:
                    raise errors.MediaError(
                        f"fetching {url} failed with HTTP {resp.status}", url=url
                    )
                with local.open("wb") as fh:
                    async for chunk in resp.content.iter_chunked(1 << 20):
                        size += len(chunk)
                        self._reserve(len(chunk), track, url)
                        if size > self.cfg.max_source_bytes:
                            raise errors.MediaError(
                                f"{url} is larger than the source limit", url=url
                            )
                        fh.write(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise errors.RetryLater(f"fetching {url} failed: {exc}") from exc


def _suffix(url: str) -> str:
    tail = url.split("?", 1)[0].rsplit("/", 1)[-1]
    suffix = Path(tail).suffix
    return suffix if 1 < len(suffix) <= 6 else ""


def _recorded(job: jobs.Job, attempt: int, record: dict[str, Any]) -> bool:
    """Whether ``job`` already holds ``record`` as the result of ``attempt``."""
    result = job.result or {}
    return (
        job.status == JobStatus.SUCCEEDED
        and job.attempt == attempt
        and result.get("object_key") == record["object_key"]
        and result.get("sha256") == record["sha256"]
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


async def _fail_job(
    pool: asyncpg.Pool, job_id: uuid.UUID, code: str, message: str, detail: Any
) -> None:
    async with pool.acquire() as conn:
        with contextlib.suppress(errors.Conflict):
            await jobs.finish(
                conn,
                job_id,
                JobStatus.FAILED,
                error=jobs.error_info(code, message, detail),
                message=message,
            )


async def main(cfg: settings.Renderer) -> int:
    """Run one attempt; returns the process exit code."""
    job_id = uuid.UUID(cfg.job_id)
    structlog.contextvars.bind_contextvars(job_id=str(job_id), attempt=cfg.attempt)
    stop = asyncio.Event()
    lifecycle.install_signal_handlers(stop)
    scratch_root = Path(cfg.scratch_dir) if cfg.scratch_dir else None
    if scratch_root:
        scratch_root.mkdir(parents=True, exist_ok=True)
    ctx = telemetry.context_from(os.environ.get("TRACEPARENT"))
    pool_dsn = db.dsn(cfg)
    async with db.pool(pool_dsn, min_size=1, max_size=3) as pool, open_store(cfg) as store:
        attempt = Attempt(cfg, pool, store, job_id, cfg.attempt)
        scratch = Path(tempfile.mkdtemp(prefix=f"rendermill-{job_id}-", dir=scratch_root))
        try:
            with tracer.start_as_current_span("render_attempt", context=ctx):
                work = asyncio.create_task(attempt.run(scratch))
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait([work, stopper], return_when=asyncio.FIRST_COMPLETED)
                if not work.done():
                    log.warning("render_stopping")
                    attempt.stop_render.set()
                    with contextlib.suppress(Stopped, asyncio.CancelledError):
                        await asyncio.wait_for(work, timeout=10)
                    return EXIT_TRANSIENT
                stopper.cancel()
                work.result()
            return EXIT_OK
        except errors.InvalidProject as exc:
            log.warning("render_invalid_project", error=exc.message)
            await asyncio.shield(_fail_job(pool, job_id, exc.code, exc.message, exc.detail))
            return EXIT_INVALID_PROJECT
        except errors.MediaError as exc:
            log.warning("render_media_error", error=exc.message)
            await asyncio.shield(_fail_job(pool, job_id, exc.code, exc.message, exc.detail))
            return EXIT_BAD_MEDIA
        except errors.NotFound as exc:
            # Nearly always a renderer pointed at another database than the scheduler's
            # (a task definition without RENDERMILL_DATABASE_URL runs on an empty one).
            log.error(
                "render_job_not_found",
                error=exc.message,
                database=db.describe(pool_dsn),
                hint="RENDERMILL_DATABASE_URL must name the scheduler's database",
            )
            return EXIT_INFRA
        except errors.Conflict as exc:
            # The job moved on (canceled, or another attempt took over): nothing to record.
            log.warning("render_superseded", error=exc.message)
            return EXIT_OK
        except Stalled as exc:
            log.error("render_stalled", error=str(exc))
            return EXIT_TRANSIENT
        except MemoryError:
            log.error("render_out_of_memory")
            return EXIT_KILLED
        except (errors.RetryLater, OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("render_transient_failure", error=repr(exc))
            return EXIT_TRANSIENT
        except Exception:
            log.exception("render_crashed")
            return EXIT_INFRA
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
