"""Each render stage is an OpenTelemetry span with useful attributes."""

from __future__ import annotations

from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rendermill.cli import synth
from rendermill.common import schemas
from rendermill.common.project import model
from rendermill.renderer import engine

_exporter = InMemorySpanExporter()


def _provider() -> InMemorySpanExporter:
    # The global provider can be set once per process; later calls are ignored.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_exporter))
    trace.set_tracer_provider(provider)
    _exporter.clear()
    return _exporter


def test_compose_and_fast_path_spans(tmp_path: Path) -> None:
    spans = _provider()
    clip = synth.make_video(tmp_path / "a.mp4", duration=1.0)
    action = model.Action(id="a", start=0, end=1, fit=model.Fit.FILL)
    track = model.Track(id="t", controller=model.Controller.VIDEO, url="a", actions=(action,))
    project = model.Project(width=320, height=180, tracks=(track,))
    out = schemas.OutputSpec(resolution="320x180", fps=30)
    engine.render(project, {"a": clip}, out, tmp_path / "fast.mp4")
    engine.render(
        project, {"a": clip}, schemas.OutputSpec(resolution="640x360"), tmp_path / "c.mp4"
    )
    finished = spans.get_finished_spans()
    names = [s.name for s in finished]
    assert names == ["remux", "remux", "probe", "plan", "compose", "mux"]
    attrs = [dict(s.attributes or {}) for s in finished]
    assert attrs[0]["fast_path"] is True and attrs[1]["fast_path"] is False
    assert attrs[0]["sound_copied"] is True and attrs[1]["sound_copied"] is False
    assert attrs[2]["size"] == "320x180" and attrs[2]["sample_rate"] == 48000
    threads = engine.Threads.of()
    assert attrs[2]["decoder_threads"] == threads.decoder(320, 180)
    assert attrs[3]["picture_tracks"] == 1
    assert attrs[4]["frames"] == 30 and attrs[4]["width"] == 640
    assert attrs[4]["cpus"] == threads.cpus


def test_a_photo_decoded_at_a_smaller_scale_says_so(tmp_path: Path) -> None:
    spans = _provider()
    photo = synth.make_image(tmp_path / "photo.jpg", size=(1280, 720))
    action = model.Action(id="a", start=0, end=0.1, fit=model.Fit.FILL)
    track = model.Track(id="t", controller=model.Controller.IMAGE, url="p", actions=(action,))
    project = model.Project(width=320, height=180, tracks=(track,))
    out = schemas.OutputSpec(resolution="320x180", fps=30)
    engine.render(project, {"p": photo}, out, tmp_path / "out.mp4")
    (probe,) = [s for s in spans.get_finished_spans() if s.name == "probe"]
    attrs = dict(probe.attributes or {})
    # Stored 1280x720, drawn 320x180: decoded at a quarter of its size.
    assert attrs["size"] == "1280x720" and attrs["decode_scale"] == 0.25


def test_the_compose_span_says_how_many_colour_tables_were_made(tmp_path: Path) -> None:
    spans = _provider()
    clip = synth.make_wide_video(tmp_path / "hlg.mp4", [(220, 40, 90)], "hlg", duration=0.2)
    action = model.Action(id="a", start=0, end=0.2, fit=model.Fit.FILL)
    track = model.Track(id="t", controller=model.Controller.VIDEO, url="h", actions=(action,))
    project = model.Project(width=320, height=180, tracks=(track,))
    out = schemas.OutputSpec(resolution="320x180", fps=30)
    cache = tmp_path / "cache"
    for name in ("first.mp4", "second.mp4"):
        engine.render(project, {"h": clip}, out, tmp_path / name, cache_dir=cache)
    made = [
        dict(s.attributes or {})["lut_tables_made"]
        for s in spans.get_finished_spans()
        if s.name == "compose"
    ]
    # The first render made the HLG table; the second read it.
    assert made == [1, 0]
