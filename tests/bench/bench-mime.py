#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Python's side of bench-mime: parses every message of a corpus with
email's BytesParser (compat32) and walks the parts, reading each content
type; prints the throughput in MB/s on one line."""
import email.parser
import os
import sys
import time

ROUNDS = 1  # the baseline is slow; one pass over the corpus is enough


def main():
    base = os.path.join(sys.argv[1], "Maildir", "cur")
    messages = [open(os.path.join(base, n), "rb").read() for n in os.listdir(base)]
    total = sum(len(m) for m in messages)
    parser = email.parser.BytesParser()
    best = None
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for data in messages:
            msg = parser.parsebytes(data)
            for part in msg.walk():
                part.get_content_type()
        elapsed = time.perf_counter() - started
        best = elapsed if best is None else min(best, elapsed)
    print("%.2f" % (total / best / 1e6))


if __name__ == "__main__":
    main()
