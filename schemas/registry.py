"""Confluent Schema Registry: the wire framing and an async client of its REST API.

Most Kafka shops serialise Avro through a Schema Registry (Confluent's serializers, Apicurio's
Confluent-compatible API, Karapace, Redpanda): the value is ``0x00``, the 4-byte big-endian
schema id, then the Avro binary body written with that schema. The pipeline accepts it next to
the single-object encoding and JSON:

* :class:`SchemaResolver` fetches the writer schema of an id it has not seen (``GET
  /schemas/ids/{id}``) and hands it to the codec (:meth:`Codec.add_registry_schema`), which checks
  it against our reader schema once and then decodes every value of that id without the network.
* A registry that cannot be reached, answers 5xx or refuses our credentials is
  **backpressure**: :meth:`SchemaResolver.ensure` retries with backoff and the stream waits. Only
  what the registry itself says is wrong (an id it does not have) becomes a dead letter.
* Subjects follow the TopicNameStrategy every Confluent serializer uses by default:
  ``<topic>-value``. ``journey schemas register`` registers every released version of each
  record under its topic's subject; with ``JOURNEY_OUTPUT_FRAMING=confluent`` the worker writes
  ``journey.triggers`` and ``journey.deadletter`` in the registry framing too, with the ids of our
  own schemas (looked up, or registered when ``JOURNEY_SCHEMA_REGISTRY_AUTO_REGISTER`` is on).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import aiohttp

    from schemas.codec import Codec

log = logging.getLogger(__name__)

__all__ = [
    "CONFLUENT_HEADER_LEN",
    "CONFLUENT_MAGIC",
    "RegistryClient",
    "RegistryRejected",
    "RegistryUnavailable",
    "SchemaResolver",
    "confluent_frame",
    "confluent_schema_id",
    "subject_for",
]

CONFLUENT_MAGIC: Final = 0
CONFLUENT_HEADER_LEN: Final = 5
_ID: Final = struct.Struct(">I")
_CONTENT_TYPE: Final = "application/vnd.schemaregistry.v1+json"
# A registry's "not found" error codes (Confluent API): subject, version, schema.
SUBJECT_NOT_FOUND: Final = 40401
SCHEMA_NOT_FOUND: Final = 40403


def confluent_schema_id(value: bytes) -> int | None:
    """The schema id of a value in the registry framing, ``None`` for any other value."""
    if len(value) < CONFLUENT_HEADER_LEN or value[0] != CONFLUENT_MAGIC:
        return None
    schema_id: int = _ID.unpack_from(value, 1)[0]
    return schema_id


def confluent_frame(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + _ID.pack(schema_id) + body


def subject_for(topic: str) -> str:
    """TopicNameStrategy: the subject of a topic's values."""
    return f"{topic}-value"


class RegistryUnavailable(Exception):
    """The registry could not answer (network, timeout, 5xx, 429, credentials): retry later."""


