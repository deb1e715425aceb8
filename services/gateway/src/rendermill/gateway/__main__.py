"""``python -m rendermill.gateway``"""

from __future__ import annotations

from aiohttp import web

from rendermill.common import logging, settings, telemetry
from rendermill.gateway.app import create_app


def main() -> None:
    cfg = settings.load(settings.Gateway)
    logging.setup(cfg.log_level, cfg.log_format, "gateway")
    telemetry.setup("rendermill-gateway")
    # aiohttp handles SIGTERM/SIGINT: stop accepting, finish requests, run cleanup_ctx.
    web.run_app(create_app(cfg), host=cfg.host, port=cfg.port, print=None, shutdown_timeout=10)
    telemetry.shutdown()


if __name__ == "__main__":
    main()
