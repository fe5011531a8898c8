"""Round trips of every message in gateway/pgwire/messages.py through a second,
independent codec written here from the protocol's documentation
(https://www.postgresql.org/docs/current/protocol-message-formats.html): what a
client encodes the gateway decodes to the same fields, what the gateway encodes
a client decodes to the fields it was given. Property-based (hypothesis) where
the fields vary; no sockets.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.pgwire import messages as m

CODEC = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow])

# -- the client's side, written from the documentation --------------------------------


def frame(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def c(text: str) -> bytes:
    return text.encode("utf-8") + b"\x00"


def client_startup(params: dict[str, str], version: int = m.PROTOCOL_V3) -> bytes:
    """The body of a StartupMessage (the length word is the transport's)."""
    return struct.pack("!i", version) + b"".join(c(k) + c(v) for k, v in params.items()) + b"\x00"


def client_parse(name: str, sql: str, types: list[int]) -> bytes:
    return c(name) + c(sql) + struct.pack(f"!h{len(types)}i", len(types), *types)


def client_bind(portal: str, statement: str, formats: list[int], params: list[bytes | None],
                results: list[int]) -> bytes:
    body = c(portal) + c(statement) + struct.pack(f"!h{len(formats)}h", len(formats), *formats)
    body += struct.pack("!h", len(params))
    for value in params:
        body += struct.pack("!i", -1) if value is None else struct.pack("!i", len(value)) + value
    return body + struct.pack(f"!h{len(results)}h", len(results), *results)


class Reader:
    """Fields of a backend message body, as a client reads them."""

    def __init__(self, body: bytes):
        self.body, self.at = body, 0

    def take(self, fmt: str):
        values = struct.unpack_from(fmt, self.body, self.at)
        self.at += struct.calcsize(fmt)
        return values if len(values) > 1 else values[0]

    def cstr(self) -> str:
        end = self.body.index(b"\x00", self.at)
        text, self.at = self.body[self.at:end].decode("utf-8"), end + 1
        return text

    def raw(self, n: int) -> bytes:
        value, self.at = self.body[self.at:self.at + n], self.at + n
        return value

    def done(self) -> bool:
        return self.at == len(self.body)


def unframe(data: bytes) -> tuple[bytes, Reader]:
    """One whole backend message: its type and a reader over its body (the length must fit exactly)."""
    kind, length = data[:1], struct.unpack_from("!i", data, 1)[0]
    assert length == len(data) - 1, "the length word counts itself and the body"
    return kind, Reader(data[5:])


def error_fields(reader: Reader) -> dict[str, str]:
    fields = {}
    while True:
        code = reader.raw(1)
        if code == b"\x00":
            return fields
        fields[code.decode()] = reader.cstr()


# -- strategies -------------------------------------------------------------------------

text = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=40)
int32 = st.integers(-(2**31), 2**31 - 1)
int16 = st.integers(-(2**15), 2**15 - 1)
oid = st.integers(0, 2**31 - 1)
value = st.none() | st.binary(max_size=40)


# -- frontend: client bytes -> the gateway's decoded messages ---------------------------


@CODEC
@given(params=st.dictionaries(text.filter(bool), text, max_size=6), minor=st.integers(0, 0xFFFF))
def test_startup(params, minor):
    assert m.decode_startup(client_startup(params, (3 << 16) | minor)) == m.Startup((3 << 16) | minor, params)


@CODEC
@given(pid=int32, secret=int32)
def test_cancel_request(pid, secret):
    assert m.decode_startup(struct.pack("!iii", m.CANCEL_REQUEST, pid, secret)) == m.CancelKey(pid, secret)


@pytest.mark.parametrize("code", [m.SSL_REQUEST, m.GSSENC_REQUEST])
def test_encryption_requests(code):
    assert m.decode_startup(struct.pack("!i", code)) == code


@pytest.mark.parametrize("version", [2 << 16, 4 << 16, 1234])
def test_other_protocol_versions_are_refused(version):
    with pytest.raises(m.ProtocolViolation, match="unsupported frontend protocol"):
        m.decode_startup(client_startup({"user": "a"}, version))


