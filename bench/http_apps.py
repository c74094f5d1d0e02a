"""The applications bench/http_run.py serves: hello world, and the same
with a 16 KiB body, as WSGI apps and as the equivalent ASGI apps (for
uvicorn).

Each answers every request with 200, ``Content-Type: text/plain`` and a
``Content-Length``, so every server can keep the connection alive without
chunking; the ASGI ones do exactly what the WSGI ones do.  What is
measured is the server: parsing, the environ or scope, the response's
framing and the writes.
"""

HELLO_BODY = b"Hello, world!"
BIG_BODY = (b"0123456789abcdef" * 1024)          # 16 KiB
assert len(BIG_BODY) == 16384


def _wsgi(body):
    length = str(len(body))

    def app(environ, start_response):
        # A fresh header list per call, as an app would build it.
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", length)])
        return [body]
    return app


def _asgi(body):
    length = str(len(body)).encode()

    async def app(scope, receive, send):
        # Run with lifespan off (uvicorn --lifespan off): only HTTP scopes.
        assert scope["type"] == "http", scope["type"]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", length)]})
        await send({"type": "http.response.body", "body": body})
    return app


hello = _wsgi(HELLO_BODY)
big = _wsgi(BIG_BODY)
hello_asgi = _asgi(HELLO_BODY)
big_asgi = _asgi(BIG_BODY)

# app name (--apps) -> response body, what the harness checks before loading.
BODIES = {"hello": HELLO_BODY, "big": BIG_BODY}
