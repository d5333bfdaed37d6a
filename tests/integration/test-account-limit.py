#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""limits.sessions_per_account (issue 13 item 5): with a limit of 3, a
fourth login of one account is refused with NO [LIMIT] once the upstream
accepted its password; a wrong password still gets the upstream's own NO
(the limit says nothing of an account to whoever lacks its password);
the refused client stays connected and logs in once a session of the
account has ended; another account is not affected. Twice: with the pool
(the refused login's upstream connection goes to it, and the next login
takes it) and without. The daemon runs on a free loopback port and is
stopped by its PID."""
import re
import sys

from checks import check, summary
from proxyfixture import PASS, PASS2, USER, USER2, Daemon, Raw, quote, upstream_dovecot

LIMIT = 3


def login(conn, user, password, tag):
    conn.send(("%s LOGIN %s %s\r\n" % (tag, quote(user), quote(password))).encode())
    return conn.until_tagged(tag)[-1]


def run(label, pool):
    extra = "limits = { sessions_per_account = %d; };\npool = %s;\n" % (LIMIT, pool)
    daemon = Daemon(upstream_dovecot(), extra=extra)
    try:
        held = [Raw(daemon.port, greeting=True) for _ in range(LIMIT)]
        answers = [login(conn, USER, PASS, "a%d" % i) for i, conn in enumerate(held)]
        check("%s: %d sessions of one account log in" % (label, LIMIT),
              all(" OK " in a for a in answers), answers)
        extra_conn = Raw(daemon.port, greeting=True)
        wrong = login(extra_conn, USER, "not the password", "w1")
        check("%s: past the limit, a wrong password gets the upstream's NO, not [LIMIT]" % label,
              wrong.startswith("w1 NO ") and "[LIMIT]" not in wrong, wrong)
        refused = login(extra_conn, USER, PASS, "b1")
        check("%s: the next login of the account gets NO [LIMIT]" % label,
              re.match(r"b1 NO \[LIMIT\] ", refused) is not None, refused)
        check("%s: ... and a log line says why" % label,
              daemon.wait_log(r"refused: %d sessions of the account already" % LIMIT) is not None)
        extra_conn.send(b"c1 CAPABILITY\r\n")
        check("%s: the refused client is still connected, not logged in" % label,
              "c1 OK" in extra_conn.until_tagged("c1")[-1])
        other = Raw(daemon.port, greeting=True)
        check("%s: another account logs in meanwhile" % label, " OK " in login(other, USER2, PASS2, "o1"))
        held[0].send(b"z LOGOUT\r\n")
        held[0].until_tagged("z")
        held[0].close()
        again = ""
        for attempt in range(20):  # the ended session leaves as its LOGOUT is answered
            again = login(extra_conn, USER, PASS, "d%d" % attempt)
            if " OK " in again:
                break
        check("%s: once a session of the account ended, the refused client logs in" % label,
              " OK " in again, again)
        extra_conn.send(b"e1 SELECT INBOX\r\n")
        check("%s: ... and works" % label, "e1 OK" in extra_conn.until_tagged("e1")[-1])
        for conn in held[1:] + [extra_conn, other]:
            conn.close()
    finally:
        status = daemon.stop()
        check("%s: the daemon exited cleanly" % label, status == 0, daemon.log()[-1500:])


def main():
    run("pooled", "{ size = 4; }")
    run("no pool", "{ size = 0; }")
    return summary()


if __name__ == "__main__":
    sys.exit(main())
