"""Rewriting parameter set ids in H.264 units: exact bits, emulation prevention kept."""

from __future__ import annotations

import pytest

from rendermill.renderer.engine import remux_h264 as h264


def _nal(header: int, bits: str) -> bytes:
    """A NAL unit from RBSP ``bits``: stop bit, alignment, emulation prevention."""
    bits += "1"
    bits += "0" * (-len(bits) % 8)
    rbsp = int(bits, 2).to_bytes(len(bits) // 8, "big")
    out = bytearray([header])
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


# profile 66, constraints, level 30, seq_parameter_set_id 0, then the rest of an SPS:
# log2_max_frame_num 0, poc type 2, one ref frame, no gaps, 20x12 MBs, frame MBs only.
SPS_FIELDS = ("01000010", "11000000", "00011110", "1", "1", "011", "010", "0", "000010101")
SPS = _nal(0x67, "".join(SPS_FIELDS) + "0001101" + "1")
# pic_parameter_set_id 0, seq_parameter_set_id 0, then some flags.
PPS = _nal(0x68, "".join(("1", "1", "1011")))


def test_pps_ids_are_rewritten_and_back() -> None:
    renumbered = h264.rewrite_ue(PPS, 0, [15, 15])
    assert h264.pps_id(renumbered) == 15
    assert h264.rewrite_ue(renumbered, 0, [0, 0]) == PPS


def test_slice_with_start_code_lookalikes_keeps_emulation_prevention() -> None:
    # first_mb_in_slice 0, slice_type 0, pps 0, then data holding 00 00 01 and 00 00 00.
    data = "0" * 5 + "0" * 16 + "00000001" + "0" * 24 + "10000000"
    slice_ = _nal(0x65, "1" + "1" + "1" + data)
    assert b"\x00\x00\x03\x01" in slice_
    renumbered = h264.rewrite_ue(slice_, 0, [None, None, 15])
    assert renumbered == _nal(0x65, "1" + "1" + "000010000" + data)
    assert h264.rewrite_ue(renumbered, 0, [None, None, 0]) == slice_


def test_sps_id_follows_the_three_fixed_bytes() -> None:
    renumbered = h264.rewrite_ue(SPS, 24, [15])
    assert h264.parse_sps(renumbered).id == 15
    assert h264.parse_sps(renumbered).level == 30


def test_an_id_whose_code_would_shift_by_a_part_of_a_byte_is_refused() -> None:
    with pytest.raises(h264.BitstreamError):
        h264.rewrite_ue(PPS, 0, [1, None])  # 1 bit -> 3 bits


def test_renumber_picks_ids_the_others_do_not_use() -> None:
    used_sps, used_pps = {0}, {0, 15}
    renumbering = h264.renumber((SPS,), (PPS,), used_sps, used_pps)
    assert renumbering.sps == {0: 15} and renumbering.pps == {0: 16}
    assert used_sps == {0, 15} and used_pps == {0, 15, 16}
    assert h264.pps_id(renumbering.unit(PPS)) == 16
