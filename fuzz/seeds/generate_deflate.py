#!/usr/bin/env python3
"""Writes the seed corpora of the permessage-deflate targets,
fuzz/seeds/extensions/ and fuzz/seeds/inflate/ (run from anywhere).

Kept apart from generate.py, which writes the other targets' seeds; the
input layout is the same (see fuzz/src/lib.rs split_control): byte 0's
bits 0-2 count the chunk-length bytes that follow, bits 3-7 are flags.
extensions: the chunks are header lines. inflate: flag bit 0 picks the
mode (0: compressed data, 1: round trip), bits 1-4 the limit (x 2 KiB) or
the cut between the two parts compressed.
"""
import os
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)


def deflated(data):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def main():
    headers = {
        "browser": b"permessage-deflate; client_max_window_bits",
        "firefox": b"permessage-deflate",
        "windows": b"permessage-deflate; client_max_window_bits=10; server_max_window_bits=12",
        "fallbacks": b"permessage-deflate; server_max_window_bits=7, permessage-deflate; "
        b"server_max_window_bits=9, permessage-deflate",
        "quoted": b'permessage-deflate; client_max_window_bits="1\\2", x; a="b"',
        "takeovers": b"permessage-deflate;server_no_context_takeover;client_no_context_takeover",
        "duplicate": b"permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "unknown": b"x-webkit-deflate-frame, foo; bar=baz ;qux, , permessage-deflate; foo",
        "malformed": b'permessage-deflate; a="unterminated',
    }
    for name, value in headers.items():
        write("extensions", name, b"\x00" + value)
        write("extensions", name + "-lines-of-9", b"\x01\x08" + value)
    # RFC 7692 7.2.3's examples, then chat text and a bomb.
    hello = bytes.fromhex("f248cdc9c90700")
    examples = {
        "rfc-hello": hello,
        "rfc-stored": bytes.fromhex("000500faff48656c6c6f00"),
        "rfc-bfinal": bytes.fromhex("f348cdc9c907000000"),
        "rfc-two-blocks": bytes.fromhex("f248050000 00ffffcac9c90700".replace(" ", "")),
        "rfc-empty": b"\x00",
        "chat": deflated(b"User 51234: hello there, how is the build today? " * 20),
        "bomb": deflated(b"\x00" * (1 << 20)),
    }
    for name, data in examples.items():
        write("inflate", name, bytes([1 << 4]) + data)  # limit 2 KiB
        write("inflate", name + "-bytewise", bytes([(1 << 4) | 1, 0]) + data)
    write("inflate", "roundtrip-text", bytes([(3 << 4) | (1 << 3)]) + b"Hello, hello, hello world")
    write("inflate", "roundtrip-empty", bytes([1 << 3]))


if __name__ == "__main__":
    main()
