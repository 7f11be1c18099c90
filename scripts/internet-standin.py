"""A stand-in for the few public HTTPS endpoints E2B's SDK suite names (scripts/e2b-suite.sh).

Serves HTTPS on ADDRESS:443 for each ADDRESS given, with CERT and KEY: `/generate_204` answers
204 (connectivitycheck.gstatic.com); anything else a redirect, 302 on 8.8.8.8 and 301 elsewhere
(what https://8.8.8.8 and https://1.1.1.1 answer).
Prints "ready" once every address listens.
    python3 internet-standin.py CERT KEY ADDRESS [ADDRESS ...]
"""

import http.server
import ssl
import sys
import threading


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        if self.path.startswith("/generate_204"):
            status = 204
        else:
            status = 302 if self.server.server_address[0] == "8.8.8.8" else 301
        self.send_response(status)
        if status != 204:
            self.send_header("Location", "/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        self.answer()

    def do_HEAD(self):
        self.answer()

    def log_message(self, *args):
        pass


def main():
    certificate, key, addresses = sys.argv[1], sys.argv[2], sys.argv[3:]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    for address in addresses:
        server = http.server.ThreadingHTTPServer((address, 443), Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
