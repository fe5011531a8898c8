"""Request ids for the wire front end's statements: a random per-process prefix
and a counter, as long as the engine's own ids (gateway.engine.types.new_request_id,
16 hex digits) but without a uuid4 (an os.urandom call) per statement."""

from __future__ import annotations

import itertools
import os
import secrets

_state = {"pid": None, "prefix": "", "counter": itertools.count()}


def request_id() -> str:
    if _state["pid"] != os.getpid():  # a forked child must not repeat its parent's ids
        _state.update(pid=os.getpid(), prefix=secrets.token_hex(4), counter=itertools.count())
    return f"{_state['prefix']}{next(_state['counter']) & 0xFFFFFFFF:08x}"
