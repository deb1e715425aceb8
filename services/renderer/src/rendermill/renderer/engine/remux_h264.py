"""Just enough H.264 bitstream handling for stream copy: NAL units, parameter sets, avcC.

Copied packets are MP4-style (each NAL unit behind a big-endian length); libx264 hands
out Annex B (start codes). Both are turned into lists of NAL units and written back
with 4-byte lengths. Parameter sets are read only as far as the fields the copy path
must check: their ids (so re-encoded parts can use ids no source uses), and the SPS
fields that decide whether a stream is plain progressive 8-bit 4:2:0. A source whose
parameter sets clash with another's is given new ids: its SPS, PPS and slice headers are
rewritten (:class:`Renumbering`); SEI messages are left as they are (a buffering-period
SEI still names the old SPS id, which only HRD conformance checkers read).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from fractions import Fraction

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

# Profiles whose avcC carries chroma format and bit depths after the parameter sets.
_HIGH_PROFILES = frozenset({100, 110, 122, 144})
# Baseline, Main, High: which of the nesting profiles includes which.
_PROFILE_ORDER = {66: 1, 77: 2, 100: 3}
# Profiles whose SPS has chroma_format_idc, bit depths and scaling lists.
_EXTENDED_SPS_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
_START_CODE = re.compile(b"\x00\x00\x01")


class BitstreamError(ValueError):
    """The bytes are not the H.264 structure they were expected to be."""


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F if nal else -1


def split_length_prefixed(data: bytes, length_size: int = 4) -> list[bytes]:
    """The NAL units of an MP4-style sample; raises BitstreamError when lengths overrun."""
    nals: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + length_size > len(data):
            raise BitstreamError("truncated NAL length")
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(data):
            raise BitstreamError("NAL length past the end of the sample")
        nals.append(data[pos : pos + size])
        pos += size
    return nals


def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream (start codes removed)."""
    starts = [m.end() for m in _START_CODE.finditer(data)]
    nals = []
    for i, start in enumerate(starts):
        end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        # A 4-byte start code leaves one zero byte at the end of the previous unit; so
        # may trailing_zero_8bits. Neither belongs to the NAL unit.
        nal = data[start:end].rstrip(b"\x00")
        if nal:
            nals.append(nal)
    return nals


def join_length_prefixed(nals: list[bytes]) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


def with_parameter_sets(nals: list[bytes], sps: list[bytes], pps: list[bytes]) -> list[bytes]:
    """``nals`` (one access unit) with ``sps`` and ``pps`` in front of its first slice.

    An access unit delimiter stays first, as the standard orders it. Units that already
    carry a parameter set are returned unchanged.
    """
    if any(nal_type(n) in (NAL_SPS, NAL_PPS) for n in nals):
        return nals
    at = 1 if nals and nal_type(nals[0]) == NAL_AUD else 0
    return [*nals[:at], *sps, *pps, *nals[at:]]


