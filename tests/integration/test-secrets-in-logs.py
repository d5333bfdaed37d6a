#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Passwords and SASL responses never reach a log, at any level (issue 13
item 4). A daemon at log level debug, with the pool on, goes through every
way a secret reaches it: LOGIN with quoted strings and with literals,
AUTHENTICATE PLAIN with an initial response and with a continuation (and
cancelled), AUTHENTICATE LOGIN, wrong passwords, logins that take a pooled
connection, and imapcachectl warm (the password on standard input). Its
whole log, and imapcachectl's output, must hold none of the secrets: not
as sent, not base64-encoded as the SASL responses carry them (the exact
responses sent, and the password alone at each of base64's three
alignments).

Then every log make check wrote so far is scanned: the whole log of
every daemon a test started through proxyfixture (build/tests/daemon-logs,
one file a daemon) and the tests' own logs (build/tests/**/*.log, where
a failing test prints its daemon's log). No line the daemon logged
("imapcached: LEVEL: ...") may hold one of the fixture's passwords or
their SASL PLAIN forms. Listed last in make check, it starts after every
other test has (under make -j2, while the last one or two still run),
and it fails if it found no other test's daemon log: a scan of nothing
proves nothing. The daemon runs on a free loopback port and is stopped
by its PID."""
import base64
import glob
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, summary  # noqa: E402
import proxyfixture  # noqa: E402 (needs the path above)
from proxyfixture import (BUILD, DAEMON_LOGS, PASS, PASS2, PASS3, USER, USER2, USER3, Daemon, Raw,  # noqa: E402
                          quote, upstream_dovecot)

CTL = os.path.join(BUILD, "daemon", "imapcachectl")
WRONG = "wrong-Secret-4711"
ACCOUNTS = [(USER, PASS), (USER2, PASS2), (USER3, PASS3)]


def b64(data):
    return base64.b64encode(data).decode()


def plain(user, password):
    return b64(b"\0" + user.encode() + b"\0" + password.encode())


def encodings(secret):
    """The base64 texts that give secret away wherever it sits in a longer
    base64 text: the secret alone at each of the three alignments, its
    partial first and last groups left out."""
    data = secret.encode()
    forms = set()
    for shift in range(3):
        text = b64(b"\0" * shift + data)
        start = 4 if shift else 0
        end = len(text) - 4 if (shift + len(data)) % 3 else len(text)
        if end - start >= 4:
            forms.add(text[start:end])
    return forms


def secrets():
    """{text: what it is} of everything that must never be logged."""
    found = {}
    for user, password in ACCOUNTS + [(USER, WRONG)]:
        found[password] = "%s's password" % user
        found[quote(password)] = "%s's password, quoted" % user
        found[plain(user, password)] = "%s's AUTHENTICATE PLAIN response" % user
        found[b64(password.encode())] = "%s's AUTHENTICATE LOGIN password" % user
        for form in encodings(password):
            found[form] = "%s's password in base64" % user
    return found


def login(c, tag, user, password):
    return c.tagged(tag, "LOGIN %s %s" % (quote(user), quote(password)))[-1]


def session_steps(daemon):
    """Every way in; returns what each step's tagged line was."""
    said = {}
    c = Raw(daemon.port, greeting=True)
    said["LOGIN"] = login(c, "a1", USER, PASS)
    c.tagged("a2", "SELECT INBOX")
    c.tagged("a3", "FETCH 1:5 (BODY.PEEK[])")
    c.tagged("a4", "LOGOUT")
    c = Raw(daemon.port, greeting=True)
    said["LOGIN, pooled"] = login(c, "b1", USER, PASS)
    c.tagged("b2", "LOGOUT")
    c = Raw(daemon.port, greeting=True)
    c.send(b"c1 LOGIN {%d}\r\n" % len(USER2))
    c.line()
    c.send(USER2.encode() + b" {%d+}\r\n" % len(PASS2.encode()) + PASS2.encode() + b"\r\n")
    said["LOGIN with literals"] = c.until_tagged("c1")[-1]
    c.tagged("c2", "LOGOUT")
    for tag in ("d", "e"):  # the second takes the first's pooled connection
        c = Raw(daemon.port, greeting=True)
        said["AUTHENTICATE PLAIN, initial response " + tag] = c.tagged(tag + "1", "AUTHENTICATE PLAIN " +
                                                                      plain(USER3, PASS3))[-1]
        c.tagged(tag + "2", "LOGOUT")
    c = Raw(daemon.port, greeting=True)
    c.send(b"f1 AUTHENTICATE PLAIN\r\n")
    c.line()
    c.send(plain(USER2, PASS2).encode() + b"\r\n")
    said["AUTHENTICATE PLAIN, continuation"] = c.until_tagged("f1")[-1]
    c.tagged("f2", "LOGOUT")
    c = Raw(daemon.port, greeting=True)
    c.send(b"g1 AUTHENTICATE LOGIN\r\n")
    c.line()
    c.send(b64(USER.encode()).encode() + b"\r\n")
    c.line()
    c.send(b64(PASS.encode()).encode() + b"\r\n")
    said["AUTHENTICATE LOGIN"] = c.until_tagged("g1")[-1]
    c.tagged("g2", "LOGOUT")
    c = Raw(daemon.port, greeting=True)
    said["wrong LOGIN"] = login(c, "h1", USER, WRONG)
    said["wrong AUTHENTICATE PLAIN"] = c.tagged("h2", "AUTHENTICATE PLAIN " + plain(USER, WRONG))[-1]
    c.send(b"h3 AUTHENTICATE PLAIN\r\n")
    c.line()
    c.send(b"*\r\n")
    said["AUTHENTICATE cancelled"] = c.until_tagged("h3")[-1]
    c.close()
    return said


