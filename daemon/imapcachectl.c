/* SPDX-License-Identifier: MIT */
/* imapcachectl: the administration tool; dispatches to one subcommand per ctl-* module. */
#include "config.h"
#include "ctl-cache.h"
#include "ctl-client.h"
#include "ctl-inspect.h"
#include "ctl-verify.h"
#include "ctl-warm.h"

#include <stdio.h>
#include <string.h>
#include <sysexits.h>

struct ctl_command {
	const char *name;
	int (*run)(const struct ctl_client_options *options, int argc, char **argv, FILE *out, FILE *err);
	const char *usage;
};

/* inspect reads a file and needs no daemon. */
static int ctl_run_inspect(const struct ctl_client_options *options, int argc, char **argv, FILE *out, FILE *err)
{
	(void)options;
	return ctl_inspect_run(argc, argv, out, err);
}

static const struct ctl_command ctl_commands[] = {
	{ "inspect", ctl_run_inspect, ctl_inspect_usage },
	{ "stats", ctl_cache_stats, ctl_cache_stats_usage },
	{ "purge", ctl_cache_purge, ctl_cache_purge_usage },
	{ "warm", ctl_warm_run, ctl_warm_usage },
	{ "verify", ctl_verify_run, ctl_verify_usage },
};

static void ctl_usage(FILE *out)
{
	fprintf(out, "usage: imapcachectl [--help | --version] [-c CONFIG | --socket PATH] COMMAND [ARGS]\n\n"
		     "commands:\n");
	for (size_t i = 0; i < sizeof(ctl_commands) / sizeof(ctl_commands[0]); i++)
		fprintf(out, "  %s\n", ctl_commands[i].usage);
	fprintf(out, "\nSee imapcachectl(1).\n");
}

/* Takes the options before the command; returns argv's index of the command, or -1. */
static int ctl_parse_options(int argc, char **argv, struct ctl_client_options *options)
{
	int i = 1;

	while (i < argc && argv[i][0] == '-') {
		if (i + 1 >= argc)
			return -1;
		if (strcmp(argv[i], "-c") == 0)
			options->config_path = argv[i + 1];
		else if (strcmp(argv[i], "--socket") == 0)
			options->socket_path = argv[i + 1];
		else
			return -1;
		i += 2;
	}
	return i < argc ? i : -1;
}

int main(int argc, char **argv)
{
	struct ctl_client_options options = { 0 };
	int first;

	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
			  strcmp(argv[1], "help") == 0)) {
		ctl_usage(stdout);
		return 0;
	}
	if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
		printf("imapcachectl %s\n", PACKAGE_VERSION);
		return 0;
	}
	first = ctl_parse_options(argc, argv, &options);
	if (first < 0) {
		ctl_usage(stderr);
		return EX_USAGE;
	}
	for (size_t i = 0; i < sizeof(ctl_commands) / sizeof(ctl_commands[0]); i++) {
		if (strcmp(argv[first], ctl_commands[i].name) == 0)
			return ctl_commands[i].run(&options, argc - first, argv + first, stdout, stderr);
	}
	fprintf(stderr, "imapcachectl: unknown command '%s'\n", argv[first]);
	ctl_usage(stderr);
	return EX_USAGE;
}
