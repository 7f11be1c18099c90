"""The E2B SDK reaching clade by its domain alone, as it reaches E2B.

Run by Tests/IntegrationTests/E2BTests.swift with only E2B_DOMAIN and E2B_API_KEY (no
E2B_API_URL, no E2B_SANDBOX_URL): the SDK derives https://api.<domain> and
https://<port>-<id>.<domain> itself, which clade's listener serves over TLS. SSL_CERT_FILE
names the test's certificate authority, and a resolver in the test's own mount namespace
answers every name under the domain.
"""

import os
import ssl
import sys
import time
import urllib.request

from e2b import Sandbox

from scenarios import TEMPLATE, check, step


def fetch(url, context, deadline_seconds=60):
    """The body at `url`, retried while the guest's server is still starting."""
    deadline = time.time() + deadline_seconds
    while True:
        try:
            with urllib.request.urlopen(url, context=context, timeout=10) as response:
                return response.status, response.read()
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def main():
    domain = os.environ["E2B_DOMAIN"]
    check("E2B_API_URL" not in os.environ and "E2B_SANDBOX_URL" not in os.environ, "the edge scenario must run on E2B_DOMAIN alone")
    context = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    sb = Sandbox.create(TEMPLATE, timeout=300)
    try:
        check(sb.sandbox_domain == domain, f"the sandbox's domain is {sb.sandbox_domain!r}, not {domain!r}")
        step(f"create over https://api.{domain}: {sb.sandbox_id}")
        r = sb.commands.run("echo edge; hostname")
        check(r.stdout.splitlines()[0] == "edge", f"run over TLS: {r.stdout!r}")
        sb.files.write("/home/user/edge.txt", "over tls")
        check(sb.files.read("/home/user/edge.txt") == "over tls", "files over TLS")
        step(f"envd at https://49983-{sb.sandbox_id}.{domain}: run and files")
        sb.commands.run("mkdir -p /tmp/www && echo served-over-tls > /tmp/www/index.html")
        sb.commands.run("cd /tmp/www && python3 -m http.server 8000", background=True)
        host = sb.get_host(8000)
        check(host == f"8000-{sb.sandbox_id}.{domain}", f"get_host(8000) = {host}")
        status, body = fetch(f"https://{host}/index.html", context)
        check(status == 200 and body == b"served-over-tls\n", f"https://{host}/index.html: {status} {body!r}")
        step(f"https://{host} reaches the guest's server")
        check(sb.sandbox_id in [s.sandbox_id for s in Sandbox.list().next_items()], "Sandbox.list over TLS")
        step("Sandbox.list")
    finally:
        sb.kill()
    check(not sb.is_running(), "kill over TLS")
    step("kill")


if __name__ == "__main__":
    main()
    print("all edge scenarios passed", flush=True)
    sys.stderr.flush()
    # As in scenarios.py: skip the SDK's native transport's teardown, which is not under test.
    os._exit(0)
