"""The replica's /ws WebSocket echo (RFC 6455; replica/ws_echo.h), spoken to directly, frame by frame:
the handshake (Sec-WebSocket-Accept as RFC 6455 §1.3's worked example computes it, 400 and 426 for
bad ones), masking, fragmented messages with a ping between the fragments, the close handshake, and
the refusals: an unmasked frame, reserved bits, a continuation without a message, invalid UTF-8,
a message over the 16 MiB bound (refused on its header: nothing that large is sent).

Every wait is bounded; nothing is timed.
"""
import base64
import hashlib
import os
import signal
import socket
import struct
import time
import unittest

import harness
from harness import HOST

REPLICA = harness.build_path("replica", "ringlb-replica")
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example; its accept is below
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def frame(op, payload, fin=True, mask=True, rsv=0, length=None):
    """One client frame (masked unless told otherwise)."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv << 4 | op])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Reader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def take(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"wanted {n} bytes, have {len(self.buf)}")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"EOF with {len(self.buf)} of {n} bytes")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self):
        """(fin, opcode, payload) of the next server frame; server frames are never masked."""
        b0, b1 = self.take(2)
        assert not b1 & 0x80, "a server frame was masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.take(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.take(8))[0]
        return bool(b0 & 0x80), b0 & 0x0F, self.take(n)

    def eof(self, timeout=5.0):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


class WsReplica(unittest.TestCase):
    def setUp(self):
        self.replica = harness.start(self, [REPLICA, "--address", HOST, "--port", "{port}",
                                            "--id", "ws1"])

    def tearDown(self):
        code, _ = self.replica.stop(signal.SIGTERM, timeout=5)
        self.assertEqual(code, 0, self.replica.log())

    def handshake(self, headers=None):
        sock = socket.create_connection((HOST, self.replica.port), timeout=5)
        self.addCleanup(sock.close)
        lines = headers if headers is not None else [
            "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {KEY}",
            "Sec-WebSocket-Version: 13"]
        sock.sendall(("GET /ws HTTP/1.1\r\nHost: h\r\n" + "".join(l + "\r\n" for l in lines) +
                      "\r\n").encode())
        reader = Reader(sock)
        head = b""
        while b"\r\n\r\n" not in head:
            head += reader.take(1)
        return sock, reader, head.decode()

    def opened(self):
        sock, reader, head = self.handshake()
        self.assertTrue(head.startswith("HTTP/1.1 101 "), head)
        return sock, reader

    def assert_closed_with(self, reader, code):
        fin, op, payload = reader.frame()
        self.assertEqual(op, 8)
        self.assertEqual(struct.unpack("!H", payload[:2])[0], code)
        self.assertTrue(reader.eof(), "the replica did not close after its close frame")

    def test_handshake_accept_value(self):
        _, _, head = self.handshake()
        self.assertTrue(head.startswith("HTTP/1.1 101 Switching Protocols\r\n"), head)
        self.assertIn(f"Sec-WebSocket-Accept: {ACCEPT}\r\n", head)
        expected = base64.b64encode(hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                                                 .encode()).digest()).decode()
        self.assertEqual(expected, ACCEPT)
        self.assertIn("X-Server-Id: ws1\r\n", head)

    def test_bad_handshakes(self):
        _, _, head = self.handshake(["Upgrade: websocket", "Connection: Upgrade",
                                     f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 8"])
        self.assertTrue(head.startswith("HTTP/1.1 426 "), head)
        self.assertIn("Sec-WebSocket-Version: 13\r\n", head)
        _, _, head = self.handshake(["Upgrade: websocket", "Connection: Upgrade",
                                     "Sec-WebSocket-Key: short", "Sec-WebSocket-Version: 13"])
        self.assertTrue(head.startswith("HTTP/1.1 400 "), head)

    def test_fragmented_message_with_a_ping_between(self):
        sock, reader = self.opened()
        sock.sendall(frame(1, b"Hel", fin=False) + frame(9, b"ping!") + frame(0, b"lo, ", fin=False)
                     + frame(0, "wörld".encode()))
        self.assertEqual(reader.frame(), (True, 10, b"ping!"))
        self.assertEqual(reader.frame(), (True, 1, "Hello, wörld".encode()))
        sock.sendall(frame(2, os.urandom(70000)[:0] + b"\x00" * 70000))
        self.assertEqual(reader.frame(), (True, 2, b"\x00" * 70000))
        sock.sendall(frame(8, struct.pack("!H", 1000) + b"bye"))
        self.assert_closed_with(reader, 1000)

    def test_refusals(self):
        cases = [
            ("unmasked", frame(1, b"x", mask=False), 1002),
            ("reserved bit", frame(1, b"x", rsv=4), 1002),
            ("continuation without a message", frame(0, b"x"), 1002),
            ("control frame fragmented", frame(9, b"x", fin=False), 1002),
            ("invalid utf-8", frame(1, b"\xc3\x28"), 1007),
            ("over 16 MiB (header only)", frame(2, b"", length=(16 << 20) + 1)[:10] + os.urandom(4),
             1009),
        ]
        for name, data, code in cases:
            with self.subTest(name):
                sock, reader = self.opened()
                sock.sendall(data)
                self.assert_closed_with(reader, code)


if __name__ == "__main__":
    unittest.main()
