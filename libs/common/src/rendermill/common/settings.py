"""Frozen settings objects built from ``RENDERMILL_*`` environment variables.

Each service has one Struct (a subclass of ``Common``) and reads it once in ``__main__``;
the object is then passed down explicitly. Field ``foo_bar`` comes from
``RENDERMILL_FOO_BAR``; values are converted to the field's type (ints, floats, bools).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import msgspec

from rendermill.common import errors

PREFIX = "RENDERMILL_"
_ORIGIN = re.compile(r"https?://[^/\s:]+(:\d+)?")


class Common(msgspec.Struct, frozen=True, kw_only=True):
    """What every process needs: where state lives and which adapter serves each port."""

    # Postgres DSN; unset means the embedded server under ``home`` (DATABASE_URL works too).
    database_url: str | None = None
    # Directory for embedded state: the embedded Postgres data, the fs store, secrets.
    home: str = ".rendermill"
    queue: Literal["postgres", "sqs"] = "postgres"
    # With queue=sqs: the queue's URL (give it a redrive policy to a dead-letter queue),
    # its region, and an endpoint for AWS-compatible servers (credentials come from the
    # usual AWS environment variables, profile or role).
    sqs_queue_url: str = ""
    # With queue=sqs: a queue of its own for high-tier and for low-tier jobs (each with its
    # redrive policy), polled in tier order; a tier without one shares sqs_queue_url.
    sqs_queue_url_high: str = ""
    sqs_queue_url_low: str = ""
    aws_region: str = "us-east-1"
    aws_endpoint_url: str | None = None
    # Priority tiers: every this many seconds a message has waited counts as one tier up
    # against later messages, so that a lower tier is overtaken by newer work for at most
    # this long per tier step, never forever. Gateway and scheduler must agree on it.
    priority_aging_seconds: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    store: Literal["fs", "s3"] = "fs"
    store_path: str | None = None
    # With store=s3: the bucket (region and endpoint as for SQS below).
    s3_bucket: str = ""
    # Where renderer attempts run: subprocesses here, or Fargate tasks (the ecs_* settings).
    launcher: Literal["local", "ecs"] = "local"
    # HMAC key that signs download URLs; shared by gateway and renderer.
    url_signing_key: str = ""
    # Where clients reach the gateway; signed URLs are built on it.
    public_url: str = "http://127.0.0.1:8080"
    log_level: str = "info"
    log_format: Literal["json", "console"] = "json"

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser().resolve()

    @property
    def store_root(self) -> Path:
        return Path(self.store_path).resolve() if self.store_path else self.home_path / "store"


class Gateway(Common, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    max_upload_bytes: int = 2 * 1024**3
    # Direct uploads (the client PUTs parts straight to the store): parts of this size
    # (raised to the store's minimum, 5 MiB on S3), a file no larger in one PUT; the plan
    # and its URLs expire after direct_upload_ttl_seconds; uploads that ended without an
    # asset are cleaned up by a sweep every upload_sweep_seconds.
    upload_part_bytes: int = 64 * 1024**2
    direct_upload_ttl_seconds: int = 6 * 3600
    upload_sweep_seconds: float = 60.0
    max_project_bytes: int = 5 * 1024**2
    download_ttl_seconds: int = 24 * 3600
    # The seed's React hook polls /api/video/status/{jobId} without credentials; the job id
    # (a random UUID) is then the capability. Set false to require the API key there too.
    seed_status_public: bool = True
    # Webhook targets on loopback/private networks are refused unless this is set (local stacks).
    allow_private_webhooks: bool = False
    max_output_seconds: float = 3 * 3600
    # Requests a second one tenant may make through this gateway (bursts of two seconds'
    # worth pass); 0: no limit.
    rate_limit: float = 200.0
    # Outputs of jobs finished this many days ago, and uploads this old that no unfinished
    # job plays, are deleted (see gateway.retention); 0: kept for ever.
    retention_days: float = 0.0
    # Web origins (comma-separated, e.g. "https://app.example.com,http://localhost:3000",
    # or "*") whose pages may call the API from the browser; empty: none (same origin or
    # server-side callers only).
    cors_origins: str = ""

    def cors_origin_list(self) -> list[str]:
        """``cors_origins`` as a list; raises InvalidInput for an entry that is not an
        origin (scheme://host[:port], no path)."""
        out = []
        for raw in self.cors_origins.split(","):
            origin = raw.strip().rstrip("/")
            if not origin:
                continue
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise errors.InvalidInput(
                    f"RENDERMILL_CORS_ORIGINS: {raw.strip()!r} is not an origin; write "
                    "scheme://host[:port] such as https://app.example.com, or *"
                )
            out.append(origin)
        return out


class Scheduler(Common, frozen=True, kw_only=True):
    # Serve Prometheus metrics on this port (127.0.0.1 unless metrics_host says otherwise).
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    concurrency: int = 2
    visibility_timeout: float = 60.0
    poll_interval: float = 1.0
    max_attempts: int = 3
    retry_base_delay: float = 2.0
    # How long a job may wait for its launcher to find room (launches refused for
    # capacity, which do not count as attempts) before it fails.
    launch_wait_seconds: float = 3600.0
    # Kill a render whose heartbeat is older than this.
    heartbeat_timeout: float = 120.0
    # On SIGTERM, running renders get this long to finish before they are stopped.
    drain_seconds: float = 30.0
    # At most this many renders of one tenant at once (0: no limit but concurrency), so
    # that one tenant's burst does not hold every slot; its other jobs wait their turn.
    tenant_concurrency: int = 0
    # With launcher=ecs (AWS Fargate; region and endpoint as for SQS): the cluster, the
    # renderer's task definition (family, family:revision or ARN) and the name of its
    # container, the awsvpc network (comma-separated ids), the size classes attempts go
    # through after out-of-memory exits (NAME=CPU/MEMORY in CPU units, 1024 per vCPU, and
    # MiB, smallest first), and how often running tasks are described. Scheduler-only
    # settings: they never travel to the renderer.
    ecs_cluster: str = ""
    ecs_task_definition: str = ""
    ecs_container: str = "renderer"
    ecs_subnets: str = ""
    ecs_security_groups: str = ""
    ecs_assign_public_ip: bool = False
    ecs_size_classes: str = "small=1024/2048,medium=2048/4096,large=4096/8192"
    ecs_poll_interval: float = 5.0


class Renderer(Common, frozen=True, kw_only=True):
    job_id: str = ""
    attempt: int = 0
    scratch_dir: str | None = None
    progress_interval: float = 1.0
    heartbeat_interval: float = 5.0
    # Remote (http/https) sources: refused on private networks unless allowed; bounded.
    allow_private_sources: bool = False
    max_source_bytes: int = 4 * 1024**3
    fetch_timeout: float = 300.0
    # Sources fetched for one job may not exceed this (the scratch directory's bound).
    max_scratch_bytes: int = 20 * 1024**3
    # A render with no new frame for this long is stopped (exit 75) rather than hanging.
    stall_timeout: float = 120.0
    # CPUs one render may keep busy: its decoder, scaler and encoder threads, and so its
    # memory, are sized by it. 0: those the process may run on, within its cgroup quota
    # (a container without a CPU limit sees every core of its node: set it there).
    cpus: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    # What renders on this machine keep for later ones (the tables HDR and wide-gamut
    # video is mapped through, 7.4 MB each, about 3 CPU seconds to make); unset means
    # user_cache_dir(). One that cannot be written costs only the time to make them.
    cache_dir: str | None = None


def user_cache_dir() -> Path:
    """The cache directory rendermill uses unless told: ``$XDG_CACHE_HOME/rendermill``,
    else ``~/.cache/rendermill``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "rendermill" if base else Path.home() / ".cache" / "rendermill"


def cache_dir(given: str | None = None) -> Path:
    """The cache directory renders use: ``given``, else ``RENDERMILL_CACHE_DIR``, else
    user_cache_dir()."""
    return Path(given or os.environ.get(PREFIX + "CACHE_DIR") or user_cache_dir())


class Notifier(Common, frozen=True, kw_only=True):
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    poll_interval: float = 2.0
    timeout: float = 10.0
    max_attempts: int = 5
    retry_base_delay: float = 1.0
    allow_private_webhooks: bool = False
    # Messages given up on in a row before a registered endpoint is disabled.
    endpoint_disable_after: int = 5


S = TypeVar("S", bound=Common)


def load(
    cls: type[S],
    env: Mapping[str, str] | None = None,
    *,
    overrides: Mapping[str, object] | None = None,
) -> S:
    """Build ``cls`` from the environment (plus explicit overrides, which win).

    Raises errors.InvalidInput naming the variable when a value has the wrong type.
    """
    env = os.environ if env is None else env
    raw: dict[str, object] = {}
    for name in cls.__struct_fields__:
        key = PREFIX + name.upper()
        if key in env:
            raw[name] = env[key]
    if "database_url" not in raw and env.get("DATABASE_URL"):
        raw["database_url"] = env["DATABASE_URL"]
    raw.update(overrides or {})
    try:
        return msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        # msgspec says "<problem> - at `$.field`": name the variable to fix instead.
        problem, _, at = str(exc).rpartition(" - at `$.")
        field = at.rstrip("`")
        if problem and field in cls.__struct_fields__:
            raise errors.InvalidInput(f"bad setting {PREFIX}{field.upper()}: {problem}") from exc
        raise errors.InvalidInput(f"bad setting ({PREFIX}…): {exc}") from exc


def to_env(settings: Common) -> dict[str, str]:
    """The environment variables that reproduce the Common part of ``settings``."""
    out: dict[str, str] = {}
    for name in Common.__struct_fields__:
        value = getattr(settings, name)
        if value is not None:
            out[PREFIX + name.upper()] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
    return out
