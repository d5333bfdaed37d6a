#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""LOGINDISABLED on a plaintext listener that is not on loopback, for real:
the test makes its own network namespace with a TEST-NET-1 address
(192.0.2.1/24, RFC 5737) on a dummy (or veth) interface, and runs
imapcached and the client inside it, so nothing listens outside loopback
anywhere else. A listener with tls = "none" there advertises LOGINDISABLED
and refuses LOGIN and AUTHENTICATE with NO [PRIVACYREQUIRED]; one with
tls = "starttls" does the same until STARTTLS, after which the login goes
to the upstream. The namespace is deleted at the end. Without root or
iproute2 (or where namespaces can't be made) the test exits 77 (skip)."""
import os
import ssl
import subprocess
import sys

from checks import check, summary
import proxyfixture
from proxyfixture import Daemon

ADDRESS = "192.0.2.1"  # TEST-NET-1 (RFC 5737): never routed anywhere
WAIT = 20  # seconds: the longest any single expectation may take
SKIP = 77


def run(*argv):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=WAIT)


def make_namespace(name):
    """Creates the namespace and its address; returns None or why not."""
    if os.geteuid() != 0:
        return "not root: cannot create a network namespace"
    try:
        result = run("ip", "netns", "add", name)
    except FileNotFoundError:
        return "no ip command: apt-get install iproute2"
    if result.returncode != 0:
        return "ip netns add failed: %s" % result.stdout.decode(errors="replace").strip()
    steps = [("ip", "link", "set", "lo", "up")]
    if run("ip", "netns", "exec", name, "ip", "link", "add", "test0", "type", "dummy").returncode != 0:
        # no dummy module (containers): a veth pair works as well
        steps.insert(0, ("ip", "link", "add", "test0", "type", "veth", "peer", "name", "test1"))
        steps.append(("ip", "link", "set", "test1", "up"))
    steps += [("ip", "addr", "add", ADDRESS + "/24", "dev", "test0"), ("ip", "link", "set", "test0", "up")]
    for step in steps:
        result = run("ip", "netns", "exec", name, *step)
        if result.returncode != 0:
            return "%s failed: %s" % (" ".join(step), result.stdout.decode(errors="replace").strip())
    return None


def outer():
    """Makes the namespace, runs this script inside it, deletes it."""
    name = "imapcached-test-%d" % os.getpid()
    why = make_namespace(name)
    try:
        if why is not None:
            print("SKIP: %s" % why)
            return SKIP
        return subprocess.run(["ip", "netns", "exec", name, sys.executable, os.path.abspath(__file__),
                               "--inside"], timeout=120).returncode
    finally:
        if why is None or run("ip", "netns", "list").stdout.decode().find(name) >= 0:
            run("ip", "netns", "del", name)


class Client(proxyfixture.Raw):
    """A connection to a listener on ADDRESS that has read the greeting,
    and can start TLS."""

    def __init__(self, port):
        super().__init__(port, host=ADDRESS, timeout=WAIT, greeting=True)

    def starttls(self):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the test's certificate is for localhost
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")


def capability(client):
    lines = client.tagged("c", "CAPABILITY")
    words = []
    for line in lines:
        if line.startswith("* CAPABILITY "):
            words = line.split()[2:]
    return words


def inside():
    fixture = os.environ["IMAPTEST_DIR"]
    cert, key = os.path.join(fixture, "server.pem"), os.path.join(fixture, "server.key")
    # The upstream is the namespace's own loopback, where nothing listens:
    # after STARTTLS the login must at least be tried there.
    config = ('listen = ( { address = "%s"; port = 0; tls = "none"; },\n'
              '  { address = "%s"; port = 0; tls = "starttls"; cert = "%s"; key = "%s"; } );\n'
              'upstreams = ( { name = "nowhere"; host = "127.0.0.1"; port = 9; tls = "none"; } );\n'
              'log = { level = "debug"; };\ntimeouts = { upstream_connect = 3; };\n'
              % (ADDRESS, ADDRESS, cert, key))
    daemon = Daemon(config=config, ports=2, tmpdir=proxyfixture.scratch_dir("test-logindisabled."), timeout=WAIT)
    try:
        plain_port, starttls_port = daemon.ports
        c = Client(plain_port)
        check("the greeting on a non-loopback plaintext listener lists LOGINDISABLED",
              "LOGINDISABLED" in c.greeting and "AUTH=PLAIN" not in c.greeting, c.greeting)
        words = capability(c)
        check("CAPABILITY lists LOGINDISABLED and no AUTH= mechanism",
              "LOGINDISABLED" in words and not any(w.startswith("AUTH=") for w in words), words)
        reply = c.tagged("l", "LOGIN user secret")[-1]
        check("LOGIN there: NO [PRIVACYREQUIRED]", reply.startswith("l NO [PRIVACYREQUIRED]"), reply)
        reply = c.tagged("m", "LOGIN {4}")[-1]
        check("LOGIN with a literal there: NO, no '+'", reply.startswith("m NO [PRIVACYREQUIRED]"), reply)
        reply = c.tagged("a", "AUTHENTICATE PLAIN AHVzZXIAc2VjcmV0")[-1]
        check("AUTHENTICATE there: NO [PRIVACYREQUIRED]", reply.startswith("a NO [PRIVACYREQUIRED]"), reply)
        reply = c.tagged("s", "STARTTLS")[-1]
        check("STARTTLS on a tls = \"none\" listener: BAD", reply.startswith("s BAD"), reply)
        check("the refusal is logged",
              daemon.wait_log(r"LOGIN refused: plaintext on a listener that is not loopback") is not None)
        c.close()

        c = Client(starttls_port)
        words = capability(c)
        check("a STARTTLS listener not on loopback: STARTTLS and LOGINDISABLED before it",
              "STARTTLS" in words and "LOGINDISABLED" in words, words)
        reply = c.tagged("l", "LOGIN user secret")[-1]
        check("LOGIN before STARTTLS: NO [PRIVACYREQUIRED] naming STARTTLS",
              reply.startswith("l NO [PRIVACYREQUIRED]") and "STARTTLS" in reply, reply)
        reply = c.tagged("s", "STARTTLS")[-1]
        check("STARTTLS: OK", reply.startswith("s OK"), reply)
        c.starttls()
        words = capability(c)
        check("after STARTTLS: no LOGINDISABLED, AUTH=PLAIN offered",
              "LOGINDISABLED" not in words and "AUTH=PLAIN" in words and "STARTTLS" not in words, words)
        reply = c.tagged("l", "LOGIN user secret")[-1]
        check("LOGIN after STARTTLS goes to the upstream (unreachable here: NO [UNAVAILABLE])",
              reply.startswith("l NO [UNAVAILABLE]"), reply)
        check("the upstream was tried", daemon.wait_log(r"login as user: cannot reach upstream nowhere")
              is not None)
        c.close()
    finally:
        daemon.stop()
    return summary()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--inside":
        sys.exit(inside())
    sys.exit(outer())
