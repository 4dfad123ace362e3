#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/seeds/<target>/ (run from anywhere).

The files are committed; this script documents what they are and can
rebuild them. Files named regression-* are fuzzer finds, kept by hand:
this script never touches them.

Input layouts (see fuzz/src/lib.rs split_control):
  byte 0: bits 0-2 = number of chunk-length bytes that follow (each is
          chunk size - 1, used cyclically), bits 3-7 = target flags;
  then the chunk-length bytes, then the stream.
  frame: the whole input is the header + payload (no control byte).
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
MASK = bytes([0x37, 0xFA, 0x21, 0x3D])  # RFC 6455 §5.7's key


def masked(payload, mask=MASK):
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def frame(b0, payload, mask=MASK, length=None):
    """A client frame; `length` overrides the declared length."""
    n = len(payload) if length is None else length
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n <= 0xFFFF:
        head = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + masked(payload, mask)


def close(code=None, reason=b""):
    body = b"" if code is None else struct.pack(">H", code) + reason
    return frame(0x88, body)


UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)

# Frame streams (what a client sends after the handshake).
STREAMS = {
    # §5.7 "A single-frame masked text message".
    "rfc-masked-hello": bytes.fromhex("818537fa213d7f9f4d5158"),
    # §5.7 "A single-frame unmasked text message": a server must fail it.
    "rfc-unmasked-hello": bytes.fromhex("810548656c6c6f"),
    # §5.7 "A fragmented unmasked text message", masked as a client sends it.
    "rfc-fragmented-hello": frame(0x01, b"Hel") + frame(0x80, b"lo"),
    # §5.7 "Unmasked Ping request and masked Ping response".
    "rfc-ping-pong": bytes.fromhex("890548656c6c6f") + bytes.fromhex("8a8537fa213d7f9f4d5158"),
    "masked-ping": frame(0x89, b"Hello"),
    # §5.7 "256 bytes binary message in a single unmasked frame", masked.
    "rfc-binary-256": frame(0x82, bytes(range(256))),
    # §5.7 "64KiB binary message": over the fuzz limit of 4096 bytes.
    "rfc-binary-64k-header": frame(0x82, b"", length=65536) + b"\x00" * 16,
    "fragmented-with-ping": frame(0x01, b"Hel") + frame(0x89, b"ping!")
    + frame(0x00, b"lo, ") + frame(0x8A, b"") + frame(0x80, b"world"),
    "fragmented-binary": frame(0x02, b"\x00\x01") + frame(0x00, b"\x02") + frame(0x80, b"\x03"),
    "utf8-split-across-fragments": frame(0x01, "caf".encode() + b"\xc3")
    + frame(0x80, b"\xa9 \xe2\x82") + frame(0x81, b"\xac"),
    "utf8-split-valid": frame(0x01, b"caf\xc3") + frame(0x80, b"\xa9 \xe2\x82\xac"),
    "close-1000-bye": frame(0x81, b"hi") + close(1000, b"bye"),
    "close-empty": close(),
    "close-one-byte": frame(0x88, b"\x03"),
    "close-1005-invalid": close(1005),
    "close-bad-reason": close(1000, b"\xff\xfe"),
    "invalid-utf8": frame(0x81, b"\xc3\x28"),
    "invalid-utf8-truncated": frame(0x81, b"ok\xe2\x82"),
    "empty-messages": frame(0x81, b"") + frame(0x82, b"") + frame(0x01, b"") + frame(0x80, b""),
    "len16-max": frame(0x82, b"", length=0xFFFF) + b"\x00" * 32,
    "len64-max": frame(0x82, b"", length=(1 << 63) - 1) + b"\x00" * 8,
    "len64-top-bit": bytes([0x82, 0xFF]) + struct.pack(">Q", 1 << 63) + MASK,
    "len64-noncanonical": bytes([0x82, 0xFF]) + struct.pack(">Q", 3) + MASK + masked(b"abc"),
    "message-at-limit": frame(0x82, b"x" * 4096),
    "message-over-limit-in-fragments": frame(0x02, b"x" * 4000) + frame(0x80, b"y" * 97),
    "too-many-fragments": b"".join([frame(0x01, b"a")] + [frame(0x00, b"b")] * 17 + [frame(0x80, b"")]),
    "reserved-bits": frame(0xC1, b"x"),
    "reserved-opcode": frame(0x83, b"x"),
    "fragmented-ping": frame(0x09, b"x"),
    "ping-126": frame(0x89, b"p" * 126),
    "ping-125": frame(0x89, b"p" * 125),
    "continuation-without-start": frame(0x80, b"x"),
    "new-message-mid-fragments": frame(0x01, b"a") + frame(0x81, b"b"),
    "after-close": close(1001) + frame(0x81, b"ignored"),
}


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    for name, stream in STREAMS.items():
        write("frame", name, stream)
        # Whole, then cut in 1-, 3- and (2, 5, 1)-byte chunks.
        write("connection_open", name, b"\x00" + stream)
        write("connection_open", name + "-bytewise", b"\x01\x00" + stream)
        write("connection_open", name + "-chunks-2-5-1", b"\x03\x01\x04\x00" + stream)
        # After the fixed upgrade request, whole and in 7-byte chunks.
        write("connection", name, b"\x00" + stream)
        write("connection", name + "-chunks-7", b"\x01\x06" + stream)
    # The server closes at a chosen chunk (bits 3-7 of byte 0) of 3-byte
    # chunks, or of chunks cut at the frame boundaries.
    for name, stream in STREAMS.items():
        write("connection_close", name + "-close-at-1", bytes([1 << 3 | 1, 2]) + stream)
        write("connection_close", name + "-close-at-3", bytes([3 << 3 | 1, 2]) + stream)
    write("connection_close", "close-before-pong", bytes([0]) + frame(0x89, b"x") + close(1000))
    # A peer that sends Pings and reads nothing, with a 64-byte outbox
    # allowance (connection_open bit 3, connection bit 4).
    pings = frame(0x89, b"p" * 125) * 2 + frame(0x89, b"")
    write("connection_open", "pings-tight-outbox", b"\x08" + pings)
    write("connection", "pings-tight-outbox", b"\x10" + pings)
    # The caller refuses the upgrade (connection bit 5).
    write("connection", "caller-refuses", b"\x20" + STREAMS["rfc-masked-hello"])
    write("connection", "caller-refuses-bytewise", b"\x21\x00" + STREAMS["fragmented-with-ping"])
    write("frame", "server-hello", bytes.fromhex("810548656c6c6f"))
    write("frame", "empty", b"")
    # The connection target with its own request (flag bit 3: no fixed prefix).
    write("connection", "raw-upgrade-then-hello", b"\x08" + UPGRADE + STREAMS["rfc-masked-hello"])
    write("connection", "raw-upgrade-bytewise", b"\x09\x00" + UPGRADE + STREAMS["fragmented-with-ping"])
    write("connection", "raw-plain-get", b"\x08GET /rust HTTP/1.1\r\nHost: localhost\r\n\r\n")
    write("connection", "raw-post", b"\x08" + UPGRADE.replace(b"GET", b"POST"))
    write("connection", "raw-garbage", b"\x08\x81\x85\r\n\r\n")
    big = UPGRADE.replace(b"Origin", b"X-Padding: " + b"x" * 900 + b"\r\nOrigin")
    write("connection", "raw-head-too-large", b"\x08" + big)
    write("connection", "raw-head-too-large-chunks", b"\x0a\x3f\x00" + big)
    def padded(total):
        extra = total - len(UPGRADE) - len(b"X-Padding: \r\n")
        return UPGRADE.replace(b"Origin", b"X-Padding: " + b"x" * extra + b"\r\nOrigin")
    assert len(padded(1024)) == 1024
    write("connection", "raw-head-at-limit", b"\x08" + padded(1024) + STREAMS["rfc-masked-hello"])
    write("connection", "raw-head-over-limit", b"\x08" + padded(1025))
    write("connection", "raw-head-in-pieces", b"\x0a\x04\x00" + UPGRADE + close(1000))
    # Handshake heads, under each of the four policies (bits 3-4).
    heads = {
        "rfc-request": UPGRADE,
        "minimal": b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "plain-get": b"GET /rust?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "version-8": UPGRADE.replace(b"Version: 13", b"Version: 8"),
        "http10": UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0"),
        "duplicate-key": UPGRADE.replace(b"Origin", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin"),
        "bad-origin": UPGRADE.replace(b"http://example.com", b"http://evil.example"),
        "v6-host": b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\nOrigin: http://[::1]:8080\r\nUpgrade: websocket\r\n"
        b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n",
        "near-misses": b"GET / HTTP/1.1\r\nHost: a\r\r\n\n\r\n\r\r\n\r\n",
        "garbage": b"\x00\xff\r\n\r\n",
        "frames-after-head": UPGRADE + STREAMS["rfc-masked-hello"],
    }
    for name, head in heads.items():
        for policy in range(4):
            write("handshake", f"{name}-policy{policy}", bytes([policy << 3]) + head)
        write("handshake", f"{name}-bytewise", b"\x01\x00" + head)
        write("handshake", f"{name}-chunks-3-1-9", b"\x0b\x02\x00\x08" + head)


if __name__ == "__main__":
    main()
