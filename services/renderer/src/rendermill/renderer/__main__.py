"""``python -m rendermill.renderer --job ID [--attempt N]``: one render attempt."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys


def cli() -> int:
    # One process per attempt. Its imports (numpy, PyAV, the database and HTTP clients,
    # OpenTelemetry) make about 55,000 objects that live as long as it does: collecting
    # while they are made finds nothing, and once frozen no full collection (40 ms each
    # here) walks them again. About a tenth of the start-up.
    gc.disable()
    try:
        from rendermill.common import logging, settings, telemetry
        from rendermill.renderer.service import main
    finally:
        gc.freeze()
        gc.enable()
    parser = argparse.ArgumentParser(prog="python -m rendermill.renderer")
    parser.add_argument("--job", help="job id (default: $RENDERMILL_JOB_ID)")
    parser.add_argument("--attempt", type=int, help="attempt number (default: $RENDERMILL_ATTEMPT)")
    args = parser.parse_args()
    overrides: dict[str, object] = {}
    if args.job:
        overrides["job_id"] = args.job
    if args.attempt is not None:
        overrides["attempt"] = args.attempt
    cfg = settings.load(settings.Renderer, overrides=overrides)
    if not cfg.job_id:
        parser.error("no job id: pass --job or set RENDERMILL_JOB_ID")
    logging.setup(cfg.log_level, cfg.log_format, "renderer")
    telemetry.setup("rendermill-renderer")
    try:
        return asyncio.run(main(cfg))
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    rc = cli()
    sys.stdout.flush()
    sys.stderr.flush()
    # A render thread stuck inside the decoder cannot be joined; exit without waiting.
    os._exit(rc)
