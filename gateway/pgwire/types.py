"""PostgreSQL types on the wire: Arrow types to OIDs, Arrow batches to DataRow bytes
(text and binary formats, vectorised with pyarrow.compute), and parameter values
from their wire form to Python values.

Codec only: no sockets, no session state, no policy.
"""

from __future__ import annotations

import array
import datetime as dt
import json
import struct
import uuid
from decimal import Decimal, InvalidOperation

import pyarrow as pa
import pyarrow.compute as pc

# The OIDs are gateway.pgtypes', whose table the catalog's pg_type lists too.
from gateway.pgtypes import (BOOL, BYTEA, CHAR, DATE, FLOAT4, FLOAT8, INT2, INT4, INT8, INTERVAL, JSON, JSONB, NAME,
                              NUMERIC, OID, TEXT, TIME, TIMESTAMP, TIMESTAMPTZ, UUID, VARCHAR, numeric_typmod)


def arrow_type_oid(kind: pa.DataType) -> int:
    if pa.types.is_boolean(kind):
        return BOOL
    if pa.types.is_int8(kind) or pa.types.is_int16(kind) or pa.types.is_uint8(kind):
        return INT2
    if pa.types.is_int32(kind) or pa.types.is_uint16(kind):
        return INT4
    if pa.types.is_int64(kind) or pa.types.is_uint32(kind):
        return INT8
    if pa.types.is_uint64(kind) or pa.types.is_decimal(kind):
        return NUMERIC
    if pa.types.is_float16(kind) or pa.types.is_float32(kind):
        return FLOAT4
    if pa.types.is_float64(kind):
        return FLOAT8
    if pa.types.is_date(kind):
        return DATE
    if pa.types.is_timestamp(kind):
        return TIMESTAMPTZ if kind.tz else TIMESTAMP
    if pa.types.is_time(kind):
        return TIME
    if pa.types.is_interval(kind) or pa.types.is_duration(kind):
        return INTERVAL
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        return BYTEA
    return TEXT


# DuckDB exports UUID and JSON to Arrow as plain strings. The engine names such a
# field's DuckDB type in its metadata, and Arrow's extension types (arrow.uuid,
# arrow.json) say it too; either way the client gets uuid or json, not text.
DUCKDB_TYPE_KEY = b"duckdb_type"
_STRING_TYPES_BY_NAME = {b"UUID": UUID, b"JSON": JSON, b"JSONB": JSONB}
_EXTENSION_TYPES = {"arrow.uuid": UUID, "arrow.json": JSON}