@CODEC
@given(sql=text)
def test_query(sql):
    assert m.decode(b"Q", c(sql)) == m.Query(sql)


@CODEC
@given(name=text, sql=text, types=st.lists(oid, max_size=8))
def test_parse(name, sql, types):
    assert m.decode(b"P", client_parse(name, sql, types)) == m.Parse(name, sql, tuple(types))


@CODEC
@given(portal=text, statement=text, formats=st.lists(st.sampled_from([0, 1]), max_size=4),
       params=st.lists(value, max_size=6), results=st.lists(st.sampled_from([0, 1]), max_size=4))
@example(portal="", statement="", formats=[], params=[b"", None], results=[])  # empty value is not NULL
def test_bind(portal, statement, formats, params, results):
    decoded = m.decode(b"B", client_bind(portal, statement, formats, params, results))
    assert decoded == m.Bind(portal, statement, tuple(formats), tuple(params), tuple(results))


@CODEC
@given(which=st.sampled_from("SP"), name=text)
def test_describe_and_close(which, name):
    assert m.decode(b"D", which.encode() + c(name)) == m.Describe(which, name)
    assert m.decode(b"C", which.encode() + c(name)) == m.Close(which, name)


@pytest.mark.parametrize("kind", [b"D", b"C"])
def test_describe_or_close_of_something_else_is_a_violation(kind):
    with pytest.raises(m.ProtocolViolation):
        m.decode(kind, b"X" + c("name"))


@CODEC
@given(portal=text, max_rows=int32)
def test_execute(portal, max_rows):
    assert m.decode(b"E", c(portal) + struct.pack("!i", max_rows)) == m.Execute(portal, max_rows)


@pytest.mark.parametrize("kind, message", [(b"S", m.Sync()), (b"H", m.Flush()), (b"X", m.Terminate())])
def test_bodiless_messages(kind, message):
    assert m.decode(kind, b"") == message


@CODEC
@given(data=st.binary(max_size=100))
def test_password_sasl_initial_and_sasl_response_carry_their_bytes(data):
    assert m.decode(b"p", data) == m.Password(data)


@CODEC
@given(reason=text)
def test_copy_fail(reason):
    assert m.decode(b"f", c(reason)) == m.CopyFail(reason)


@CODEC
@given(kind=st.binary(min_size=1, max_size=1).filter(lambda k: k not in b"QPBDECSHXpf"))
def test_unknown_kinds_are_named_not_decoded(kind):
    assert m.decode(kind, b"anything") == m.Unknown(kind)


FRONTEND = st.sampled_from([b"Q", b"P", b"B", b"D", b"E", b"C", b"f"])


@CODEC
@given(kind=FRONTEND, body=st.binary(max_size=60))
def test_any_body_decodes_or_is_a_protocol_violation(kind, body):
    """Bytes from a hostile peer: never an IndexError, struct.error or UnicodeDecodeError."""
    try:
        m.decode(kind, body)
    except m.ProtocolViolation:
        pass


@CODEC
@given(portal=text, statement=text, params=st.lists(value, min_size=1, max_size=4), cut=st.integers(1, 200))
def test_a_truncated_bind_is_a_protocol_violation(portal, statement, params, cut):
    body = client_bind(portal, statement, [1], params, [0])
    with pytest.raises(m.ProtocolViolation):
        m.decode(b"B", body[:max(0, len(body) - cut)])


@CODEC
@given(body=st.binary(max_size=40))
def test_any_startup_body_decodes_or_is_a_protocol_violation(body):
    try:
        m.decode_startup(body)
    except m.ProtocolViolation:
        pass


@pytest.mark.parametrize("kind, body", [(b"P", c("s") + c("SELECT 1") + struct.pack("!h", -1)),
                                        (b"B", c("") + c("") + struct.pack("!h", -2)),
                                        (b"Q", b"\xff\xfe\x00"), (b"Q", b"no terminator")])
def test_negative_counts_bad_utf8_and_unterminated_strings_are_violations(kind, body):
    with pytest.raises(m.ProtocolViolation):
        m.decode(kind, body)


