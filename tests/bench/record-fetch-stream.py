#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""record-fetch-stream OUT: run under tests/integration/with-dovecot; writes to
OUT every byte the server sends for SELECT INBOX and
FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE), the
recorded upstream stream that bench-imap-parse can take as its argument:

  tests/integration/with-dovecot --corpus tests/data/corpus-10k \\
      python3 tests/bench/record-fetch-stream.py fetch-10k.imap
  tests/bench/bench-imap-parse fetch-10k.imap"""
import imaplib
import os
import sys


class RecordingIMAP4(imaplib.IMAP4):
    recording = None

    def readline(self):
        line = super().readline()
        if self.recording is not None:
            self.recording += line
        return line

    def read(self, size):
        data = super().read(size)
        if self.recording is not None:
            self.recording += data
        return data


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: record-fetch-stream.py OUT")
    env = os.environ
    m = RecordingIMAP4(env["IMAPTEST_HOST"], int(env["IMAPTEST_PORT"]), timeout=300)
    m.login(env["IMAPTEST_USER"], env["IMAPTEST_PASS"])
    m.recording = bytearray()
    m.select("INBOX", readonly=True)
    typ, data = m.fetch("1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)")
    stream = bytes(m.recording)
    m.recording = None
    m.logout()
    if typ != "OK":
        sys.exit("FETCH failed: %r" % data)
    with open(sys.argv[1], "wb") as out:
        out.write(stream)
    print("%d bytes, %d FETCH responses" % (len(stream), stream.count(b" FETCH (")))


if __name__ == "__main__":
    main()
