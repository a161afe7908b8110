"""The controller <-> worker channel: loopback TCP, authenticated, length-prefixed JSON messages.

Why not pickle or multiprocessing.connection: messages here are tiny and plain (commands, seconds,
byte counts), JSON keeps them readable in a debugger, and every receive takes a deadline, which the
controller needs to notice a hung or dead rank. Parameters travel as an optional binary payload
(``torch.save`` bytes, loaded with ``weights_only=True``), never as pickled objects.

Authentication: the controller makes a random token per case and passes it to the workers in the
environment (``GPUSIZER_TOKEN``); it never goes over the socket. On connect the controller sends a
random nonce and the worker must answer ``HMAC-SHA256(token, nonce || rank)``. A connection that
fails the check is dropped before any message of it is read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import select
import socket
import struct
import time

ADDRESS_ENV = "GPUSIZER_CHANNEL"  # "127.0.0.1:<port>"
TOKEN_ENV = "GPUSIZER_TOKEN"  # hex
NONCE_BYTES = 32
MAX_HEADER_BYTES = 1 << 20
_LENGTHS = struct.Struct("!II")  # header bytes, payload bytes


class ChannelClosed(ConnectionError):
    """The peer closed the connection (for a worker: its process ended)."""


class ChannelTimeout(TimeoutError):
    """No complete message before the deadline."""


def new_token() -> str:
    return secrets.token_hex(32)


def proof(token: str, nonce: bytes, rank: int) -> str:
    return hmac.new(bytes.fromhex(token), nonce + str(rank).encode(), hashlib.sha256).hexdigest()


class Connection:
    """One authenticated socket. ``recv`` takes an absolute ``time.monotonic()`` deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: dict, payload: bytes = b"") -> None:
        header = json.dumps(message).encode()
        self.sock.sendall(_LENGTHS.pack(len(header), len(payload)) + header + payload)

    def _read_exactly(self, count: int, deadline: float | None) -> bytes:
        while len(self._buffer) < count:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                    raise ChannelTimeout("no message before the deadline")
            chunk = self.sock.recv(max(1 << 16, count - len(self._buffer)))
            if not chunk:
                raise ChannelClosed("connection closed by the peer")
            self._buffer += chunk
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def has_buffered(self) -> bool:
        return bool(self._buffer)

    def recv(self, deadline: float | None = None) -> tuple[dict, bytes]:
        header_len, payload_len = _LENGTHS.unpack(self._read_exactly(_LENGTHS.size, deadline))
        if header_len > MAX_HEADER_BYTES:
            raise ChannelClosed(f"message header of {header_len} bytes is not from a gpusizer worker")
        message = json.loads(self._read_exactly(header_len, deadline))
        payload = self._read_exactly(payload_len, deadline) if payload_len else b""
        return message, payload

    def close(self) -> None:
        self.sock.close()  # idempotent


class Listener:
    """The controller's end: listens on 127.0.0.1, an ephemeral port, for one case's ranks."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.token = new_token()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.address = "{}:{}".format(*self.sock.getsockname())

    def env(self) -> dict[str, str]:
        """What a worker needs to connect back."""
        return {ADDRESS_ENV: self.address, TOKEN_ENV: self.token}

    def accept(self, deadline: float) -> tuple[Connection, dict] | None:
        """One authenticated worker and its hello, or None when a connection failed the check.

        Raises ChannelTimeout when nobody connects before the deadline.
        """
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self.sock], [], [], left)[0]:
            raise ChannelTimeout("no worker connected before the deadline")
        sock, _ = self.sock.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(sock)
        nonce = secrets.token_bytes(NONCE_BYTES)
        try:
            conn.send({"nonce": nonce.hex()})
            # A client that stays silent must not hold up the others for long.
            hello, _ = conn.recv(min(deadline, time.monotonic() + 10.0))
            rank = int(hello["rank"])
            if not hmac.compare_digest(str(hello.get("proof", "")), proof(self.token, nonce, rank)):
                raise ValueError("bad proof")
        except (ChannelClosed, ChannelTimeout, ValueError, KeyError, TypeError, OSError):
            conn.close()
            return None
        return conn, hello

    def close(self) -> None:
        self.sock.close()  # idempotent


def connect(address: str, token: str, rank: int, hello: dict, timeout_s: float = 60.0) -> Connection:
    """The worker's end: connect, answer the challenge, say hello."""
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout_s)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = Connection(sock)
    challenge, _ = conn.recv(time.monotonic() + timeout_s)
    nonce = bytes.fromhex(challenge["nonce"])
    conn.send({**hello, "rank": rank, "proof": proof(token, nonce, rank)})
    return conn
