#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Proves the test upstream: TLS and STARTTLS with the test CA, LOGIN,
CONDSTORE/QRESYNC, SELECT, and a mailbox that is exactly the corpus
(count, UIDVALIDITY, UIDs, flags, INTERNALDATE, RFC822.SIZE), for the
corpus owner and for its twin account. IMAPTEST_CAPABILITY sets what
Dovecot advertises after login. Then the fixture's errors: no Dovecot, a
Dovecot that won't start, a busy port, a capability list that is not one."""
import imaplib
import json
import os
import re
import ssl
import subprocess
import sys
import time

from checks import check, summary

ENV = os.environ
HOST, PORT, TLS_PORT = ENV["IMAPTEST_HOST"], int(ENV["IMAPTEST_PORT"]), int(ENV["IMAPTEST_TLS_PORT"])
MANIFEST = json.load(open(ENV["IMAPTEST_MANIFEST"]))


def tls_context(ca):
    return ssl.create_default_context(cafile=ca)


def test_implicit_tls_session(user="IMAPTEST_USER", password="IMAPTEST_PASS"):
    m = imaplib.IMAP4_SSL(HOST, TLS_PORT, ssl_context=tls_context(ENV["IMAPTEST_CA"]))
    typ, _ = m.login(ENV[user], ENV[password])
    check("LOGIN as %s over implicit TLS" % ENV[user], typ == "OK")
    typ, caps = m.capability()
    caps = caps[0].decode().upper().split()
    check("CONDSTORE and QRESYNC offered", "CONDSTORE" in caps and "QRESYNC" in caps, caps)
    typ, data = m.select("INBOX", readonly=True)
    check("%s: SELECT count equals corpus size" % ENV[user], typ == "OK" and int(data[0]) == MANIFEST["count"],
          "%s vs %d" % (data, MANIFEST["count"]))
    uidvalidity = m.untagged_responses.get("UIDVALIDITY", [b"0"])[0]
    check("%s: UIDVALIDITY is the corpus's" % ENV[user], int(uidvalidity) == MANIFEST["uidvalidity"], uidvalidity)
    typ, rows = m.uid("FETCH", "1:*", "(FLAGS INTERNALDATE RFC822.SIZE)")
    got = {}
    for row in rows:
        text = row.decode() if isinstance(row, bytes) else row[0].decode()
        uid = int(re.search(r"UID (\d+)", text).group(1))
        flags = sorted(f.decode() for f in imaplib.ParseFlags(text.encode()))
        when = time.mktime(imaplib.Internaldate2tuple(text.encode()))
        size = int(re.search(r"RFC822\.SIZE (\d+)", text).group(1))
        got[uid] = (flags, int(when), size)
    want = {e["uid"]: (e["flags"], e["internaldate"], e["rfc822_size"]) for e in MANIFEST["messages"]}
    check("%s: UIDs, flags, INTERNALDATE and size match the manifest" % ENV[user], got == want,
          [u for u in want if got.get(u) != want[u]][:5])
    m.logout()


def test_starttls_and_second_user():
    m = imaplib.IMAP4(HOST, PORT)
    m.starttls(tls_context(ENV["IMAPTEST_CA"]))
    typ, _ = m.login(ENV["IMAPTEST_USER2"], ENV["IMAPTEST_PASS2"])
    check("STARTTLS then LOGIN as the second user (quoted password)", typ == "OK")
    typ, data = m.select("INBOX")
    check("second user's INBOX is empty", typ == "OK" and int(data[0]) == 0, data)
    m.logout()


def test_untrusted_ca_refused():
    try:
        imaplib.IMAP4_SSL(HOST, TLS_PORT, ssl_context=tls_context(ENV["IMAPTEST_UNTRUSTED_CA"]))
        check("a CA that did not sign the certificate is refused", False)
    except ssl.SSLCertVerificationError:
        check("a CA that did not sign the certificate is refused", True)


def nested_fixture(env_extra):
    """Runs with-dovecot inside this one; returns (exit status, stderr, seconds)."""
    env = dict(ENV)
    env.update(env_extra)
    started = time.time()
    proc = subprocess.run([os.path.join(os.path.dirname(__file__), "with-dovecot"), "true"],
                          env=env, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stderr, time.time() - started


def test_fixture_errors():
    for var in ("IMAPTEST_PORT", "IMAPTEST_TLS_PORT"):
        ENV.pop(var, None)
    status, err, _ = nested_fixture({"IMAPTEST_DOVECOT": "/nonexistent/dovecot"})
    check("missing Dovecot: says what to install", status == 99 and "apt-get install dovecot-imapd" in err, err)
    status, err, _ = nested_fixture({"IMAPTEST_DOVECOT": "/bin/false"})
    check("Dovecot that fails: says it did not start", status == 99 and "did not start" in err, err)
    status, err, seconds = nested_fixture({"IMAPTEST_PORT": str(PORT)})
    check("busy port: says it is in use, promptly", status == 99 and "already in use" in err and seconds < 30,
          (status, err, seconds))
    status, err, _ = nested_fixture({})
    check("a second fixture beside this one starts on its own ports", status == 0, err)
    status, err, _ = nested_fixture({"IMAPTEST_CAPABILITY": "IMAP4rev1\n  ssl = no"})
    check("IMAPTEST_CAPABILITY that is not a list of atoms: says so", status == 99 and "IMAPTEST_CAPABILITY" in err,
          (status, err))


def test_capability_setting():
    """IMAPTEST_CAPABILITY is what Dovecot advertises after login."""
    wanted = "IMAP4rev1 SASL-IR ID ENABLE IDLE UIDPLUS CONDSTORE ESEARCH LITERAL+"
    env = dict(ENV)
    env["IMAPTEST_CAPABILITY"] = wanted
    for var in ("IMAPTEST_PORT", "IMAPTEST_TLS_PORT"):
        env.pop(var, None)
    script = ("import imaplib, os; m = imaplib.IMAP4(os.environ['IMAPTEST_HOST'], int(os.environ['IMAPTEST_PORT']));"
              "m.login(os.environ['IMAPTEST_USER'], os.environ['IMAPTEST_PASS']);"
              "print(m.capability()[1][0].decode()); m.logout()")
    proc = subprocess.run([os.path.join(os.path.dirname(__file__), "with-dovecot"), sys.executable, "-c", script],
                          env=env, capture_output=True, text=True, timeout=60)
    check("IMAPTEST_CAPABILITY: Dovecot advertises exactly that list after login",
          proc.returncode == 0 and proc.stdout.split() == wanted.split(), (proc.returncode, proc.stdout, proc.stderr))


test_implicit_tls_session()
test_implicit_tls_session("IMAPTEST_USER3", "IMAPTEST_PASS3")
test_starttls_and_second_user()
test_untrusted_ca_refused()
test_capability_setting()
test_fixture_errors()
sys.exit(summary())
