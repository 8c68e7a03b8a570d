"""The OpenAPI document: valid, complete for the routes, and true to the real responses."""

from __future__ import annotations

import ast
import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

import streamproxy
from streamproxy import __version__
from streamproxy.app import make_app
from streamproxy.appkeys import ADMISSION
from streamproxy.config import Settings, StorageURI
from streamproxy.errors import StorageFailed, StorageTimeout, StorageUnavailable, StreamproxyError
from streamproxy.sinks import ObjectSpec
from streamproxy.sinks.memory import MemorySink, MemoryWriter
from tests.helpers import PART, form, multipart_body, s3_settings

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
DOC_URI = "urn:streamproxy:openapi"


def packaged_document() -> dict[str, Any]:
    return json.loads(files("streamproxy").joinpath("openapi.json").read_text("utf-8"))


DOC = packaged_document()
REGISTRY: Registry[Any] = Registry().with_resource(
    DOC_URI, Resource.from_contents(DOC, default_specification=DRAFT202012)
)


def resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow a local ``$ref`` of a non-schema object (response, parameter, header)."""
    while "$ref" in node:
        target: Any = DOC
        for token in node["$ref"].removeprefix("#/").split("/"):
            target = target[token.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def documented_codes(response: Mapping[str, Any]) -> set[str]:
    if "application/json" not in response["content"]:
        return set()
    schema = response["content"]["application/json"]["schema"]
    return set(schema.get("properties", {}).get("error", {}).get("enum", []))


class FailingSink(MemorySink):
    """A sink whose every upload fails with the given exception when opened."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    async def open(self, spec: ObjectSpec) -> MemoryWriter:
        raise self.error


async def _stalled_body() -> AsyncIterator[bytes]:
    yield b"RIFF"
    await asyncio.sleep(2)
    yield b"late"


Send = Callable[[TestClient[Any, Any]], Awaitable[aiohttp.ClientResponse]]
WAV = {"Content-Type": "audio/wav"}


@dataclass
class Case:
    """One request against a fresh app, the answer it must get, and where the document describes it."""

    name: str
    operation: tuple[str, str] | str  # (path template, method) or a name in components/responses
    send: Send
    status: int
    code: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    sink: Callable[[], MemorySink] | None = MemorySink
    prepare: Callable[[Any], None] | None = None
    s3: bool = False


def _put(path: str, data: Any = b"RIFF....WAVE", headers: Mapping[str, str] = WAV) -> Send:
    return lambda c: c.put(path, data=data, headers=dict(headers))


def _post_form(fields: list[tuple[str, str | bytes]]) -> Send:
    return lambda c: c.post("/recordings", data=form(fields))


def _post_raw_body(body: bytes, boundary: str = "b0undary") -> Send:
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return lambda c: c.post("/recordings", data=body, headers=headers)


def _nameless_file(value: bytes) -> bytes:
    """A form whose only part is the file, without a filename= parameter: the recording has no name."""
    return b'--b0undary\r\nContent-Disposition: form-data; name="recording"\r\n\r\n' + value + b"\r\n--b0undary--\r\n"


def _two_files() -> aiohttp.FormData:
    data = form(OK_FORM)
    data.add_field("attachment", b"x", filename="other.wav", content_type="audio/wav")
    return data


async def _put_twice(client: TestClient[Any, Any]) -> aiohttp.ClientResponse:
    first = await client.put("/recordings/twice", data=b"one", headers=WAV)
    assert first.status == 200
    return await client.put("/recordings/twice", data=b"two", headers=WAV)


async def _cut_by_shutdown(client: TestClient[Any, Any]) -> aiohttp.ClientResponse:
    """An upload still receiving when the drain deadline passes (``stop_remaining``)."""
    admission = client.app[ADMISSION]
    sending = asyncio.create_task(client.put("/recordings/cut", data=_stalled_body(), headers=WAV))
    for _ in range(500):
        if admission.in_flight:
            break
        await asyncio.sleep(0.01)
    assert admission.stop_remaining() == 1
    return await sending


