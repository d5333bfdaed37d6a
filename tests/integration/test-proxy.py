#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""imapcached as a proxy in front of the test Dovecot: the same scripted
imaplib session (every imaplib command) sent direct and through the proxy
gives the same answers apart from tags, timings and what the proxy may not
advertise; LOGIN and AUTHENTICATE go through (refusals with Dovecot's own
text); a multi-MB APPEND comes back byte-equal; IDLE is woken through the
proxy by an APPEND from another connection; an upstream that dies gives
the client BYE. The daemon runs on a free loopback port and is stopped by
its PID."""
import base64
import imaplib
import re
import socket
import subprocess
import sys
import time

from checks import check, summary
import proxyfixture
from proxyfixture import (BINARY, Forwarder, PASS, PASS2, PORT, USER, USER2, Daemon, Raw, quote_bytes,
                          run_steps, upstream_dovecot)

tmp = proxyfixture.scratch_dir("test-proxy.")


def normalize(value):
    """Takes out what legitimately differs between two runs: timings,
    UIDVALIDITY and the capability list (compared on its own)."""
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return value
    value = re.sub(r" ?\(\d+\.\d+ \+ \d+\.\d+( \+ \d+\.\d+)? secs\)", "", value)
    value = re.sub(r"\[CAPABILITY [^\]]*\] ?", "", value)
    value = re.sub(r"(UIDVALIDITY|APPENDUID|COPYUID) \d+", r"\1 N", value)
    return value


MESSAGE = (b"From: Proxy Test <proxy@example.com>\r\nTo: testuser2@example.com\r\n"
           b"Subject: scripted\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\n"
           b"Message-ID: <scripted@example.com>\r\n\r\nbody line 1\r\nbody line 2\r\n")


def scripted_session(port):
    """Every imaplib command, in one session on the second account and
    read-only on the first's INBOX. Returns [(name, result)] and the
    capability list."""
    out = []

    def run(name, call, *args):
        try:
            result = call(*args)
        except imaplib.IMAP4.error as e:  # BAD/NO raised by imaplib itself
            result = ("raised", str(e))
        out.append((name, normalize(result)))
        return result

    m = imaplib.IMAP4("127.0.0.1", port)
    run("login", m.login, USER2, PASS2)
    # capabilities change with login (RFC 3501 6.2.2): ask again, as a
    # careful client does; the list itself is compared on its own
    typ, data = m.capability()
    m.capabilities = tuple(data[-1].decode().upper().split())
    capabilities = m.capabilities
    run("enable", m.enable, "CONDSTORE")
    run("noop", m.noop)
    run("namespace", m.namespace)
    run("list", m.list)
    run("list pattern", m.list, "", "*")
    run("lsub", m.lsub)
    run("create", m.create, "difftest")
    run("create child", m.create, "difftest/child")
    run("subscribe", m.subscribe, "difftest")
    run("lsub after", m.lsub, "", "diff*")
    run("status", m.status, "difftest", "(MESSAGES UIDNEXT UNSEEN)")
    run("append", m.append, "difftest", r"(\Flagged)", imaplib.Time2Internaldate(1700000000), MESSAGE)
    run("append 2", m.append, "difftest", None, imaplib.Time2Internaldate(1700000100),
        MESSAGE.replace(b"scripted", b"second"))
    run("select", m.select, "difftest")
    run("response EXISTS", m.response, "EXISTS")
    run("fetch", m.fetch, "1:2", "(FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)")
    run("fetch body", m.fetch, "1", "(BODY.PEEK[] BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    run("uid fetch", m.uid, "FETCH", "1:*", "(UID FLAGS)")
    run("search", m.search, None, "ALL")
    run("search subject", m.search, None, 'SUBJECT "second"')
    run("uid search", m.uid, "SEARCH", "FLAGGED")
    run("sort", m.sort, "(SUBJECT)", "UTF-8", "ALL")
    run("thread", m.thread, "REFERENCES", "UTF-8", "ALL")
    run("store", m.store, "1", "+FLAGS", r"(\Seen \Answered)")
    run("store silent", m.store, "2", "+FLAGS.SILENT", r"(\Deleted)")
    run("copy", m.copy, "1", "difftest/child")
    run("uid copy", m.uid, "COPY", "1", "difftest/child")
    run("check", m.check)
    run("expunge", m.expunge)
    run("recent", m.recent)
    run("getacl", m.getacl, "difftest")
    run("myrights", m.myrights, "difftest")
    run("setacl", m.setacl, "difftest", "someone", "lr")
    run("deleteacl", m.deleteacl, "difftest", "someone")
    run("getquota", m.getquota, "")
    run("getquotaroot", m.getquotaroot, "INBOX")
    run("setquota", m.setquota, "", "(STORAGE 100)")
    run("getannotation", m.getannotation, "difftest", '"/comment"', '"value.priv"')
    run("setannotation", m.setannotation, "difftest", '"/comment"', '("value.priv" "x")')
    run("proxyauth", m.proxyauth, "someone")
    run("xatom", m.xatom, "XNOSUCH")
    run("unselect", m.unselect)
    run("examine", m.select, "INBOX", True)
    run("close", m.close)
    run("select inbox readonly", m.select, "INBOX", True)
    run("inbox fetch", m.fetch, "1:*", "(FLAGS)")
    run("rename", m.rename, "difftest/child", "difftest/kid")
    run("unsubscribe", m.unsubscribe, "difftest")
    run("delete kid", m.delete, "difftest/kid")
    run("delete", m.delete, "difftest")
    run("logout", m.logout)
    return out, capabilities


def test_differential(daemon):
    direct, direct_caps = scripted_session(PORT)
    proxied, proxy_caps = scripted_session(daemon.port)
    check("the scripted session ran %d commands" % len(direct), len(direct) > 50, len(direct))
    for (name, want), (_, got) in zip(direct, proxied):
        check("same answer direct and through the proxy: %s" % name, want == got, (want, got))
    check("the proxy advertises only what Dovecot does", set(proxy_caps) <= set(direct_caps),
          set(proxy_caps) - set(direct_caps))
    check("... and not what it cannot carry",
          not any(c.startswith(("COMPRESS", "AUTH=", "STARTTLS", "NOTIFY", "SASL-IR")) for c in proxy_caps),
          proxy_caps)
    check("... but IDLE, LITERAL+, UIDPLUS, MOVE, CONDSTORE go through",
          all(c in proxy_caps for c in ("IDLE", "LITERAL+", "UIDPLUS", "MOVE", "CONDSTORE")), proxy_caps)


def test_login_refused(daemon):
    results = []
    for port in (PORT, daemon.port):
        m = imaplib.IMAP4("127.0.0.1", port)
        try:
            m.login(USER, "wrong-password")
            results.append("accepted")
        except imaplib.IMAP4.error as e:
            results.append(str(e))
        m.shutdown()
    check("a wrong password: the proxy gives Dovecot's NO text", results[0] == results[1] and
          "accepted" not in results, results)
    c = Raw(daemon.port)
    c.line()
    lines = c.until_tagged("r1") if c.send(b"r1 LOGIN %s nope\r\n" % USER.encode()) is None else []
    check("a refused LOGIN is one tagged NO and nothing else",
          len(lines) == 1 and lines[0].startswith("r1 NO "), lines)
    c.send(b"r2 NOOP\r\n")
    lines = c.until_tagged("r2")
    check("the session goes on after a refused login", lines == ["r2 OK NOOP completed"], lines)
    c.close()
    check("the refused login is logged without the password",
          daemon.wait_log(r"login as %s refused by upstream" % re.escape(USER)) is not None and
          "nope" not in daemon.log(), daemon.log()[-2000:])


def test_authenticate(daemon):
    plain = base64.b64encode(b"\0" + USER.encode() + b"\0" + PASS.encode()).decode()
    c = Raw(daemon.port)
    greeting = c.line()
    check("the greeting offers SASL-IR and AUTH=PLAIN on loopback",
          "SASL-IR" in greeting and "AUTH=PLAIN" in greeting, greeting)
    c.send(("a1 AUTHENTICATE PLAIN %s\r\n" % plain).encode())
    lines = c.until_tagged("a1")
    check("AUTHENTICATE PLAIN with SASL-IR logs in upstream",
          len(lines) == 1 and lines[0].startswith("a1 OK [CAPABILITY IMAP4rev1"), lines)
    c.send(b"a2 SELECT INBOX\r\n")
    lines = c.until_tagged("a2")
    check("... and the session is the user's", any(l.endswith(" EXISTS") for l in lines) and
          lines[-1].startswith("a2 OK"), lines)
    c.send(b"a3 LOGOUT\r\n")
    lines = c.until_tagged("a3")
    check("LOGOUT answered with the upstream's BYE, then the connection closes",
          lines[0].startswith("* BYE") and lines[-1].startswith("a3 OK") and c.at_eof(), lines)
    c.close()

    m = imaplib.IMAP4("127.0.0.1", daemon.port)
    typ, data = m.authenticate("PLAIN", lambda challenge: b"\0" + USER2.encode() + b"\0" + PASS2.encode())
    check("imaplib's AUTHENTICATE PLAIN (no initial response, '+' first)", typ == "OK", (typ, data))
    m.logout()

    for mechanism, response in (
            ("XOAUTH2", b"user=%s\x01auth=Bearer token\x01\x01" % USER.encode()),
            ("OAUTHBEARER", b"n,a=%s,\x01auth=Bearer token\x01\x01" % USER.encode())):
        replies = []
        for port in (PORT, daemon.port):
            c = Raw(port)
            c.line()
            c.send(b"o1 AUTHENTICATE %s %s\r\n" % (mechanism.encode(), base64.b64encode(response)))
            lines = c.until_tagged("o1")
            replies.append([re.sub(r"^o1 ", "", l) for l in lines])
            c.close()
        # refused here once the upstream's list is known, else by the upstream
        check("AUTHENTICATE %s not offered upstream: NO, as direct" % mechanism,
              len(replies[1]) == 1 and replies[1][0].startswith("NO") and replies[0][-1].startswith("NO"), replies)

    c = Raw(daemon.port)
    c.line()
    c.send(b"b1 AUTHENTICATE PLAIN !!notbase64\r\n")
    lines = c.until_tagged("b1")
    check("a malformed initial response gets BAD", lines == ["b1 BAD Invalid PLAIN initial response"], lines)
    c.send(b"b2 AUTHENTICATE CRAM-MD5\r\n")
    lines = c.until_tagged("b2")
    check("an unsupported mechanism gets NO", len(lines) == 1 and lines[0].startswith("b2 NO "), lines)
    c.close()


def test_big_append(daemon):
    body = b"".join(b"line %07d of a big message through the proxy\r\n" % i for i in range(100000))
    message = b"Subject: big\r\nMessage-ID: <big@example.com>\r\n\r\n" + body
    m = imaplib.IMAP4("127.0.0.1", daemon.port)
    m.login(USER2, PASS2)
    m.create("bigbox")
    typ, data = m.append("bigbox", None, None, message)
    check("APPEND of %.1f MB through the proxy" % (len(message) / 1e6), typ == "OK", (typ, data))
    m.select("bigbox")
    typ, data = m.fetch("1", "(BODY.PEEK[])")
    fetched = data[0][1] if typ == "OK" and data and isinstance(data[0], tuple) else b""
    check("... fetched back byte-equal", fetched == message, (len(fetched), len(message)))
    m.close()
    m.delete("bigbox")
    m.logout()


def test_idle(daemon):
    c = Raw(daemon.port)
    c.line()
    c.send(b"i1 LOGIN %s %s\r\n" % (quote_bytes(USER2), quote_bytes(PASS2)))
    lines = c.until_tagged("i1")
    check("LOGIN with pipelined commands after it", lines[-1].startswith("i1 OK "), lines)
    c.send(b"i2 CREATE idlebox\r\ni3 SELECT idlebox\r\n")
    c.until_tagged("i2")
    c.until_tagged("i3")
    c.send(b"i4 IDLE\r\n")
    cont = c.line()
    check("IDLE through the proxy: the upstream's continuation", cont.startswith("+ "), cont)
    other = imaplib.IMAP4("127.0.0.1", PORT)
    other.login(USER2, PASS2)
    other.append("idlebox", None, None, MESSAGE)
    woken = c.line()
    check("IDLE woken by an APPEND from another connection", woken == "* 1 EXISTS", woken)
    c.send(b"DONE\r\n")
    lines = c.until_tagged("i4")
    check("DONE ends IDLE with the tagged OK", lines[-1].startswith("i4 OK"), lines)
    c.send(b"i5 NOOP\r\n")
    lines = c.until_tagged("i5")
    check("the session goes on after IDLE", lines[-1].startswith("i5 OK"), lines)
    c.send(b"i6 LOGOUT\r\n")
    c.until_tagged("i6")
    c.close()
    other.delete("idlebox")
    other.logout()


def test_literals(daemon):
    c = Raw(daemon.port)
    c.line()
    c.send(b"l1 LOGIN %s %s\r\n" % (quote_bytes(USER2), quote_bytes(PASS2)))
    lines = c.until_tagged("l1")
    check("LOGIN through the proxy", lines[-1].startswith("l1 OK [CAPABILITY "), lines)
    c.send(b"l2 CREATE {7}\r\n")
    cont = c.line()
    check("a synchronizing literal gets the upstream's '+'", cont.startswith("+ "), cont)
    c.send(b"litbox1\r\n")
    lines = c.until_tagged("l2")
    check("... and the command completes", lines[-1].startswith("l2 OK"), lines)
    c.send(b"l3 CREATE {7+}\r\nlitbox2\r\nl4 DELETE litbox1\r\nl5 DELETE {7+}\r\nlitbox2\r\n")
    lines = c.until_tagged("l5")
    check("LITERAL+ literals stream with pipelined commands",
          [l.split(" ")[1] for l in lines if l[:2] in ("l3", "l4", "l5")] == ["OK", "OK", "OK"], lines)
    c.send(b"l6 APPEND nosuchbox {5}\r\n")
    lines = c.until_tagged("l6")
    check("a literal the upstream refuses: NO, no '+', nothing sent",
          len(lines) == 1 and lines[0].startswith("l6 NO [TRYCREATE]"), lines)
    c.send(b"l7 NOOP\r\n")
    lines = c.until_tagged("l7")
    check("... and the session is in step", lines[-1].startswith("l7 OK"), lines)
    c.send(b"l8 LOGOUT\r\n")
    c.until_tagged("l8")
    c.close()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_backpressure(daemon):
    """A client that reads nothing while the upstream streams 20 MB: the
    proxy stops reading upstream instead of buffering it all."""
    body = b"x" * 5000000
    setup = imaplib.IMAP4("127.0.0.1", PORT)
    setup.login(USER2, PASS2)
    setup.create("pressure")
    for _ in range(4):
        setup.append("pressure", None, None, b"Subject: big\r\n\r\n" + body)
    c = Raw(daemon.port)
    c.line()
    c.send(b"p1 LOGIN %s %s\r\np2 SELECT pressure\r\n" % (quote_bytes(USER2), quote_bytes(PASS2)))
    c.until_tagged("p2")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    before = rss_kib(daemon.proc.pid)
    c.send(b"p3 FETCH 1:4 (BODY.PEEK[])\r\n")
    time.sleep(3)  # the client reads nothing meanwhile
    grown = rss_kib(daemon.proc.pid) - before
    check("a client that reads nothing: reading from upstream is paused",
          daemon.wait_log(r"the client is not reading: reading from upstream paused") is not None)
    # AddressSanitizer keeps freed memory in quarantine: RSS then says nothing
    sanitized = b"libasan" in subprocess.run(["ldd", BINARY], capture_output=True).stdout
    check("... and the daemon holds at most 8 MiB of the 20 MB (grew %d KiB%s)" % (
          grown, ", not judged under AddressSanitizer" if sanitized else ""),
          sanitized or grown < 8 * 1024, grown)
    total = 0
    deadline = time.time() + 60
    data = c.buf
    c.buf = b""
    while not data.endswith(b"\r\np3 OK Fetch completed.\r\n") and \
            not re.search(rb"\r\np3 (OK|NO|BAD)[^\r]*\r\n$", data[-200:]) and time.time() < deadline:
        chunk = c.sock.recv(1 << 20)
        if not chunk:
            break
        total += len(chunk)
        data = data[-300:] + chunk
    check("... and once it reads, all of it arrives (%d bytes)" % total, total > 20000000, total)
    c.send(b"p4 LOGOUT\r\n")
    c.close()
    setup.delete("pressure")
    setup.logout()


def test_pipelined(daemon):
    c = Raw(daemon.port)
    c.line()
    c.send(b"q0 LOGIN %s %s\r\n" % (quote_bytes(USER), quote_bytes(PASS)))
    c.until_tagged("q0")
    c.send(b"".join(b"q%d NOOP\r\n" % i for i in range(1, 1001)))
    lines = c.until_tagged("q1000")
    tagged = [l.split(" ")[0] for l in lines if not l.startswith("* ")]
    check("1,000 pipelined commands after login: 1,000 answers in order, tags restored",
          tagged == ["q%d" % i for i in range(1, 1001)] and all(" OK " in l for l in lines if l[0] == "q"),
          tagged[-3:])
    c.send(b"q1001 " + b"A" * 70000 + b"\r\nq1002 NOOP\r\n")
    lines = c.until_tagged("q1002")
    check("an over-long line after login gets Dovecot's BAD, and the session reads on",
          len(lines) == 2 and lines[0] == "q1001 BAD Error in IMAP command: Too long argument."
          and lines[1].startswith("q1002 OK"), lines)
    c.close()


def test_upstream_dies():
    relay = Forwarder()  # a TCP relay to Dovecot whose connections can be cut
    daemon = Daemon('{ name = "relay"; host = "127.0.0.1"; port = %d; tls = "none"; }' % relay.port, tmpdir=tmp)
    try:
        c = Raw(daemon.port)
        c.line()
        c.send(b"k1 LOGIN %s %s\r\nk2 SELECT INBOX\r\n" % (quote_bytes(USER), quote_bytes(PASS)))
        c.until_tagged("k2")
        relay.cut()
        line = c.line()
        check("the upstream dies mid-session: the client gets BYE", line.startswith("* BYE "), line)
        check("... and the session ends", c.at_eof())
        check("... with a log line", daemon.wait_log(r"session \d+: end: .*upstream connection lost") is not None,
              daemon.log()[-2000:])
        c.close()
        bystander = Raw(daemon.port)
        bystander.line()
        bystander.send(b"n1 NOOP\r\n")
        check("other sessions keep working", bystander.until_tagged("n1") == ["n1 OK NOOP completed"])
        bystander.close()
    finally:
        daemon.stop()


def main():
    daemon = Daemon(upstream_dovecot(), tmpdir=tmp)
    try:
        run_steps((test_differential, test_login_refused, test_authenticate, test_literals, test_big_append,
                   test_idle, test_backpressure, test_pipelined), daemon)
    finally:
        daemon.stop()
    run_steps((test_upstream_dies,))
    check("the daemon never logged a password", PASS not in daemon.log() and PASS2 not in daemon.log())
    return summary()


if __name__ == "__main__":
    sys.exit(main())
