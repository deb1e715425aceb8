"""Imported before numpy: the engine does no linear algebra, so numpy's OpenBLAS gets one
thread instead of one per core, which would only spin (0.5% of a render's CPU) and hold
buffers. An explicit OPENBLAS_NUM_THREADS is left alone."""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
