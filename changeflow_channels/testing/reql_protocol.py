"""RethinkDB's wire protocol, server side: the V1_0 handshake and query framing.

The handshake (https://rethinkdb.com/docs/writing-drivers/) is a magic number
followed by null-terminated JSON messages carrying SCRAM-SHA-256 (RFC 5802 /
RFC 7677). After it, every query is ``token (u64 LE) | length (u32 LE) | JSON``
and every response is framed the same way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
from dataclasses import dataclass
from typing import Any

from rethinkdb.ql2_pb2 import VersionDummy

V1_0_MAGIC = struct.pack("<L", VersionDummy.Version.V1_0)
SERVER_VERSION = "2.4.4 (changeflow ReQL test server)"
SCRAM_ITERATIONS = 4096
HEADER = struct.Struct("<QL")  # token, length
MAX_QUERY_BYTES = 64 * 1024 * 1024

# Error codes of the real server's handshake; the driver raises ReqlAuthError
# for 10..20 and ReqlDriverError otherwise.
AUTH_ERROR_WRONG_PASSWORD = 12
AUTH_ERROR_UNKNOWN_USER = 17
HANDSHAKE_ERROR_PROTOCOL = 2


class HandshakeError(Exception):
    """The client failed the handshake; ``reply`` is what to send before closing."""

    def __init__(self, reply: bytes) -> None:
        super().__init__(reply.decode("utf-8", "replace"))
        self.reply = reply


def encode_message(payload: dict[str, Any]) -> bytes:
    """A handshake message: compact JSON, null-terminated."""
    return json.dumps(payload, separators=(",", ":")).encode() + b"\0"


def handshake_failure(message: str, code: int) -> HandshakeError:
    return HandshakeError(encode_message({"success": False, "error": message, "error_code": code}))


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


@dataclass(frozen=True)
class Credentials:
    """One user's SCRAM secrets, derived once: the real server stores them the
    same way (a fixed salt per user), which also lets the driver cache PBKDF2."""

    salt: bytes
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_password(cls, password: str) -> Credentials:
        salt = os.urandom(16)
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
        client_key = _hmac(salted, b"Client Key")
        return cls(
            salt=salt,
            stored_key=hashlib.sha256(client_key).digest(),
            server_key=_hmac(salted, b"Server Key"),
        )


def _scram_fields(message: str) -> dict[str, str]:
    fields = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if sep:
            fields[key] = value
    return fields


class ScramExchange:
    """Server side of one SCRAM-SHA-256 conversation."""

    def __init__(self, users: dict[str, Credentials]) -> None:
        self._users = users
        self._credentials: Credentials | None = None
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""

    def first(self, client_first: dict[str, Any]) -> bytes:
        """Answer the client's first message with the salt and a combined nonce."""
        if client_first.get("authentication_method") != "SCRAM-SHA-256":
            raise handshake_failure("Unsupported authentication method.", AUTH_ERROR_UNKNOWN_USER)
        authentication = str(client_first.get("authentication", ""))
        # "n,,n=user,r=nonce": a GS2 header without channel binding, then the bare message.
        gs2, _, bare = authentication.partition(",,")
        if gs2 != "n":
            raise handshake_failure("Channel binding is not supported.", AUTH_ERROR_UNKNOWN_USER)
        fields = _scram_fields(bare)
        user = fields.get("n", "").replace("=2C", ",").replace("=3D", "=")
        if user not in self._users or "r" not in fields:
            raise handshake_failure(f"Unknown user `{user}`.", AUTH_ERROR_UNKNOWN_USER)
        self._credentials = self._users[user]
        self._client_first_bare = bare
        self._nonce = fields["r"] + base64.b64encode(os.urandom(18)).decode()
        salt = base64.b64encode(self._credentials.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={SCRAM_ITERATIONS}"
        return encode_message({"success": True, "authentication": self._server_first})

    def final(self, client_final: dict[str, Any]) -> bytes:
        """Check the client's proof; answer with the server signature."""
        assert self._credentials is not None
        authentication = str(client_final.get("authentication", ""))
        without_proof, _, proof_b64 = authentication.rpartition(",p=")
        fields = _scram_fields(without_proof)
        if fields.get("r") != self._nonce:
            raise handshake_failure("Wrong password", AUTH_ERROR_WRONG_PASSWORD)
        auth_message = ",".join((self._client_first_bare, self._server_first, without_proof))
        auth_bytes = auth_message.encode()
        client_signature = _hmac(self._credentials.stored_key, auth_bytes)
        try:
            proof = base64.b64decode(proof_b64, validate=True)
        except ValueError:
            proof = b""
        if len(proof) != len(client_signature):
            raise handshake_failure("Wrong password", AUTH_ERROR_WRONG_PASSWORD)
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        if not hmac.compare_digest(
            hashlib.sha256(client_key).digest(), self._credentials.stored_key
        ):
            raise handshake_failure("Wrong password", AUTH_ERROR_WRONG_PASSWORD)
        server_signature = base64.b64encode(_hmac(self._credentials.server_key, auth_bytes))
        return encode_message({"success": True, "authentication": f"v={server_signature.decode()}"})


def version_reply() -> bytes:
    return encode_message(
        {
            "success": True,
            "min_protocol_version": 0,
            "max_protocol_version": 0,
            "server_version": SERVER_VERSION,
        }
    )


def encode_response(token: int, response: dict[str, Any]) -> bytes:
    """One framed response. ``ensure_ascii`` keeps the frame valid whatever the data."""
    body = json.dumps(response, separators=(",", ":"), allow_nan=False).encode()
    return HEADER.pack(token, len(body)) + body
