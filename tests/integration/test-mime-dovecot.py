#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Differential test of the MIME library against Dovecot: for every message
of the generated corpus (already in the fixture's INBOX) Dovecot's ENVELOPE,
BODYSTRUCTURE, BODY, BODY[HEADER.FIELDS (...)], and for every part
BODY[n.MIME] and BODY[n], must equal what `imapcachectl inspect` computes
from the same bytes (100% required). CPython's test_email messages are
APPENDed to a mailbox of their own and compared too; every disagreement
there must be listed with its RFC reason in mime-dovecot-disagreements.txt
(compat32 and Dovecot differ on broken mail), and every listed one must
still happen."""
import imaplib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from checks import check, summary

ENV = os.environ
HERE = os.path.dirname(os.path.abspath(__file__))
CTL = os.path.join(ENV.get("top_builddir", os.path.join(HERE, "..", "..")), "daemon", "imapcachectl")
FIELDS = "FROM TO CC SUBJECT DATE MESSAGE-ID CONTENT-TYPE IN-REPLY-TO REFERENCES"
TIMEOUT = 60  # seconds for one inspect run
DISAGREEMENTS = os.path.join(HERE, "mime-dovecot-disagreements.txt")
SCRATCH = tempfile.mkdtemp(prefix="test-mime-dovecot.")


def item_matches(pattern, item):
    """An item of the list matches literally; only "*" is a wildcard."""
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), item) is not None


def load_disagreements():
    """(message, item pattern) -> reason from the checked-in list."""
    listed = {}
    for line in open(DISAGREEMENTS, encoding="utf-8"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 2)
        if len(fields) < 3:
            raise SystemExit("FAIL: %s: line without a reason: %r" % (DISAGREEMENTS, line))
        listed[(fields[0], fields[1])] = fields[2]
    return listed


def inspect(path, *args):
    run = subprocess.run([CTL, "inspect"] + list(args) + [path], capture_output=True, timeout=TIMEOUT)
    if run.returncode != 0:
        return None
    return run.stdout


def flatten(data):
    """imaplib's FETCH data back into the bytes the server sent."""
    out = b""
    for item in data:
        if isinstance(item, tuple):
            out += item[0] + b"\r\n" + item[1]
        elif item is not None:
            out += item
    return out


def sexp_end(text, start):
    """End of the parenthesized value, quoted string, literal or atom at start."""
    i = start
    if text[i:i + 1] == b"(":
        depth = 0
        while i < len(text):
            c = text[i:i + 1]
            if c == b'"':
                i = sexp_end(text, i)
                continue
            if c == b"{":
                i = sexp_end(text, i)
                continue
            if c == b"(":
                depth += 1
            elif c == b")":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return i
    if text[i:i + 1] == b'"':
        i += 1
        while i < len(text) and text[i:i + 1] != b'"':
            i += 2 if text[i:i + 1] == b"\\" else 1
        return i + 1
    if text[i:i + 1] == b"{":
        m = re.match(rb"\{(\d+)\}\r\n", text[i:])
        return i + m.end() + int(m.group(1))
    m = re.match(rb"[^ ()]+", text[i:])
    return i + m.end()


def fetch_item(m, uid, item):
    typ, data = m.uid("FETCH", str(uid), "(%s)" % item)
    if typ != "OK" or not data or data[0] is None:
        return None
    raw = flatten(data)
    name = item.replace(".PEEK", "").encode()
    pos = raw.find(name + b" ")
    if pos < 0:
        # BODY[...] comes back with the section as sent; find its "] "
        pos = raw.find(b"]", raw.find(name.split(b"[")[0]))
        pos = pos + 1 if pos >= 0 else -1
        if raw[pos:pos + 1] == b"<":
            pos = raw.find(b">", pos) + 1
        start = pos + 1
    else:
        start = pos + len(name) + 1
    if pos < 0:
        return None
    end = sexp_end(raw, start)
    value = raw[start:end]
    if value.startswith(b"{"):
        return value[value.index(b"\n") + 1:]
    if value.startswith(b'"'):
        return re.sub(rb'\\(.)', rb'\1', value[1:-1])
    return value


def compare_message(m, uid, path, label, failures):
    report = inspect(path, "--json")
    if report is None:
        failures.append((label, "inspect failed"))
        return
    report = json.loads(report)
    # Strings in the JSON are the IMAP strings; literals hold raw bytes.
    for item, key in (("ENVELOPE", "envelope"), ("BODYSTRUCTURE", "bodystructure")):
        theirs = fetch_item(m, uid, item)
        ours = report[key].encode("utf-8", "surrogateescape")
        if theirs != ours:
            failures.append((label, item, theirs[:600] if theirs else theirs, ours[:600]))
    theirs = fetch_item(m, uid, "BODY")
    body = inspect(path, "--imap", "BODY")
    if theirs != body:
        failures.append((label, "BODY", theirs[:600] if theirs else theirs, body[:600] if body else body))
    spec = "HEADER.FIELDS (%s)" % FIELDS
    theirs = fetch_item(m, uid, "BODY.PEEK[%s]" % spec)
    ours = inspect(path, "--section", spec)
    if theirs != ours:
        failures.append((label, spec, theirs, ours))
    sections = []
    for part in report["parts"]:
        if part["section"] and part["section"] not in sections:
            sections.append(part["section"])
    for section in sections:
        for spec in (section + ".MIME", section):
            theirs = fetch_item(m, uid, "BODY.PEEK[%s]" % spec)
            ours = inspect(path, "--section", spec)
            if theirs != ours:
                failures.append((label, "BODY[%s]" % spec, (theirs or b"")[:300], (ours or b"")[:300],
                                 len(theirs or b""), len(ours or b"")))


def nested(after_inner, tail=b"--A--\r\n", inner_close=b"--C--", eol=b"\r\n"):
    """A multipart/mixed (boundary A) whose first part is a
    multipart/alternative (boundary C): after_inner comes between the
    inner close delimiter line and the outer boundary."""
    lines = [b"From: a@example.org", b"Subject: layout", b"MIME-Version: 1.0",
             b'Content-Type: multipart/mixed; boundary="A"', b"", b"--A",
             b'Content-Type: multipart/alternative; boundary="C"', b"", b"--C",
             b"Content-Type: text/plain", b"", b"plain", b"", b"--C", b"Content-Type: text/html", b"",
             b"<p>html</p>", b"", inner_close]
    head = eol.join(lines) + eol + after_inner
    return head + b"--A" + eol + b"Content-Type: text/plain" + eol + eol + b"second" + eol + tail


# Boundary layouts where the line end between a part's last line and the
# next boundary is counted differently by readers of RFC 2046 (the CRLF
# before a boundary is the boundary's; after a close delimiter Dovecot
# keeps it in the part, Gmail writes an inner close delimiter right before
# the outer boundary): every section must be Dovecot's.
LAYOUTS = [
    ("inner close, then the outer boundary (Gmail)", nested(b"")),
    ("inner close with spaces after it", nested(b"", inner_close=b"--C--  ")),
    ("inner close, an epilogue line, then the outer boundary", nested(b"\r\n")),
    ("inner close, epilogue text", nested(b"epilogue\r\n")),
    ("inner close, then the outer close without a line end", nested(b"", tail=b"")),
    ("bare LF line ends", nested(b"", eol=b"\n", tail=b"--A--\n")),
    ("three levels closing at once",
     b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=A\r\n\r\n--A\r\n"
     b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
     b"Content-Type: multipart/alternative; boundary=C\r\n\r\n--C\r\n\r\nx\r\n--C--\r\n--B--\r\n--A--\r\n"),
    ("an inner multipart closed twice", nested(b"--C--\r\n")),
    ("a multipart in a message/rfc822, closed right before the outer boundary",
     b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=A\r\n\r\n--A\r\n"
     b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nMIME-Version: 1.0\r\n"
     b"Content-Type: multipart/alternative; boundary=C\r\n\r\n--C\r\n\r\nx\r\n--C--\r\n--A\r\n"
     b"\r\nlast\r\n--A--\r\n"),
]


def compare_layouts(m):
    """The LAYOUTS, APPENDed to a mailbox of their own: 100% agreement."""
    m.create("mime-layouts")
    for _, data in LAYOUTS:
        typ, _ = m.append("mime-layouts", None, None, data)
        check("APPEND a layout", typ == "OK")
    m.select("mime-layouts", readonly=True)
    typ, data = m.uid("SEARCH", None, "ALL")
    for uid, (name, message) in zip([int(u) for u in data[0].split()], LAYOUTS):
        path = os.path.join(SCRATCH, "layout.eml")
        with open(path, "wb") as f:
            f.write(message)
        failures = []
        compare_message(m, uid, path, name, failures)
        for failure in failures:
            print("FAIL: disagreement %r" % (failure,))
        check("boundary layout, %s: every section is Dovecot's" % name, not failures)


def main():
    if not os.access(CTL, os.X_OK):
        print("FAIL: %s is not built" % CTL)
        return 1
    manifest_path = ENV["IMAPTEST_MANIFEST"]
    manifest = json.load(open(manifest_path))
    base = os.path.join(os.path.dirname(manifest_path), "Maildir")
    m = imaplib.IMAP4(ENV["IMAPTEST_HOST"], int(ENV["IMAPTEST_PORT"]))
    m.login(ENV["IMAPTEST_USER"], ENV["IMAPTEST_PASS"])
    typ, _ = m.select("INBOX", readonly=True)
    check("SELECT INBOX", typ == "OK")
    failures = []
    generated = [e for e in manifest["messages"] if e["source"] == "generated"]
    for entry in generated:
        compare_message(m, entry["uid"], os.path.join(base, entry["file"]), "uid %d" % entry["uid"], failures)
    for failure in failures[:20]:
        print("FAIL: disagreement %r" % (failure,))
    bad = len(set(f[0] for f in failures))
    check("generated corpus: Dovecot agrees on %d of %d messages (100%% required)"
          % (len(generated) - bad, len(generated)), not failures and generated)

    # CPython's messages: APPENDed, compared, reported.
    import test
    source = os.path.join(os.path.dirname(test.__file__), "test_email", "data")
    if os.path.isdir(source):
        m.create("mime-cpython")
        names = sorted(n for n in os.listdir(source) if n.startswith("msg_") and n.endswith(".txt"))
        for name in names:
            data = open(os.path.join(source, name), "rb").read()
            typ, _ = m.append("mime-cpython", None, None, data)
            check("APPEND %s" % name, typ == "OK")
        m.select("mime-cpython", readonly=True)
        typ, data = m.uid("SEARCH", None, "ALL")
        uids = [int(u) for u in data[0].split()]
        cfail = []
        for uid, name in zip(uids, names):
            compare_message(m, uid, os.path.join(source, name), name, cfail)
        listed = load_disagreements()
        seen = set()
        unlisted = []
        for failure in cfail:
            key = next((k for k in listed
                        if k[0] == failure[0] and item_matches(k[1], failure[1])), None)
            if key is None:
                unlisted.append(failure)
                print("FAIL: unlisted CPython message disagreement %r" % (failure,))
            else:
                seen.add(key)
        check("CPython messages: every Dovecot disagreement is listed with its reason "
              "(%d disagreements on %d of %d messages)"
              % (len(cfail), len(set(f[0] for f in cfail)), len(names)), not unlisted)
        gone = sorted(k for k in listed if k not in seen)
        for key in gone:
            print("FAIL: listed disagreement no longer happens: %s %s" % key)
        check("CPython messages: every listed disagreement still happens", not gone)
    compare_layouts(m)
    m.logout()
    return summary()


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)
