/* SPDX-License-Identifier: MIT */
/* ctl-warm: "imapcachectl warm", which fills mailboxes whole by fetching them through the daemon. */
#ifndef IMAPCACHE_CTL_WARM_H
#define IMAPCACHE_CTL_WARM_H

#include "ctl-client.h"

#include <stddef.h>
#include <stdio.h>

#define CTL_WARM_TIMEOUT_SECONDS 120  /* one response line (or literal piece) may take this long */
#define CTL_WARM_MAX_PASSWORD 1024    /* a password line longer than this is refused */
#define CTL_WARM_EXIT_INTERRUPTED 130 /* 128 + SIGINT, as shells report it */

/* Runs "warm [--connect HOST:PORT] [--password-file FILE] ACCOUNT
   MAILBOX..." (argv[0] = "warm"): logs in to the daemon's listener as
   ACCOUNT (the daemon logs in upstream), EXAMINEs each mailbox and fetches
   BODY.PEEK[] of every message with one FETCH (one round trip; the
   daemon streams each body into its store as it passes), discarding it,
   so that the daemon's fill stores it. The listener: --connect, else the config's
   first listener with tls = "none" (its address, 127.0.0.1 for 0.0.0.0).
   The password: --password-file's first line, else standard input's
   first line when it is not a terminal, else a prompt on the terminal
   without echo; never the command line. Progress on stderr: a bar when it
   is a terminal, else one line per mailbox on out. Returns 0, or a
   sysexits code (69: no listener answers; 77: login refused; 65: a
   mailbox can't be examined), or 130 after SIGINT (the connection is
   closed at once: the daemon keeps no half-stored body). */
int ctl_warm_run(const struct ctl_client_options *options, int argc, char **argv, FILE *out, FILE *err);

/* Reads the password of an account into password (size bytes, at least
   CTL_WARM_MAX_PASSWORD + 2): the first line of file, else of standard
   input when it is not a terminal, else asked for on the terminal without
   echo; never the command line. Returns 0, or a sysexits code after a
   message on err (66: can't be read; 65: longer than
   CTL_WARM_MAX_PASSWORD). The caller wipes it (explicit_bzero). */
int ctl_warm_read_password(const char *file, char *password, size_t size, FILE *err);

extern const char ctl_warm_usage[];

#endif
