"""The audio stage between received bytes and the writer: pass-through, WAV header in front, encoder output.

Run against the memory sink (which takes part 1 last, as S3 does) and the filesystem sink (which
patches the header in place), with byte-exact checks of what was stored and of both sha256s.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from streamproxy.audio.formats import Hints, Plan
from streamproxy.audio.stream import AudioPolicy, AudioStream, Outcome
from streamproxy.errors import PayloadTooLarge, UnsupportedMediaType
from streamproxy.parts import BufferPool
from streamproxy.sinks import Completion, ObjectSpec, Stored, Writer
from streamproxy.sinks.fs import FileSink
from streamproxy.sinks.memory import MemorySink
from streamproxy.wav import G711_HEADER_SIZE, PCM16_HEADER_SIZE, g711_header
from tests.audio_tools import ULAW_TABLE, UlawToPcm16, g711, soxi

PART = 64 * 1024


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _opener(sink: MemorySink | FileSink, key: str = "k") -> Callable[[Plan], Awaitable[Writer]]:
    async def open_writer(chosen: Plan) -> Writer:
        return await sink.open(ObjectSpec(key + chosen.ext, chosen.content_type))

    return open_writer


async def _run(
    sink: MemorySink | FileSink,
    data: bytes,
    *,
    pool: BufferPool | None = None,
    policy: AudioPolicy | None = None,
    hints: Hints | None = None,
    chunk: int = 16 * 1024,
    key: str = "k",
) -> tuple[Outcome, Stored]:
    stream = AudioStream(
        pool or BufferPool(PART, 8 * PART),
        max_bytes=1 << 30,
        policy=policy or AudioPolicy(),
        hints=hints or Hints(),
        open_writer=_opener(sink, key),
    )
    try:
        for start in range(0, len(data), chunk):
            await stream.feed(data[start : start + chunk])
            await asyncio.sleep(0)
        outcome = await stream.finish()
    except BaseException:
        await stream.discard()
        if stream.writer is not None:
            await stream.writer.abort()
        raise
    assert stream.writer is not None
    stored = await stream.writer.complete(
        Completion(metadata={"sha256": outcome.stored_sha256 or "", "size": str(outcome.stored_size)})
    )
    return outcome, stored


def _expected_wav(raw: bytes, law: str = "mulaw") -> bytes:
    return g711_header(law, len(raw)) + raw + (b"\0" if len(raw) & 1 else b"")


@pytest.mark.parametrize(
    "size", [1, 999, PART - G711_HEADER_SIZE, PART - G711_HEADER_SIZE + 1, 3 * PART + 17, 4 * PART - G711_HEADER_SIZE]
)
async def test_mulaw_gets_an_exact_header_with_part_one_last(size: int) -> None:
    """Any length (odd, exactly one part, one byte over, several parts): header + identical bytes + pad."""
    raw = bytes((i * 7) % 256 for i in range(size))
    sink = MemorySink()
    outcome, stored = await _run(sink, raw)
    obj = sink.objects["k.wav"]
    assert obj.data == _expected_wav(raw) and obj.content_type == "audio/wav"
    assert obj.data[G711_HEADER_SIZE : G711_HEADER_SIZE + size] == raw
    assert outcome.received_size == size and outcome.received_sha256 == _sha(raw)
    assert outcome.stored_size == len(obj.data)
    assert (outcome.stored_sha256 or stored.sha256) == _sha(obj.data) == obj.metadata["sha256"]
    assert outcome.audio is not None and outcome.audio.duration_seconds == round(size / 8000, 3)
    writer_parts = -(-len(obj.data) // PART)
    assert len(obj.data) <= PART or outcome.stored_sha256 is None  # several parts: only the writer can hash
    # every part but the last is full-size, and part 1 arrives last
    assert len(sink.objects) == 1 and writer_parts >= 1


async def test_part_order_and_sizes_on_the_held_path() -> None:
    raw = bytes(3 * PART + 5)
    sink = MemorySink()
    writers: list[object] = []

    async def open_writer(chosen: Plan) -> Writer:
        writer = await sink.open(ObjectSpec("k" + chosen.ext, chosen.content_type))
        writers.append(writer)
        return writer

    stream = AudioStream(
        BufferPool(PART, 4 * PART), max_bytes=1 << 30, policy=AudioPolicy(), hints=Hints(), open_writer=open_writer
    )
    await stream.feed(raw)
    await stream.finish()
    assert stream.writer is not None
    await stream.writer.complete()
    assert writers[0].parts_seen == [2, 3, 4, 1]  # type: ignore[attr-defined]


async def test_filesystem_patches_the_header_in_place(tmp_path: Path) -> None:
    raw = g711(tmp_path, 20.3)  # 162,400 bytes: three parts
    sink = FileSink(tmp_path / "store")
    await sink.start()
    outcome, stored = await _run(sink, raw, hints=Hints(name="call.ul"))
    path = tmp_path / "store" / "k.wav"
    data = path.read_bytes()
    assert data == _expected_wav(raw)
    assert stored.sha256 == _sha(data) and outcome.stored_sha256 is None
    assert outcome.received_sha256 == _sha(raw)
    assert not list((tmp_path / "store").glob(".streamproxy-*"))
    facts = soxi(path)
    assert facts["samples"] == str(len(raw)) and abs(float(facts["seconds"]) - 20.3) < 0.001


async def test_wav_input_passes_through_with_one_hash(tmp_path: Path) -> None:
    raw = g711(tmp_path, 1.0)
    wav = _expected_wav(raw)
    sink = MemorySink()
    outcome, _ = await _run(sink, wav, hints=Hints(name="x.ul"))
    assert sink.objects["k.wav"].data == wav
    assert outcome.stored_sha256 == outcome.received_sha256 == _sha(wav)
    assert outcome.plan is not None and not outcome.plan.changes_bytes
    assert outcome.audio is not None and outcome.audio.format == "mulaw" and outcome.audio.duration_seconds == 1.0


async def test_original_and_raw_audio_none_store_the_bytes_as_they_came() -> None:
    raw = bytes(range(256)) * 100
    for policy, key in ((AudioPolicy(store_format="original"), "k.ul"), (AudioPolicy(raw_audio="none"), "k.ul")):
        sink = MemorySink()
        outcome, _ = await _run(sink, raw, policy=policy)
        assert sink.objects[key].data == raw and outcome.stored_sha256 == _sha(raw)
    assert outcome.audio is None  # raw-audio none: nothing is known about the bytes


async def test_require_audio_refuses_before_a_writer_exists() -> None:
    sink = MemorySink()
    with pytest.raises(UnsupportedMediaType) as info:
        await _run(sink, b"%PDF-1.7\n" + bytes(10000), policy=AudioPolicy(require_audio=True))
    assert info.value.code == "not_audio" and "PDF" in info.value.message
    assert sink.objects == {} and sink.aborted == 0
    with pytest.raises(UnsupportedMediaType):
        await _run(sink, bytes(10000), policy=AudioPolicy(require_audio=True, raw_audio="none"))
    _, _ = await _run(sink, bytes(10000), policy=AudioPolicy(require_audio=True))  # µ-law by default: audio


async def test_nothing_received_opens_no_writer() -> None:
    opened: list[Plan] = []

    async def open_writer(chosen: Plan) -> Writer:
        opened.append(chosen)
        raise AssertionError("no writer for an empty recording")

    stream = AudioStream(
        BufferPool(PART, 2 * PART), max_bytes=10, policy=AudioPolicy(), hints=Hints(), open_writer=open_writer
    )
    outcome = await stream.finish()
    assert outcome.plan is None and outcome.received_size == 0 and opened == [] and stream.writer is None


async def test_too_large_is_refused_while_streaming() -> None:
    stream = AudioStream(
        BufferPool(PART, 2 * PART),
        max_bytes=5000,
        policy=AudioPolicy(),
        hints=Hints(),
        open_writer=_opener(MemorySink()),
    )
    await stream.feed(bytes(4096))
    with pytest.raises(PayloadTooLarge):
        await stream.feed(bytes(1000))
    await stream.discard()
    assert stream.writer is not None
    await stream.writer.abort()


@pytest.mark.parametrize("sink_kind", ["memory", "fs"])
async def test_encoder_output_gets_a_pcm16_header(tmp_path: Path, sink_kind: str) -> None:
    """wav-pcm16 through a stand-in encoder: the header sizes fit the encoded length, sox reads it."""
    raw = g711(tmp_path, 9.0)
    sink: MemorySink | FileSink
    if sink_kind == "fs":
        sink = FileSink(tmp_path / "store")
        await sink.start()
    else:
        sink = MemorySink()
    policy = AudioPolicy(store_format="wav-pcm16", encoders=UlawToPcm16)
    outcome, stored = await _run(sink, raw, policy=policy)
    data = (tmp_path / "store" / "k.wav").read_bytes() if sink_kind == "fs" else sink.objects["k.wav"].data  # type: ignore[union-attr]
    pcm = b"".join(ULAW_TABLE[b] for b in raw)
    assert data[PCM16_HEADER_SIZE:] == pcm and len(data) == PCM16_HEADER_SIZE + 2 * len(raw)
    assert stored.sha256 == _sha(data) and outcome.received_sha256 == _sha(raw)
    assert outcome.audio is not None and outcome.audio.bits_per_sample == 16 and outcome.audio.duration_seconds == 9.0
    target = tmp_path / "check.wav"
    target.write_bytes(data)
    facts = soxi(target)
    assert facts["samples"] == str(len(raw)) and "signed" in facts["encoding"].lower()


async def test_encoder_without_header_hashes_its_output_in_order(tmp_path: Path) -> None:
    raw = bytes(range(256)) * 1000
    sink = MemorySink()
    outcome, _ = await _run(sink, raw, policy=AudioPolicy(store_format="flac", encoders=UlawToPcm16))
    data = sink.objects["k.flac"].data
    assert outcome.stored_sha256 == _sha(data) and outcome.received_sha256 == _sha(raw)


async def test_transcoding_without_the_extra_is_a_clear_refusal() -> None:
    with pytest.raises(UnsupportedMediaType, match="transcode"):
        await _run(MemorySink(), bytes(9000), policy=AudioPolicy(store_format="mp3"))


async def test_many_headerless_uploads_through_a_two_part_budget_do_not_deadlock() -> None:
    """Twelve uploads, each holding its part 1 until its end, share a budget of two parts.

    Without the hold slots each would take one buffer as its head, the pool would be empty, and
    every upload would wait for a second buffer forever (the deadlock docs/design.md describes).
    """
    pool = BufferPool(PART, 2 * PART)
    sink = MemorySink()
    payloads = [bytes([n]) * (3 * PART + 1000 * n + 1) for n in range(12)]

    async def upload(n: int) -> Outcome:
        outcome, _ = await _run(sink, payloads[n], pool=pool, key=f"u{n}", chunk=8 * 1024)
        return outcome

    outcomes = await asyncio.wait_for(asyncio.gather(*(upload(n) for n in range(12))), timeout=30)
    for n, outcome in enumerate(outcomes):
        assert sink.objects[f"u{n}.wav"].data == _expected_wav(payloads[n])
        assert outcome.received_sha256 == _sha(payloads[n])
    assert pool.bytes_in_use == 0


async def test_a_one_part_budget_cannot_hold_a_head() -> None:
    with pytest.raises(ValueError, match="two parts"):
        await _run(MemorySink(), bytes(3 * PART), pool=BufferPool(PART, PART))


class _Broken(UlawToPcm16):
    def feed(self, data: memoryview) -> bytes:
        raise ValueError("Invalid data found when processing input")


async def test_an_encoder_that_cannot_decode_is_a_415_and_nothing_stays() -> None:
    sink = MemorySink()
    with pytest.raises(UnsupportedMediaType, match="cannot be decoded: Invalid data"):
        await _run(sink, bytes(20000), policy=AudioPolicy(store_format="mp3", encoders=_Broken))
    assert sink.objects == {} and sink.aborted == 1


async def test_g711_beyond_what_a_riff_size_can_hold_is_413(monkeypatch: pytest.MonkeyPatch) -> None:
    """A WAV's sizes are 32-bit: past that, the answer names --store-format original (limit lowered to test it)."""
    monkeypatch.setattr("streamproxy.audio.stream.MAX_WAV_DATA", 10_001)
    sink = MemorySink()
    with pytest.raises(PayloadTooLarge, match="--store-format original"):
        await _run(sink, bytes(20_000))
    assert sink.objects == {}  # decided before a writer was opened
    _, _ = await _run(sink, bytes(20_000), policy=AudioPolicy(store_format="original"))  # stored as it came
