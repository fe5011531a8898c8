"""Answers encoded once for their repeats.

A kept replay (gateway/engine/replay.py) hands the wire the very same table and
notices each time a dashboard redraws; their DataRow and NoticeResponse bytes are
encoded once and sent again. A table is recognised by identity, checked through a
weak reference, so a new table that happens to reuse a freed one's address is
never mistaken for it."""

from __future__ import annotations

import weakref

import pyarrow as pa

from gateway.lru import LruCache
from gateway.pgwire import messages as m
from gateway.pgwire import types as t


class EncodedAnswers:
    def __init__(self, capacity: int = 256):
        self._rows = LruCache(capacity)
        self._notices = LruCache(capacity)

    def notices(self, notices: tuple[str, ...]) -> bytes:
        """The NoticeResponses of `notices`, in order."""
        encoded = self._notices.get(notices)
        if encoded is None:
            encoded = b"".join(m.notice_response(notice) for notice in notices)
            self._notices.put(notices, encoded)
        return encoded

    def rows(self, table: pa.Table, oids: list[int], formats: list[int]) -> bytes | None:
        """The DataRows of the whole table when it is small (larger ones stream in batches)."""
        if table.num_rows > t.SMALL_BATCH:
            return None
        key = (id(table), tuple(oids), tuple(formats))
        kept = self._rows.get(key)
        if kept is not None and kept[0]() is table:
            return kept[1]
        encoded = b"".join(t.encode_batch(batch, oids, formats) for batch in table.to_batches())
        self._rows.put(key, (weakref.ref(table), encoded))
        return encoded
