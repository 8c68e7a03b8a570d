"""The receiver-side verification printed in docs/configuration.md works on real signed deliveries."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from streamproxy.notify import Signer, encode_event, ping_event

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
SECRET = "whsec-0123456789abcdef-docs"


def documented_verify() -> Any:
    section = DOCS.read_text("utf-8").split("## Notifications", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(code.strip().splitlines()) <= 10, "the docs promise a 10-line verification"
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    return namespace["verify"]


def test_the_documented_verification_accepts_a_real_delivery_and_refuses_forgeries() -> None:
    verify = documented_verify()
    event = ping_event()
    body = encode_event(event)
    headers = Signer(SECRET).headers(body, event="ping", event_id=event["id"])
    signature = headers["Streamproxy-Signature"]
    assert verify(SECRET.encode(), signature, body) == event
    with pytest.raises(ValueError):
        verify(SECRET.encode(), signature, body.replace(b"ping", b"pong"))
    with pytest.raises(ValueError):
        verify(b"another-secret-0123456789", signature, body)
    stale = Signer(SECRET).headers(body, event="ping", event_id=event["id"], now=time.time() - 3600)
    with pytest.raises(ValueError):
        verify(SECRET.encode(), stale["Streamproxy-Signature"], body)