class RegistryRejected(Exception):
    """The registry answered that the request is wrong (4xx with an error code)."""

    def __init__(self, status: int, error_code: int | None, message: str) -> None:
        super().__init__(f"HTTP {status}, error {error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message


class RegistryClient:
    """The few calls of the Confluent Schema Registry REST API the pipeline needs."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._username, self._password = username, password
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        import aiohttp  # here, not at import: the codec imports this module, and is used alone

        if self._session is None or self._session.closed:
            session_headers = {"Accept": _CONTENT_TYPE}
            if self._username:
                token = base64.b64encode(f"{self._username}:{self._password or ''}".encode())
                session_headers["Authorization"] = "Basic " + token.decode("ascii")
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s), headers=session_headers
            )
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": _CONTENT_TYPE} if body is not None else None
        try:
            async with self._session.request(
                method, self.url + path, data=data, headers=headers
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RegistryUnavailable(
                f"schema registry {self.url} unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        if status >= 500 or status in (401, 403, 408, 429):
            raise RegistryUnavailable(
                f"schema registry {self.url}{path} answered HTTP {status}: {text[:300]}"
            )
        try:
            payload = json.loads(text) if text else {}
        except ValueError as exc:
            raise RegistryUnavailable(
                f"schema registry {self.url}{path} answered HTTP {status} with no JSON: "
                f"{text[:200]!r}"
            ) from exc
        if status >= 400:
            code = payload.get("error_code") if isinstance(payload, dict) else None
            message = payload.get("message", text) if isinstance(payload, dict) else text
            raise RegistryRejected(status, code, str(message))
        return payload

    async def schema_by_id(self, schema_id: int) -> dict[str, Any] | None:
        """The registry's answer for a global id (``schema`` text, ``schemaType``), ``None`` if
        it has no such id."""
        try:
            payload = await self._request("GET", f"/schemas/ids/{schema_id}")
        except RegistryRejected as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(payload, dict) or not isinstance(payload.get("schema"), str):
            raise RegistryUnavailable(f"schema registry {self.url}: unexpected answer {payload!r}")
        return payload

    async def register(self, subject: str, schema: Mapping[str, Any]) -> int:
        """Register (idempotent: an identical schema keeps its id); returns the global id."""
        payload = await self._request(
            "POST",
            f"/subjects/{subject}/versions",
            {"schemaType": "AVRO", "schema": json.dumps(schema)},
        )
        return int(payload["id"])

    async def lookup(self, subject: str, schema: Mapping[str, Any]) -> int | None:
        """The id of this schema under the subject, ``None`` if it is not registered there."""
        try:
            payload = await self._request(
                "POST", f"/subjects/{subject}", {"schemaType": "AVRO", "schema": json.dumps(schema)}
            )
        except RegistryRejected as exc:
            if exc.error_code in (SUBJECT_NOT_FOUND, SCHEMA_NOT_FOUND) or exc.status == 404:
                return None
            raise
        return int(payload["id"])

    async def is_compatible(self, subject: str, schema: Mapping[str, Any]) -> bool | None:
        """The registry's own compatibility check against the subject's latest version
        (``None``: the subject has no version yet, so anything is compatible)."""
        try:
            payload = await self._request(
                "POST",
                f"/compatibility/subjects/{subject}/versions/latest",
                {"schemaType": "AVRO", "schema": json.dumps(schema)},
            )
        except RegistryRejected as exc:
            if exc.error_code in (SUBJECT_NOT_FOUND, 40402) or exc.status == 404:
                return None
            raise
        return bool(payload.get("is_compatible"))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class SchemaResolver:
    """Teaches the codec the writer schemas of registry ids as values arrive.

    ``ensure`` returns once the codec knows the id (or the registry said it has no such id: the
    codec then dead-letters the value as ``unknown_schema_id``; that answer is re-asked after
    ``unknown_retry_s``, since a producer may register the schema a moment later). While the
    registry is unreachable it retries with exponential backoff: the caller, and so the stream,
    waits; no value is dead-lettered for an outage.
    """

    def __init__(
        self,
        client: RegistryClient,
        codec: Codec,
        *,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        unknown_retry_s: float = 60.0,
    ) -> None:
        self.client = client
        self.codec = codec
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.unknown_retry_s = unknown_retry_s
        self.outages = 0  # failed registry requests so far (shown in logs and tests)
        self._unknown_until: dict[int, float] = {}
        codec.registry_url = client.url

    async def ensure(self, value: bytes) -> None:
        schema_id = confluent_schema_id(value)
        if schema_id is None or self.codec.knows_schema_id(schema_id):
            return
        if self._unknown_until.get(schema_id, 0.0) > time.monotonic():
            return
        delay = self.backoff_s
        while True:
            try:
                schema = await self.client.schema_by_id(schema_id)
                break
            except (RegistryUnavailable, RegistryRejected) as exc:
                self.outages += 1
                log.warning(
                    "schema id %d: %s; the stream waits and retries in %.1f s",
                    schema_id,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max_s)
        if schema is None:
            self._unknown_until[schema_id] = time.monotonic() + self.unknown_retry_s
            return
        self._unknown_until.pop(schema_id, None)
        self.codec.add_registry_schema(
            schema_id, schema["schema"], schema.get("schemaType", "AVRO")
        )

    async def close(self) -> None:
        await self.client.close()
