"""The E2B SDK reaching clade by its domain alone, as it reaches E2B.

Run by Tests/IntegrationTests/E2BTests.swift with only E2B_DOMAIN and E2B_API_KEY (no
E2B_API_URL, no E2B_SANDBOX_URL): the SDK derives https://api.<domain> and
https://<port>-<id>.<domain> itself, which clade's listener serves over TLS. SSL_CERT_FILE
names the test's certificate authority, and a resolver in the test's own mount namespace
answers every name under the domain. The daemon runs the egress proxy too, for the transform
scenario: a sandbox whose `rules` set a header on requests to another sandbox's public host.
"""

import json
import os
import ssl
import sys
import time
import urllib.request

from e2b import Sandbox, SandboxNetworkOpts

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


def transforms(domain):
    """E2B's firewall transforms: the egress proxy sets a rule's headers on the sandbox's HTTPS
    requests to the rule's host, here another sandbox's public URL (the httpbin template)."""
    echo = Sandbox.create("httpbin", timeout=300, network=SandboxNetworkOpts(allow_public_traffic=True))
    try:
        host = echo.get_host(8080)
        rules = {"rules": {host: [{"transform": {"headers": {"X-Test-Token": "transform-value-1"}}}]}}
        sb = Sandbox.create(TEMPLATE, timeout=300, network=rules)
        try:
            # The guest names the host at an address beyond the host; the proxy sends the
            # connection to clade's own listener, which serves the domain's sandbox hosts.
            # The guest's own X-Test-Token is replaced, not kept beside the rule's.
            r = sb.commands.run(
                f"curl -sS --max-time 30 --resolve {host}:443:198.51.100.80 -H 'X-Test-Token: from-guest' -H 'X-Kept: yes' https://{host}/headers")
            headers = json.loads(r.stdout)["headers"]
            check(headers.get("X-Test-Token") == ["transform-value-1"], f"the transform's header: {headers}")
            check(headers.get("X-Kept") == ["yes"], f"the guest's other headers pass unchanged: {headers}")
            step(f"rules transform: https://{host}/headers from a sandbox reflects X-Test-Token set by clade's egress proxy")
            other = echo.commands.run("curl -sS --max-time 10 http://127.0.0.1:8080/headers -H 'X-Test-Token: direct'")
            check(json.loads(other.stdout)["headers"].get("X-Test-Token") == ["direct"], f"httpbin without the proxy: {other.stdout}")
        finally:
            sb.kill()
        try:
            Sandbox.create(TEMPLATE, timeout=60, network={"rules": {"10.0.0.1": [{"transform": {"headers": {"A": "b"}}}]}})
            check(False, "a rule keyed by an address was accepted")
        except Exception as error:
            check("not a host name" in str(error), f"a rule keyed by an address: {error}")
        step("a rule keyed by an address is refused with the reason")
    finally:
        echo.kill()


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
    transforms(domain)


if __name__ == "__main__":
    main()
    print("all edge scenarios passed", flush=True)
    sys.stderr.flush()
    # As in scenarios.py: skip the SDK's native transport's teardown, which is not under test.
    os._exit(0)
