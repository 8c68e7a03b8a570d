"""Contender "naive": the aiohttp handler users write first; it buffers the form, then uploads.

``await request.post()`` reads the whole form; aiohttp spools the file field to a temporary file
(in TMPDIR), then ``put_object`` sends that file. Run: ``python -m bench.naive --port P
--bucket B --endpoint-url URL``.
"""

from __future__ import annotations

import argparse

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiohttp import web


def make_app(bucket: str, endpoint: str) -> web.Application:
    app = web.Application(client_max_size=8 * 1024**3)

    async def client_ctx(app: web.Application):
        config = AioConfig(request_checksum_calculation="when_required", s3={"addressing_style": "path"})
        async with get_session().create_client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", config=config
        ) as client:
            app["s3"] = client
            yield

    async def upload(request: web.Request) -> web.Response:
        form = await request.post()
        field = form["recording"]
        assert isinstance(field, web.FileField)
        key = f"{form.get('filename')!s}.wav"
        await app["s3"].put_object(Bucket=bucket, Key=key, Body=field.file, ContentType="audio/wav")
        return web.json_response({"status": "success", "key": key})

    app.cleanup_ctx.append(client_ctx)
    app.router.add_post("/recordings", upload)
    app.router.add_get("/healthz", lambda _: web.json_response({"status": "ok"}))  # type: ignore[arg-type,return-value]
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--endpoint-url", required=True)
    args = parser.parse_args()
    web.run_app(make_app(args.bucket, args.endpoint_url), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