def _unreachable() -> MemorySink:
    sink = MemorySink()
    sink.reachable = False
    return sink


def _busy(app: Any) -> None:
    app[ADMISSION].in_flight = app[ADMISSION].limit


def _draining(app: Any) -> None:
    app[ADMISSION].draining = True


WAV_FILE = (
    b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00\x07\x00\x01\x00@\x1f\x00\x00@\x1f\x00\x00\x01\x00\x08\x00"
    b"data\xff\xff\xff\xff" + bytes(8000)
)  # one second of 8 kHz mu-law, sizes unknown as a recorder streaming it writes them
POST = ("/recordings", "post")
PUT = ("/recordings/{filename}", "put")
OK_FORM: list[tuple[str, str | bytes]] = [("filename", "call-1"), ("recording", b"RIFF....WAVE")]

CASES = [
    Case("form", POST, _post_form(OK_FORM), 200),
    Case("form_s3", POST, _post_form(OK_FORM), 200, sink=None, s3=True),
    Case("raw_post", POST, lambda c: c.post("/recordings?filename=c2", data=b"RIFF", headers=WAV), 200),
    Case("put", PUT, _put("/recordings/call-3"), 200),
    Case("put_s3", PUT, _put("/recordings/call-3"), 200, sink=None, s3=True),
    Case(
        "wav_with_manifest",
        PUT,
        _put("/recordings/call-4", data=WAV_FILE),
        200,
        settings={"manifest": True},
    ),
    Case("presigned_s3", POST, _post_form(OK_FORM), 200, sink=None, s3=True, settings={"url_mode": "presigned"}),
    Case("healthz", ("/healthz", "get"), lambda c: c.get("/healthz"), 200),
    Case("openapi", ("/openapi.json", "get"), lambda c: c.get("/openapi.json"), 200),
    Case("no_filename", POST, _post_raw_body(_nameless_file(b"RIFF")), 400, "missing_field"),
    Case(
        "template_field_missing",
        PUT,
        _put("/recordings/x"),
        400,
        "missing_field",
        settings={"key_template": "{field:dept}/{filename}.wav"},
    ),
    Case(
        "two_names",
        POST,
        _post_form([("filename", "a"), ("filename", "b"), ("recording", b"x")]),
        400,
        "duplicate_field",
    ),
    Case("second_file", POST, lambda c: c.post("/recordings", data=_two_files()), 400, "unexpected_field"),
    Case("empty", PUT, _put("/recordings/empty", data=b""), 400, "empty_recording"),
    Case(
        "truncated_form", POST, _post_raw_body(b"--b0undary\r\nContent-Disposition: form-data"), 400, "malformed_body"
    ),
    Case("dot_name", PUT, _put("/recordings/.hidden"), 400, "invalid_filename"),
    Case(
        "key_too_long",
        PUT,
        _put("/recordings/" + "a" * 200),
        400,
        "invalid_key",
        settings={"storage": StorageURI.parse("s3://calls/" + "p" * 900 + "/")},
    ),
    Case(
        "latin1_field",
        POST,
        _post_raw_body(multipart_body([("filename", b"a"), ("note", b"caf\xe9"), ("recording", b"x")])),
        400,
        "invalid_field",
    ),
    Case(
        "huge_field",
        POST,
        _post_form([("filename", "a"), ("note", "n" * 70_000), ("recording", b"x")]),
        400,
        "field_too_large",
    ),
    Case(
        "many_fields",
        POST,
        _post_form([(f"f{i}", "v") for i in range(70)]),
        400,
        "too_many_parts",
    ),
    Case(
        "silent_client",
        PUT,
        _put("/recordings/slow", data=_stalled_body()),
        408,
        "client_timeout",
        settings={"read_timeout": 0.3},
    ),
    Case(
        "no_token",
        PUT,
        _put("/recordings/t"),
        401,
        "unauthorized",
        settings={"auth_tokens": ("s3cret-token-for-tests",)},
    ),
    Case(
        "bearer_token",
        PUT,
        _put("/recordings/t", headers={**WAV, "Authorization": "Bearer s3cret-token-for-tests"}),
        200,
        settings={"auth_tokens": ("s3cret-token-for-tests",)},
    ),
    Case("outside_cidr", PUT, _put("/recordings/c"), 403, "forbidden", settings={"allow_cidr": ("192.0.2.0/24",)}),
    Case(
        "slow_upload",
        PUT,
        _put("/recordings/slow", data=_stalled_body()),
        408,
        "upload_timeout",
        settings={"max_upload_seconds": 0.3},
    ),
    Case("exists", PUT, _put_twice, 409, "exists"),
    Case(
        "too_large", PUT, _put("/recordings/big", data=b"x" * 100), 413, "too_large", settings={"max_upload_bytes": 10}
    ),
    Case(
        "not_audio",
        PUT,
        _put("/recordings/n", data=b"%PDF-1.7\n"),
        415,
        "not_audio",
        settings={"require_audio": True},
    ),
    Case(
        "text_body", PUT, _put("/recordings/t", headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type"
    ),
    Case("bug", PUT, _put("/recordings/b"), 500, "internal_error", sink=lambda: FailingSink(RuntimeError("bug"))),
    Case(
        "storage_error",
        PUT,
        _put("/recordings/s"),
        502,
        "storage_failed",
        sink=lambda: FailingSink(StorageFailed("AccessDenied")),
    ),
    Case("busy", PUT, _put("/recordings/b"), 503, "busy", prepare=_busy),
    Case("draining", POST, _post_form(OK_FORM), 503, "draining", prepare=_draining),
    Case(
        "storage_down",
        POST,
        _post_form(OK_FORM),
        503,
        "storage_unavailable",
        sink=lambda: FailingSink(StorageUnavailable("unreachable")),
    ),
    Case(
        "storage_slow",
        PUT,
        _put("/recordings/s"),
        504,
        "storage_timeout",
        sink=lambda: FailingSink(StorageTimeout("timed out")),
    ),
    Case("shutdown", PUT, _cut_by_shutdown, 503, "shutdown"),
    Case("ready", ("/readyz", "get"), lambda c: c.get("/readyz"), 200),
    Case("not_ready_draining", ("/readyz", "get"), lambda c: c.get("/readyz"), 503, "draining", prepare=_draining),
    Case(
        "not_ready_storage",
        ("/readyz", "get"),
        lambda c: c.get("/readyz"),
        503,
        "storage_unavailable",
        sink=_unreachable,
    ),
    Case("metrics", ("/metrics", "get"), lambda c: c.get("/metrics"), 200),
    Case("unknown_path", "NotFound", lambda c: c.get("/nope"), 404, "not_found"),
    Case("wrong_method", "MethodNotAllowed", lambda c: c.get("/recordings"), 405, "method_not_allowed"),
]


def test_document_is_valid_openapi_3_1() -> None:
    """openapi-spec-validator accepts the packaged document as OpenAPI 3.1."""
    assert DOC["openapi"].startswith("3.1.")
    validate(DOC)


def test_every_route_is_documented_and_vice_versa(tmp_path) -> None:
    """The app's routes and the document's operations are the same set."""
    app = make_app(Settings(storage=StorageURI.parse(tmp_path.as_uri())), MemorySink())
    registered = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    documented = {(path, method) for path, item in DOC["paths"].items() for method in item if method in METHODS}
    assert registered == documented


def test_every_documented_failure_code_is_exercised() -> None:
    """Each (status, code) the document promises is produced by a case below, and each case's is documented."""
    documented: set[tuple[int, str]] = set()
    for item in DOC["paths"].values():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for status, response in operation["responses"].items():
                documented |= {(int(status), code) for code in documented_codes(resolve(response))}
    for name in ("NotFound", "MethodNotAllowed"):
        response = DOC["components"]["responses"][name]
        status = 404 if name == "NotFound" else 405
        documented |= {(status, code) for code in documented_codes(response)}
    exercised = {(case.status, case.code) for case in CASES if case.code is not None}
    assert exercised == documented


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_real_responses_match_the_document(case: Case, aiohttp_client, tmp_path, request) -> None:
    """The real answer has the expected status and code, and validates against the documented response."""
    if case.s3:
        moto_endpoint = request.getfixturevalue("moto_endpoint")
        bucket = request.getfixturevalue("bucket")
        settings = s3_settings(moto_endpoint, bucket, **case.settings)
        sink = None
    else:
        base: dict[str, Any] = {"storage": StorageURI.parse(tmp_path.as_uri()), "part_size": PART}
        settings = Settings(**{**base, "max_buffer_bytes": 4 * PART, **case.settings})
        sink = case.sink() if case.sink is not None else None
    app = make_app(settings, sink)
    if case.prepare is not None:
        case.prepare(app)
    client = await aiohttp_client(app)
    resp = await case.send(client)
    body: Any = await resp.json() if resp.content_type == "application/json" else await resp.text()
    assert (resp.status, body.get("error") if isinstance(body, dict) else None) == (case.status, case.code), body

    media = resp.content_type.replace("/", "~1")
    if isinstance(case.operation, str):
        response = DOC["components"]["responses"][case.operation]
        pointer = f"#/components/responses/{case.operation}/content/{media}/schema"
    else:
        path, method = case.operation
        responses = DOC["paths"][path][method]["responses"]
        assert str(resp.status) in responses, f"{resp.status} is not documented for {method.upper()} {path}"
        ref = responses[str(resp.status)]
        response = resolve(ref)
        if "$ref" in ref:
            pointer = ref["$ref"] + f"/content/{media}/schema"
        else:
            escaped = path.replace("~", "~0").replace("/", "~1")
            pointer = f"#/paths/{escaped}/{method}/responses/{resp.status}/content/{media}/schema"
    assert resp.content_type in response["content"]
    Draft202012Validator({"$ref": DOC_URI + pointer}, registry=REGISTRY).validate(body)
    for header in response.get("headers", {}):
        if header == "Retry-After" and case.code == "storage_unavailable":
            continue  # documented as sent for busy and draining only
        assert header in resp.headers, f"documented header {header} missing"
    if case.name == "wav_with_manifest":
        assert body["audio"]["format"] == "mulaw" and body["audio"]["duration_seconds"] == 1.0
        assert body["manifest"] == "call-4.wav.json"
    if case.name == "metrics":
        assert "streamproxy_build_info{" in body
    if case.name == "openapi":
        assert body == {**DOC, "info": {**DOC["info"], "version": __version__}}


def codes_the_code_can_send() -> set[str]:
    """Every failure code a client can receive, read from the package's source.

    A ``StreamproxyError`` subclass instantiated with ``code="..."`` sends that code, and without
    one its ``default_code``; the error middleware adds its own three.
    """
    classes = {cls.__name__: cls for cls in _subclasses(StreamproxyError)}
    codes = {"not_found", "method_not_allowed", "internal_error"}
    for path in Path(streamproxy.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in classes):
                continue
            given = next((kw.value for kw in node.keywords if kw.arg == "code"), None)
            if given is None:
                codes.add(classes[node.func.id].default_code)
            elif isinstance(given, ast.Constant) and isinstance(given.value, str):
                codes.add(given.value)
    return codes


def _subclasses(cls: type[StreamproxyError]) -> list[type[StreamproxyError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_every_code_the_server_can_send_is_documented() -> None:
    """The document's failure codes are exactly those the source can send (new codes need documenting)."""
    documented: set[str] = set()
    for item in DOC["paths"].values():
        for method, operation in item.items():
            if method in METHODS:
                for response in operation["responses"].values():
                    documented |= documented_codes(resolve(response))
    for response in DOC["components"]["responses"].values():
        documented |= documented_codes(response)
    assert codes_the_code_can_send() == documented
