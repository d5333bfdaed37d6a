/* SPDX-License-Identifier: MIT */
/* imapcachectl: the administration tool; dispatches to one subcommand per ctl-* module. */
#include "config.h"
#include "ctl-inspect.h"

#include <stdio.h>
#include <string.h>

#define CTL_EXIT_USAGE 64 /* sysexits EX_USAGE */

struct ctl_command {
	const char *name;
	int (*run)(int argc, char **argv, FILE *out, FILE *err);
	const char *usage;
};

/* stats, purge and warm join this table as they are written. */
static const struct ctl_command ctl_commands[] = {
	{ "inspect", ctl_inspect_run, ctl_inspect_usage },
};

static void ctl_usage(FILE *out)
{
	fprintf(out, "usage: imapcachectl [--help | --version] COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(ctl_commands) / sizeof(ctl_commands[0]); i++)
		fprintf(out, "  %s\n", ctl_commands[i].usage);
	fprintf(out, "\nSee imapcachectl(1).\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		ctl_usage(stderr);
		return CTL_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		ctl_usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("imapcachectl %s\n", PACKAGE_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(ctl_commands) / sizeof(ctl_commands[0]); i++) {
		if (strcmp(argv[1], ctl_commands[i].name) == 0)
			return ctl_commands[i].run(argc - 1, argv + 1, stdout, stderr);
	}
	fprintf(stderr, "imapcachectl: unknown command '%s'\n", argv[1]);
	ctl_usage(stderr);
	return CTL_EXIT_USAGE;
}
