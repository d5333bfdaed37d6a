#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""What imapcached offers before login, against the test Dovecot: the
greeting's and CAPABILITY's lists are Dovecot's own, word for word (after
STARTTLS, where Dovecot shows AUTH=; a STARTTLS listener of the proxy
before its STARTTLS matches Dovecot's plain port), so imaplib's enable()
right after login works; AUTHENTICATE LOGIN goes through (imaplib, and raw
lines with and without an initial response, cancelled, with a wrong
password, pooled as a LOGIN); a mechanism Dovecot does not offer gets NO;
LITERAL+ works for ID before login; an upstream that is down at start
gives the fallback list until a login reaches it; several upstreams offer
what they all offer. The daemons run on free loopback ports and are
stopped by their PIDs."""
import base64
import imaplib
import os
import ssl
import sys

from checks import check, summary
import proxyfixture
from proxyfixture import (CA, ENV, LISTEN_LOCAL, Forwarder, PASS, PASS2, PORT, USER, USER2, Daemon, Raw,
                          run_steps, untag, upstream_dovecot)

tmp = proxyfixture.scratch_dir("test-prelogin-capability.")
FIXTURE = ENV["IMAPTEST_DIR"]
CERT, KEY = os.path.join(FIXTURE, "server.pem"), os.path.join(FIXTURE, "server.key")
LISTEN_STARTTLS = '{ address = "127.0.0.1"; port = 0; tls = "starttls"; cert = "%s"; key = "%s"; }' % (CERT, KEY)
FALLBACK = "IMAP4rev1 SASL-IR ID AUTH=PLAIN AUTH=LOGIN"  # UPSTREAM_PRELOGIN_FALLBACK in daemon/upstream.h
LEARNED = r"upstream %s: offers before login: "
USER_PROMPT, PASSWORD_PROMPT = "+ VXNlcm5hbWU6", "+ UGFzc3dvcmQ6"  # "Username:", "Password:"


def b64(text):
    return base64.b64encode(text.encode()).decode()


def tls_context():
    return ssl.create_default_context(cafile=CA)


def words(line):
    """The capability words of a greeting or an untagged CAPABILITY line."""
    if line.startswith("* CAPABILITY "):
        return line[len("* CAPABILITY "):]
    if "[CAPABILITY " in line:
        return line.split("[CAPABILITY ", 1)[1].split("]", 1)[0]
    return None


class Client(Raw):
    """A raw connection that has read the greeting and can start TLS."""

    def __init__(self, port):
        super().__init__(port, greeting=True)

    def starttls(self):
        lines = self.command("STARTTLS")
        if not lines[-1].startswith("p%d OK" % self.tag):
            raise self.error("STARTTLS refused: %s" % lines)
        self.sock = tls_context().wrap_socket(self.sock, server_hostname="localhost")

    def capability(self):
        lines = self.command("CAPABILITY")
        return [words(lines[0]) if len(lines) == 2 else None, untag(lines[-1]).split(" ", 1)[0]]


def lists(port, starttls=False):
    """The greeting's list, then CAPABILITY's [list, status], before any
    STARTTLS and (starttls) after it."""
    c = Client(port)
    seen = [words(c.greeting), c.capability()]
    if starttls:
        c.starttls()
        seen.append(c.capability())
    c.close()
    return seen


def test_same_as_dovecot():
    """The lists direct and through the proxy, on a plaintext loopback
    listener and on a STARTTLS one, with each kind of upstream TLS."""
    direct_plain, direct_before, direct_after = lists(PORT, starttls=True)
    check("Dovecot's own lists: STARTTLS before it, AUTH= both sides",
          "STARTTLS" in direct_plain and "AUTH=PLAIN" in direct_after[0] and "ENABLE" in direct_after[0],
          (direct_plain, direct_after))
    for tls in ("starttls", "implicit"):
        daemon = Daemon(upstream_dovecot(tls), listen="%s, %s" % (LISTEN_LOCAL, LISTEN_STARTTLS), ports=2,
                        tmpdir=tmp)
        try:
            check("upstream tls %s: the daemon learns what Dovecot offers at start" % tls,
                  daemon.wait_log(LEARNED % "dovecot") is not None, daemon.log()[-1500:])
            plain = lists(daemon.ports[0])
            check("upstream tls %s: the greeting's list is Dovecot's after STARTTLS" % tls,
                  plain[0] == direct_after[0], (plain[0], direct_after[0]))
            check("upstream tls %s: ... and so is CAPABILITY's" % tls, plain[1] == direct_after,
                  (plain[1], direct_after))
            greeting, before, after = lists(daemon.ports[1], starttls=True)
            check("upstream tls %s: a STARTTLS listener greets as Dovecot's plain port" % tls,
                  greeting == direct_plain, (greeting, direct_plain))
            check("upstream tls %s: ... CAPABILITY before STARTTLS the same" % tls, before == direct_before,
                  (before, direct_before))
            check("upstream tls %s: ... and after it, as Dovecot after it" % tls, after == direct_after,
                  (after, direct_after))
        finally:
            daemon.stop()


def imaplib_enable(port):
    """Logs in with imaplib, ENABLEs CONDSTORE at once; (status, data) or the error."""
    m = imaplib.IMAP4("127.0.0.1", port)
    try:
        m.login(USER, PASS)
        return m.enable("CONDSTORE")
    except imaplib.IMAP4.error as e:
        return ("error", str(e))
    finally:
        m.logout()


def test_imaplib_enable(daemon):
    """imaplib reads capabilities from the greeting only: ENABLE must be there."""
    direct = imaplib_enable(PORT)
    proxied = imaplib_enable(daemon.port)
    check("imaplib's enable('CONDSTORE') right after login works direct", direct[0] == "OK", direct)
    check("... and through the proxy (no 'Server does not support ENABLE')", proxied == direct, (proxied, direct))


def login_answer(user, password):
    """imaplib's authobject for LOGIN: the user to "Username:", the password to "Password:"."""
    return lambda challenge: {b"Username:": user, b"Password:": password}[challenge]


