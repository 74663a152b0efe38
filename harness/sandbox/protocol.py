"""Wire protocol between the parent and the sandboxed child: framed messages over two pipes.

A frame is ``struct('!IQ')`` (header length, payload length), a UTF-8 JSON header, then the raw
payload (array bytes, C order). The child reads frames on its stdin and writes them on its
stdout; the launcher moves the model's own prints to stderr so they cannot corrupt the channel.

Parent-side reads and writes take a deadline (the wall-clock limit): a child that stops reading
or stops answering is noticed, never waited on forever.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time

FRAME = struct.Struct("!IQ")
MAX_HEADER = 1 << 20


class ChannelClosed(Exception):
    """The other side closed the pipe (the child exited or was killed)."""


class Deadline(Exception):
    """The wall-clock deadline passed while waiting for the other side."""


def _remaining(deadline):
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise Deadline()
    return left


def write_all(fd: int, data, deadline: float | None = None) -> None:
    view = memoryview(data).cast("B")
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while view:
        left = _remaining(deadline)
        if not poller.poll(None if left is None else max(1, int(left * 1000))):
            continue
        try:
            n = os.write(fd, view[: 1 << 20])
        except BlockingIOError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            raise ChannelClosed() from None
        view = view[n:]


def read_exact(fd: int, n: int, deadline: float | None = None) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    got = 0
    while got < n:
        left = _remaining(deadline)
        if not poller.poll(None if left is None else max(1, int(left * 1000))):
            continue
        try:
            k = os.readv(fd, [view[got:]])
        except BlockingIOError:
            continue
        if k == 0:
            raise ChannelClosed()
        got += k
    return buf


def send(fd: int, header: dict, payload=b"", deadline: float | None = None) -> None:
    head = json.dumps(header).encode()
    payload = memoryview(payload).cast("B") if not isinstance(payload, (bytes, bytearray)) else payload
    write_all(fd, FRAME.pack(len(head), len(payload)) + head, deadline)
    if len(payload):
        write_all(fd, payload, deadline)


def recv(fd: int, deadline: float | None = None, max_payload: int | None = None) -> tuple[dict, bytearray]:
    """One frame. ``max_payload`` guards the parent against a child announcing a huge payload."""
    head_len, payload_len = FRAME.unpack(read_exact(fd, FRAME.size, deadline))
    if head_len > MAX_HEADER:
        raise ValueError(f"frame header of {head_len} bytes")
    try:
        header = json.loads(read_exact(fd, head_len, deadline).decode())
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested past the parser's stack
        raise ValueError("frame header is not valid JSON") from None
    if not isinstance(header, dict):
        raise ValueError("frame header is not a JSON object")
    if max_payload is not None and payload_len > max_payload:
        raise ValueError(f"frame payload of {payload_len} bytes exceeds {max_payload}")
    payload = read_exact(fd, payload_len, deadline) if payload_len else bytearray()
    return header, payload
