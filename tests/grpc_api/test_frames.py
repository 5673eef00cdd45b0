"""HTTP/2 frames: building, splitting a stream of bytes however it arrives, padding, SETTINGS."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving.grpc_api import frames as f
from serving.grpc_api.frames import ConnectionFailure

FRAMES = st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 2**31 - 1),
                            st.binary(max_size=300)), max_size=12)


@given(FRAMES, st.lists(st.integers(1, 200), max_size=40))
def test_frames_split_the_same_however_the_bytes_arrive(
    sent: list[tuple[int, int, int, bytes]], cuts: list[int]
) -> None:
    """A connection's buffer fed in arbitrary pieces yields each frame whole, in order."""
    wire = b"".join(f.frame(*x) for x in sent)
    buf, got, pos = bytearray(), [], 0
    for n in [*cuts, len(wire)]:
        buf += wire[pos:pos + n]
        pos += n
        frames, used = f.split(buf, f.DEFAULT_FRAME_SIZE)
        del buf[:used]
        got += frames
    assert got == sent and not buf


def test_the_reserved_bit_of_the_stream_id_is_ignored() -> None:
    wire = bytearray(f.frame(f.DATA, 0, 5, b"x"))
    wire[5] |= 0x80
    assert f.split(wire, f.DEFAULT_FRAME_SIZE) == ([(f.DATA, 0, 5, b"x")], 10)


def test_a_frame_over_the_size_limit_fails_before_its_payload_arrives() -> None:
    header = f.HEADER.pack((f.DEFAULT_FRAME_SIZE + 1) >> 16, (f.DEFAULT_FRAME_SIZE + 1) & 0xFFFF,
                           f.DATA, 0, 1)
    with pytest.raises(ConnectionFailure) as err:
        f.split(header, f.DEFAULT_FRAME_SIZE)
    assert err.value.code == f.FRAME_SIZE_ERROR
    assert f.split(f.frame(f.DATA, 0, 1, b"x" * f.DEFAULT_FRAME_SIZE), f.DEFAULT_FRAME_SIZE)[1] \
        == 9 + f.DEFAULT_FRAME_SIZE


def test_padding() -> None:
    assert f.unpad(0, b"abc", 1) == b"abc"
    assert f.unpad(f.PADDED, b"\x02abc\x00\x00", 1) == b"abc"
    assert f.unpad(f.PADDED, b"\x00abc", 1) == b"abc"
    for bad in (b"", b"\x03ab", b"\x05abc"):
        with pytest.raises(ConnectionFailure) as err:
            f.unpad(f.PADDED, bad, 1)
        assert err.value.code == f.PROTOCOL_ERROR


def test_settings_round_trip_and_length() -> None:
    wire = f.settings({f.INITIAL_WINDOW_SIZE: 1 << 20, f.MAX_FRAME_SIZE: 32768})
    [(kind, flags, stream, payload)], _ = f.split(wire, f.DEFAULT_FRAME_SIZE)
    assert (kind, flags, stream) == (f.SETTINGS, 0, 0)
    assert f.parse_settings(payload) == [
        (f.INITIAL_WINDOW_SIZE, 1 << 20), (f.MAX_FRAME_SIZE, 32768)]
    with pytest.raises(ConnectionFailure) as err:
        f.parse_settings(payload[:-1])
    assert err.value.code == f.FRAME_SIZE_ERROR


def test_control_frames() -> None:
    assert f.window_update(3, 1000) == f.frame(f.WINDOW_UPDATE, 0, 3, b"\x00\x00\x03\xe8")
    assert f.rst_stream(3, f.REFUSED_STREAM) == f.frame(f.RST_STREAM, 0, 3, b"\x00\x00\x00\x07")
    assert f.goaway(7, f.NO_ERROR, b"bye")[9:] == b"\x00\x00\x00\x07\x00\x00\x00\x00bye"
    assert f.u32(b"\x80\x00\x00\x01") == 2**31 + 1
