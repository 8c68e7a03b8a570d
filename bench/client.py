"""The IVR platform's side: POST a recording as multipart/form-data, the body sent with sendfile.

The client costs next to no CPU (the kernel moves the file), so it never limits a contender.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any


@dataclass
class Result:
    status: int
    body: dict[str, Any]
    started: float
    last_byte: float
    answered: float

    @property
    def seconds(self) -> float:
        return self.answered - self.started

    @property
    def tail(self) -> float:
        """Seconds from the last request byte to the response."""
        return self.answered - self.last_byte


def post_recording(host: str, port: int, path: str, file: str, filename: str, *, late_filename: bool = False) -> Result:
    """POST ``file`` as the ``recording`` field (``filename`` first unless ``late_filename``)."""
    boundary = uuid.uuid4().hex
    name_part = f'--{boundary}\r\nContent-Disposition: form-data; name="filename"\r\n\r\n{filename}\r\n'.encode()
    file_head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="recording"; filename="{filename}.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    if late_filename:
        head, tail = file_head, b"\r\n" + name_part + f"--{boundary}--\r\n".encode()
    else:
        head, tail = name_part + file_head, f"\r\n--{boundary}--\r\n".encode()
    size = os.path.getsize(file)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(head) + size + len(tail)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port)) as sock, open(file, "rb") as source:
        started = time.perf_counter()
        sock.sendall(request + head)
        sent = 0
        while sent < size:
            sent += sock.sendfile(source, sent, size - sent)
        sock.sendall(tail)
        last_byte = time.perf_counter()
        response = bytearray()
        while chunk := sock.recv(65536):
            response += chunk
        answered = time.perf_counter()
    header, _, body = bytes(response).partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    if b"chunked" in header.lower():
        body = _dechunk(body)
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = {"raw": body[:500].decode(errors="replace")}
    return Result(status, parsed, started, last_byte, answered)


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        length_text, _, rest = body.partition(b"\r\n")
        length = int(length_text, 16)
        if length == 0:
            break
        out += rest[:length]
        body = rest[length + 2 :]
    return bytes(out)
