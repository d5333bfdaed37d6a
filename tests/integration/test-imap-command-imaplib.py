#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Parses what a real client sends with imap-parser and imap-command: every
byte Python's imaplib writes for each of its commands (against the test
Dovecot, so literals get their continuations) goes to imap-command-dump; each
command must parse, except PARTIAL, which RFC 3501 dropped."""
import imaplib
import os
import subprocess
import sys
import time

from checks import check, summary

ENV = os.environ
HOST, PORT = ENV["IMAPTEST_HOST"], int(ENV["IMAPTEST_PORT"])
DUMP = os.path.join(ENV.get("top_builddir", "."), "tests", "integration", "imap-command-dump")


class RecordingIMAP4(imaplib.IMAP4):
    """imaplib, keeping every byte it sends."""
    sent = bytearray()

    def send(self, data):
        self.sent += data
        return super().send(data)


def record_session():
    m = RecordingIMAP4(HOST, PORT, timeout=30)
    m.authenticate("PLAIN", lambda challenge: b"\0%s\0%s" % (ENV["IMAPTEST_USER"].encode(),
                                                            ENV["IMAPTEST_PASS"].encode()))
    m.capability()
    m.noop()
    m.create("imaplib-test")
    m.subscribe("imaplib-test")
    m.lsub()
    m.list('""', "*")
    m.status("INBOX", "(MESSAGES UIDNEXT)")
    m.append("imaplib-test", r"(\Seen $Label1)", imaplib.Time2Internaldate(1700000000),
             b"Subject: hi\r\n\r\nbody \"with\" {braces}\r\n")
    m.select("imaplib-test")
    m.fetch("1", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY[]<0.10>)")
    m.fetch("1:*", "FULL")
    try:
        m.partial("1", "RFC822", "0", "5")  # RFC 3501 dropped PARTIAL; Dovecot says BAD
    except imaplib.IMAP4.error:
        pass
    m.search(None, "OR", "SEEN", "UNSEEN", "SUBJECT", '"hi"', "SINCE", "1-Jan-2020")
    m.search("UTF-8", "TEXT", '"body"')
    m.uid("SEARCH", "ALL")
    m.store("1", "+FLAGS", r"(\Flagged)")
    m.uid("STORE", "1:*", "-FLAGS.SILENT", r"(\Flagged)")
    m.copy("1", "INBOX")
    m.uid("COPY", "1", "INBOX")
    m.check()
    m.expunge()
    m.close()
    m.select("INBOX", readonly=True)
    m.xatom("NAMESPACE")
    m.unselect()
    m.rename("imaplib-test", "imaplib-test2")
    m.unsubscribe("imaplib-test2")
    m.delete("imaplib-test2")
    m.logout()
    return bytes(m.sent)


def main():
    sent = record_session()
    dump = subprocess.run([DUMP], input=sent, capture_output=True, timeout=60)
    lines = dump.stdout.decode().splitlines()
    errors = [line for line in lines if line.startswith("ERROR")]
    check("only PARTIAL is refused", len(errors) == 1 and "UNKNOWN_COMMAND" in errors[0] and
          "PARTIAL" in errors[0], errors)
    expected = ["CAPABILITY", "AUTHENTICATE PLAIN", "CAPABILITY", "NOOP", "CREATE", "SUBSCRIBE", "LSUB", "LIST", "STATUS",
                "APPEND", "SELECT", "FETCH", "FETCH", "SEARCH", "SEARCH", "UID SEARCH", "STORE", "UID STORE",
                "COPY", "UID COPY", "CHECK", "EXPUNGE", "CLOSE", "EXAMINE", "NAMESPACE", "UNSELECT",
                "RENAME", "UNSUBSCRIBE", "DELETE", "LOGOUT"]
    names = [" ".join(line.split()[:2]) if line.startswith("UID ") else line.split()[0]
             for line in lines if not line.startswith(("ERROR", "LITERAL", "SASL"))]
    names = [("AUTHENTICATE PLAIN" if n == "AUTHENTICATE" else n) for n in names]
    check("every command in order", names == expected, names)
    check("the SASL response line is read as text", any(l.startswith("SASL ") for l in lines))
    append = [l for l in lines if l.startswith("APPEND")]
    check("APPEND: mailbox, two flags, date and message size",
          append == ["APPEND imaplib-test flags=2 date=1700000000 size=37"], append)
    check("APPEND's literal was announced", "LITERAL 37" in lines)
    fetches = [l for l in lines if l.startswith("FETCH")]
    check("FETCH attributes and the FULL macro", fetches == ["FETCH attrs=4", "FETCH attrs=5"], fetches)
    search = [l for l in lines if l.startswith("SEARCH")]
    check("SEARCH keys", search == ["SEARCH keys=3", "SEARCH keys=1"], search)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
