#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Python's side of bench-mime: reads every message of a corpus into memory
(the same files in the same order as bench-mime), then, for each "run" line
on standard input, parses them all with email's BytesParser (compat32),
walks the parts reading each content type, and prints the thread CPU
seconds that pass took; "quit" or end of input ends it. Start-up and file
reading are outside the timed pass, as they are on the C side."""
import email.parser
import os
import sys
import time


def main():
    base = os.path.join(sys.argv[1], "Maildir", "cur")
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else None
    names = sorted(n for n in os.listdir(base) if not n.startswith("."))[:limit]
    messages = []
    for name in names:
        with open(os.path.join(base, name), "rb") as f:
            messages.append(f.read())
    parser = email.parser.BytesParser()
    print("ready %d %d" % (len(messages), sum(len(m) for m in messages)), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        started = time.thread_time()
        for data in messages:
            msg = parser.parsebytes(data)
            for part in msg.walk():
                part.get_content_type()
        print("%.6f" % (time.thread_time() - started), flush=True)


if __name__ == "__main__":
    main()
