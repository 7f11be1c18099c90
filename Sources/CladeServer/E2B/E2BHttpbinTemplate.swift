import CladeEngine
import Foundation
import Logging

/// The `httpbin` template E2B's SDK tests name for a sandbox that echoes requests back: `base`
/// with an HTTP echo server on port 8080 already running in the snapshot, so a sandbox created
/// from it serves as soon as it exists. The server answers as go-httpbin does for the requests
/// the tests make (`/headers`, `/get`, `/anything`, `/ip`, `/user-agent`, `/status/CODE`):
/// JSON whose header values are lists.
enum E2BHttpbinTemplate {
    static let name = "httpbin"
    static let port = 8080
    static let serverPath = "/usr/local/bin/clade-httpbin"

    /// Forks `base`, starts the server, waits until it answers, and branches the sandbox into `httpbin`.
    static func bake(engine: Engine, baseTag: String, logger: Logger, progress: @escaping @Sendable (String) -> Void) async throws {
        progress("starting an echo server on port \(port) in a fork of \(baseTag)")
        let outcomes = try await engine.forks.fork(tag: baseTag, count: 1, memoryOrder: engine.forks.serviceMemoryOrder)
        guard let record = outcomes.first?.record else { throw E2BError(500, "cannot fork \(baseTag) for the httpbin template: \(outcomes.first?.error ?? "no sandbox")") }
        do {
            let agent = try engine.processes.agent(for: record.id)
            try await agent.writeFile(serverPath, data: Data(server.utf8), mode: 0o755)
            let start = try await agent.exec(
                ["sh", "-c", "(setsid python3 \(serverPath) \(port) </dev/null >/dev/null 2>&1 &); "
                    + "for i in $(seq 300); do curl -sf -o /dev/null http://127.0.0.1:\(port)/get && exit 0; sleep 0.1; done; exit 1"],
                timeout: 60)
            guard start.exitCode == 0 else { throw E2BError(500, "the httpbin template's echo server did not answer on port \(port): \(start.stderr ?? "")") }
            progress("branching the running server into snapshot \(name)")
            _ = try await engine.branches.branch(id: record.id, tag: name, mode: .auto)
        } catch {
            try? await engine.sandboxes.kill(id: record.id)
            throw error
        }
        try? await engine.sandboxes.kill(id: record.id)
        logger.notice("baked E2B template", metadata: ["template": "\(name)", "port": "\(port)"])
    }

    /// The echo server (Python's standard library only).
    static let server = #"""
        #!/usr/bin/env python3
        # clade's httpbin template: answers as go-httpbin does, header values as lists.
        import json, sys
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit, parse_qs

        class Echo(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def headers_seen(self):
                seen = {}
                for name, value in self.headers.items():
                    seen.setdefault("-".join(part.capitalize() for part in name.split("-")), []).append(value)
                return seen

            def body(self):
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def send(self, status, document=None):
                data = b"" if document is None else (json.dumps(document, indent=2) + "\n").encode()
                self.send_response(status)
                if document is not None:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def answer(self):
                url = urlsplit(self.path)
                origin = self.client_address[0]
                full = "http://%s%s" % (self.headers.get("Host", ""), self.path)
                if url.path == "/headers":
                    return self.send(200, {"headers": self.headers_seen()})
                if url.path == "/ip":
                    return self.send(200, {"origin": origin})
                if url.path == "/user-agent":
                    return self.send(200, {"user-agent": self.headers.get("User-Agent", "")})
                if url.path.startswith("/status/"):
                    code = url.path.split("/")[2]
                    return self.send(int(code) if code.isdigit() and 100 <= int(code) <= 599 else 400)
                if url.path == "/get" or url.path.startswith("/anything"):
                    document = {"args": parse_qs(url.query), "headers": self.headers_seen(), "method": self.command, "origin": origin, "url": full}
                    if url.path.startswith("/anything"):
                        data = self.body()
                        document["data"] = data.decode("utf-8", "replace")
                        try:
                            document["json"] = json.loads(data) if data else None
                        except ValueError:
                            document["json"] = None
                    return self.send(200, document)
                return self.send(404, {"error": "not found: " + url.path})

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = answer

            def log_message(self, *arguments):
                pass

        ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Echo).serve_forever()
        """#
}
