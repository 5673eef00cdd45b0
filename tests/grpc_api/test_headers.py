"""Request header blocks decoded (hpack) into a Head, the cache keyed by the block's bytes, and
the response blocks encoded here, read back by hpack's own decoder."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from hpack import Decoder, Encoder
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.grpc_api.frames import COMPRESSION_ERROR, ConnectionFailure
from serving.grpc_api.headers import (
    OK_TRAILERS,
    RESPONSE_HEADERS,
    HeaderDecoder,
    error_trailers,
    parse_head,
    parse_timeout,
)
from serving.grpc_api.status import StatusCode

CALL = [(":method", "POST"), (":scheme", "http"), (":path", "/pkg.Svc/Call"),
        (":authority", "h"), ("content-type", "application/grpc"), ("te", "trailers")]


def test_a_repeated_block_is_decoded_once() -> None:
    enc, dec = Encoder(), HeaderDecoder()
    headers = [*CALL, ("x-routing-key", "user-1")]
    first = enc.encode(headers)  # literals with indexing: the table changes, nothing cached
    head = dec.decode(first)
    assert head.path == "/pkg.Svc/Call" and head.metadata == (("x-routing-key", "user-1"),)
    assert dec.cache == {}
    again = enc.encode(headers)  # fully indexed now
    assert len(again) < len(first) and dec.decode(again) == head
    assert list(dec.cache) == [again]
    generation = dec.table.generation
    assert dec.decode(again) is dec.cache[again] and dec.table.generation == generation
    other = enc.encode([*CALL, ("x-routing-key", "user-2")])  # adds an entry: cache emptied
    assert dec.decode(other).metadata == (("x-routing-key", "user-2"),)
    assert again not in dec.cache


FIELD = st.tuples(st.sampled_from(["x-a", "x-b", "authorization", "x-c-bin", "traceparent"]),
                  st.text("abcdef0123456789", max_size=40))


@settings(max_examples=60)
@given(st.lists(st.tuples(st.lists(FIELD, max_size=5), st.sampled_from([0, 64, 256, 4096])),
                min_size=1, max_size=12))
def test_the_cached_decoder_agrees_with_hpacks(blocks: list[tuple[list[tuple[str, str]], int]]
                                                ) -> None:
    """Blocks from one encoder whose table fills, evicts and resizes: the cached decoder's
    Heads are those of a plain hpack decoder, block by block."""
    enc, cached, plain = Encoder(), HeaderDecoder(), Decoder()
    for fields, table_size in blocks:
        if table_size:
            enc.header_table_size = table_size
        for _ in range(2):  # each block twice: the second may hit the cache
            block = enc.encode([*CALL, *fields])
            assert cached.decode(block) == parse_head(plain.decode(block, raw=True))


def test_a_broken_block_is_a_compression_error() -> None:
    with pytest.raises(ConnectionFailure) as err:
        HeaderDecoder().decode(b"\xff\xff\xff\xff\x0f")
    assert err.value.code == COMPRESSION_ERROR


def test_refused_heads_and_metadata() -> None:
    def head(**changed: str) -> tuple[int, StatusCode, str] | None:
        fields = [(k.encode(), changed.get(k.strip(":").replace("-", "_"), v).encode())
                  for k, v in [*CALL, ("grpc-timeout", "5S")]]
        return parse_head(fields).refused

    assert head() is None
    assert head(method="GET")[:2] == (405, StatusCode.UNIMPLEMENTED)  # type: ignore[index]
    assert head(content_type="text/plain")[:2] == (415, StatusCode.UNKNOWN)  # type: ignore[index]
    assert head(grpc_timeout="5x")[:2] == (200, StatusCode.INTERNAL)  # type: ignore[index]
    h = parse_head([(b":method", b"POST"), (b":path", b"/a/b"), (b"content-type",
                    b"application/grpc+proto"), (b"k-bin", b"AAEC"), (b"user-agent", b"u")])
    assert h.refused is None and h.timeout is None
    assert h.metadata == (("k-bin", b"\x00\x01\x02"), ("user-agent", "u"))


@pytest.mark.parametrize(("value", "seconds"), [
    (b"5S", 5.0), (b"100m", 0.1), (b"2M", 120.0), (b"1H", 3600.0), (b"250u", 250e-6),
    (b"99999999n", 0.099999999), (b"S", None), (b"123456789S", None), (b"5s", None),
    (b"-5S", None),
])
def test_grpc_timeout(value: bytes, seconds: float | None) -> None:
    got = parse_timeout(value)
    assert got == pytest.approx(seconds) if seconds is not None else got is None


def test_response_blocks_read_back_with_hpack() -> None:
    dec = Decoder()
    assert dec.decode(RESPONSE_HEADERS) == [(":status", "200"),
                                            ("content-type", "application/grpc")]
    assert dec.decode(OK_TRAILERS) == [("grpc-status", "0")]
    message = "50% of été\nfailed: " + "x" * 5000
    fields = dict(dec.decode(error_trailers(StatusCode.NOT_FOUND, message, 415)))
    assert fields[":status"] == "415" and fields["grpc-status"] == "5"
    sent = fields["grpc-message"]
    assert all(0x20 <= ord(c) < 0x7F for c in sent) and "%25" in sent
    assert message.startswith(unquote(sent)) and len(sent) < 4200
    assert dec.header_table.dynamic_entries == type(dec.header_table.dynamic_entries)()
