"""A small in-process HTTP server that answers like a Confluent Schema Registry.

No real registry can run on this machine (docs/producing.md says what was tried: Apicurio's app
is a library jar on Maven Central whose Quarkus rebuild cannot resolve its dependencies; no
Confluent registry and no Karapace are available). The answers copy what Confluent's Schema
Registry API reference documents for each call (they are not captured from a live registry):
the same JSON keys, the
``application/vnd.schemaregistry.v1+json`` content type, ``error_code``/``message`` errors with
HTTP 404/409/422, global ids shared by identical schemas across subjects. Enough state is kept to
register, look up and fetch, so that confluent-kafka's own ``AvroSerializer`` (which registers
and then writes the id) works against it. ``down`` makes it answer 503, as during an outage.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from fastavro.schema import to_parsing_canonical_form

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


@dataclass
class RegistryState:
    schemas: dict[int, str] = field(default_factory=dict)  # id -> schema text as registered
    by_canonical: dict[str, int] = field(default_factory=dict)
    subjects: dict[str, list[int]] = field(default_factory=dict)  # subject -> ids by version
    requests: list[tuple[str, str]] = field(default_factory=list)
    down: bool = False
    username: str | None = None
    password: str | None = None
    next_id: int = 1

    def add(self, subject: str, schema_text: str) -> int:
        canonical = to_parsing_canonical_form(json.loads(schema_text))
        schema_id = self.by_canonical.get(canonical)
        if schema_id is None:
            schema_id = self.next_id
            self.next_id += 1
            self.schemas[schema_id] = schema_text
            self.by_canonical[canonical] = schema_id
        versions = self.subjects.setdefault(subject, [])
        if schema_id not in versions:
            versions.append(schema_id)
        return schema_id


class _Handler(BaseHTTPRequestHandler):
    state: RegistryState

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        if self.state.username is None:
            return True
        import base64

        expected = base64.b64encode(f"{self.state.username}:{self.state.password}".encode())
        if self.headers.get("Authorization") == f"Basic {expected.decode()}":
            return True
        self._send(401, {"error_code": 401, "message": "Unauthorized"})
        return False

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        parsed = json.loads(self.rfile.read(length) or b"{}")
        assert isinstance(parsed, dict)
        return parsed

    def _route(self, method: str) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        self.state.requests.append((method, path))
        if self.state.down:
            self._send(503, {"error_code": 50003, "message": "Error while forwarding the request"})
            return
        if not self._authorised():
            return
        parts = path.strip("/").split("/")
        state = self.state
        if method == "GET" and parts[:2] == ["schemas", "ids"] and len(parts) == 3:
            text = state.schemas.get(int(parts[2]))
            if text is None:
                self._send(404, {"error_code": 40403, "message": f"Schema {parts[2]} not found"})
            else:
                self._send(200, {"schema": text})
            return
        if method == "GET" and parts == ["subjects"]:
            self._send(200, sorted(state.subjects))
            return
        if parts[:1] == ["subjects"] and len(parts) >= 2:
            subject = parts[1]
            if method == "POST" and len(parts) == 3 and parts[2] == "versions":
                body = self._body()
                if body.get("schemaType", "AVRO") != "AVRO":
                    self._send(422, {"error_code": 42201, "message": "Invalid schema"})
                    return
                self._send(200, {"id": state.add(subject, body["schema"])})
                return
            if method == "POST" and len(parts) == 2:
                body = self._body()
                if subject not in state.subjects:
                    self._send(
                        404, {"error_code": 40401, "message": f"Subject '{subject}' not found."}
                    )
                    return
                canonical = to_parsing_canonical_form(json.loads(body["schema"]))
                schema_id = state.by_canonical.get(canonical)
                versions = state.subjects[subject]
                if schema_id is None or schema_id not in versions:
                    self._send(404, {"error_code": 40403, "message": "Schema not found"})
                    return
                self._send(
                    200,
                    {
                        "subject": subject,
                        "version": versions.index(schema_id) + 1,
                        "id": schema_id,
                        "schema": state.schemas[schema_id],
                    },
                )
                return
            if method == "GET" and parts[2:] == ["versions", "latest"]:
                if subject not in state.subjects:
                    self._send(
                        404, {"error_code": 40401, "message": f"Subject '{subject}' not found."}
                    )
                    return
                versions = state.subjects[subject]
                self._send(
                    200,
                    {
                        "subject": subject,
                        "version": len(versions),
                        "id": versions[-1],
                        "schema": state.schemas[versions[-1]],
                    },
                )
                return
        if method == "POST" and parts[:2] == ["compatibility", "subjects"]:
            subject = parts[2]
            if subject not in state.subjects:
                self._send(404, {"error_code": 40401, "message": f"Subject '{subject}' not found."})
                return
            from schemas.resolution import resolution_problem

            latest = json.loads(state.schemas[state.subjects[subject][-1]])
            new = json.loads(self._body()["schema"])
            self._send(200, {"is_compatible": resolution_problem(latest, new) is None})
            return
        self._send(404, {"error_code": 404, "message": "HTTP 404 Not Found"})

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")


class RegistryReplay:
    """``with RegistryReplay() as registry: registry.url ...``"""

    def __init__(self) -> None:
        self.state = RegistryState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RegistryReplay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
