"""`observed`: what a fault case saw, for the Observed column of tests/faults/matrix.py (see harness.fault)."""

from __future__ import annotations

import pytest


@pytest.fixture
def observed(request):
    """observed("...") adds a line to the row's Observed column (kept in the test report)."""

    def add(text: str) -> None:
        request.node.user_properties.append(("observed", text))

    return add
