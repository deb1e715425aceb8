"""The render engine: a Stoked UI project and its local media in, a video file out.

A pure, synchronous, CPU-bound library (no database, queue or network): the caller runs
:func:`render` in a worker thread or process. See TIMELINE.md for the semantics.

Modules: ``probe`` (what a source holds), ``video`` and ``audio`` (forward-only readers
and the per-track mixer), ``compose`` (placement and YUV compositing), ``encode`` (the
output file), ``render`` (the frame loop) and ``threads`` (how many threads each part
runs, from the CPUs a render is given).
"""

from rendermill.renderer.engine import threads  # noqa: F401  (before numpy)
from rendermill.renderer.engine.audio import VolumeClock
from rendermill.renderer.engine.render import render
from rendermill.renderer.engine.result import ProgressCallback, RenderResult
from rendermill.renderer.engine.threads import Threads

__all__ = ["ProgressCallback", "RenderResult", "Threads", "VolumeClock", "render"]
