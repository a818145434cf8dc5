"""Keys of the rows a call writes (store/keys.py): a UUID's version-4 form, in the order they are made."""

from __future__ import annotations

import time
import uuid

from callgrid.store.keys import ordered_uuid


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
