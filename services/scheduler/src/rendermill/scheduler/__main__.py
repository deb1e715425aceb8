"""``python -m rendermill.scheduler``"""

from __future__ import annotations

import asyncio
import sys

from rendermill.common import logging, settings, telemetry
from rendermill.scheduler.service import main

if __name__ == "__main__":
    cfg = settings.load(settings.Scheduler)
    logging.setup(cfg.log_level, cfg.log_format, "scheduler")
    telemetry.setup("rendermill-scheduler")
    rc = asyncio.run(main(cfg))
    telemetry.shutdown()
    sys.exit(rc)
