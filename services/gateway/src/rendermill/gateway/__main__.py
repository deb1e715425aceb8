"""``python -m rendermill.gateway``: serve the API; with a command, an operator task
(``migrate``, ``tenants create|list``, ``keys create|list|revoke``) against the
configured database, so that an image of the gateway is all an operator needs."""

from __future__ import annotations

import argparse
import sys

from rendermill.common import admin, errors, logging, settings, telemetry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rendermill.gateway",
        description="Serve the rendermill API (no command), or run an operator command.",
    )
    admin.add_commands(parser.add_subparsers(metavar="command"))
    args = parser.parse_args(argv)
    if admin.is_admin(args):
        cfg = settings.load(settings.Common)
        logging.setup(cfg.log_level, "console", "gateway")
        try:
            return admin.run(args, sys.stdout)
        except errors.RendermillError as exc:
            print(f"rendermill: {exc.message}", file=sys.stderr)
            return 1
    serve()
    return 0


def serve() -> None:
    from aiohttp import web

    from rendermill.gateway.app import create_app

    cfg = settings.load(settings.Gateway)
    logging.setup(cfg.log_level, cfg.log_format, "gateway")
    telemetry.setup("rendermill-gateway")
    # aiohttp handles SIGTERM/SIGINT: stop accepting, finish requests, run cleanup_ctx.
    web.run_app(create_app(cfg), host=cfg.host, port=cfg.port, print=None, shutdown_timeout=10)
    telemetry.shutdown()


if __name__ == "__main__":
    sys.exit(main())