def scan(text, found):
    """The names of the secrets in text."""
    return sorted({what for secret, what in found.items() if secret in text})


DAEMON_LINE = re.compile(r"imapcached: (?:debug|info|warning|error): ")


def daemon_lines(path):
    """The daemon log lines a test log holds (a test prints its daemon's
    log as lines, or as a repr with \\n between them)."""
    with open(path, errors="replace") as f:
        for line in f:
            for part in line.replace("\\n", "\n").split("\n"):
                if DAEMON_LINE.search(part):
                    yield part


def main():
    found = secrets()
    tmp = proxyfixture.scratch_dir("test-secrets-in-logs.")
    socket_path = os.path.join(tmp, "control")
    daemon = Daemon(upstream_dovecot("none"), log_level="debug", tmpdir=tmp,
                    extra='control = { socket = "%s"; };\ntimeouts = { shutdown = 0; };\n' % socket_path)
    try:
        said = session_steps(daemon)
        for step, line in sorted(said.items()):
            want_ok = not step.startswith("wrong") and "cancelled" not in step
            check("%s: %s" % (step, "OK" if want_ok else "refused"),
                  (" OK " in line) == want_ok and line.split(" ")[1] in ("OK", "NO", "BAD"), line)
        check("the pool was used", daemon.count_log(r"upstream pool: reusing") >= 2, daemon.log()[-2000:])
        warm = subprocess.run([CTL, "--socket", socket_path, "warm", "--connect", "127.0.0.1:%d" % daemon.port,
                               USER, "INBOX"], input=PASS + "\n", capture_output=True, text=True, timeout=300)
        check("imapcachectl warm with the password on standard input", warm.returncode == 0,
              (warm.returncode, warm.stderr))
        check("imapcachectl's output holds no secret", scan(warm.stdout + warm.stderr, found) == [],
              scan(warm.stdout + warm.stderr, found))
    finally:
        daemon.stop()
    log = daemon.log()
    check("the daemon logged at debug level (%d lines)" % len(daemon.lines),
          daemon.count_log(r"imapcached: debug: ") > 0)
    planted = ["debug: AUTHENTICATE " + plain(USER2, PASS2), "x" + b64(b"ab" + PASS3.encode() + b"cd"),
               "LOGIN %s %s" % (USER2, quote(PASS2)), b64(b"\0\0" + USER.encode() + b"\0" + PASS.encode())]
    check("the scan finds secrets planted in log lines", all(scan(line, found) for line in planted),
          [scan(line, found) for line in planted])
    leaks = [(line, scan(line, found)) for line in daemon.lines if scan(line, found)]
    check("no password, quoted password or SASL response in the debug log", leaks == [], leaks[:5])
    check("... and the log does name the accounts (so the scan reads the right text)", USER3 in log and USER2 in log)

    fixture = {secret: what for secret, what in found.items()
               if what.startswith(tuple(u + "'s" for u, _ in ACCOUNTS)) and WRONG not in secret}
    own = os.path.abspath(__file__).replace(".py", ".py.log")
    paths = [p for p in glob.glob(os.path.join(BUILD, "tests", "**", "*.log"), recursive=True)
             if not p.endswith("test-suite.log") and os.path.basename(p) != os.path.basename(own)]
    leaks, lines = [], 0
    for path in paths:
        for line in daemon_lines(path):
            lines += 1
            if scan(line, fixture):
                leaks.append((path, scan(line, fixture), line[:300]))
    check("the other tests' logs (%d files, %d daemon lines): no secret in a daemon line" % (len(paths), lines),
          leaks == [], leaks[:5])
    script = os.path.splitext(os.path.basename(__file__))[0]
    others = [p for p in glob.glob(os.path.join(DAEMON_LOGS, "*.log"))
              if not os.path.basename(p).startswith(script + "-")]
    check("... which include the whole logs of other tests' daemons (%d; run after the suite)" % len(others),
          len(others) > 0 and lines > 1000)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