def test_authenticate_login_imaplib(daemon):
    results = []
    for port in (PORT, daemon.port):
        m = imaplib.IMAP4("127.0.0.1", port)
        typ, data = m.authenticate("LOGIN", login_answer(USER, PASS))
        typ_select, data_select = m.select("INBOX", readonly=True)
        # Dovecot's tagged OK may or may not carry [CAPABILITY ...]
        results.append((typ, data[0].split(b"]")[-1].strip(), typ_select, data_select))
        m.logout()
    check("imaplib's authenticate('LOGIN', ...): the same outcome direct and through the proxy",
          results[0] == results[1] and results[0][0] == "OK" and results[0][2] == "OK", results)

    errors = []
    for port in (PORT, daemon.port):
        m = imaplib.IMAP4("127.0.0.1", port)
        try:
            m.authenticate("LOGIN", login_answer(USER, "wrong password"))
            errors.append("accepted")
        except imaplib.IMAP4.error as e:
            errors.append(str(e))
        m.shutdown()
    check("... a wrong password: the upstream's NO, word for word", errors[0] == errors[1] and
          "AUTHENTICATIONFAILED" in errors[0], errors)


def without_capability(answers):
    """answers with the list of a tagged "OK [CAPABILITY ...]" taken out:
    after login each side lists what it can do."""
    return [[a.split("] ", 1)[0].split(" [")[0] + " [CAPABILITY] " + a.split("] ", 1)[1]
             if a.startswith("OK [CAPABILITY ") else a for a in answer] for answer in answers]


def conversation(port, lines):
    """Sends each line (the first under tag "a") and reads the answer to
    each: a "+" line, or the lines up to the tagged one. Returns the
    answers, tags taken off, one list per line sent."""
    c = Client(port)
    answers = []
    for i, line in enumerate(lines):
        c.send((("a " if i == 0 else "") + line + "\r\n").encode())
        got = []
        while True:
            reply = c.line()
            got.append(untag(reply))
            if reply.startswith("+ ") or reply.startswith("a "):
                break
        answers.append(got)
    c.close()
    return answers


def test_authenticate_login_raw(daemon):
    same = [
        ("no initial response", ["AUTHENTICATE LOGIN", b64(USER), b64(PASS)]),
        ("an initial response", ["AUTHENTICATE LOGIN " + b64(USER), b64(PASS)]),
        ("an empty initial response asks for the user", ["AUTHENTICATE LOGIN =", b64(USER), b64(PASS)]),
        ("lower-case name", ["authenticate login " + b64(USER), b64(PASS)]),
        ("a wrong password", ["AUTHENTICATE LOGIN " + b64(USER), b64("wrong password")]),
    ]
    for name, lines in same:
        direct = without_capability(conversation(PORT, lines))
        proxied = without_capability(conversation(daemon.port, lines))
        check("AUTHENTICATE LOGIN, %s: the same lines direct and through the proxy" % name, direct == proxied,
              (direct, proxied))
    ok = conversation(daemon.port, ["AUTHENTICATE LOGIN", b64(USER2), b64(PASS2)])
    check("... the prompts, then the tagged OK with the capabilities after login",
          ok[:2] == [[USER_PROMPT], [PASSWORD_PROMPT]] and ok[2][-1].startswith("OK [CAPABILITY IMAP4rev1 ") and
          "ENABLE" in ok[2][-1], ok)

    for name, lines in (("at the user prompt", ["AUTHENTICATE LOGIN", "*"]),
                        ("at the password prompt", ["AUTHENTICATE LOGIN " + b64(USER), "*"])):
        direct = conversation(PORT, lines)
        proxied = conversation(daemon.port, lines)
        check("AUTHENTICATE LOGIN cancelled %s: a tagged BAD, as direct" % name,
              [a[0].split(" ")[0] for a in direct] == [a[0].split(" ")[0] for a in proxied] and
              proxied[-1][0].startswith("BAD "), (direct, proxied))

    c = Client(daemon.port)
    c.send(("b1 AUTHENTICATE LOGIN %s\r\n" % b64(USER)).encode())
    prompt = c.line()
    c.send(b"!!not-base64\r\n")
    lines = c.until_tagged("b1")
    check("a password that is not base64: BAD",
          prompt == PASSWORD_PROMPT and lines == ["b1 BAD Invalid LOGIN response"], (prompt, lines))
    c.send(("b2 AUTHENTICATE LOGIN %s\r\n" % b64("a\0b")).encode())
    lines = c.until_tagged("b2")
    check("a user name with a NUL: BAD", lines == ["b2 BAD Invalid LOGIN initial response"], lines)
    lines = c.command("NOOP")
    check("... and the session goes on", lines == ["p1 OK NOOP completed"], lines)
    c.close()
    check("the password never reaches the log", PASS not in daemon.log() and PASS2 not in daemon.log())


