"""The server side of SCRAM-SHA-256 (gateway.pgwire.scram) against scramp's client,
an independent implementation (pg8000's): the exchange, its failures, and the
passwords' SASLprep. Real clients log in in tests/test_pgwire_clients.py."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from scramp import ScramClient, ScramException

from gateway.pgwire.scram import (ScramError, ScramExchange, check_cleartext, make_verifier, mock_verifier,
                                  parse_verifier)

SALT = b"0123456789abcdef"


def exchange(verifier_password: str, client_password: str, real: bool = True) -> tuple[ScramClient, ScramExchange]:
    client = ScramClient(["SCRAM-SHA-256"], "analyst", client_password)
    server = ScramExchange(parse_verifier(make_verifier(verifier_password, salt=SALT)), real)
    client.set_server_first(server.first(client.get_client_first().encode()).decode())
    return client, server


def test_the_right_password_logs_in_and_the_client_checks_the_server():
    client, server = exchange("s3cret", "s3cret")
    client.set_server_final(server.final(client.get_client_final().encode()).decode())  # raises if forged


def test_a_wrong_password_or_an_unknown_user_fails_at_the_final_step():
    client, server = exchange("s3cret", "guess")
    with pytest.raises(ScramError, match="authentication failed"):
        server.final(client.get_client_final().encode())
    client, server = exchange("s3cret", "s3cret", real=False)  # a mock exchange never succeeds
    with pytest.raises(ScramError, match="authentication failed"):
        server.final(client.get_client_final().encode())


def test_the_mock_verifier_of_a_user_is_stable():
    assert mock_verifier("nobody") == mock_verifier("nobody") != mock_verifier("someone")


@pytest.mark.parametrize("first", [b"p=tls-unique,,n=,r=abc", b"n,a=x,n=,r=abc", b"n,,n=", b"n,,", b"\xff", b"x,,n=,r=a"])
def test_malformed_or_channel_bound_first_messages_are_refused(first):
    with pytest.raises(ScramError):
        ScramExchange(mock_verifier("u"), False).first(first)


def test_a_changed_nonce_binding_or_proof_is_refused():
    client, server = exchange("s3cret", "s3cret")
    final = client.get_client_final()
    without_proof, _, proof = final.rpartition(",p=")
    forged = [final.replace(",r=", ",r=x"), final.replace("c=biws", "c=eSws"), f"{without_proof},p=!!",
              f"{without_proof},p={base64.b64encode(b'short').decode()}"]
    for message in forged:
        with pytest.raises(ScramError):
            server.final(message.encode())


def _raw_keys(password: bytes, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest(), hmac.new(salted, b"Server Key", hashlib.sha256).digest()


def test_passwords_are_prepared_with_saslprep_as_postgresql_does():
    # Fullwidth letters, a no-break space, a soft hyphen: "Pass word" once prepared.
    assert make_verifier("\uff30\uff41\uff53\uff53\u00a0\uff57\uff4f\uff52\u00add", salt=SALT) == \
        make_verifier("Pass word", salt=SALT)
    verifier = parse_verifier(make_verifier("Pass word", salt=SALT))
    assert (verifier.stored_key, verifier.server_key) == _raw_keys(b"Pass word", SALT, 4096)
    # SASLprep refuses control characters: PostgreSQL (pg_saslprep) then uses the password as it is.
    with pytest.raises(ScramException):
        ScramClient(["SCRAM-SHA-256"], "u", "bell\x07").get_client_first()  # scramp's client refuses it outright
    bell = parse_verifier(make_verifier("bell\x07", salt=SALT, iterations=4096))
    assert (bell.stored_key, bell.server_key) == _raw_keys(b"bell\x07", SALT, 4096)
    assert check_cleartext(bell, "bell\x07") and not check_cleartext(bell, "bell")
    assert check_cleartext(parse_verifier(make_verifier("\u00c5ngstr\u00f6m")), "A\u030angstro\u0308m")  # NFKC
