"""Notifications from the real server (``python -m streamproxy serve``) to a receiver that verifies signatures.

Every case runs the CLI as a subprocess, because what is proven here is about processes: the
event is in the outbox before the answer, survives SIGKILL, is delivered once by two servers on
one directory, drains on SIGTERM, and 1,000 of them wait without growing the server's memory.
Backoffs are shortened with ``--notify-backoff``/``--notify-backoff-max`` so outages of a few
seconds cover several attempts.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from streamproxy.openapi import openapi_document
from tests.helpers import form, queue_and_topic
from tests.receiver import ThreadedReceiver
from tests.servers import rss_kib, streamproxy_server

SECRET = "whsec-0123456789abcdef-serve"
OUTBOX = ".streamproxy-outbox"
DOC = openapi_document()
EVENT_SCHEMA = Draft202012Validator(
    {"$ref": "urn:doc#/components/schemas/RecordingStoredEvent"},
    registry=Registry().with_resource("urn:doc", Resource.from_contents(DOC, default_specification=DRAFT202012)),
)


def notify_args(root: Path, url: str, *extra: str) -> list[str]:
    return [
        "--storage",
        root.as_uri(),
        "--notify-url",
        url,
        "--notify-secret",
        SECRET,
        "--notify-timeout",
        "2",
        "--notify-backoff",
        "0.05",
        "--notify-backoff-max",
        "0.3",
        "--shutdown-timeout",
        "3",
        *extra,
    ]


@pytest.fixture
def receiver() -> Iterator[ThreadedReceiver]:
    with ThreadedReceiver(SECRET) as receiver:
        yield receiver


def outbox_files(root: Path, folder: str) -> list[Path]:
    directory = root / OUTBOX / folder
    return sorted(p for p in directory.iterdir() if not p.name.startswith(".")) if directory.is_dir() else []


async def put(session: aiohttp.ClientSession, base: str, name: str, body: bytes = b"RIFF-not-really") -> dict[str, Any]:
    async with session.put(f"{base}/recordings/{name}", data=body, headers={"Content-Type": "audio/wav"}) as resp:
        answer: dict[str, Any] = await resp.json()
        answer["_status"] = resp.status
        answer["_request_id"] = resp.headers.get("X-Request-ID")
        return answer


async def until(condition: Any, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM, within: float = 20) -> tuple[int, str]:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=within)
    return proc.returncode, err.decode()


async def test_one_event_per_stored_upload_and_none_for_failures(tmp_path: Path, receiver: ThreadedReceiver) -> None:
    with streamproxy_server([*notify_args(tmp_path, receiver.url), "--manifest"]) as (_, base):
        async with aiohttp.ClientSession() as session:
            data = form([("filename", "call-1"), ("caller", "+4930123"), ("recording", b"RIFF" + b"\0" * 100)])
            async with session.post(f"{base}/recordings", data=data, headers={"X-Request-ID": "req-1"}) as resp:
                assert resp.status == 200
                answer = await resp.json()
            # failures: a bad name, a taken key, a body that stops half way
            assert (await put(session, base, "..bad"))["_status"] == 400
            assert (await put(session, base, "call-1"))["_status"] == 409

            async def truncated() -> Any:
                yield b"x" * 1000
                raise ConnectionResetError("client gone")

            with pytest.raises(aiohttp.ClientError):
                async with session.put(f"{base}/recordings/gone", data=truncated()):
                    pass
            await until(lambda: len(receiver.received) >= 1)
            await asyncio.sleep(1.0)  # scans and retries would have shown any other event by now
    (got,) = receiver.received
    event = got.event
    EVENT_SCHEMA.validate(event)
    assert receiver.rejected == [] and sum(receiver.attempts.values()) == 1
    assert {k: event[k] for k in ("url", "key", "size", "sha256", "audio", "manifest")} == {
        k: answer[k] for k in ("url", "key", "size", "sha256", "audio", "manifest")
    }
    assert event["bucket"] is None and answer["manifest"] == "call-1.wav.json"
    assert event["fields"] == {"filename": "call-1", "caller": "+4930123"}
    assert event["client_address"] == "127.0.0.1" and event["request_id"] == "req-1"
    assert event["received_at"] <= event["stored_at"]
    assert got.headers["Streamproxy-Delivery"] == event["id"]
    assert outbox_files(tmp_path, "pending") == [] and outbox_files(tmp_path, "lease") == []
    print("signed event as received:", json.dumps(got.headers), got.body.decode())


async def test_receiver_down_then_back_every_event_keeps_its_id(tmp_path: Path, receiver: ThreadedReceiver) -> None:
    receiver.status = 503
    with streamproxy_server(notify_args(tmp_path, receiver.url)) as (_, base):
        async with aiohttp.ClientSession() as session:
            answers = [await put(session, base, f"call-{n}") for n in range(10)]
        assert all(a["_status"] == 200 for a in answers)
        await asyncio.sleep(3)  # the outage: the first attempt, then a probe per backoff period
        assert receiver.refused >= 5 and receiver.received == []
        pending = outbox_files(tmp_path, "pending")
        during = {json.loads(p.read_text())["event"]["id"] for p in pending}
        assert len(during) == 10
        receiver.status = 200
        await until(lambda: len(receiver.received) == 10)
        await until(lambda: not outbox_files(tmp_path, "pending"))
    assert set(receiver.ids()) == during  # the ids in the outbox during the outage are the ids delivered
    assert sorted(d.event["key"] for d in receiver.received) == sorted(a["key"] for a in answers)


async def test_sigkill_after_the_answer_then_restart_delivers(tmp_path: Path, receiver: ThreadedReceiver) -> None:
    receiver.status = 503
    with streamproxy_server(notify_args(tmp_path, receiver.url)) as (proc, base):
        async with aiohttp.ClientSession() as session:
            answer = await put(session, base, "crash-1")
        assert answer["_status"] == 200
        (pending,) = outbox_files(tmp_path, "pending")  # written before the answer
        stored = json.loads(pending.read_text())["event"]
        proc.kill()
        proc.wait(10)
    print("after SIGKILL, the outbox holds:", pending.relative_to(tmp_path), "for", stored["key"], stored["id"])
    receiver.status = 200
    started = time.monotonic()
    with streamproxy_server(notify_args(tmp_path, receiver.url)):
        await until(lambda: len(receiver.received) == 1)
        print(f"restarted server delivered it after {time.monotonic() - started:.2f} s")
    (got,) = receiver.received
    assert got.event == stored and got.event["key"] == answer["key"]
    assert outbox_files(tmp_path, "pending") == []


async def test_two_servers_on_one_directory_deliver_each_event_once(tmp_path: Path, receiver: ThreadedReceiver) -> None:
    receiver.status = 503
    with (
        streamproxy_server(notify_args(tmp_path, receiver.url)) as (_, one),
        streamproxy_server(notify_args(tmp_path, receiver.url)) as (_, two),
    ):
        async with aiohttp.ClientSession() as session:
            answers = [await put(session, (one, two)[n % 2], f"pair-{n}") for n in range(20)]
        assert all(a["_status"] == 200 for a in answers)
        await asyncio.sleep(1)  # both servers retry the shared outbox during the outage
        receiver.status = 200
        await until(lambda: len(receiver.received) >= 20)
        await asyncio.sleep(1.5)  # further scans by both servers: nothing may arrive twice
    assert len(receiver.received) == 20
    assert sorted(d.event["key"] for d in receiver.received) == sorted(a["key"] for a in answers)


async def test_sigterm_finishes_a_delivery_in_flight(tmp_path: Path, receiver: ThreadedReceiver) -> None:
    receiver.delay = 1.0
    with streamproxy_server(notify_args(tmp_path, receiver.url)) as (proc, base):
        async with aiohttp.ClientSession() as session:
            assert (await put(session, base, "term-1"))["_status"] == 200
        await asyncio.sleep(0.3)  # the delivery is in flight at the receiver
        code, _ = await asyncio.to_thread(stop, proc)
    assert code == 0
    assert len(receiver.received) == 1
    assert outbox_files(tmp_path, "pending") == []


async def test_sigterm_leaves_what_it_cannot_finish_in_the_outbox(tmp_path: Path, receiver: ThreadedReceiver) -> None:
    receiver.delay = 10.0
    args = notify_args(tmp_path, receiver.url)
    args[args.index("--notify-timeout") + 1] = "20"
    args[args.index("--shutdown-timeout") + 1] = "0.5"
    with streamproxy_server(args) as (proc, base):
        async with aiohttp.ClientSession() as session:
            assert (await put(session, base, "term-2"))["_status"] == 200
        await asyncio.sleep(0.3)
        started = time.monotonic()
        code, err = await asyncio.to_thread(stop, proc)
        assert time.monotonic() - started < 8
    assert code == 0, err
    assert receiver.received == []
    assert len(outbox_files(tmp_path, "pending")) == 1
    assert outbox_files(tmp_path, "lease") == []  # handed back, so the next start delivers at once


async def test_readyz_ignores_the_webhook_and_metrics_show_the_outbox(
    tmp_path: Path, receiver: ThreadedReceiver
) -> None:
    receiver.status = 503
    with streamproxy_server(notify_args(tmp_path, receiver.url)) as (_, base):
        async with aiohttp.ClientSession() as session:
            assert (await put(session, base, "m-1"))["_status"] == 200
            await asyncio.sleep(1.5)
            async with session.get(f"{base}/readyz") as resp:
                assert resp.status == 200
            async with session.get(f"{base}/metrics") as resp:
                text = await resp.text()
    values = {
        line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("streamproxy_notify")
    }
    assert values["streamproxy_notify_pending"] == 1
    assert values["streamproxy_notify_retried_total"] >= 2
    assert values["streamproxy_notify_oldest_pending_seconds"] > 0.5
    assert values["streamproxy_notify_delivered_total"] == 0
    assert values["streamproxy_notify_outbox_failures_total"] == 0


async def test_a_failed_outbox_write_still_answers_success_and_is_counted(
    tmp_path: Path, receiver: ThreadedReceiver
) -> None:
    (tmp_path / OUTBOX).write_text("not a directory")  # every outbox write fails
    with streamproxy_server(notify_args(tmp_path, receiver.url)) as (proc, base):
        async with aiohttp.ClientSession() as session:
            answer = await put(session, base, "lost-1")
            async with session.get(f"{base}/metrics") as resp:
                text = await resp.text()
        code, err = await asyncio.to_thread(stop, proc)
    assert code == 0
    assert answer["_status"] == 200 and answer["status"] == "success"
    assert (tmp_path / "lost-1.wav").read_bytes() == b"RIFF-not-really"
    assert "streamproxy_notify_outbox_failures_total 1.0" in text
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    (failure,) = [line for line in lines if line.get("event") == "notify_outbox_failed"]
    assert failure["key"] == "lost-1.wav" and failure["level"] == "error"


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamproxy", *argv], capture_output=True, text=True, timeout=60, check=False
    )


async def test_dead_letters_listed_retried_and_dropped(tmp_path: Path, receiver: ThreadedReceiver) -> None:
    receiver.status = 410
    with streamproxy_server(notify_args(tmp_path, receiver.url)) as (_, base):
        async with aiohttp.ClientSession() as session:
            first = await put(session, base, "dead-1")
            second = await put(session, base, "dead-2")
        await until(lambda: len(outbox_files(tmp_path, "dead")) == 2)
        listed = await asyncio.to_thread(cli, "notify", "--storage", tmp_path.as_uri(), "--list")
        assert listed.returncode == 0, listed.stderr
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        assert sorted(r["key"] for r in rows) == sorted([first["key"], second["key"]])
        assert all("410" in r["reason"] and r["target"] == f"webhook:{receiver.url}" for r in rows)
        (retry,) = [r for r in rows if r["key"] == first["key"]]
        receiver.status = 200
        retried = await asyncio.to_thread(cli, "notify", "--storage", tmp_path.as_uri(), "--retry", retry["name"])
        assert retried.returncode == 0, retried.stderr
        await until(lambda: len(receiver.received) == 1)
        assert receiver.received[0].event["id"] == retry["id"]
    dropped = await asyncio.to_thread(cli, "notify", "--storage", tmp_path.as_uri(), "--drop", "all")
    assert dropped.returncode == 0, dropped.stderr
    assert outbox_files(tmp_path, "dead") == [] and outbox_files(tmp_path, "pending") == []
    missing = await asyncio.to_thread(cli, "notify", "--storage", tmp_path.as_uri(), "--retry", "no-such-name.json")
    assert missing.returncode == 1 and "no-such-name.json" in missing.stderr


async def test_check_sends_a_signed_ping(tmp_path: Path, receiver: ThreadedReceiver) -> None:
    args = ["check", "--storage", tmp_path.as_uri(), "--notify-url", receiver.url, "--notify-secret", SECRET]
    ok = await asyncio.to_thread(cli, *args)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (got,) = receiver.received
    assert got.event["event"] == "ping" and receiver.rejected == []
    receiver.status = 503
    failed = await asyncio.to_thread(cli, *args)
    assert failed.returncode != 0
    assert "503" in failed.stdout + failed.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--notify-secret", "tiny-secret"], "at least 16"),
        (["--notify-url", "ftp://x/"], "--notify-url"),
    ],
)
def test_bad_notify_settings_are_refused_at_start(tmp_path: Path, extra: list[str], message: str) -> None:
    result = cli("serve", "--storage", tmp_path.as_uri(), "--notify-url", "http://127.0.0.1:9/hook", *extra)
    assert result.returncode == 2 and message in result.stderr
    assert "tiny-secret" not in result.stderr  # the secret itself is never echoed


def test_a_webhook_needs_a_secret(tmp_path: Path) -> None:
    result = cli("serve", "--storage", tmp_path.as_uri(), "--notify-url", "http://127.0.0.1:9/hook")
    assert result.returncode == 2 and "--notify-secret" in result.stderr


@pytest.mark.slow
async def test_1000_uploads_with_the_receiver_down(tmp_path: Path, receiver: ThreadedReceiver) -> None:
    receiver.status = 503
    (tmp_path / "store").mkdir()
    args = notify_args(tmp_path / "store", receiver.url)
    args[args.index("--notify-backoff") + 1] = "1"
    args[args.index("--notify-backoff-max") + 1] = "2"
    started = time.monotonic()
    log = (tmp_path / "server.log").open("wb")  # a pipe would fill up and block the server
    with log, streamproxy_server(args, log=log) as (proc, base):
        answers: list[dict[str, Any]] = []
        rss: dict[int, int] = {}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:
            for batch in range(10):
                answers += await asyncio.gather(
                    *(put(session, base, f"load-{batch * 100 + n}", b"x" * 2000) for n in range(100))
                )
                rss[len(answers)] = rss_kib(proc.pid, "VmRSS")
        assert all(a["_status"] == 200 for a in answers)
        uploaded = time.monotonic() - started
        assert len(outbox_files(tmp_path / "store", "pending")) == 1000
        receiver.status = 200
        recovered = time.monotonic()
        await until(lambda: len(receiver.received) >= 1000, within=60)
        delivered = time.monotonic() - recovered
        await until(lambda: not outbox_files(tmp_path / "store", "pending"))
        peak = rss_kib(proc.pid, "VmHWM")
    assert len(set(receiver.ids())) == 1000
    assert sorted(d.event["key"] for d in receiver.received) == sorted(a["key"] for a in answers)
    growth = (rss[1000] - rss[200]) / 1024
    print(
        f"1,000 uploads in {uploaded:.1f} s with the receiver down; outbox 1,000 pending; "
        f"RSS after 200: {rss[200] / 1024:.1f} MiB, after 1,000: {rss[1000] / 1024:.1f} MiB "
        f"(+{growth:.1f} MiB), peak {peak / 1024:.1f} MiB; all 1,000 delivered {delivered:.1f} s after recovery; "
        f"{receiver.refused} refused attempts during the outage"
    )
    assert growth < 15, rss
    assert delivered < 45


async def test_sqs_and_sns_get_the_event_from_the_server(tmp_path: Path, moto_endpoint: str) -> None:
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    sns = boto3.client("sns", endpoint_url=moto_endpoint, region_name="us-east-1")
    queue, fanout, topic = queue_and_topic(sqs, sns, "serve")
    args = ["--storage", tmp_path.as_uri(), "--notify-sqs", queue, "--notify-sns", topic]
    env = {"AWS_ENDPOINT_URL_SQS": moto_endpoint, "AWS_ENDPOINT_URL_SNS": moto_endpoint}
    with streamproxy_server(args, env=env) as (_, base):
        async with aiohttp.ClientSession() as session:
            answer = await put(session, base, "queued-1")
        await until(lambda: not outbox_files(tmp_path, "pending"))
    direct = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=5)["Messages"]
    wrapped = sqs.receive_message(QueueUrl=fanout, WaitTimeSeconds=5)["Messages"]
    (from_sqs,) = [json.loads(m["Body"]) for m in direct]
    (from_sns,) = [json.loads(json.loads(m["Body"])["Message"]) for m in wrapped]
    assert from_sqs == from_sns
    assert from_sqs["key"] == answer["key"] and from_sqs["sha256"] == answer["sha256"]
    EVENT_SCHEMA.validate(from_sqs)


async def test_per_route_targets_get_one_event_each_in_the_routes_own_outbox(
    tmp_path: Path, receiver: ThreadedReceiver
) -> None:
    default, acme = tmp_path / "default", tmp_path / "acme"
    config = tmp_path / "routes.toml"
    config.write_text(
        f'[[route]]\npath = "/acme"\nstorage = "{acme.as_uri()}"\n'
        f'notify-urls = ["{receiver.url}", "{receiver.url}?copy=2"]\n'
    )
    args = ["--storage", default.as_uri(), "--config", str(config), "--notify-secret", SECRET]
    with streamproxy_server(args) as (_, base):
        async with aiohttp.ClientSession() as session:
            plain = await put(session, base, "no-event")  # the default route has no targets
            async with session.put(f"{base}/acme/call-9", data=b"RIFF", headers={"Content-Type": "audio/wav"}) as r:
                assert r.status == 200
                routed = await r.json()
        await until(lambda: len(receiver.received) == 2)
        await until(lambda: not outbox_files(acme, "pending"))
        await asyncio.sleep(0.5)
    assert plain["_status"] == 200
    assert len(receiver.received) == 2
    assert {d.event["id"] for d in receiver.received} == {receiver.received[0].event["id"]}  # one event, two targets
    assert all(d.event["key"] == routed["key"] and d.event["url"] == routed["url"] for d in receiver.received)
    assert not (default / OUTBOX).exists()
