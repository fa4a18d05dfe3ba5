"""Cookies: round number, category and object id (spec §5.2)."""

from __future__ import annotations

from enum import IntEnum

ROUND_MASK = 0xFFFF000000000000


class Category(IntEnum):
    DEFAULT = 0
    GATEWAY = 1
    NODE = 2
    POD = 3
    SERVICE = 4
    POLICY = 5
    SNAT = 6


def cookie(round_num: int, category: Category, object_id: int = 0) -> int:
    return ((round_num & 0xFFFF) << 48) | (int(category) << 40) | (object_id & 0xFFFFFFFF)


def round_of(c: int) -> int:
    return (c >> 48) & 0xFFFF


def category_of(c: int) -> Category:
    return Category((c >> 40) & 0xFF)


def round_selector(round_num: int) -> str:
    """The cookie match that selects every flow of a round, for del-flows."""
    return f"cookie=0x{(round_num & 0xFFFF) << 48:x}/0x{ROUND_MASK:x}"
