"""Shared test helpers (the shared models and graphs: tests/graphs.py)."""

from __future__ import annotations


def skip_without_lava(module_level: bool = False) -> None:
    """Skip where Lava cannot run (Python != 3.10); fail instead when LMUF_REQUIRE_LAVA is set,
    as .ci/run sets it, so that the Lava tests can never be skipped in CI."""
    import os

    import pytest

    from backends.lava.backend import unavailable_reason

    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("LMUF_REQUIRE_LAVA"):
        pytest.fail(f"LMUF_REQUIRE_LAVA is set but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)