def test_unsupported_mechanisms(daemon):
    """What Dovecot does not offer is refused at once, as Dovecot does."""
    for mechanism, response in (("XOAUTH2", "user=%s\x01auth=Bearer token\x01\x01" % USER),
                                ("OAUTHBEARER", "n,a=%s,\x01auth=Bearer token\x01\x01" % USER),
                                ("CRAM-MD5", None)):
        line = "AUTHENTICATE %s" % mechanism + (" " + b64(response) if response else "")
        direct = conversation(PORT, [line])
        proxied = conversation(daemon.port, [line])
        check("AUTHENTICATE %s: NO, as direct" % mechanism,
              direct[0][0].startswith("NO ") and proxied[0][0].startswith("NO "), (direct, proxied))


def test_literal_plus_before_login(daemon):
    """LITERAL+ is offered before login: ID and LOGIN take {N+}."""
    for port in (PORT, daemon.port):
        c = Client(port)
        c.send(b'i1 ID ("name" {4+}\r\ntest "version" {3+}\r\n1.0)\r\n')
        lines = c.until_tagged("i1")
        check("ID with LITERAL+ before login (port %d)" % port,
              lines[-1].startswith("i1 OK") and lines[0].startswith("* ID ("), lines)
        c.send(b'i2 ID ("name" {4}\r\n')
        go_ahead = c.line()
        c.send(b'test)\r\n')
        lines = c.until_tagged("i2")
        check("ID with a synchronizing literal (port %d)" % port, go_ahead.startswith("+") and
              lines[-1].startswith("i2 OK"), (go_ahead, lines))
        c.send(b"i3 LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(USER), USER.encode(), len(PASS), PASS.encode()))
        lines = c.until_tagged("i3")
        check("LOGIN with LITERAL+ (port %d)" % port, lines[-1].startswith("i3 OK"), lines)
        c.close()
    c = Client(daemon.port)
    fields = b" ".join(b"{1+}\r\nx" for i in range(62))
    c.send(b"i4 ID (" + fields + b")\r\n")
    lines = c.until_tagged("i4")
    check("an ID with more literals than RFC 2971's 30 pairs: BAD, the literals read and dropped",
          lines == ["i4 BAD Invalid ID arguments: too many literals or too long"], lines)
    c.send(b'i5 ID ("name" {1+}\r\nx "version" "1")\r\n')
    lines = c.until_tagged("i5")
    check("... and the next ID is read in step", lines[-1] == "i5 OK ID completed", lines)
    c.send(b'i6 ID ("name" {1+}\r\nx "version")\r\n')
    lines = c.until_tagged("i6")
    check("an odd ID list with a literal: BAD", lines == ["i6 BAD Invalid ID arguments"], lines)
    c.close()


def test_pooled_as_login():
    """AUTHENTICATE LOGIN is keyed in the pool as LOGIN with that password."""
    daemon = Daemon(upstream_dovecot(), extra="pool = { size = 1; };\n", tmpdir=tmp)
    try:
        c = Client(daemon.port)
        c.send(("a1 AUTHENTICATE LOGIN %s\r\n" % b64(USER)).encode())
        prompt = c.line()
        c.send(("%s\r\n" % b64(PASS)).encode())
        lines = c.until_tagged("a1") + c.tagged("a2", "LOGOUT")
        check("AUTHENTICATE LOGIN, then LOGOUT", prompt == PASSWORD_PROMPT and lines[0].startswith("a1 OK ") and
              lines[-1].startswith("a2 OK"), lines)
        c.close()
        check("... the connection goes to the pool",
              daemon.wait_log(r"upstream pool: keeping the connection of %s" % USER) is not None, daemon.log()[-800:])
        c = Client(daemon.port)
        lines = c.command("LOGIN %s %s" % (USER, PASS))
        check("a LOGIN of the same account and password takes it",
              lines[-1].startswith("p1 OK") and
              daemon.wait_log(r"upstream pool: reusing the connection of %s" % USER) is not None, lines)
        c.close()
    finally:
        daemon.stop()


class LateUpstream(Forwarder):
    """A loopback port that refuses connections (bound, not listening)
    until up(); then each connection is relayed to Dovecot's plain port."""

    def __init__(self):
        super().__init__(listening=False)

    def upstream(self, name="late"):
        return '{ name = "%s"; host = "127.0.0.1"; port = %d; tls = "starttls"; ca_file = "%s"; }' % (
            name, self.port, CA)


def test_down_at_start():
    """Nothing learned: the fallback list; the first login that reaches
    the upstream teaches the daemon its list."""
    direct = lists(PORT, starttls=True)[2][0]
    late = LateUpstream()
    daemon = Daemon(late.upstream(), tmpdir=tmp)
    try:
        check("an upstream down at start: logged",
              daemon.wait_log(r"upstream late: cannot learn what it offers before login") is not None,
              daemon.log()[-1500:])
        greeting, capability = lists(daemon.port)
        check("... the greeting has the fallback list", greeting == FALLBACK, greeting)
        check("... and so has CAPABILITY", capability == [FALLBACK, "OK"], capability)
        answer = conversation(daemon.port, ["AUTHENTICATE XOAUTH2 " + b64("user=%s\x01auth=Bearer t\x01\x01" % USER)])
        check("... a mechanism not in it still goes upstream (UNAVAILABLE while it is down)",
              answer[0][-1].startswith("NO [UNAVAILABLE]"), answer)
        late.up()
        c = Client(daemon.port)
        lines = c.command("LOGIN %s %s" % (USER, PASS))
        check("the upstream comes up: a login goes through", lines[-1].startswith("p1 OK"), lines)
        c.close()
        check("... and the daemon learns the upstream's list from it (log line)",
              daemon.wait_log(LEARNED % "late") is not None, daemon.log()[-1500:])
        greeting, capability = lists(daemon.port)
        check("... the next client's greeting has it", greeting == direct, (greeting, direct))
        check("... and so has CAPABILITY", capability == [direct, "OK"], capability)
        result = imaplib_enable(daemon.port)
        check("... imaplib's enable() works for that client", result[0] == "OK", result)
    finally:
        daemon.stop()
        late.close()


def test_several_upstreams():
    """Several upstreams: what they all offer once all are known; the
    fallback while one is not."""
    direct = lists(PORT, starttls=True)[2][0]
    two = "%s, %s" % (upstream_dovecot("implicit").replace('name = "dovecot"', 'name = "other"; users = [ "%s" ]'
                                                           % USER2), upstream_dovecot())
    daemon = Daemon(two, tmpdir=tmp)
    try:
        check("two upstreams: both are asked at start", daemon.wait_log(LEARNED % "other") is not None and
              daemon.wait_log(LEARNED % "dovecot") is not None, daemon.log()[-1500:])
        greeting = lists(daemon.port)[0]
        check("... the list is what both offer (the same Dovecot: its own)", greeting == direct, (greeting, direct))
    finally:
        daemon.stop()
    late = LateUpstream()
    daemon = Daemon("%s, %s" % (late.upstream().replace('name = "late"', 'name = "late"; users = [ "%s" ]' % USER2),
                                upstream_dovecot()), tmpdir=tmp)
    try:
        check("two upstreams, one down at start",
              daemon.wait_log(LEARNED % "dovecot") is not None and
              daemon.wait_log(r"upstream late: cannot learn") is not None, daemon.log()[-1500:])
        greeting = lists(daemon.port)[0]
        check("... the fallback list", greeting == FALLBACK, greeting)
    finally:
        daemon.stop()
        late.close()


def main():
    run_steps((test_same_as_dovecot, test_down_at_start, test_several_upstreams, test_pooled_as_login))
    daemon = Daemon(upstream_dovecot(), tmpdir=tmp)
    try:
        if daemon.wait_log(LEARNED % "dovecot") is None:
            check("the daemon learns what Dovecot offers", False, daemon.log()[-1500:])
        run_steps((test_imaplib_enable, test_authenticate_login_imaplib, test_authenticate_login_raw,
                   test_unsupported_mechanisms, test_literal_plus_before_login), daemon)
    finally:
        daemon.stop()
    return summary()


if __name__ == "__main__":
    sys.exit(main())
