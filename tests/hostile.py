"""A hostile EnOS on loopback: a raw asyncio TCP server that answers what no HTTP library would.

The simulator speaks correct HTTP (it is aiohttp); the answers here are bytes written by hand:
a header line over aiohttp's 8,190-byte limit, a status line that is not HTTP, a chunked body
cut short, a body of 100 MB, an answer that echoes the request's token and signature back.
Each request is recorded (`Hostile.seen`), so a test knows every secret that crossed the wire
and can look for it in what the job wrote.

The token service answers correctly unless `token_answer` says otherwise; the answer to a
business call is chosen by `answer(request)`, e.g. from the assetId in the query.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

Chunks = Iterator[bytes]


@dataclass(frozen=True, slots=True)
class Request:
    """One request as it arrived: what the job sent, secrets included."""

    method: str
    target: str  # path and query, as on the request line
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.target).query).items()}

    @property
    def query_string(self) -> str:
        return urlsplit(self.target).query


Answer = Callable[[Request], Chunks]


@dataclass(slots=True)
class Hostile:
    """The server's state: its URL once started, and every request it saw."""

    answer: Answer
    token_answer: Answer | None = None
    token: str = field(default_factory=lambda: f"tok-{secrets.token_hex(16)}")
    url: str = ""
    seen: list[Request] = field(default_factory=list)

    def secrets_sent(self) -> set[str]:
        """Every credential-bearing value the job sent: tokens, signatures, encryptions,
        and the full query strings of business calls."""
        found = {self.token}
        for request in self.seen:
            for name in ("apim-accesstoken", "apim-signature"):
                if name in request.headers:
                    found.add(request.headers[name])
            if request.body.startswith(b"{"):
                payload = json.loads(request.body)
                if isinstance(payload, dict) and "encryption" in payload:
                    found.add(str(payload["encryption"]))
            if request.query_string:
                found.add(request.query_string)
        return {value for value in found if value}


def http(status: str, headers: dict[str, str], body: bytes) -> Chunks:
    """A well-formed answer with a Content-Length."""
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items())]
    lines.append(f"Content-Length: {len(body)}")
    yield ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def token_ok(token: str) -> Chunks:
    body = {"status": 0, "msg": "Success", "data": {"accessToken": token, "expire": 7200}}
    return http("200 OK", {"Content-Type": "application/json"}, json.dumps(body).encode())


def empty_list() -> Chunks:
    return http("200 OK", {"Content-Type": "application/json"}, b'{"code":0,"data":[]}')


def long_header(request: Request) -> Chunks:
    yield b"HTTP/1.1 200 OK\r\nX-Junk: " + b"j" * 9000 + b"\r\nContent-Length: 2\r\n\r\n{}"


def bad_status_line(request: Request) -> Chunks:
    yield b"HTTP/1.1 2OO NOT-A-STATUS\r\nContent-Length: 2\r\n\r\n{}"


def truncated_chunked(request: Request) -> Chunks:
    yield b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n{"code":0,"da'
    yield b""


def bad_json(request: Request) -> Chunks:
    return http("200 OK", {"Content-Type": "application/json"}, b'{"code": 0, "data": {cert')


def reflected(request: Request) -> Chunks:
    """Echo the request's token, signature and query back: in a header and in the message."""
    token = request.headers.get("apim-accesstoken", "")
    echo = f"{request.method} {request.target} token={token} " + str(request.headers)
    body = json.dumps({"code": 99400, "msg": f"bad request: {echo}", "requestId": token})
    return http("200 OK", {"X-Echo": token, "Content-Type": "application/json"}, body.encode())


def reflected_ok(request: Request) -> Chunks:
    """A success answer whose serial is the request's token (not a number at all)."""
    token = request.headers.get("apim-accesstoken", "")
    data = {"certSN": token, "cert": "-----BEGIN CERTIFICATE-----", "caCert": "x"}
    body = json.dumps({"code": 0, "msg": "OK", "requestId": "r-1", "data": data})
    return http("200 OK", {"Content-Type": "application/json"}, body.encode())


def reflected_in_cert(request: Request) -> Chunks:
    """A success answer with a good serial whose "certificate" carries the request's token."""
    token = request.headers.get("apim-accesstoken", "")
    cert = f"-----BEGIN CERTIFICATE-----\n{token}\n-----END CERTIFICATE-----\n"
    data = {"certSN": "52771", "cert": cert, "caCert": "x"}
    body = json.dumps({"code": 0, "msg": "OK", "requestId": "r-2", "data": data})
    return http("200 OK", {"Content-Type": "application/json"}, body.encode())


def token_refused_reflecting(request: Request) -> Chunks:
    """A token-service refusal whose message repeats the request body (encryption included)."""
    msg = f"invalid encryption in {request.body.decode()}"
    body = json.dumps({"status": 1002, "msg": msg, "requestId": "r-1"}).encode()
    return http("200 OK", {"Content-Type": "application/json"}, body)


def reflected_5xx(request: Request) -> Chunks:
    body = json.dumps({"message": f"upstream failed: {request.target} {request.headers}"})
    return http("502 Bad Gateway", {"Content-Type": "application/json"}, body.encode())


def huge(size: int, *, declared: bool) -> Answer:
    """An answer of `size` bytes of junk inside a JSON string, streamed in 64 KiB writes."""

    def answer(request: Request) -> Chunks:
        head = b'{"code":0,"data":{"certSN":"7","caCert":"x","cert":"'
        tail = b'"}}'
        length = f"Content-Length: {size}\r\n" if declared else "Transfer-Encoding: chunked\r\n"
        yield f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}\r\n".encode()
        block = b"A" * 65536
        blocks, rest = divmod(size - len(head) - len(tail), len(block))
        pieces = [head, *[block] * blocks, b"A" * rest, tail]
        for piece in filter(None, pieces):  # an empty chunk would end a chunked body
            yield piece if declared else b"%x\r\n%s\r\n" % (len(piece), piece)
        if not declared:
            yield b"0\r\n\r\n"

    return answer


def gzip_bomb(size: int) -> Answer:
    """A small gzip body (~1/1000 of `size`) that inflates to `size` bytes of JSON junk."""

    def answer(request: Request) -> Chunks:
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
        parts = [packer.compress(b'{"code":0,"data":{"cert":"')]
        parts += [packer.compress(b"A" * (1 << 20)) for _ in range(size >> 20)]
        parts.append(packer.flush())
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        return http("200 OK", headers, b"".join(parts))

    return answer


@asynccontextmanager
async def hostile_server(
    answer: Answer, *, token_answer: Answer | None = None
) -> AsyncIterator[Hostile]:
    """Serve on a free loopback port for the duration of the block."""
    state = Hostile(answer=answer, token_answer=token_answer)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (request := await _read_request(reader)) is not None:
                state.seen.append(request)
                for chunk in _route(state, request):
                    if not chunk:
                        return  # an empty chunk: hang up here, mid-answer
                    writer.write(chunk)
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client gave up on us (that is what these answers are for), or we stop
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield state


def _route(state: Hostile, request: Request) -> Chunks:
    if request.path.startswith("/apim-token-service/"):
        if state.token_answer is not None:
            return state.token_answer(request)
        return token_ok(state.token)
    if request.query.get("action") == "list":
        return empty_list()
    return state.answer(request)


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    line = await reader.readline()
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, target, headers, body)
