"""The controller <-> worker channel: loopback TCP, authenticated, length-prefixed JSON messages.

Why not pickle or multiprocessing.connection: messages here are tiny and plain (commands, seconds,
byte counts), JSON keeps them readable in a debugger, and every receive takes a deadline, which the
controller needs to notice a hung or dead rank. Parameters travel as an optional binary payload
(``torch.save`` bytes, loaded with ``weights_only=True``), never as pickled objects.

Authentication: the controller makes a random token per case and passes it to the workers in the
environment (``GPUSIZER_TOKEN``); it never goes over the socket. On connect the controller sends a
random nonce and the worker must answer ``HMAC-SHA256(token, nonce || rank)``. A connection that
fails the check is dropped before any message of it is read. The hello itself is bounded (4 KiB, no
payload, nesting depth 8) and only its rank (a small integer) and proof (a string) are looked at.
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
MAX_PAYLOAD_BYTES = (1 << 32) - 1  # what the length field can say (rank 0's parameters travel as the payload)
# Before the proof checks out, a peer is anybody on this host: its hello is small, flat and has no
# payload, and nothing in it is interpreted beyond the proof.
MAX_HELLO_BYTES = 4096
MAX_JSON_DEPTH = 8
MAX_RANK = 1 << 20
# How long a peer that has connected gets to answer the challenge. Not cut to the caller's wait: the
# controller waits for connections in short polls (0.2 s), and a rank that connected near the end of
# one, on a busy machine, was dropped as silent and exited (seen as "torchrun exited with code 1
# during start-up" under CI load).
HELLO_TIMEOUT_S = 10.0
_RECV_CHUNK_BYTES = 1 << 20
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
            # Bounded reads: a claimed length is never allocated up front.
            chunk = self.sock.recv(min(_RECV_CHUNK_BYTES, max(1 << 16, count - len(self._buffer))))
            if not chunk:
                raise ChannelClosed("connection closed by the peer")
            self._buffer += chunk
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def poll(self, max_header_bytes: int = MAX_HEADER_BYTES,
             max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> tuple[dict, bytes] | None:
        """A complete message if one has arrived, reading only what is there (never waiting); None
        when it is not complete yet (what came is kept for the next call)."""
        try:
            chunk = self.sock.recv(_RECV_CHUNK_BYTES, socket.MSG_DONTWAIT)
        except BlockingIOError:
            chunk = None
        if chunk == b"":
            raise ChannelClosed("connection closed by the peer")
        self._buffer += chunk or b""
        if len(self._buffer) < _LENGTHS.size:
            return None
        header_len, payload_len = _LENGTHS.unpack_from(self._buffer)
        if header_len > max_header_bytes or payload_len > max_payload_bytes:
            raise ChannelClosed(f"message of {header_len} + {payload_len} bytes is not from a gpusizer worker")
        if len(self._buffer) < _LENGTHS.size + header_len + payload_len:
            return None
        return self.recv(None, max_header_bytes, max_payload_bytes)  # whole in the buffer: no wait

    def has_buffered(self) -> bool:
        return bool(self._buffer)

    def recv(self, deadline: float | None = None, max_header_bytes: int = MAX_HEADER_BYTES,
             max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> tuple[dict, bytes]:
        header_len, payload_len = _LENGTHS.unpack(self._read_exactly(_LENGTHS.size, deadline))
        if header_len > max_header_bytes or payload_len > max_payload_bytes:
            raise ChannelClosed(f"message of {header_len} + {payload_len} bytes is not from a gpusizer worker")
        message = parse_message(self._read_exactly(header_len, deadline))
        payload = self._read_exactly(payload_len, deadline) if payload_len else b""
        return message, payload

    def close(self) -> None:
        self.sock.close()  # idempotent


def json_depth(text: bytes) -> int:
    """How deeply brackets nest, outside strings: checked before json.loads, which recurses."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in text:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def parse_message(header: bytes) -> dict:
    """A message is a JSON object of plain values: anything else closes the connection."""
    if json_depth(header) > MAX_JSON_DEPTH:
        raise ChannelClosed(f"message nested deeper than {MAX_JSON_DEPTH} is not from a gpusizer worker")
    try:
        message = json.loads(header)
    except (ValueError, RecursionError):
        raise ChannelClosed("message is not JSON; not from a gpusizer worker") from None
    if not isinstance(message, dict):
        raise ChannelClosed("message is not a JSON object; not from a gpusizer worker")
    return message


