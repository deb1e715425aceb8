"""The stream-copy fast path: cut-only timelines are cut, not rendered ("smart cut").

:func:`try_remux` writes the frames the compose path would, at the same times, but copies
the sources' H.264 (or VP9) packets instead of decoding and re-encoding them. Only the
pictures between a cut and the source's next IDR frame (and a frame or two where a cut
ends inside a group of B-frames) are decoded and re-encoded, with libx264 (libvpx-vp9).
The poster (``output.poster``) is written as the compose path writes it.

The sound is copied too when one clip at a time sounds, at full volume, from AAC LC
48 kHz stereo sources into MP4/MOV (``remux_audio``: packets copied whole, each segment
within half an AAC frame, 10.7 ms, of its exact place, the packets around every join
re-encoded from the compose path's mixers), or from stereo Opus sources in 20 ms packets
into WebM (``remux_opus``: the same plan, each segment within 10 ms, and the runs
around the joins checked by decoding). Otherwise it is mixed by the compose path's mixers
(``audio.TrackMixer``) and encoded (AAC or Opus) the way the compose path encodes it, so
volume steps, mutes, audio tracks and music beds stay right and in sync at every join.

Which timelines take the fast path (anything else returns None and is composed):

- ``output.copy == "auto"``, ``output.format`` is ``mp4`` or ``mov`` (H.264 sources) or
  ``webm`` (VP9 sources, below), and the project canvas has exactly the output's aspect
  ratio.
- At every output frame i (t = i / fps) the top-most active picture is a video action
  that shows its source 1:1 over the whole output: its layer is the whole canvas at
  (0, 0) (``fill``; ``contain`` or ``cover``, editor or CSS formulas, since the source
  has the canvas's aspect ratio; ``none`` only when the canvas is the output size;
  ``x``/``y`` resolving to 0) and the source's frame size is the output size. No gaps
  (the background never shows). Whatever lies under that picture does not matter; an
  image, an alpha video, or any action on top that is not itself such a picture, is
  not a cut.
- That action plays at rate 1 (``playbackRate`` 1, or <= 0 which means 1), has no
  ``freeze``, and its source time stays inside the media: no hold of the last frame,
  no loop wrap. With ``output.effects`` it has no effect (opacity 1, normal blend).
- Each source shown is an MP4/MOV file at a constant frame rate equal to the output fps
  (every timestamp on the ``k / fps`` grid), H.264 Baseline, Main or High, progressive,
  8-bit yuv420p, square pixels, no display matrix (rotation), closed GOPs that start
  with IDR frames, no edit list that discards packets, no in-band parameter sets that
  differ from its sample description. Its colour signalling must mean the same to every
  player: limited range, SDR, and a tagged matrix (BT.709 or BT.601), or an untagged
  HD one (BT.709 everywhere). Untagged SD is BT.601 to some players and BT.709 to
  others, where the compose path decides BT.601 and converts.
- All sources shown have the same H.264 profile. Their parameter sets may differ (clips
  from other cameras or export settings, usually all under id 0): each distinct set of
  SPS/PPS after the first source's gets ids no other set uses, and the copied slices of
  its sources are rewritten to name them (``remux_h264.Renumbering``: the new id's
  exp-Golomb code is as long as the old one or whole bytes longer, so the rest of each
  slice is shifted by whole bytes and CABAC data stays byte-aligned). This keeps one
  plain ``avc1`` sample description; ``avc3`` with in-band parameter sets is only
  recommended ("should") by Media Source Extensions, and FFmpeg's MP4 muxer cannot
  write several sample descriptions.

For a WebM output the sources are WebM/Matroska files of VP9 profile 0 (8-bit 4:2:0,
no alpha channel) at the output's size and constant frame rate, with the same colour
rules. VP9 has no parameter sets and no frame reordering in the container: a keyframe
starts a copy, copied packets run up to the cut, and the frames from a mid-GOP cut to the
next keyframe are re-encoded with libvpx-vp9 (realtime, CRF 36/28/20 for draft/standard/
high, no lag so no hidden frames), each piece opening with its own keyframe. The sound
(Opus) is copied as ``remux_opus`` says, or else mixed and encoded as the compose path
does.

How the H.264 video is put together, per run of output frames that show consecutive frames
``a .. b - 1`` of one source (runs on one source that continue each other are merged):

- Copied: the packets from the first IDR frame K >= a, in decode order, up to the last
  "clean" point c <= b, i.e. the longest decode-order prefix from K holding exactly the
  frames K .. c - 1. Nothing in such a prefix refers to a later packet, so every copied
  frame decodes and no frame after the cut ever shows. Without B-frames c == b; with
  B-frames c may stop a frame or two short of b.
- Re-encoded: frames a .. K - 1 (the partial GOP before the first IDR frame) and
  c .. b - 1, decoded from the source's IDR frame before them (skipping the
  non-reference pictures before a) and encoded with libx264: the source's profile and
  level, yuv420p, the source's colour tags, no B-frames, preset/CRF from
  ``output.quality`` (draft ultrafast/21, standard superfast/18, high medium/16). A run
  with no IDR frame inside is re-encoded whole. Every re-encoded piece starts with an
  IDR frame of its own.
- Parameter sets: the output is one plain ``avc1`` track whose avcC holds the sources'
  SPS/PPS (renumbered as above) and libx264's, numbered apart (x264's ``sps-id``: the
  lowest id no source SPS or PPS uses), so the sets live side by side and each slice
  names its own. The
  active SPS/PPS are also repeated in band at the first access unit of every piece, for
  decoders that use whatever parameter sets came last (hardware decoders, Annex B
  converters): they switch exactly at the piece boundaries, always at an IDR frame.
- Timestamps are rewritten: frame i has pts i / fps and lasts one frame; decode
  timestamps count packets, trailing by the largest B-frame reordering of any piece.

Checks that need the packets (IDR positions, timestamps) demux only the windows of each
source the timeline uses. If something turns out wrong while writing (a source that no
longer reads as it was indexed, a decode error or a damaged picture to re-encode, libx264
changing its parameter sets), the file is removed and None is returned: the compose path
then renders, or reports the problem in its own words. Copied packets are not decoded:
damage inside them is copied as it is, as ``ffmpeg -c copy`` would.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rendermill.common import logging as rlog
from rendermill.common import schemas
from rendermill.common.project import model
from rendermill.renderer.engine import (
    audio,
    encode,
    remux_audio,
    remux_opus,
    remux_plan,
    remux_source,
    remux_write,
)
from rendermill.renderer.engine.result import ProgressCallback, RenderResult
from rendermill.renderer.engine.threads import Threads

log = rlog.get(__name__)


def try_remux(
    project: model.Project,
    sources: Mapping[str, Path],
    output: schemas.OutputSpec,
    dest: Path,
    *,
    on_progress: ProgressCallback | None = None,
    volume_clock: audio.VolumeClock | None = None,
    threads: Threads | None = None,
) -> RenderResult | None:
    """Write ``project`` to ``dest`` by stream copy if it is a cut-only timeline.

    Returns None, leaving ``dest`` alone, when the timeline does not qualify (see the
    module docstring); that is decided from container headers and a demux of the packet
    windows the timeline uses, without decoding, and the caller then composes. Otherwise
    returns what was written, with ``copied=True``. ``sources``, ``on_progress`` and
    ``volume_clock`` and ``threads`` mean what they mean for ``render.render``.

    Raises MediaError when a sound source cannot be decoded or a source turns out corrupt
    while re-encoding (as the compose path would), and whatever PyAV or the OS raise for
    encoder or disk failures, or ``on_progress`` raises; ``dest`` is removed on error.
    """
    kind = remux_opus.OpusFile if output.format == "webm" else remux_audio.File
    threads = threads or Threads.of()
    with remux_source.Readers(threads) as readers, remux_audio.Files(kind) as files:
        try:
            plan = remux_plan.plan(project, sources, output, readers)
        except remux_source.Ineligible as exc:
            log.debug("stream_copy_declined", reason=str(exc))
            return None
        clock = volume_clock or output.volume_clock
        sound = _sound_plan(project, sources, plan, output, files, clock)
        dest.unlink(missing_ok=True)
        poster_path = dest.with_suffix(".jpg")
        if output.poster is not None:
            poster_path.unlink(missing_ok=True)
        try:
            mixers = [] if sound is not None else remux_write.mixers(project, sources, clock)
            try:
                remux_write.write(plan, mixers, output, dest, on_progress, threads, sound)
            finally:
                for mixer in mixers:
                    mixer.close()
            if output.poster is not None:
                poster_path.write_bytes(remux_write.poster(dest, plan, output.poster))
        except remux_source.Ineligible as exc:
            # Found only while writing: a source that no longer reads as indexed, or
            # libx264 not keeping its parameter sets. The compose path takes over.
            dest.unlink(missing_ok=True)
            log.info("stream_copy_abandoned", reason=str(exc))
            return None
        except BaseException:
            dest.unlink(missing_ok=True)
            if output.poster is not None:
                poster_path.unlink(missing_ok=True)
            raise
    log.debug("stream_copied", pieces=len(plan.pieces), frames=plan.total)
    return RenderResult(
        duration=plan.total / plan.fps,
        frames=plan.total,
        width=plan.size[0],
        height=plan.size[1],
        size_bytes=dest.stat().st_size,
        copied=True,
        sound_copied=sound is not None,
    )


def _sound_plan(
    project: model.Project,
    sources: Mapping[str, Path],
    plan: remux_plan.Plan,
    output: schemas.OutputSpec,
    files: remux_audio.Files,
    clock: audio.VolumeClock,
) -> remux_audio.SoundPlan | None:
    """The plan for copying the sound, its joins already re-encoded; None when the sound
    is to be mixed and encoded whole.

    Raises MediaError when a sound source cannot be decoded.
    """
    bit_rate = encode.recipe_for(output).audio_bit_rate
    joins = remux_opus.encode_joins if output.format == "webm" else remux_audio.encode_joins
    try:
        sound = remux_audio.plan(project, sources, remux_write.total_samples(plan), files, bit_rate)
        mixers = remux_write.mixers(project, sources, clock, sound)
        try:
            sound = joins(sound, mixers)
        finally:
            for mixer in mixers:
                mixer.close()
    except remux_source.Ineligible as exc:
        log.debug("sound_copy_declined", reason=str(exc))
        return None
    log.debug(
        "sound_copy_planned",
        packets=sound.packets,
        copied=sound.copied,
        largest_shift_ms=round(sound.largest_shift * 1000 / audio.RATE, 2),
    )
    return sound
