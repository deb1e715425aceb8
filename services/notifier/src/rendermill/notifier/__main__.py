"""``python -m rendermill.notifier``"""

from __future__ import annotations

import asyncio
import sys

from rendermill.common import logging, settings, telemetry
from rendermill.notifier.service import main

if __name__ == "__main__":
    cfg = settings.load(settings.Notifier)
    logging.setup(cfg.log_level, cfg.log_format, "notifier")
    telemetry.setup("rendermill-notifier")
    rc = asyncio.run(main(cfg))
    telemetry.shutdown()
    sys.exit(rc)