def hello_rank(hello: dict) -> int | None:
    """The rank a hello claims, when it is a plain small integer (what the proof was computed over)."""
    rank = hello.get("rank")
    if type(rank) is not int or not 0 <= rank < MAX_RANK:  # bool, float (1e999 is inf) and huge ints are out
        return None
    return rank


class Listener:
    """The controller's end: listens on 127.0.0.1, an ephemeral port, for one case's ranks."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.token = new_token()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.address = "{}:{}".format(*self.sock.getsockname())
        self.dropped: list[str] = []  # why each connection that failed the check was dropped (for diagnosis)
        # Connections that got their nonce and have not answered yet: (nonce, deadline of their hello).
        self._pending: dict[Connection, tuple[bytes, float]] = {}

    def env(self) -> dict[str, str]:
        """What a worker needs to connect back."""
        return {ADDRESS_ENV: self.address, TOKEN_ENV: self.token}

    def accept(self, deadline: float, hello_timeout_s: float = HELLO_TIMEOUT_S) -> tuple[Connection, dict] | None:
        """One authenticated worker and its hello, or None when a connection failed the check.

        Handshakes run side by side: every connection gets its nonce as soon as it connects and then
        ``hello_timeout_s`` of its own to answer, so a peer that connects and stays silent holds up
        nobody (handled one at a time, a dozen of them outlasted a 120 s launch). ``deadline`` bounds
        this call's wait. Raises ChannelTimeout when no worker answered before the deadline.
        """
        while True:
            now = time.monotonic()
            for conn, (_, until) in list(self._pending.items()):
                if now >= until:
                    self._drop(conn, ChannelTimeout("no hello before its deadline"))
                    return None
            left = deadline - now
            if left <= 0:
                raise ChannelTimeout("no worker connected before the deadline")
            wait = min([left, *(until - now for _, until in self._pending.values())])
            ready = select.select([self.sock, *self._pending], [], [], max(wait, 0.0))[0]
            for item in ready:
                if item is self.sock:
                    self._greet(hello_timeout_s)
                    continue
                heard = self._hear(item)
                if heard is not False:
                    return heard

    def _greet(self, hello_timeout_s: float) -> None:
        sock, _ = self.sock.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(sock)
        nonce = secrets.token_bytes(NONCE_BYTES)
        try:
            conn.send({"nonce": nonce.hex()})
        except OSError as error:
            self._drop(conn, error)
            return
        self._pending[conn] = (nonce, time.monotonic() + hello_timeout_s)

    def _hear(self, conn: Connection) -> tuple[Connection, dict] | None | bool:
        """The checked hello of a pending connection that has something to read: (conn, hello), None
        when it failed the check (dropped), or False when its hello is not complete yet."""
        nonce, _ = self._pending[conn]
        try:
            # Only what has arrived: a partial hello stays buffered in the connection until the rest comes.
            message = conn.poll(max_header_bytes=MAX_HELLO_BYTES, max_payload_bytes=0)
        except (ChannelClosed, ValueError, OSError) as error:
            self._drop(conn, error)
            return None
        if message is None:
            return False
        hello, _ = message
        try:
            rank, claimed = hello_rank(hello), hello.get("proof")
            if rank is None or not isinstance(claimed, str) or not claimed.isascii():
                raise ValueError("malformed hello")
            if not hmac.compare_digest(claimed, proof(self.token, nonce, rank)):
                raise ValueError("bad proof")
        except ValueError as error:
            self._drop(conn, error)
            return None
        del self._pending[conn]
        return conn, hello

    def _drop(self, conn: Connection, error: BaseException) -> None:
        self._pending.pop(conn, None)
        self.dropped.append(f"{type(error).__name__}: {error}"[:200])
        conn.close()

    def close(self) -> None:
        for conn in list(self._pending):
            conn.close()
        self._pending.clear()
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
