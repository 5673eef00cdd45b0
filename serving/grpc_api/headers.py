"""Header blocks: a call's request headers decoded (HPACK, python-hyper's `hpack`) into what the
server needs, with a cache; and the response's header blocks, encoded here.

A client's repeated calls send the same header block, byte for byte, once its HPACK dynamic
table holds their fields (grpc-core, nghttp2: every field indexed). While the decoder's dynamic
table is unchanged the same bytes decode to the same headers, so the decoded `Head` is cached by
the block's bytes; any change to the table (an insertion, a size update) empties the cache.
Responses never use the dynamic table: constant blocks are precomputed, the rest are literals
without indexing."""

from __future__ import annotations

import base64
from typing import NamedTuple
from urllib.parse import quote

from hpack import Decoder, HPACKError
from hpack.table import HeaderTable

from serving.grpc_api.frames import COMPRESSION_ERROR, ConnectionFailure
from serving.grpc_api.status import StatusCode

MAX_HEADER_LIST = 64 * 1024  # decoded bytes of one request's headers (SETTINGS says so too)
CACHE_ENTRIES = 256  # distinct header blocks kept per connection
MESSAGE_LIMIT = 4096  # grpc-message bytes sent (a header: clients cap header lists)
_NOT_METADATA = frozenset((b"te", b"content-type", b"grpc-timeout", b"grpc-encoding",
                           b"grpc-accept-encoding"))
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if c != ord("%"))  # sent as they are
_UNITS = {ord("H"): 3600.0, ord("M"): 60.0, ord("S"): 1.0, ord("m"): 1e-3, ord("u"): 1e-6,
          ord("n"): 1e-9}

Metadata = tuple[tuple[str, str | bytes], ...]


class Head(NamedTuple):
    """What a call's request headers say. `refused`: (HTTP status, gRPC status, message) when
    the call must be answered with an error without running."""

    path: str
    timeout: float | None  # seconds (grpc-timeout), from when the headers arrived
    metadata: Metadata
    refused: tuple[int, StatusCode, str] | None


class _Table(HeaderTable):
    """hpack's table, counting its changes (an entry added, or the size changed)."""

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.generation += 1
        super().add(name, value)

    @HeaderTable.maxsize.setter  # type: ignore[attr-defined,untyped-decorator]
    def maxsize(self, newmax: int) -> None:
        self.generation += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


class HeaderDecoder:
    """One connection's HPACK decoder (its dynamic table is the connection's) with the cache."""

    def __init__(self) -> None:
        self.decoder = Decoder(MAX_HEADER_LIST)
        self.table = self.decoder.header_table = _Table()
        self.cache: dict[bytes, Head] = {}

    def decode(self, block: bytes) -> Head:
        """The block's Head; an undecodable block is a COMPRESSION_ERROR (the connection's
        table can no longer be trusted)."""
        head = self.cache.get(block)
        if head is not None:
            return head
        generation = self.table.generation
        try:
            fields = self.decoder.decode(block, raw=True)
        except HPACKError as exc:
            raise ConnectionFailure(COMPRESSION_ERROR, f"header block: {exc}") from None
        head = parse_head(fields)  # type: ignore[arg-type]
        if self.table.generation != generation:
            self.cache.clear()  # indices moved: cached blocks may now mean other fields
        else:
            if len(self.cache) >= CACHE_ENTRIES:
                self.cache.clear()
            self.cache[block] = head
        return head

    def trailers(self, block: bytes) -> None:
        """A client's trailers (a HEADERS frame after DATA): decoded for the table, ignored."""
        try:
            self.decoder.decode(block, raw=True)
        except HPACKError as exc:
            raise ConnectionFailure(COMPRESSION_ERROR, f"header block: {exc}") from None


def parse_timeout(value: bytes) -> float | None:
    """grpc-timeout ("1-8 digits" + H, M, S, m, u or n) in seconds; None if malformed."""
    if not 2 <= len(value) <= 9 or not value[:-1].isdigit() or value[-1] not in _UNITS:
        return None
    return int(value[:-1]) * _UNITS[value[-1]]


def _metadata(name: bytes, value: bytes) -> tuple[str, str | bytes]:
    key = name.decode("latin-1")
    if key.endswith("-bin"):  # binary metadata travels base64-encoded, padding optional
        try:
            return key, base64.b64decode(value + b"=" * (-len(value) % 4))
        except ValueError:
            return key, value
    return key, value.decode("latin-1")


def parse_head(fields: list[tuple[bytes, bytes]]) -> Head:
    """The Head of a request's decoded fields."""
    pseudo: dict[bytes, bytes] = {}
    metadata: list[tuple[str, str | bytes]] = []
    content_type = b""
    timeout: float | None = None
    bad_timeout = False
    for name, value in fields:
        if name[:1] == b":":
            pseudo[name] = value
        elif name == b"content-type":
            content_type = value
        elif name == b"grpc-timeout":
            timeout = parse_timeout(value)
            bad_timeout = timeout is None
        elif name not in _NOT_METADATA:
            metadata.append(_metadata(name, value))
    path = pseudo.get(b":path", b"").decode("latin-1")
    refused: tuple[int, StatusCode, str] | None = None
    if pseudo.get(b":method") != b"POST" or not path:
        refused = (405, StatusCode.UNIMPLEMENTED, "gRPC calls are POST requests with a :path")
    elif not content_type.startswith(b"application/grpc"):
        refused = (415, StatusCode.UNKNOWN, "content-type must be application/grpc")
    elif bad_timeout:
        refused = (200, StatusCode.INTERNAL, "malformed grpc-timeout")
    return Head(path, timeout, tuple(metadata), refused)


# ---- response blocks (HPACK without the dynamic table) --------------------------------------

def _integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 5.1) whose first byte carries `first`'s high bits."""
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes((first | value,))
    out = bytearray((first | top,))
    value -= top
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A literal field without indexing, its name a literal too."""
    return b"\x00" + _integer(len(name), 7) + name + _integer(len(value), 7) + value


STATUS_200 = b"\x88"  # :status 200, static index 8
CONTENT_TYPE = b"\x0f\x10" + _integer(16, 7) + b"application/grpc"  # name: static index 31
RESPONSE_HEADERS = STATUS_200 + CONTENT_TYPE
OK_TRAILERS = _literal(b"grpc-status", b"0")


def _status(http: int) -> bytes:
    if http == 200:
        return STATUS_200
    return b"\x08" + _integer(3, 7) + str(http).encode()  # name: static index 8


def error_trailers(code: StatusCode, message: str, http: int = 200) -> bytes:
    """A Trailers-Only response's block: :status, content-type, grpc-status, grpc-message
    (percent-encoded, as gRPC's spec asks, and cut to MESSAGE_LIMIT bytes)."""
    text = quote(message.encode("utf-8")[:MESSAGE_LIMIT], safe=_SAFE)
    return (_status(http) + CONTENT_TYPE + _literal(b"grpc-status", str(int(code)).encode())
            + _literal(b"grpc-message", text.encode("ascii")))
