/* SPDX-License-Identifier: MIT */
/* ctl-inspect: "imapcachectl inspect", how the MIME library understands one message. */
#ifndef IMAPCACHE_CTL_INSPECT_H
#define IMAPCACHE_CTL_INSPECT_H

#include <stdio.h>

/* Runs "inspect [--json] FILE" with argv[0] = "inspect". Writes the report
   to out and errors (one line each) to err. Returns a sysexits code: 0,
   64 for bad usage, 66 when FILE can't be opened, 74 on a read error, 65
   when the message is larger than the parser accepts. */
int ctl_inspect_run(int argc, char **argv, FILE *out, FILE *err);

/* The usage line of the subcommand, for imapcachectl --help. */
extern const char ctl_inspect_usage[];

#endif
