"""serving.CheckedStream on a real store: a body sent as it is checked, its last block held
back until the checksum matches."""

from __future__ import annotations

import contextlib
import os
import time

import pytest

from wsgi_proxy.core.errors import CacheDamaged
from wsgi_proxy.core.model import Entry, ResponseHead
from wsgi_proxy.flow.serving import CHECK_BLOCK, FIRST_BLOCK, CheckedStream
from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.hits import Hit

KEY = "GET http://o/big"
BLOCK = 1000
BODY = bytes(range(256)) * 20  # 5,120 bytes: six blocks, the last one short


def stored_hit(store: Store, damage: int | None = None, cut: int = 0, body: bytes = BODY) -> Hit:
    """Store ``body``, then damage a byte at ``damage`` or drop ``cut`` bytes from the end."""
    head = ResponseHead(200, "OK", (("Cache-Control", "max-age=60"),))
    writer = store.begin(Entry(KEY, head, time.time(), time.time(), (), 0),
                         expected_length=len(body), max_body=len(body))  # fmt: skip
    assert writer is not None
    writer.write(body)
    assert writer.commit()
    found = store.lookup(KEY, (), time.time())
    assert isinstance(found, Hit)
    path = found.location
    if damage is not None:
        with open(path, "r+b") as file:
            file.seek(found.body_offset + damage)
            file.write(bytes([body[damage] ^ 0xFF]))
    if cut:
        os.truncate(path, os.path.getsize(path) - cut)
    return found


def test_a_sound_body_is_sent_whole_and_remembered_as_checked(store: Store) -> None:
    found = stored_hit(store)
    stream = CheckedStream(found, store, BLOCK)
    with contextlib.closing(stream):
        blocks = list(stream)
    assert b"".join(blocks) == BODY
    assert [len(b) for b in blocks] == [1000] * 5 + [120]
    assert store.is_verified(found)


def test_the_first_block_is_small_for_an_early_first_byte(store: Store) -> None:
    body = bytes(range(256)) * ((FIRST_BLOCK + CHECK_BLOCK + 1) // 256 + 1)
    found = stored_hit(store, body=body)
    stream = CheckedStream(found, store)
    with contextlib.closing(stream):
        blocks = list(stream)
    assert [len(b) for b in blocks] == [
        FIRST_BLOCK,
        CHECK_BLOCK,
        len(body) - FIRST_BLOCK - CHECK_BLOCK,
    ]
    assert b"".join(blocks) == body


@pytest.mark.parametrize(
    ("damage", "cut"), [(0, 0), (5000, 0), (None, 1)], ids=["first byte", "last block", "cut"]
)
def test_a_damaged_body_is_cut_short_and_removed(
    store: Store, damage: int | None, cut: int
) -> None:
    found = stored_hit(store, damage, cut)
    sent = bytearray()
    reported: list[CacheDamaged] = []
    stream = CheckedStream(found, store, BLOCK, damaged=reported.append)
    with contextlib.closing(stream), pytest.raises(CacheDamaged) as raised:
        for block in stream:
            sent += block
    assert reported == [raised.value]  # logged and counted by the app
    assert len(sent) < len(BODY)  # the client, promised len(BODY), sees a cut body
    assert BODY.startswith(bytes(sent)) or damage == 0
    assert not store.is_verified(found)
    assert store.lookup(KEY, (), time.time()) is None  # removed, by the stream or the lookup
    assert not os.path.exists(found.location)
