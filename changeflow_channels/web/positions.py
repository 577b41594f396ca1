"""Positions a subscription under a row rule may show: its own numbering, and
opaque resume cursors.

A change's ``seq`` counts every change of its table. Under a row rule, frames
carrying it would tell a client how many changes it was not allowed to see (its
snapshot at 7, its next change at 309: 301 hidden changes). So a subscription
under a row rule numbers what it sends itself (``Numbering``): within an epoch,
1, 2, 3... after the point where it started (a snapshot carries the number of
the last change before it, 0 at first), and each change, snapshot or
``too_large`` frame carries a ``cursor``: the real position (epoch, seq) and the
frame's own number, encrypted and signed with a key derived from
``SECRET_KEY`` (``Cursors``). It tells nothing (fixed length, a fresh nonce each
time: two cursors of one position differ), and cannot be forged or moved to
another stream. The client resumes with ``since: {"epoch", "seq", "cursor"}``
on any connection; the server reads the real position back from the cursor.
Under a row rule a ``since`` without a valid cursor is answered ``resync``
(``no_position``), whatever its numbers, so that ``since`` cannot probe the real
position either (docs/protocol.md, "Positions under a row rule").

Nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..sync import ClientSince
from .actions import Position

CURSOR_PREFIX = "c1."
NONCE_BYTES = 12
TAG_BYTES = 16
# What a cursor holds: the real seq, the frame's own number, then the epoch.
_NUMBERS = struct.Struct(">QQ")
MAX_EPOCH_BYTES = 64  # sync.parse_since's bound on an epoch


def _derive(secret: str | bytes, purpose: bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.digest(key, b"changeflow.cursor." + purpose, hashlib.sha256)


def _keystream(key: bytes, nonce: bytes, length: int) -> bytes:
    blocks = [
        hmac.digest(key, nonce + counter.to_bytes(4, "big"), hashlib.sha256)
        for counter in range((length + 31) // 32)
    ]
    return b"".join(blocks)[:length]


def _xor(data: bytes, stream: bytes) -> bytes:
    mixed = int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")
    return mixed.to_bytes(len(data), "big")


@dataclass(frozen=True)
class Cursor:
    """What a cursor says: the real position after the frame, and its number."""

    epoch: str | None
    seq: int
    visible: int


class Cursors:
    """Seals positions into cursors and opens them (HMAC-SHA256 as a keystream,
    encrypt-then-MAC; the stream name is signed with the cursor). The first secret
    seals, every one opens (``SECRET_KEY`` then ``SECRET_KEY_FALLBACKS``: rotating
    the key keeps cursors working)."""

    def __init__(self, secrets_: Iterable[str | bytes]) -> None:
        self.keys = [(_derive(s, b"encrypt"), _derive(s, b"sign")) for s in secrets_]
        if not self.keys:
            raise ValueError("cursors need a secret")

    def seal(self, stream: str, epoch: str | None, seq: int, visible: int) -> str:
        epoch_bytes = b"" if epoch is None else b"\x01" + epoch.encode()
        plain = _NUMBERS.pack(seq, visible) + epoch_bytes
        nonce = secrets.token_bytes(NONCE_BYTES)
        encrypt, sign = self.keys[0]
        sealed = nonce + _xor(plain, _keystream(encrypt, nonce, len(plain)))
        tag = self._tag(sign, stream, sealed)
        return CURSOR_PREFIX + base64.urlsafe_b64encode(sealed + tag).decode().rstrip("=")

    def open(self, stream: str, cursor: str) -> Cursor | None:
        """The position in ``cursor``, or None when it is not one of ours (forged,
        altered, of another stream, or sealed with a key no longer known)."""
        if not cursor.startswith(CURSOR_PREFIX):
            return None
        body = cursor[len(CURSOR_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) < NONCE_BYTES + _NUMBERS.size + TAG_BYTES:
            return None
        sealed, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        nonce, data = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        for encrypt, sign in self.keys:
            if hmac.compare_digest(tag, self._tag(sign, stream, sealed)):
                return self._read(_xor(data, _keystream(encrypt, nonce, len(data))))
        return None

    @staticmethod
    def _tag(key: bytes, stream: str, sealed: bytes) -> bytes:
        message = CURSOR_PREFIX.encode() + stream.encode() + b"\x00" + sealed
        return hmac.digest(key, message, hashlib.sha256)[:TAG_BYTES]

    @staticmethod
    def _read(plain: bytes) -> Cursor | None:
        seq, visible = _NUMBERS.unpack_from(plain)
        rest = plain[_NUMBERS.size :]
        if not rest:
            return Cursor(None, seq, visible)
        try:
            epoch = rest[1:].decode()
        except UnicodeDecodeError:
            return None
        return Cursor(epoch, seq, visible)


@lru_cache(maxsize=4)
def cursors_for(secret: str, fallbacks: tuple[str, ...] = ()) -> Cursors:
    """One ``Cursors`` per secret (deriving its keys costs a little)."""
    return Cursors([secret, *fallbacks])


def site_cursors() -> Cursors:
    """The site's cursors, from ``SECRET_KEY`` (and ``SECRET_KEY_FALLBACKS``)."""
    from django.conf import settings

    fallbacks = tuple(getattr(settings, "SECRET_KEY_FALLBACKS", ()) or ())
    return cursors_for(settings.SECRET_KEY, fallbacks)


