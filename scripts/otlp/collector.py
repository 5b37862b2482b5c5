#!/usr/bin/env python3
"""A test collector for OTLP/HTTP JSON traces (Python standard library only).

Listens on 127.0.0.1 (port 0 unless --port is given), prints the port it got as the first line
of stdout, and then:

  POST /v1/traces   keeps the body (an ExportTraceServiceRequest in OTLP's JSON mapping) and
                    answers 200 `{}`; a body that is not JSON, or not sent as application/json,
                    is answered 400 / 415 and not kept. With --status N every POST is answered
                    N instead (a collector that refuses).
  GET /received     every kept body, as a JSON array, oldest first.
  GET /spans        every kept span, flattened: each span object with "serviceName" added.
  GET /count        {"bodies": N, "spans": M}: how many were accepted (also with --count-only).

With --count-only the bodies are counted but neither parsed nor kept: spans are counted by their
one "startTimeUnixNano" member each. A benchmark's collector shares the load generator's core, so
it must cost that core little (parsing every export took about 1% of it) and must not grow (a
growing heap makes Python's garbage collector walk it all) over a long run. The tests, which
read what arrived, run it without.

The gateway's tests (gateway/tests/tracing.rs) start it, read what arrived, and stop it by PID.
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECEIVED = []
COUNT = {"bodies": 0, "spans": 0}
LOCK = threading.Lock()


def spans_of(body):
    out = []
    for rs in body.get("resourceSpans", []):
        attrs = rs.get("resource", {}).get("attributes", [])
        service = next(
            (a["value"].get("stringValue") for a in attrs if a.get("key") == "service.name"), None
        )
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                out.append(dict(span, serviceName=service))
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    status = 200
    keep = True

    def log_message(self, *_):
        pass

    def answer(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path != "/v1/traces":
            return self.answer(404, {"error": f"no route {self.path}"})
        if Handler.status != 200:
            return self.answer(Handler.status, {"error": "refused by --status"})
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type != "application/json":
            return self.answer(415, {"error": f"content-type {content_type!r}"})
        if Handler.keep:
            try:
                body = json.loads(raw)
            except ValueError as e:
                return self.answer(400, {"error": str(e)})
            spans = len(spans_of(body))
        else:
            body, spans = None, raw.count(b'"startTimeUnixNano"')
        with LOCK:
            COUNT["bodies"] += 1
            COUNT["spans"] += spans
            if Handler.keep:
                RECEIVED.append(body)
        self.answer(200, {})

    def do_GET(self):
        with LOCK:
            bodies = list(RECEIVED)
            count = dict(COUNT)
        if self.path == "/received":
            return self.answer(200, bodies)
        if self.path == "/count":
            return self.answer(200, count)
        if self.path == "/spans":
            return self.answer(200, [s for b in bodies for s in spans_of(b)])
        self.answer(404, {"error": f"no route {self.path}"})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--status", type=int, default=200, help="answer every POST with this status")
    parser.add_argument("--count-only", action="store_true", help="count what arrives, keep nothing")
    args = parser.parse_args()
    Handler.status = args.status
    Handler.keep = not args.count_only
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
