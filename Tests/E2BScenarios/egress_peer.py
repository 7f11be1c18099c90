"""A host beyond the sandbox's host for the egress-name scenario: plain HTTP on port 80 and
HTTPS (a throwaway self-signed certificate) on port 443 of ADDRESS, each answering with
"NAME HOST", where HOST is the Host the request came with. Run in the peers' network
namespace by Tests/IntegrationTests/E2BTests.swift; prints "ready" once both ports listen."""
import http.server
import os
import ssl
import subprocess
import sys
import tempfile
import threading

address, name = sys.argv[1], sys.argv[2]


class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{name} {self.headers.get('Host', '-')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *arguments):
        pass


directory = tempfile.mkdtemp(prefix="clade-egress-peer-")
key, certificate = os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem")
subprocess.run(
    ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", certificate, "-days", "1", "-subj", f"/CN={name}"],
    check=True, capture_output=True)
plain = http.server.ThreadingHTTPServer((address, 80), Answer)
secure = http.server.ThreadingHTTPServer((address, 443), Answer)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(certificate, key)
secure.socket = context.wrap_socket(secure.socket, server_side=True)
threading.Thread(target=plain.serve_forever, daemon=True).start()
print("ready", flush=True)
secure.serve_forever()