@dataclass
class Numbering:
    """A subscription's own numbers for what it sends, within an epoch: the
    first change after ``(epoch, visible)`` is ``visible + 1``. Another epoch
    starts again from 0 (epochs are public: a feed's run)."""

    epoch: str | None = None
    visible: int = 0

    def change(self, epoch: str | None) -> int:
        """The number of a change (or ``too_large`` frame) sent in ``epoch``."""
        self._enter(epoch)
        self.visible += 1
        return self.visible

    def snapshot(self, epoch: str | None) -> int:
        """The number a snapshot of ``epoch`` carries: the last change's before it."""
        self._enter(epoch)
        return self.visible

    def _enter(self, epoch: str | None) -> None:
        if epoch != self.epoch:
            self.epoch, self.visible = epoch, 0


@dataclass(frozen=True)
class Resume:
    """Where a new subscription starts: ``since`` (a real position, or None),
    its ``numbering`` (None: frames carry the real ``seq``), and ``lost``: the
    client asked to resume from a position it cannot be given (``resync``)."""

    since: Position | None
    numbering: Numbering | None
    lost: bool = False


def resume_from(
    since: ClientSince | None,
    stream: str,
    *,
    numbered: bool,
    cursors: Cursors,
    previous: Numbering | None = None,
) -> Resume:
    """How a subscription to ``stream`` starts, the client having sent ``since``.

    A valid cursor is the position, always. Without a row rule (``numbered``
    false) the client's ``epoch`` and ``seq`` are the position, as they always
    were. Under a row rule they are the client's own numbers: without a valid
    cursor it is ``lost`` (never a real position the client made up), and its
    numbering goes on from them (or from ``previous``, the subscription this one
    replaces on the connection), so the client's duplicate check stays right."""
    opened = None
    if since is not None and since.cursor is not None:
        opened = cursors.open(stream, since.cursor)
    if not numbered:
        if opened is not None:
            return Resume((opened.epoch, opened.seq), None)
        return Resume(None if since is None else since.position, None)
    if opened is not None:
        return Resume((opened.epoch, opened.seq), Numbering(opened.epoch, opened.visible))
    if since is not None:
        epoch, seq = since.position
        return Resume(None, Numbering(epoch, seq), lost=True)
    if previous is not None:
        return Resume(None, Numbering(previous.epoch, previous.visible))
    return Resume(None, Numbering())


def stamp(
    frame: dict[str, Any],
    numbering: Numbering,
    cursors: Cursors,
    stream: str,
    epoch: str | None,
    seq: int,
    *,
    advance: bool,
) -> dict[str, Any]:
    """``frame`` (a change, snapshot or ``too_large`` frame at the real position
    ``(epoch, seq)``) with the subscription's own ``seq`` and a ``cursor``: the
    next number when ``advance`` (a change), else the current one (a snapshot)."""
    number = numbering.change(epoch) if advance else numbering.snapshot(epoch)
    frame["seq"] = number
    frame["cursor"] = cursors.seal(stream, epoch, seq, number)
    return frame