# -- backend: the gateway's bytes -> what a client reads ------------------------------------


@pytest.mark.parametrize("encoded, kind, body", [
    (m.AUTH_OK, b"R", struct.pack("!i", 0)), (m.AUTH_CLEARTEXT, b"R", struct.pack("!i", 3)),
    (m.PARSE_COMPLETE, b"1", b""), (m.BIND_COMPLETE, b"2", b""), (m.CLOSE_COMPLETE, b"3", b""),
    (m.NO_DATA, b"n", b""), (m.EMPTY_QUERY, b"I", b""), (m.PORTAL_SUSPENDED, b"s", b""), (m.COPY_DONE, b"c", b""),
])
def test_constant_messages(encoded, kind, body):
    got_kind, reader = unframe(encoded)
    assert (got_kind, reader.body) == (kind, body)


@CODEC
@given(mechanisms=st.lists(text.filter(bool), min_size=1, max_size=3))
def test_authentication_sasl(mechanisms):
    kind, reader = unframe(m.auth_sasl(mechanisms))
    assert (kind, reader.take("!i")) == (b"R", 10)
    listed = []
    while (name := reader.cstr()) != "":
        listed.append(name)
    assert listed == mechanisms and reader.done()


@CODEC
@given(data=st.binary(max_size=100))
def test_authentication_sasl_continue_and_final(data):
    for encode, code in ((m.auth_sasl_continue, 11), (m.auth_sasl_final, 12)):
        kind, reader = unframe(encode(data))
        assert (kind, reader.take("!i"), reader.raw(len(data)), reader.done()) == (b"R", code, data, True)


@CODEC
@given(name=text, setting=text)
def test_parameter_status(name, setting):
    kind, reader = unframe(m.parameter_status(name, setting))
    assert (kind, reader.cstr(), reader.cstr(), reader.done()) == (b"S", name, setting, True)


@CODEC
@given(pid=int32, secret=int32)
def test_backend_key_data(pid, secret):
    kind, reader = unframe(m.backend_key_data(pid, secret))
    assert (kind, reader.take("!ii"), reader.done()) == (b"K", (pid, secret), True)


@pytest.mark.parametrize("status", ["I", "T", "E"])
def test_ready_for_query(status):
    kind, reader = unframe(m.ready_for_query(status))
    assert (kind, reader.raw(1), reader.done()) == (b"Z", status.encode(), True)


@CODEC
@given(tag=text)
def test_command_complete(tag):
    kind, reader = unframe(m.command_complete(tag))
    assert (kind, reader.cstr(), reader.done()) == (b"C", tag, True)


@CODEC
@given(oids=st.lists(oid, max_size=10))
def test_parameter_description(oids):
    kind, reader = unframe(m.parameter_description(oids))
    count = reader.take("!h")
    assert (kind, [reader.take("!i") for _ in range(count)], reader.done()) == (b"t", oids, True)


fields = st.lists(st.builds(m.Field, name=text, type_oid=oid, type_size=int16, type_modifier=int32,
                            format=st.sampled_from([0, 1]), table_oid=oid, column=int16), max_size=6)


@CODEC
@given(described=fields)
def test_row_description(described):
    kind, reader = unframe(m.row_description(described))
    got = []
    for _ in range(reader.take("!h")):
        name = reader.cstr()
        table_oid, column, type_oid, size, modifier, fmt = reader.take("!ihihih")
        got.append(m.Field(name, type_oid, size, modifier, fmt, table_oid, column))
    assert (kind, got, reader.done()) == (b"T", described, True)


def read_data_row(data: bytes) -> list[bytes | None]:
    kind, reader = unframe(data)
    assert kind == b"D"
    cells = []
    for _ in range(reader.take("!h")):
        length = reader.take("!i")
        cells.append(None if length == -1 else reader.raw(length))
    assert reader.done()
    return cells


@CODEC
@given(cells=st.lists(value, max_size=8))
def test_data_row(cells):
    assert read_data_row(m.data_row(cells)) == cells


