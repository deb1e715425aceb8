"""``python -m rendermill.renderer.tables [DIR]``: make the colour tables the most common
sources are mapped through, so that no render has to.

HDR and wide-gamut pictures are mapped into BT.709 SDR through tables that take swscale
about 3.3 CPU seconds each to make (see ``engine.lut.Tables``). A render keeps each one
it makes in its cache directory, but a container that starts empty for every render
(an ECS task) would make them every time: the images make these at build time instead.
DIR defaults to ``RENDERMILL_CACHE_DIR``, else the user's cache directory.
"""

from __future__ import annotations

import argparse
import sys
import time

from rendermill.common import settings
from rendermill.renderer.engine import lut

# (transfer, primaries, target transfer, target primaries), AVColorTransferCharacteristic
# and AVColorPrimaries values, as compose asks for them.
COMMON: dict[str, lut.Light] = {
    "HLG HDR video (phones)": (18, 9, 1, 1),
    "PQ HDR video (HDR10)": (16, 9, 1, 1),
    "Display P3 pictures (screenshots, phone photos)": (13, 12, 13, 1),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m rendermill.renderer.tables",
        description="Make the colour tables HLG and PQ video and Display P3 pictures are "
        "mapped through, in DIR.",
    )
    p.add_argument(
        "directory",
        nargs="?",
        metavar="DIR",
        help="default: $RENDERMILL_CACHE_DIR, else the user's cache directory",
    )
    args = p.parse_args(argv)
    directory = settings.cache_dir(args.directory)
    tables = lut.Tables(directory)
    for name, light in COMMON.items():
        started = time.perf_counter()
        path = tables.keep(light)
        if path is None:
            print(f"{directory}: cannot be written (see the log above)", file=sys.stderr)
            return 1
        print(f"{name}: {path} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
