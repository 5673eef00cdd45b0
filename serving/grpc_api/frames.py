"""HTTP/2 frames (RFC 9113 section 4 and 6): the frame header, the frames this server sends,
and the split of a received buffer into frames. Pure functions over bytes; the connection
(`connection.py`) decides what each frame means."""

from __future__ import annotations

from struct import Struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
# flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# settings (6.5.2)
MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 3, 4, 5, 6
# error codes (7)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
STREAM_CLOSED, FRAME_SIZE_ERROR = 5, 6
REFUSED_STREAM, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 7, 9, 11

DEFAULT_WINDOW = 65_535
DEFAULT_FRAME_SIZE = 16_384
MAX_WINDOW = 2**31 - 1
MAX_FRAME_SIZE_LIMIT = 2**24 - 1

# length (24 bits, as a byte and a short), type, flags, stream id (31 bits)
HEADER = Struct(">BHBBL")
_U32 = Struct(">L")
_PAIR = Struct(">LL")
_SETTING = Struct(">HL")


class ConnectionFailure(Exception):
    """A connection error (RFC 9113 5.4.1): the connection ends with GOAWAY(code)."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


class StreamError(Exception):
    """A stream error (5.4.2): that stream ends with RST_STREAM(code), the others go on."""

    def __init__(self, stream: int, code: int, why: str) -> None:
        super().__init__(why)
        self.stream, self.code = stream, code


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One frame: its 9-byte header and payload."""
    n = len(payload)
    return HEADER.pack(n >> 16, n & 0xFFFF, kind, flags, stream) + payload


def settings(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in values.items()))


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, _U32.pack(increment))


def rst_stream(stream: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream, _U32.pack(code))


def goaway(last_stream: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _PAIR.pack(last_stream, code) + debug)


def u32(payload: bytes) -> int:
    """A 31-bit value (window increment, error code, stream id) of a 4-byte payload."""
    value: int = _U32.unpack_from(payload)[0]
    return value


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    """A SETTINGS payload's (identifier, value) pairs; a length not a multiple of 6 is a
    FRAME_SIZE_ERROR."""
    if len(payload) % 6:
        raise ConnectionFailure(FRAME_SIZE_ERROR, "SETTINGS length is not a multiple of 6")
    return [_SETTING.unpack_from(payload, i) for i in range(0, len(payload), 6)]


def unpad(flags: int, payload: bytes, stream: int) -> bytes:
    """A DATA or HEADERS payload without its padding (PADDED flag)."""
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise ConnectionFailure(PROTOCOL_ERROR, f"stream {stream}: padding exceeds the frame")
    return payload[1:len(payload) - payload[0]]


def split(buf: bytes | bytearray, max_size: int) -> tuple[list[tuple[int, int, int, bytes]], int]:
    """The whole frames at the start of `buf`, as (type, flags, stream, payload), and how many
    bytes they took (the rest waits for more). A frame longer than `max_size` is a
    FRAME_SIZE_ERROR, raised before its payload arrives."""
    frames = []
    pos, end = 0, len(buf)
    unpack = HEADER.unpack_from
    while end - pos >= 9:
        high, low, kind, flags, stream = unpack(buf, pos)
        n = high << 16 | low
        if n > max_size:
            raise ConnectionFailure(FRAME_SIZE_ERROR, f"a frame of {n} bytes (limit {max_size})")
        if end - pos - 9 < n:
            break
        frames.append((kind, flags, stream & 0x7FFFFFFF, bytes(buf[pos + 9:pos + 9 + n])))
        pos += 9 + n
    return frames, pos
