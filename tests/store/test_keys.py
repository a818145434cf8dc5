"""Keys of the rows a call writes (store/keys.py): a UUID's version-4 form, in the order they are made."""

from __future__ import annotations

import os
import time
import uuid

from callgrid.store.keys import ordered_uuid, random_bytes, random_uuid


def test_ordered_keys_are_version_4_uuids_and_unique() -> None:
    keys = [ordered_uuid() for _ in range(10_000)]
    assert len(set(keys)) == len(keys)
    for key in keys[:100]:
        parsed = uuid.UUID(key)
        assert str(parsed) == key
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_a_later_key_sorts_after_an_earlier_one() -> None:
    earlier = [ordered_uuid() for _ in range(100)]
    time.sleep(0.002)  # the next millisecond: keys of one millisecond are in no particular order
    later = [ordered_uuid() for _ in range(100)]
    assert max(earlier) < min(later)


def test_random_uuids_are_version_4_unique_and_use_every_random_bit() -> None:
    keys = [random_uuid() for _ in range(10_000)]  # more than one 4 KiB pool of random bytes
    assert len(set(keys)) == len(keys)
    seen = 0
    for key in keys:
        parsed = uuid.UUID(key)
        assert str(parsed) == key
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        seen |= parsed.int
    # Every bit but the version's and variant's fixed ones takes both values somewhere.
    assert seen == (1 << 128) - 1 & ~(0b1011 << 76 | 0b01 << 62)


def test_a_forked_child_does_not_repeat_its_parents_random_bytes() -> None:
    random_bytes(16)  # the parent has a pool
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(writer, random_bytes(64))
        os._exit(0)
    os.close(writer)
    os.waitpid(pid, 0)
    child = os.read(reader, 64)
    os.close(reader)
    assert len(child) == 64
    assert child != random_bytes(64)
