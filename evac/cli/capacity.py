"""``evac ha protect|unprotect|capacity``: (being written)."""

from __future__ import annotations

from typing import Any


def register(verbs: Any) -> None:
    """Adds the admission verbs to ``evac ha``'s subparsers (nothing yet)."""
