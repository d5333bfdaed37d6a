#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# imap-util-table: prints what Python's imaplib gives for the inputs test-imap-util checks.
# One case per line, fields separated by tabs, bytes in hex:
#   int2ap <n> <hex result>
#   flags <hex resp> <count> <hex of the flags joined by one space>
#   internaldate <hex resp> <utc seconds, local time, dst | None | error>
#   time2internaldate <utc> <zone minutes> <hex result>     (an aware datetime)
#   time2internaldate_local <utc> <hex result>             (a number, in TZ)
#   quote <hex input> <hex result>                         (IMAP4._quote)
import imaplib
import sys
import time
from datetime import datetime, timedelta, timezone


def h(data):
    if isinstance(data, str):
        data = data.encode()
    return data.hex() or "-"


def out(*fields):
    print("\t".join(str(f) for f in fields))


for n in [0, 1, 15, 16, 17, 255, 256, 4095, 65536, 123456789, 2**32, 2**63 - 1, -1, -16, -2**63]:
    out("int2ap", n, h(imaplib.Int2AP(n)))

flags_cases = [
    b'1 (FLAGS (\\Seen \\Answered))',
    b'* 1 FETCH (FLAGS ())',
    b'(UID 5 FLAGS (\\Seen $Junk) MODSEQ (7))',
    b'FLAGS (\\Seen) FLAGS (\\Draft \\Deleted)',
    b'FLAGS (a b) x FLAGS (c d',
    b'FLAGS (a\tb  c)',
    b'no flags here',
    b'FLAGS (\\Seen',
    b'flags (\\Seen)',
    b'first line\nFLAGS (\\Seen)',
    b'FLAGS (a\nb c) (d)',
    b'FLAGS (x\x0by\x0cz\rw)',
    b'',
]
for resp in flags_cases:
    flags = imaplib.ParseFlags(resp)
    out("flags", h(resp), len(flags), h(b" ".join(flags)))

date_cases = [
    b'25 (INTERNALDATE "17-Jul-1996 02:44:25 -0700")',
    b'INTERNALDATE "01-Jan-1970 00:00:00 +0000"',
    b'INTERNALDATE " 7-Feb-2024 23:59:59 +0530"',
    b'INTERNALDATE "31-Dec-1999 23:59:59 -1200"',
    b'INTERNALDATE "29-Feb-2000 12:00:00 +1400"',
    b'INTERNALDATE "39-Jan-2021 25:61:61 +0000"',
    b'INTERNALDATE "17-jul-1996 02:44:25 -0700"',
    b'INTERNALDATE "17-Foo-1996 02:44:25 -0700"',
    b'INTERNALDATE "17-Jul-96 02:44:25 -0700"',
    b'INTERNALDATE "17-Jul-1996 02:44:25"',
    b'INTERNALDATE "47-Jul-1996 02:44:25 +0000"',
    b'INTERNALDATE "17-Jul-1996 02:44:25 +0000" INTERNALDATE "18-Jul-1996 02:44:25 +0000"',
    b'INTERNALDATE "17-Jul-1996 02:44:25 +0000" INTERNALDATE "bad"',
    b'x\nINTERNALDATE "17-Jul-1996 02:44:25 +0000"',
    b'INTERNALDATE "01-Mar-1900 00:00:00 +0000"',
    b'INTERNALDATE "15-Jun-2038 06:07:08 -0030"',
    b'',
]
for resp in date_cases:
    try:
        t = imaplib.Internaldate2tuple(resp)
        result = "None" if t is None else "%d %s dst=%d" % (
            time.mktime(t), time.strftime("%Y-%m-%d %H:%M:%S", t), t.tm_isdst)
    except Exception:
        result = "error"
    out("internaldate", h(resp), result)

moments = [0, 1, 86399, 86400, 837596665, 951825600, 1720346400, 2147483647, 4102444800, -1, -86401]
for utc in moments:
    for zone in [0, 120, -420, 330, -90, 840, -720]:
        dt = datetime.fromtimestamp(utc, timezone(timedelta(minutes=zone)))
        out("time2internaldate", utc, zone, h(imaplib.Time2Internaldate(dt)))
    out("time2internaldate_local", utc, h(imaplib.Time2Internaldate(utc)))

quote_cases = ["INBOX", "", "with space", 'say "hi"', "back\\slash", '\\"', "a]b", "NIL", "nil",
               "Sent Items", "%", "*", "{5}", "(x)", "tab\there", "\x7f"]
for s in quote_cases:
    out("quote", h(s), h(imaplib.IMAP4._quote(None, s)))
sys.stdout.flush()
