"""Process-wide settings the server applies at start-up (service/tuning.py)."""

from __future__ import annotations

import gc

from service.tuning import freeze_startup_objects, keep_freed_memory


def test_keep_freed_memory_applies_on_glibc():
    # The test machines and the image run glibc; applying twice is harmless.
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True


def test_freeze_startup_objects_takes_them_out_of_collections():
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 10_000  # torch alone brings more
    finally:
        gc.unfreeze()
