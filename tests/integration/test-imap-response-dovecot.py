#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Parses what a real Dovecot sends with imap-parser and imap-response: every
byte of a session driven by imaplib (CAPABILITY, NAMESPACE, ID, LIST, LSUB,
STATUS, ENABLE, SELECT/EXAMINE, SEARCH, ESEARCH, FETCH of every item the
cache uses, BINARY, LOGOUT) is recorded and fed to imap-response-dump; no
line may fail, and the values must be those of the corpus manifest."""
import imaplib
import json
import os
import subprocess
import sys

from checks import check, summary

ENV = os.environ
HOST, PORT = ENV["IMAPTEST_HOST"], int(ENV["IMAPTEST_PORT"])
MANIFEST = json.load(open(ENV["IMAPTEST_MANIFEST"]))
DUMP = os.path.join(ENV.get("top_builddir", "."), "tests", "integration", "imap-response-dump")


class RecordingIMAP4(imaplib.IMAP4):
    """imaplib, keeping every byte the server sends."""
    recorded = bytearray()

    def readline(self):
        line = super().readline()
        self.recorded += line
        return line

    def read(self, size):
        data = super().read(size)
        self.recorded += data
        return data


def record_session():
    m = RecordingIMAP4(HOST, PORT, timeout=30)
    m.login(ENV["IMAPTEST_USER"], ENV["IMAPTEST_PASS"])
    m.capability()
    m.namespace()
    m.xatom("ID", '("name" "imapcached-test")')
    m.list()
    m.lsub()
    m.status("INBOX", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)")
    m.xatom("ENABLE", "CONDSTORE")
    m.select("INBOX", readonly=True)
    m.search(None, "ALL")
    m.uid("SEARCH", "ALL")
    m.search(None, "RETURN", "(MIN MAX COUNT ALL)", "ALL")
    m.fetch("1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE MODSEQ)")
    m.fetch("1:5", "(BODY.PEEK[HEADER] BODY.PEEK[TEXT]<0.100> BINARY.PEEK[1] BINARY.SIZE[1] RFC822.SIZE)")
    m.uid("FETCH", "1:*", "(FLAGS) (CHANGEDSINCE 1)")
    # Dovecot echoes header names upper-cased, quoted when they came quoted
    m.fetch("1", '(BODY.PEEK[HEADER.FIELDS ("Subject" "X-Not There" "a\\"b" From)])')
    m.logout()
    return bytes(m.recorded)


def main():
    stream = record_session()
    dump = subprocess.run([DUMP], input=stream, capture_output=True, timeout=60)
    lines = dump.stdout.decode().splitlines()
    errors = [line for line in lines if line.startswith("ERROR")]
    check("every line of the session parses", dump.returncode == 0 and not errors, errors[:5])

    fetched = {}
    for line in lines:
        if line.startswith("FETCH ") and " envelope=" in line:
            fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
            fetched[int(fields["uid"])] = fields
    messages = MANIFEST["messages"]
    check("one FETCH per message", len(fetched) == len(messages), "%d of %d" % (len(fetched), len(messages)))
    wrong = [msg["uid"] for msg in messages
             if msg["uid"] not in fetched
             or int(fetched[msg["uid"]]["size"]) != msg["rfc822_size"]
             or int(fetched[msg["uid"]]["date"]) != msg["internaldate"]
             or fetched[msg["uid"]]["envelope"] != "ok"]
    check("UID, RFC822.SIZE, INTERNALDATE and ENVELOPE as in the manifest", not wrong, wrong[:5])
    flags_wrong = [msg["uid"] for msg in messages if msg["uid"] in fetched and
                   sorted(f for f in fetched[msg["uid"]].get("flags", "").split(",") if f) != sorted(msg["flags"])]
    check("FLAGS as in the manifest", not flags_wrong, flags_wrong[:5])

    sections = [line for line in lines if line.startswith("FETCH ") and " body=" in line and " items=1 " not in line]
    check("BODY[HEADER], BODY[TEXT]<0.100>, BINARY[1], BINARY.SIZE[1] of five messages",
          len(sections) == 5 and all("binary=" in l and "binary.size=" in l for l in sections), sections[:2])
    partial_ok = all(int(l.split(" body=")[2].split()[0]) <= 100 for l in sections if l.count(" body=") == 2)
    check("the partial is at most 100 bytes", partial_ok)

    # Quoted names in the key come out in imap-parser's canonical form.
    section_lines = [l for l in lines if l.startswith("SECTION HEADER.FIELDS")]
    check("HEADER.FIELDS key with quoted names, canonical",
          section_lines == ['SECTION HEADER.FIELDS (SUBJECT "X-NOT THERE" "A\\"B" FROM)'], section_lines)

    count = len(messages)
    check("STATUS MESSAGES and UIDVALIDITY",
          "STATUS messages=%d uidnext=%d uidvalidity=%d" % (count, max(m["uid"] for m in messages) + 1,
                                                            MANIFEST["uidvalidity"]) in lines,
          [l for l in lines if l.startswith("STATUS")])
    check("SEARCH ALL gives every message", lines.count("SEARCH count=%d" % count) == 2)
    esearch = [l for l in lines if l.startswith("ESEARCH")]
    check("ESEARCH MIN MAX COUNT ALL", len(esearch) == 1 and " count=%d " % count in esearch[0] and
          esearch[0].startswith("ESEARCH min=1 max=%d" % count), esearch)
    check("LIST shows INBOX", "LIST INBOX" in lines)
    check("EXAMINE gives READ-ONLY", any(l.startswith("TAGGED") and "code=READ-ONLY" in l for l in lines))
    check("SELECT gives UIDVALIDITY", any("code=UIDVALIDITY/%d" % MANIFEST["uidvalidity"] in l for l in lines))
    check("CHANGEDSINCE FETCH carries MODSEQ", any(l.startswith("FETCH") and "modseq=" in l and " envelope=" not in l
                                                   for l in lines))
    check("LOGOUT gives BYE", any(l.startswith("UNTAGGED * BYE") for l in lines))
    tagged = [l for l in lines if l.startswith("TAGGED")]
    check("every command completed OK", len(tagged) >= 16 and all(" OK" in l for l in tagged), tagged)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
