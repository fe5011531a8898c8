"""PostgreSQL v3 wire protocol: encoding and decoding of messages, nothing else.

No sockets, no policy, no session state: bytes in, tuples out, and back.
Reference: https://www.postgresql.org/docs/current/protocol-message-formats.html
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PROTOCOL_V3 = 196608  # 3.0
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

MAX_STARTUP_BYTES = 10_000
MAX_MESSAGE_BYTES = 1024 * 1024  # SQL is capped at 256 KiB by the engine; parameters are small

_I = struct.Struct("!i")
_H = struct.Struct("!h")
_IH = struct.Struct("!ih")


class ProtocolViolation(Exception):
    """The peer sent bytes that are not a valid message: the connection ends (08P01)."""


# -- frontend messages (decoded) ---------------------------------------------------


@dataclass(frozen=True)
class Startup:
    version: int
    params: dict[str, str]


@dataclass(frozen=True)
class CancelKey:
    pid: int
    secret: int


@dataclass(frozen=True)
class Query:
    sql: str


@dataclass(frozen=True)
class Parse:
    name: str
    sql: str
    param_types: tuple[int, ...]


@dataclass(frozen=True)
class Bind:
    portal: str
    statement: str
    param_formats: tuple[int, ...]
    params: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]


@dataclass(frozen=True)
class Describe:
    kind: str  # "S" statement or "P" portal
    name: str


@dataclass(frozen=True)
class Execute:
    portal: str
    max_rows: int


@dataclass(frozen=True)
class Close:
    kind: str
    name: str


@dataclass(frozen=True)
class Sync:
    pass


@dataclass(frozen=True)
class Flush:
    pass


@dataclass(frozen=True)
class Terminate:
    pass


@dataclass(frozen=True)
class Password:
    """PasswordMessage, SASLInitialResponse or SASLResponse: all are 'p'; the session knows which."""

    data: bytes


@dataclass(frozen=True)
class CopyFail:
    message: str


@dataclass(frozen=True)
class Unknown:
    type: bytes


class _Reader:
    def __init__(self, body: bytes):
        self.body, self.pos = body, 0

    def int32(self) -> int:
        if self.pos + 4 > len(self.body):
            raise ProtocolViolation("message too short")
        (value,) = _I.unpack_from(self.body, self.pos)
        self.pos += 4
        return value

    def int16(self) -> int:
        if self.pos + 2 > len(self.body):
            raise ProtocolViolation("message too short")
        (value,) = _H.unpack_from(self.body, self.pos)
        self.pos += 2
        return value

    def cstr(self) -> str:
        end = self.body.find(b"\x00", self.pos)
        if end < 0:
            raise ProtocolViolation("unterminated string")
        raw = self.body[self.pos : end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation("invalid UTF-8 in string") from None

    def raw(self, length: int) -> bytes:
        if length < 0 or self.pos + length > len(self.body):
            raise ProtocolViolation("message too short")
        value = self.body[self.pos : self.pos + length]
        self.pos += length
        return value

    def rest(self) -> bytes:
        value = self.body[self.pos :]
        self.pos = len(self.body)
        return value


def decode_startup(body: bytes) -> Startup | CancelKey | int:
    """The untyped first message: a Startup, a CancelRequest, or an SSL/GSSENC request code."""
    reader = _Reader(body)
    code = reader.int32()
    if code in (SSL_REQUEST, GSSENC_REQUEST):
        return code
    if code == CANCEL_REQUEST:
        return CancelKey(reader.int32(), reader.int32())
    if code >> 16 != 3:
        raise ProtocolViolation(f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
    params: dict[str, str] = {}
    while True:
        key = reader.cstr()
        if not key:
            break
        params[key] = reader.cstr()
    return Startup(code, params)


def decode(kind: bytes, body: bytes):
    """One typed frontend message."""
    reader = _Reader(body)
    if kind == b"Q":
        return Query(reader.cstr())
    if kind == b"P":
        name, sql = reader.cstr(), reader.cstr()
        count = reader.int16()
        if count < 0:
            raise ProtocolViolation("negative parameter count")
        return Parse(name, sql, tuple(reader.int32() for _ in range(count)))
    if kind == b"B":
        portal, statement = reader.cstr(), reader.cstr()
        formats = tuple(reader.int16() for _ in range(_count(reader)))
        params = []
        for _ in range(_count(reader)):
            length = reader.int32()
            params.append(None if length == -1 else reader.raw(length))
        results = tuple(reader.int16() for _ in range(_count(reader)))
        return Bind(portal, statement, formats, tuple(params), results)
    if kind == b"D":
        which = reader.raw(1).decode("latin-1")
        if which not in ("S", "P"):
            raise ProtocolViolation("Describe of neither statement nor portal")
        return Describe(which, reader.cstr())
    if kind == b"E":
        return Execute(reader.cstr(), reader.int32())
    if kind == b"C":
        which = reader.raw(1).decode("latin-1")
        if which not in ("S", "P"):
            raise ProtocolViolation("Close of neither statement nor portal")
        return Close(which, reader.cstr())
    if kind == b"S":
        return Sync()
    if kind == b"H":
        return Flush()
    if kind == b"X":
        return Terminate()
    if kind == b"p":
        return Password(reader.rest())
    if kind == b"f":
        return CopyFail(reader.cstr())
    return Unknown(kind)


def _count(reader: _Reader) -> int:
    count = reader.int16()
    if count < 0:
        raise ProtocolViolation("negative count")
    return count


# -- backend messages (encoded) -------------------------------------------------------


def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + _I.pack(len(body) + 4) + body


def cstr(text: str) -> bytes:
    return text.encode("utf-8").replace(b"\x00", b"") + b"\x00"


AUTH_OK = message(b"R", _I.pack(0))
AUTH_CLEARTEXT = message(b"R", _I.pack(3))
PARSE_COMPLETE = message(b"1")
BIND_COMPLETE = message(b"2")
CLOSE_COMPLETE = message(b"3")
NO_DATA = message(b"n")
EMPTY_QUERY = message(b"I")
PORTAL_SUSPENDED = message(b"s")


COPY_DONE = message(b"c")


def copy_out_response(columns: int) -> bytes:
    return message(b"H", b"\x00" + _H.pack(columns) + _H.pack(0) * columns)


def copy_data(data: bytes) -> bytes:
    return message(b"d", data)


def auth_sasl(mechanisms: list[str]) -> bytes:
    return message(b"R", _I.pack(10) + b"".join(cstr(m) for m in mechanisms) + b"\x00")


def auth_sasl_continue(data: bytes) -> bytes:
    return message(b"R", _I.pack(11) + data)


def auth_sasl_final(data: bytes) -> bytes:
    return message(b"R", _I.pack(12) + data)


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstr(name) + cstr(value))


def backend_key_data(pid: int, secret: int) -> bytes:
    return message(b"K", struct.pack("!ii", pid, secret))


def ready_for_query(status: str) -> bytes:
    return message(b"Z", status.encode("ascii"))


def command_complete(tag: str) -> bytes:
    return message(b"C", cstr(tag))


def parameter_description(oids: list[int]) -> bytes:
    return message(b"t", _H.pack(len(oids)) + b"".join(_I.pack(o) for o in oids))


@dataclass(frozen=True)
class Field:
    name: str
    type_oid: int
    type_size: int = -1
    type_modifier: int = -1
    format: int = 0
    table_oid: int = 0
    column: int = 0


def row_description(fields: list[Field]) -> bytes:
    parts = [_H.pack(len(fields))]
    for f in fields:
        parts.append(cstr(f.name))
        parts.append(struct.pack("!ihihih", f.table_oid, f.column, f.type_oid, f.type_size, f.type_modifier, f.format))
    return message(b"T", b"".join(parts))


def data_row(values: list[bytes | None]) -> bytes:
    parts = [_H.pack(len(values))]
    for value in values:
        if value is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            parts.append(_I.pack(len(value)))
            parts.append(value)
    return message(b"D", b"".join(parts))


def _fields(severity: str, sqlstate: str, text: str, hint: str | None, detail: str | None) -> bytes:
    parts = [b"S" + cstr(severity), b"V" + cstr(severity), b"C" + cstr(sqlstate), b"M" + cstr(text)]
    if detail:
        parts.append(b"D" + cstr(detail))
    if hint:
        parts.append(b"H" + cstr(hint))
    return b"".join(parts) + b"\x00"


def error_response(sqlstate: str, text: str, hint: str | None = None, detail: str | None = None,
                   severity: str = "ERROR") -> bytes:
    return message(b"E", _fields(severity, sqlstate, text, hint, detail))


def notice_response(text: str, sqlstate: str = "00000", hint: str | None = None) -> bytes:
    return message(b"N", _fields("NOTICE", sqlstate, text, hint, None))


def split_message(buffer: bytes | bytearray) -> tuple[bytes, bytes, int] | None:
    """For tests and tools: (kind, body, total length) of the first typed message, or None."""
    if len(buffer) < 5:
        return None
    (length,) = _I.unpack_from(buffer, 1)
    if len(buffer) < 1 + length:
        return None
    return bytes(buffer[:1]), bytes(buffer[5 : 1 + length]), 1 + length