@CODEC
@given(sqlstate=st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=5, max_size=5), message=text,
       hint=st.none() | text, detail=st.none() | text, severity=st.sampled_from(["ERROR", "FATAL"]))
def test_error_response(sqlstate, message, hint, detail, severity):
    kind, reader = unframe(m.error_response(sqlstate, message, hint, detail, severity=severity))
    expected = {"S": severity, "V": severity, "C": sqlstate, "M": message}
    expected |= {"D": detail} if detail else {}
    expected |= {"H": hint} if hint else {}
    assert (kind, error_fields(reader), reader.done()) == (b"E", expected, True)


@CODEC
@given(message=text, hint=st.none() | text)
def test_notice_response(message, hint):
    kind, reader = unframe(m.notice_response(message, hint=hint))
    expected = {"S": "NOTICE", "V": "NOTICE", "C": "00000", "M": message} | ({"H": hint} if hint else {})
    assert (kind, error_fields(reader), reader.done()) == (b"N", expected, True)


@CODEC
@given(columns=st.integers(0, 50))
def test_copy_out_response(columns):
    kind, reader = unframe(m.copy_out_response(columns))
    overall, count = reader.take("!bh")
    assert (kind, overall, count, [reader.take("!h") for _ in range(count)], reader.done()) == \
        (b"H", 0, columns, [0] * columns, True)


@CODEC
@given(data=st.binary(max_size=100))
def test_copy_data(data):
    kind, reader = unframe(m.copy_data(data))
    assert (kind, reader.body) == (b"d", data)


@CODEC
@given(name=st.text(max_size=10), setting=st.text(max_size=10))
def test_nul_characters_are_dropped_from_strings_not_sent(name, setting):
    kind, reader = unframe(m.parameter_status(name, setting))
    assert (reader.cstr(), reader.cstr(), reader.done()) == (name.replace("\x00", ""), setting.replace("\x00", ""), True)


# -- framing ------------------------------------------------------------------------------------


@CODEC
@given(messages=st.lists(st.tuples(st.sampled_from(b"ZCDTERSKt"), st.binary(max_size=30)), min_size=1, max_size=5),
       tail=st.binary(max_size=4))
def test_split_message_walks_a_stream_of_messages(messages, tail):
    stream = b"".join(frame(bytes([kind]), body) for kind, body in messages) + tail[:4]
    walked = []
    while (found := m.split_message(stream)) is not None:
        kind, body, size = found
        walked.append((kind[0], body))
        stream = stream[size:]
    assert walked == messages and stream == tail[:4]


def test_a_message_not_yet_whole_is_not_split():
    whole = m.command_complete("SELECT 1")
    assert [m.split_message(whole[:n]) for n in range(len(whole))] == [None] * len(whole)
    assert m.split_message(whole) == (b"C", c("SELECT 1"), len(whole))


def test_encoded_answers_are_kept_per_table_object_and_never_given_to_another():
    import gc

    import pyarrow as pa

    from gateway.pgwire import types as t
    from gateway.pgwire.encoded_answers import EncodedAnswers
    from gateway.pgwire.messages import notice_response

    answers = EncodedAnswers()
    oids, formats = [t.TEXT, t.INT8], [0, 0]
    first = pa.table({"region": ["north", "south"], "n": [3, 4]})
    encoded = answers.rows(first, oids, formats)
    assert encoded == t.encode_batch(first.to_batches()[0], oids, formats)
    assert answers.rows(first, oids, formats) is encoded  # the same table: encoded once
    del first
    gc.collect()
    for _ in range(50):  # new tables, some at a freed table's address: each gets its own rows
        other = pa.table({"region": ["east", "west"], "n": [5, 6]})
        assert answers.rows(other, oids, formats) == t.encode_batch(other.to_batches()[0], oids, formats)
    large = pa.table({"n": list(range(t.SMALL_BATCH + 1))})
    assert answers.rows(large, [t.INT8], [0]) is None  # streamed in batches as before
    assert answers.notices(("a", "b")) == notice_response("a") + notice_response("b")
