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


def _sei(*messages: tuple[int, bytes]) -> bytes:
    """An SEI unit of (payloadType, payload) messages, emulation prevention added."""
    rbsp = b""
    for kind, payload in messages:
        rbsp += bytes([kind]) + b"\xff" * (len(payload) // 255) + bytes([len(payload) % 255])
        rbsp += payload
    bits = "".join(f"{b:08b}" for b in rbsp)
    return _nal(0x06, bits)


def _bits_to_bytes(bits: str) -> bytes:
    bits += "1" + "0" * (-(len(bits) + 1) % 8)  # payload alignment: a one, then zeros
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


# A buffering period for SPS 0 (ue "1"): initial_cpb_removal_delay and its offset (24 bits
# each here) with zero bytes among them, so that emulation prevention comes into play.
BUFFERING = _bits_to_bytes("1" + "0" * 24 + "000000000000000000000001")
# A user-data message (type 5) that must come through untouched, longer than 255 bytes.
USER_DATA = bytes(range(16)) + b"\x00\x00\x01" * 90


def test_a_buffering_period_names_its_sps_by_the_new_id() -> None:
    sei = _sei((5, USER_DATA), (0, BUFFERING))
    assert b"\x00\x00\x03" in sei  # the unit needs emulation prevention
    renumbered = h264.Renumbering(sps={0: 15}, pps={}).unit(sei)
    assert renumbered != sei
    # SPS 15's code is a byte longer: the message grew by one byte, its size with it.
    assert len(renumbered) >= len(sei) + 1
    back = h264.Renumbering(sps={15: 0}, pps={}).unit(renumbered)
    assert back == sei
    # A source whose SPS keeps its id is left as it is, byte for byte.
    assert h264.Renumbering(sps={0: 0}, pps={}).unit(sei) is sei


def test_a_buffering_period_id_of_the_same_length_is_rewritten_in_place() -> None:
    payload = _bits_to_bytes("011" + "0" * 30)  # SPS 2 (ue "011"), then the delays
    sei = _sei((0, payload))
    renumbered = h264.Renumbering(sps={2: 1}, pps={}).unit(sei)
    assert len(renumbered) == len(sei)
    assert h264.Renumbering(sps={1: 2}, pps={}).unit(renumbered) == sei


def test_an_sei_unit_that_does_not_parse_is_left_alone() -> None:
    truncated = _sei((0, BUFFERING))[:-3]
    assert h264.Renumbering(sps={0: 15}, pps={}).unit(truncated) == truncated