def field_oid(field: pa.Field) -> int:
    """The OID a result column is sent as."""
    kind = field.type
    if isinstance(kind, pa.BaseExtensionType):
        return _EXTENSION_TYPES.get(kind.extension_name) or arrow_type_oid(kind.storage_type)
    declared = (field.metadata or {}).get(DUCKDB_TYPE_KEY, b"").upper()
    if declared in _STRING_TYPES_BY_NAME and (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return _STRING_TYPES_BY_NAME[declared]
    return arrow_type_oid(kind)


def _plain(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array, extension types unwrapped to their storage."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if isinstance(column, pa.ExtensionArray):
        if column.type.extension_name == "arrow.uuid":  # text is the hyphenated form, not the bytes
            return pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())
        column = column.storage
    return column


def type_modifier(kind: pa.DataType) -> int:
    if pa.types.is_decimal(kind):
        return numeric_typmod(kind.precision, kind.scale)
    return -1


PG_EPOCH_DAYS = 10957  # 2000-01-01 - 1970-01-01
PG_EPOCH_MICROS = PG_EPOCH_DAYS * 86_400_000_000
BINARY_OIDS = frozenset({BOOL, INT2, INT4, INT8, FLOAT4, FLOAT8, NUMERIC, TEXT, VARCHAR, DATE, TIMESTAMP,
                         TIMESTAMPTZ, INTERVAL, BYTEA, UUID, JSON, JSONB, TIME, NAME, OID, CHAR})


# -- results: Arrow columns -> wire cells ---------------------------------------------


def big_endian(values: pa.Array, typecode: str, width: int) -> pa.Array:
    """The fixed-width values of `values` as big-endian binary cells (nulls kept)."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    values = pc.cast(values, _ARROW_FOR[typecode])  # arithmetic may have widened it
    buffer = values.buffers()[1]
    raw = array.array(typecode)
    raw.frombytes(memoryview(buffer)[values.offset * width : (values.offset + len(values)) * width])
    if width > 1:
        raw.byteswap()
    cells = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [None, pa.py_buffer(raw.tobytes())])
    cells = pc.cast(cells, pa.binary())
    if values.null_count:
        cells = pc.if_else(pc.is_valid(values), cells, pa.scalar(None, pa.binary()))
    return cells


_ARROW_FOR = {"B": pa.uint8(), "h": pa.int16(), "i": pa.int32(), "q": pa.int64(), "f": pa.float32(), "d": pa.float64()}

_FRACTION = r"(\.\d*[1-9])0+$|\.0+$"


def text_cells(column: pa.Array, oid: int) -> pa.Array:
    """A column as PostgreSQL's text output, one binary cell per row (nulls stay null)."""
    column = _plain(column)
    kind = column.type
    if pa.types.is_boolean(kind):
        cells = pc.if_else(column, pa.scalar(b"t"), pa.scalar(b"f"))
    elif pa.types.is_timestamp(kind):
        text = pc.cast(pc.cast(column, pa.timestamp("us", tz=kind.tz)), pa.string())
        if kind.tz:
            text = pc.replace_substring_regex(pc.replace_substring(text, "T", " "), "Z$", "")
        text = pc.replace_substring_regex(text, _FRACTION, r"\1")
        if kind.tz:
            text = pc.binary_join_element_wise(text, pa.scalar("+00"), "")
        cells = text
    elif pa.types.is_time(kind):
        cells = pc.replace_substring_regex(pc.cast(column, pa.string()), _FRACTION, r"\1")
    elif pa.types.is_floating(kind):
        text = pc.cast(column, pa.string())
        text = pc.replace_substring(pc.replace_substring(text, "inf", "Infinity"), "nan", "NaN")
        cells = text
    elif pa.types.is_interval(kind) or pa.types.is_duration(kind) or pa.types.is_nested(kind) or pa.types.is_null(kind):
        cells = pa.array([None if v is None else _text_value(v) for v in column.to_pylist()], pa.binary())
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        cells = pa.array([None if v is None else b"\\x" + v.hex().encode() for v in column.to_pylist()], pa.binary())
    elif pa.types.is_dictionary(kind):
        return text_cells(column.dictionary_decode(), oid)
    else:
        cells = pc.cast(column, pa.string())
    return pc.cast(cells, pa.binary())


def _text_value(value) -> bytes:
    if isinstance(value, (dt.timedelta, pa.MonthDayNano)) or hasattr(value, "months"):
        return format_interval(value).encode()
    if isinstance(value, (list, tuple)):
        items = ["NULL" if v is None else _array_item(_text_value(v).decode()) for v in value]
        return ("{" + ",".join(items) + "}").encode()
    if isinstance(value, dict):
        return json.dumps(value, default=str).encode()
    if isinstance(value, bool):
        return b"t" if value else b"f"
    return str(value).encode()


def _array_item(text: str) -> str:
    if text == "" or any(c in text for c in ' ,{}"\\') or text.upper() == "NULL":
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def format_interval(value) -> str:
    if isinstance(value, dt.timedelta):
        months, days, micros = 0, value.days, value.seconds * 1_000_000 + value.microseconds
    else:
        months, days, micros = value.months, value.days, value.nanoseconds // 1000
    parts = []
    years, months = divmod(months, 12) if months >= 0 else (-((-months) // 12), -((-months) % 12))
    if years:
        parts.append(f"{years} year{'s' if abs(years) != 1 else ''}")
    if months:
        parts.append(f"{months} mon{'s' if abs(months) != 1 else ''}")
    if days:
        parts.append(f"{days} day{'s' if abs(days) != 1 else ''}")
    if micros or not parts:
        sign = "-" if micros < 0 else ""
        micros = abs(micros)
        seconds, fraction = divmod(micros, 1_000_000)
        text = f"{sign}{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if fraction:
            text += f".{fraction:06d}".rstrip("0")
        parts.append(text)
    return " ".join(parts)


def binary_cells(column: pa.Array, oid: int) -> pa.Array:
    """A column in PostgreSQL's binary format for `oid` (nulls stay null)."""
    column = _plain(column)
    kind = column.type
    if oid == BOOL:
        return big_endian(pc.cast(column, pa.uint8()), "B", 1)
    if oid == INT2:
        return big_endian(pc.cast(column, pa.int16()), "h", 2)
    if oid in (INT4, OID):
        return big_endian(pc.cast(column, pa.int32()), "i", 4)
    if oid == INT8:
        return big_endian(pc.cast(column, pa.int64()), "q", 8)
    if oid == FLOAT4:
        return big_endian(pc.cast(column, pa.float32()), "f", 4)
    if oid == FLOAT8:
        return big_endian(pc.cast(column, pa.float64()), "d", 8)
    if oid == DATE:
        days = pc.subtract(pc.cast(pc.cast(column, pa.date32()), pa.int32()), PG_EPOCH_DAYS)
        return big_endian(days, "i", 4)
    if oid in (TIMESTAMP, TIMESTAMPTZ):
        micros = pc.cast(pc.cast(column, pa.timestamp("us", tz=kind.tz)), pa.int64())
        return big_endian(pc.subtract(micros, PG_EPOCH_MICROS), "q", 8)
    if oid == TIME:
        return big_endian(pc.cast(pc.cast(column, pa.time64("us")), pa.int64()), "q", 8)
    if oid in (TEXT, VARCHAR, NAME, JSON, CHAR) and (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return pc.cast(column, pa.binary())
    if oid == JSONB and (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return pc.binary_join_element_wise(pa.scalar(b"\x01"), pc.cast(column, pa.binary()), b"")
    if oid == BYTEA and not pa.types.is_fixed_size_binary(kind):
        return pc.cast(column, pa.binary())
    return pa.array([None if v is None else binary_value(v, oid) for v in column.to_pylist()], pa.binary())


def binary_value(value, oid: int) -> bytes:
    if oid == NUMERIC:
        return encode_numeric(Decimal(value) if not isinstance(value, Decimal) else value)
    if oid == INTERVAL:
        if isinstance(value, dt.timedelta):
            return struct.pack("!qii", value.seconds * 1_000_000 + value.microseconds, value.days, 0)
        return struct.pack("!qii", value.nanoseconds // 1000, value.days, value.months)
    if oid == UUID:  # 16 bytes, as uuid_send writes them
        return value.bytes if isinstance(value, uuid.UUID) else uuid.UUID(str(value)).bytes
    if oid == BYTEA:
        return bytes(value)
    if oid == JSONB:  # jsonb_send: a version byte, then the text
        return b"\x01" + (value if isinstance(value, str) else json.dumps(value)).encode("utf-8")
    return _text_value(value)


def encode_numeric(value: Decimal) -> bytes:
    if value.is_nan():
        return struct.pack("!hhHH", 0, 0, 0xC000, 0)
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):  # infinities
        return struct.pack("!hhHH", 0, 0, 0xF000 if sign else 0xD000, 0)
    dscale = max(0, -exponent)
    text = "".join(map(str, digits))
    if exponent > 0:
        text += "0" * exponent
        exponent = 0
    if exponent < 0 and len(text) <= -exponent:
        text = "0" * (1 - exponent - len(text)) + text
    integer = text[: len(text) + exponent] if exponent < 0 else text
    fraction = text[len(text) + exponent :] if exponent < 0 else ""
    integer = integer.lstrip("0")
    integer = "0" * (-len(integer) % 4) + integer
    fraction = fraction + "0" * (-len(fraction) % 4)
    groups = [int(integer[i : i + 4]) for i in range(0, len(integer), 4)]
    weight = len(groups) - 1
    groups += [int(fraction[i : i + 4]) for i in range(0, len(fraction), 4)]
    while groups and groups[0] == 0:  # leading zero groups
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    return struct.pack(f"!hhHH{len(groups)}H", len(groups), weight, 0x4000 if sign else 0, dscale, *groups)


def decode_numeric(data: bytes) -> Decimal:
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHH", data)
    if sign == 0xC000:
        return Decimal("NaN")
    groups = struct.unpack_from(f"!{ndigits}H", data, 8)
    value = Decimal(0)
    for i, group in enumerate(groups):
        value += Decimal(group).scaleb(4 * (weight - i))
    value = value.quantize(Decimal(1).scaleb(-dscale)) if dscale else value.quantize(Decimal(1))
    return -value if sign == 0x4000 else value


def encode_rows(cells: list[pa.Array]) -> bytes:
    """DataRow messages for one batch, from one binary array of cells per column."""
    if not cells:
        return b""
    rows = len(cells[0])
    if rows == 0:
        return b""
    parts = [None, None]  # header, filled below
    total = pa.scalar(6, pa.int64())
    for column in cells:
        lengths = pc.binary_length(column)
        total = pc.add(total, pc.add(pc.fill_null(lengths, 0), 4))
        prefix = big_endian(pc.cast(pc.fill_null(lengths, -1), pa.int32()), "i", 4)
        parts.append(prefix)
        parts.append(pc.fill_null(column, b""))
    header = big_endian(pc.cast(total, pa.int32()), "i", 4)
    parts[0] = pa.scalar(b"D")
    parts[1] = pc.binary_join_element_wise(header, pa.scalar(struct.pack("!h", len(cells))), b"")
    joined = pc.binary_join_element_wise(*parts, b"")
    offsets = joined.buffers()[1]
    start, end = struct.unpack_from("<i", offsets, joined.offset * 4)[0], struct.unpack_from("<i", offsets, (joined.offset + rows) * 4)[0]
    return memoryview(joined.buffers()[2])[start:end].tobytes()


SMALL_BATCH = 64  # below this many rows, plain Python beats the fixed cost of compute kernels


def encode_batch(batch: pa.RecordBatch, oids: list[int], formats: list[int]) -> bytes:
    if batch.num_rows <= SMALL_BATCH:
        return _encode_small(batch, oids, formats)
    cells = [
        (binary_cells if fmt == 1 else text_cells)(batch.column(i), oids[i]) for i, fmt in enumerate(formats)
    ]
    return encode_rows(cells)


# -- parameters: wire -> Python ------------------------------------------------------


class BadValue(ValueError):
    pass


def decode_parameter(data: bytes | None, oid: int, fmt: int):
    if data is None:
        return None
    try:
        if fmt == 1:
            return _decode_binary(data, oid)
        return _decode_text(data.decode("utf-8"), oid)
    except (ValueError, struct.error, InvalidOperation, UnicodeDecodeError, RecursionError) as error:
        raise BadValue(f"invalid value for parameter of type {oid}: {error}") from None


def _decode_text(text: str, oid: int):
    if oid in (INT2, INT4, INT8, OID):
        return int(text)
    if oid in (FLOAT4, FLOAT8):
        return float(text)
    if oid == NUMERIC:
        return Decimal(text)
    if oid == BOOL:
        lowered = text.strip().lower()
        if lowered in ("t", "true", "yes", "on", "1", "y"):
            return True
        if lowered in ("f", "false", "no", "off", "0", "n"):
            return False
        raise ValueError(text)
    if oid == DATE:
        return dt.date.fromisoformat(text.strip())
    if oid in (TIMESTAMP, TIMESTAMPTZ):
        value = dt.datetime.fromisoformat(text.strip().replace(" ", "T", 1))
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value
    if oid == UUID:
        return str(uuid.UUID(text.strip()))
    if oid in (JSON, JSONB):
        return _checked_json(text)
    return text


def _checked_json(text: str) -> str:
    """JSON parameters travel as their text, once known to be JSON (PostgreSQL checks it too)."""
    json.loads(text)
    return text


def _decode_binary(data: bytes, oid: int):
    if oid == INT2:
        return struct.unpack("!h", data)[0]
    if oid in (INT4, OID):
        return struct.unpack("!i", data)[0]
    if oid == INT8:
        return struct.unpack("!q", data)[0]
    if oid == FLOAT4:
        return struct.unpack("!f", data)[0]
    if oid == FLOAT8:
        return struct.unpack("!d", data)[0]
    if oid == BOOL:
        return data != b"\x00"
    if oid == NUMERIC:
        return decode_numeric(data)
    if oid == DATE:
        return dt.date(2000, 1, 1) + dt.timedelta(days=struct.unpack("!i", data)[0])
    if oid in (TIMESTAMP, TIMESTAMPTZ):
        return dt.datetime(2000, 1, 1) + dt.timedelta(microseconds=struct.unpack("!q", data)[0])
    if oid == UUID:
        return str(uuid.UUID(bytes=data))
    if oid == JSONB:  # a version byte, then the text
        if data[:1] != b"\x01":
            raise ValueError("unsupported jsonb version")
        return _checked_json(data[1:].decode("utf-8"))
    if oid == JSON:  # binary json is its text
        return _checked_json(data.decode("utf-8"))
    return data.decode("utf-8")


_PACK = {BOOL: struct.Struct("!?"), INT2: struct.Struct("!h"), INT4: struct.Struct("!i"), OID: struct.Struct("!i"),
         INT8: struct.Struct("!q"), FLOAT4: struct.Struct("!f"), FLOAT8: struct.Struct("!d")}
_EPOCH_DATE = dt.date(2000, 1, 1)
_EPOCH = dt.datetime(2000, 1, 1)


def _small_text(value, kind: pa.DataType) -> bytes:
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, float):
        if value != value:
            return b"NaN"
        if value in (float("inf"), float("-inf")):
            return b"Infinity" if value > 0 else b"-Infinity"
        if value.is_integer() and abs(value) < 1e15:  # as PostgreSQL (and the vectorised path) print it: 10, not 10.0
            return b"%d" % value
        return repr(value).encode()
    if isinstance(value, Decimal):
        return format(value, "f").encode()
    if isinstance(value, dt.datetime):
        text = value.replace(tzinfo=None).isoformat(sep=" ")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return (text + ("+00" if value.tzinfo is not None else "")).encode()
    if isinstance(value, dt.time):
        text = value.isoformat()
        return (text.rstrip("0").rstrip(".") if "." in text else text).encode()
    if isinstance(value, (bytes, bytearray)):
        return b"\\x" + bytes(value).hex().encode()
    if isinstance(value, str):
        return value.encode("utf-8")
    return _text_value(value)


def _small_binary(value, oid: int) -> bytes:
    packer = _PACK.get(oid)
    if packer is not None:
        return packer.pack(value)
    if oid == DATE:
        return struct.pack("!i", (value - _EPOCH_DATE).days)
    if oid in (TIMESTAMP, TIMESTAMPTZ):
        delta = value.replace(tzinfo=None) - _EPOCH if value.tzinfo is None else \
            value.astimezone(dt.timezone.utc).replace(tzinfo=None) - _EPOCH
        return struct.pack("!q", (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)
    if oid == TIME:
        return struct.pack("!q", ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond)
    if oid in (UUID, JSONB):
        return binary_value(value, oid)
    if isinstance(value, str):
        return value.encode("utf-8")
    return binary_value(value, oid)


def _encode_small(batch: pa.RecordBatch, oids: list[int], formats: list[int]) -> bytes:
    columns = []
    for i, fmt in enumerate(formats):
        column = batch.column(i)
        if isinstance(column.type, pa.DictionaryType):
            column = column.dictionary_decode()
        values = column.to_pylist()
        if fmt == 1:
            oid = oids[i]
            columns.append([None if v is None else _small_binary(v, oid) for v in values])
        else:
            kind = column.type
            columns.append([None if v is None else _small_text(v, kind) for v in values])
    # DataRow messages built inline: one join per row, lengths packed without a per-cell call
    count = _ROW_HEADER_COUNT.pack(len(columns))
    out = []
    for row in zip(*columns):
        parts = [count]
        size = 6
        for value in row:
            if value is None:
                parts.append(_NULL_CELL)
                size += 4
            else:
                parts.append(_CELL_LENGTH.pack(len(value)))
                parts.append(value)
                size += 4 + len(value)
        out.append(b"D" + _CELL_LENGTH.pack(size))
        out.append(b"".join(parts))
    return b"".join(out)


_ROW_HEADER_COUNT = struct.Struct("!h")
_CELL_LENGTH = struct.Struct("!i")
_NULL_CELL = b"\xff\xff\xff\xff"