class _Bits:
    """A reader of RBSP bits (emulation prevention bytes removed)."""

    def __init__(self, nal: bytes, skip: int = 1) -> None:
        # The first ``skip`` bytes (the NAL header, and for an SPS three fixed bytes)
        # are read by the caller directly.
        self._data = nal[skip:].replace(b"\x00\x00\x03", b"\x00\x00")
        self._pos = 0

    @property
    def payload(self) -> bytes:
        """The RBSP being read."""
        return self._data

    @property
    def position(self) -> int:
        return self._pos

    def skip(self, n: int) -> None:
        self._pos += n

    def bit(self) -> int:
        byte = self._pos >> 3
        if byte >= len(self._data):
            raise BitstreamError("parameter set ends early")
        value = (self._data[byte] >> (7 - (self._pos & 7))) & 1
        self._pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = value << 1 | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise BitstreamError("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


@dataclasses.dataclass(frozen=True, slots=True)
class Sps:
    """The fields of a sequence parameter set the copy path checks."""

    id: int
    profile: int
    constraints: int
    level: int
    chroma_format: int
    bit_depth_luma: int
    bit_depth_chroma: int
    frame_mbs_only: bool
    # From the VUI (None when the SPS has no VUI, or it could not be read): whether the
    # samples are full range (None: not said), the colour description (primaries,
    # transfer, matrix: H.273 codes, 2 when not said) and the sample aspect ratio.
    vui: Vui | None = None

    @property
    def profile_name(self) -> str:
        """The profile's name as FFmpeg reports it (for the profiles the copy path
        knows; others by their profile_idc)."""
        if self.profile == 66:
            return "Constrained Baseline" if self.constraints & 0x40 else "Baseline"
        name = _PROFILE_NAMES.get(self.profile, f"profile_idc {self.profile}")
        intra = self.profile in (110, 122, 244) and self.constraints & 0x10
        return f"{name} Intra" if intra else name

    @property
    def pix_fmt(self) -> str:
        """The pixel format FFmpeg's decoder gives the pictures (8-bit 4:2:0 only by
        name; anything else by its description)."""
        if self.chroma_format == 0:
            base = "gray"
        else:
            base = {1: "yuv420p", 2: "yuv422p", 3: "yuv444p"}.get(self.chroma_format, "yuv?")
        if self.bit_depth_luma > 8:
            return f"{base}{self.bit_depth_luma}le"
        full = self.vui is not None and self.vui.full_range
        return base.replace("yuv", "yuvj") if full else base


_PROFILE_NAMES = {
    44: "CAVLC 4:4:4",
    77: "Main",
    88: "Extended",
    100: "High",
    110: "High 10",
    122: "High 4:2:2",
    244: "High 4:4:4 Predictive",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Vui:
    """The parts of an SPS's video usability information that describe the picture."""

    full_range: bool | None
    primaries: int
    transfer: int
    matrix: int
    sample_aspect: Fraction | None


def parse_sps(nal: bytes) -> Sps:
    """Read ``nal`` (an SPS unit) up to frame_mbs_only_flag; raises BitstreamError."""
    if nal_type(nal) != NAL_SPS or len(nal) < 4:
        raise BitstreamError("not a sequence parameter set")
    profile, constraints, level = nal[1], nal[2], nal[3]
    r = _Bits(nal, skip=4)
    sps_id = r.ue()
    chroma, depth_luma, depth_chroma = 1, 8, 8
    if profile in _EXTENDED_SPS_PROFILES:
        chroma = r.ue()
        if chroma == 3:
            r.bit()  # separate_colour_plane_flag
        depth_luma = r.ue() + 8
        depth_chroma = r.ue() + 8
        r.bit()  # qpprime_y_zero_transform_bypass_flag
        if r.bit():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma != 3 else 12):
                if r.bit():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.bit()  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        for _ in range(r.ue()):
            r.se()
    r.ue()  # max_num_ref_frames
    r.bit()  # gaps_in_frame_num_value_allowed_flag
    r.ue()  # pic_width_in_mbs_minus1
    r.ue()  # pic_height_in_map_units_minus1
    frame_mbs_only = bool(r.bit())
    try:
        vui = _vui(r, frame_mbs_only)
    except BitstreamError:
        vui = None  # (the fields above are what matters most; the caller probes)
    return Sps(
        id=sps_id,
        profile=profile,
        constraints=constraints,
        level=level,
        chroma_format=chroma,
        bit_depth_luma=depth_luma,
        bit_depth_chroma=depth_chroma,
        frame_mbs_only=frame_mbs_only,
        vui=vui,
    )


# aspect_ratio_idc 1..16 (H.264 table E-1); 255 is an explicit ratio.
_SAMPLE_ASPECTS = (
    (1, 1), (12, 11), (10, 11), (16, 11), (40, 33), (24, 11), (20, 11), (32, 11),
    (80, 33), (18, 11), (15, 11), (64, 33), (160, 99), (4, 3), (3, 2), (2, 1),
)  # fmt: skip
_UNSPECIFIED = 2


def _vui(r: _Bits, frame_mbs_only: bool) -> Vui:
    """The VUI's picture description, read after frame_mbs_only_flag."""
    if not frame_mbs_only:
        r.bit()  # mb_adaptive_frame_field_flag
    r.bit()  # direct_8x8_inference_flag
    if r.bit():  # frame_cropping_flag
        for _ in range(4):
            r.ue()
    full_range: bool | None = None
    primaries = transfer = matrix = _UNSPECIFIED
    sample_aspect: Fraction | None = None
    if r.bit():  # vui_parameters_present_flag
        if r.bit():  # aspect_ratio_info_present_flag
            idc = r.bits(8)
            if idc == 255:
                num, den = r.bits(16), r.bits(16)
            elif 1 <= idc <= len(_SAMPLE_ASPECTS):
                num, den = _SAMPLE_ASPECTS[idc - 1]
            else:
                num, den = 0, 1
            sample_aspect = Fraction(num, den) if num and den else None
        if r.bit():  # overscan_info_present_flag
            r.bit()
        if r.bit():  # video_signal_type_present_flag
            r.bits(3)  # video_format
            full_range = bool(r.bit())
            if r.bit():  # colour_description_present_flag
                primaries, transfer, matrix = r.bits(8), r.bits(8), r.bits(8)
    return Vui(full_range, primaries, transfer, matrix, sample_aspect)


def _skip_scaling_list(r: _Bits, size: int) -> None:
    last = next_ = 8
    for _ in range(size):
        if next_ != 0:
            next_ = (last + r.se() + 256) % 256
        last = next_ if next_ != 0 else last


def pps_id(nal: bytes) -> int:
    """The id of ``nal`` (a PPS unit); raises BitstreamError."""
    if nal_type(nal) != NAL_PPS:
        raise BitstreamError("not a picture parameter set")
    return _Bits(nal).ue()


# Two zero bytes followed by a byte that could read as a start code: needs 0x03 between.
_NEEDS_PREVENTION = re.compile(b"\x00\x00(?=[\x00-\x03])")


def _ue_length(value: int) -> int:
    """Bits of the exp-Golomb code of ``value``."""
    return 2 * (value + 1).bit_length() - 1


def rewrite_ue(nal: bytes, lead_bits: int, fields: Sequence[int | None]) -> bytes:
    """``nal`` with the exp-Golomb fields that follow ``lead_bits`` bits of its payload
    rewritten: ``fields[i]`` replaces the i-th one, None keeps it.

    Each new code must be as long as the old one or a whole number of bytes longer or
    shorter: what follows then keeps its byte alignment (CABAC slice data starts on a
    byte boundary; trailing bits end on one), so the rest is shifted, never re-encoded.
    Raises BitstreamError when the unit is too short or a length would not work out.
    """
    reader = _Bits(nal)
    reader.skip(lead_bits)
    edits: list[tuple[int, int, int]] = []
    for new in fields:
        start = reader.position
        old = reader.ue()
        if new is not None and new != old:
            if (_ue_length(new) - _ue_length(old)) % 8:
                raise BitstreamError(f"id {old} cannot become {new} without realignment")
            edits.append((start, reader.position, new))
    if not edits:
        return nal
    payload = reader.payload
    total = len(payload) * 8
    bits = int.from_bytes(payload, "big")
    out, length, cursor = 0, 0, 0
    for start, end, new in edits:
        keep = start - cursor
        out = (out << keep) | ((bits >> (total - start)) & ((1 << keep) - 1))
        code_length = _ue_length(new)
        out = (out << code_length) | (new + 1)
        length += keep + code_length
        cursor = end
    rest = total - cursor
    out = (out << rest) | (bits & ((1 << rest) - 1))
    length += rest
    rbsp = out.to_bytes(length // 8, "big")
    ebsp = _NEEDS_PREVENTION.sub(b"\x00\x00\x03", rbsp)
    if ebsp.endswith(b"\x00"):
        ebsp += b"\x03"  # an RBSP ending in cabac_zero_words
    return nal[:1] + ebsp


@dataclasses.dataclass(frozen=True, slots=True)
class Renumbering:
    """New ids for one source's parameter sets, and rewriting its NAL units to match."""

    sps: dict[int, int]
    pps: dict[int, int]

    def unit(self, nal: bytes) -> bytes:
        """``nal`` rewritten: an SPS or PPS with its new ids, a slice naming its PPS's new
        id; anything else unchanged. Raises BitstreamError for an id it has no new one
        for."""
        kind = nal_type(nal)
        try:
            if kind == NAL_SPS:
                return rewrite_ue(nal, 24, [self.sps[parse_sps(nal).id]])
            if kind == NAL_PPS:
                reader = _Bits(nal)
                pps, sps = reader.ue(), reader.ue()
                return rewrite_ue(nal, 0, [self.pps[pps], self.sps[sps]])
            if kind in (NAL_SLICE, NAL_IDR):
                reader = _Bits(nal)
                reader.ue()  # first_mb_in_slice
                reader.ue()  # slice_type
                return rewrite_ue(nal, 0, [None, None, self.pps[reader.ue()]])
            if kind == NAL_SEI:
                return self._sei(nal)
        except KeyError as exc:
            raise BitstreamError(f"a unit names parameter set id {exc} the source lacks") from exc
        return nal

    def _sei(self, nal: bytes) -> bytes:
        """An SEI unit whose buffering-period messages name their SPS's new id (HRD
        checkers read it); the other messages unchanged. A unit that does not parse is
        left as it is: decoders ignore buffering periods."""
        rbsp = nal[1:].replace(b"\x00\x00\x03", b"\x00\x00")
        out = bytearray()
        pos, changed = 0, False
        try:
            while pos < len(rbsp) and rbsp[pos:] != b"\x80":  # more_rbsp_data()
                kind, pos = _sei_number(rbsp, pos)
                size, pos = _sei_number(rbsp, pos)
                payload = rbsp[pos : pos + size]
                if len(payload) < size:
                    raise BitstreamError("SEI message ends early")
                pos += size
                if kind == _BUFFERING_PERIOD:
                    new = _first_ue_replaced(payload, self.sps[_first_ue(payload)])
                    changed = changed or new != payload
                    payload = new
                out += _sei_code(kind) + _sei_code(len(payload)) + payload
        except (BitstreamError, KeyError):
            return nal
        if not changed:
            return nal
        return nal[:1] + _NEEDS_PREVENTION.sub(b"\x00\x00\x03", bytes(out + rbsp[pos:]))


# SEI payloadType of a buffering period, whose first field is its SPS's id.
_BUFFERING_PERIOD = 0


def _sei_number(rbsp: bytes, pos: int) -> tuple[int, int]:
    """An SEI payloadType or payloadSize at ``pos`` (0xFF bytes add 255 each), and where
    it ends."""
    value = 0
    while pos < len(rbsp):
        byte = rbsp[pos]
        pos += 1
        value += byte
        if byte != 0xFF:
            return value, pos
    raise BitstreamError("SEI message ends early")


def _sei_code(value: int) -> bytes:
    return b"\xff" * (value // 255) + bytes([value % 255])


def _first_ue(payload: bytes) -> int:
    """The exp-Golomb number ``payload`` starts with."""
    total = len(payload) * 8
    bits = int.from_bytes(payload, "big")
    zeros = 0
    while zeros < min(total, 32) and not (bits >> (total - 1 - zeros)) & 1:
        zeros += 1
    length = 2 * zeros + 1
    if zeros > 31 or length > total:
        raise BitstreamError("bad exp-Golomb code")
    return ((bits >> (total - length)) & ((1 << length) - 1)) - 1


def _first_ue_replaced(payload: bytes, new: int) -> bytes:
    """``payload`` starting with ``new`` instead of its first exp-Golomb number, whose
    code must be as long or a whole number of bytes longer or shorter."""
    old_length = _ue_length(_first_ue(payload))
    new_length = _ue_length(new)
    if (new_length - old_length) % 8:
        raise BitstreamError(f"id {_first_ue(payload)} cannot become {new} without realignment")
    rest = len(payload) * 8 - old_length
    bits = int.from_bytes(payload, "big") & ((1 << rest) - 1)
    return (((new + 1) << rest) | bits).to_bytes((new_length + rest) // 8, "big")


def renumber(
    sps: tuple[bytes, ...], pps: tuple[bytes, ...], used_sps: set[int], used_pps: set[int]
) -> Renumbering:
    """Ids for a source's SPS and PPS that ``used_sps``/``used_pps`` do not hold (added to
    them), each coded as long as the old one or a whole number of bytes longer, so that
    :func:`rewrite_ue` can shift instead of re-encode. Raises BitstreamError when the
    ids run out."""

    def spare(old: int, used: set[int], limit: int) -> int:
        for candidate in range(limit):
            if candidate not in used and not (_ue_length(candidate) - _ue_length(old)) % 8:
                used.add(candidate)
                return candidate
        raise BitstreamError(f"no parameter set id left for id {old}")

    sps_map = {s.id: spare(s.id, used_sps, 32) for s in (parse_sps(n) for n in sps)}
    pps_map = {i: spare(i, used_pps, 256) for i in (pps_id(n) for n in pps)}
    return Renumbering(sps_map, pps_map)


@dataclasses.dataclass(frozen=True, slots=True)
class AvcConfig:
    """An AVCDecoderConfigurationRecord ('avcC'): NAL length size and parameter sets."""

    length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]


def parse_avcc(data: bytes) -> AvcConfig:
    """Parse an avcC record (MP4 extradata); raises BitstreamError for anything else."""
    if len(data) < 7 or data[0] != 1:
        raise BitstreamError("not an avcC record")
    length_size = (data[4] & 3) + 1
    pos = 5
    sets: list[list[bytes]] = [[], []]
    for kind in (0, 1):
        if pos >= len(data):
            raise BitstreamError("avcC ends early")
        count = data[pos] & (0x1F if kind == 0 else 0xFF)
        pos += 1
        for _ in range(count):
            size = int.from_bytes(data[pos : pos + 2], "big")
            pos += 2
            if size == 0 or pos + size > len(data):
                raise BitstreamError("avcC parameter set overruns")
            sets[kind].append(data[pos : pos + size])
            pos += size
    if length_size == 3:
        raise BitstreamError("avcC with 3-byte NAL lengths")
    return AvcConfig(length_size, tuple(sets[0]), tuple(sets[1]))


def build_avcc(sps: list[bytes], pps: list[bytes]) -> bytes:
    """An avcC record with 4-byte NAL lengths holding every one of ``sps`` and ``pps``.

    The profile is the highest of the SPSs' (the caller keeps to profiles that nest:
    Constrained Baseline, Main, High), the level the highest of all, the compatibility
    byte the constraint flags that every SPS sets.
    """
    # The highest profile's SPS first: readers that take the stream's profile from the
    # first one (FFmpeg's demuxer, players setting up a decoder) see the one to expect.
    sps = sorted(sps, key=lambda s: -_PROFILE_ORDER.get(parse_sps(s).profile, 0))
    parsed = [parse_sps(s) for s in sps]
    top = parsed[0]
    compat = 0xFF
    for p in parsed:
        compat &= p.constraints
    level = max(p.level for p in parsed)
    out = bytearray([1, top.profile, compat, level, 0xFC | 3, 0xE0 | len(sps)])
    for unit in sps:
        out += len(unit).to_bytes(2, "big") + unit
    out.append(len(pps))
    for unit in pps:
        out += len(unit).to_bytes(2, "big") + unit
    if top.profile in _HIGH_PROFILES:
        out.append(0xFC | top.chroma_format)
        out.append(0xF8 | (top.bit_depth_luma - 8))
        out.append(0xF8 | (top.bit_depth_chroma - 8))
        out.append(0)  # no SPS extensions
    return bytes(out)
