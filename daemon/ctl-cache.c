/* SPDX-License-Identifier: MIT */
/* ctl-cache: "imapcachectl stats" and "imapcachectl purge", on the running daemon's cache. */
#include "config.h"
#include "ctl-cache.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#define CTL_CACHE_MAX_FIELDS 6 /* the most a line of the answer has: MAILBOX and five values */

const char ctl_cache_stats_usage[] = "stats [--json] [ACCOUNT [MAILBOX]]";
const char ctl_cache_purge_usage[] = "purge ACCOUNT [MAILBOX]";

/* Whether every name can be sent: the protocol separates fields by TAB. */
static bool ctl_cache_names_ok(char **names, int count, FILE *err)
{
	for (int i = 0; i < count; i++) {
		if (names[i][0] == '\0' || strpbrk(names[i], "\t\r\n") != NULL) {
			fprintf(err, "imapcachectl: an account or mailbox name must not be empty or hold a TAB, CR or LF\n");
			return false;
		}
	}
	return true;
}

/* Runs VERB with names through the daemon; *answer_r as ctl_client_request. */
static int ctl_cache_ask(const struct ctl_client_options *options, const char *verb, char **names, int count,
			 char **answer_r, FILE *err)
{
	const char *fields[3] = { verb, count > 0 ? names[0] : NULL, count > 1 ? names[1] : NULL };
	char *path = ctl_client_socket_path(options, err);
	int code;

	*answer_r = NULL;
	if (path == NULL)
		return EX_CONFIG;
	code = ctl_client_request(path, fields, 1 + count, answer_r, err);
	free(path);
	return code;
}

/* Splits line (modified) at TABs. Returns the count. */
static int ctl_cache_split(char *line, char **fields)
{
	int count = 0;

	while (count < CTL_CACHE_MAX_FIELDS) {
		char *tab = strchr(line, '\t');

		fields[count++] = line;
		if (tab == NULL)
			break;
		*tab = '\0';
		line = tab + 1;
	}
	return count;
}

static void ctl_cache_json_string(FILE *out, const char *text)
{
	fputc('"', out);
	for (const unsigned char *c = (const unsigned char *)text; *c != '\0'; c++) {
		if (*c == '"' || *c == '\\')
			fprintf(out, "\\%c", *c);
		else if (*c < 0x20)
			fprintf(out, "\\u%04x", *c);
		else
			fputc(*c, out);
	}
	fputc('"', out);
}

static double ctl_cache_rate(const char *hits, const char *misses)
{
	double h = strtod(hits, NULL), m = strtod(misses, NULL);

	return h + m > 0 ? h / (h + m) : 0.0;
}

/* Writes the answer as one JSON object: mailboxes, items, saved_bytes. */
static void ctl_cache_stats_json(char *answer, FILE *out)
{
	const char *mailbox_sep = "", *item_sep = "";
	char *saved = "0";
	char *save_line;

	fprintf(out, "{\"mailboxes\": [");
	for (char *line = strtok_r(answer, "\n", &save_line); line != NULL; line = strtok_r(NULL, "\n", &save_line)) {
		char *f[CTL_CACHE_MAX_FIELDS];
		int count = ctl_cache_split(line, f);

		if (strcmp(f[0], "MAILBOX") == 0 && count == 6) {
			fprintf(out, "%s{\"account\": ", mailbox_sep);
			ctl_cache_json_string(out, f[1]);
			fprintf(out, ", \"mailbox\": ");
			ctl_cache_json_string(out, f[2]);
			fprintf(out, ", \"messages\": %s, \"whole\": %s, \"bytes\": %s}", f[3], f[4], f[5]);
			mailbox_sep = ", ";
		} else if (strcmp(f[0], "ITEM") == 0 && count == 4) {
			if (item_sep[0] == '\0')
				fprintf(out, "], \"items\": {");
			fprintf(out, "%s\"%s\": {\"hits\": %s, \"misses\": %s, \"hit_rate\": %.4f}", item_sep, f[1], f[2],
				f[3], ctl_cache_rate(f[2], f[3]));
			item_sep = ", ";
		} else if (strcmp(f[0], "SAVED") == 0 && count == 2) {
			saved = f[1];
		}
	}
	fprintf(out, "%s}, \"saved_bytes\": %s}\n", item_sep[0] == '\0' ? "], \"items\": {" : "", saved);
}

/* Writes the answer as tables for people. */
static void ctl_cache_stats_text(char *answer, FILE *out)
{
	bool header = false, items = false;
	char *save_line;

	for (char *line = strtok_r(answer, "\n", &save_line); line != NULL; line = strtok_r(NULL, "\n", &save_line)) {
		char *f[CTL_CACHE_MAX_FIELDS];
		int count = ctl_cache_split(line, f);

		if (strcmp(f[0], "MAILBOX") == 0 && count == 6) {
			if (!header)
				fprintf(out, "%-20s %-24s %10s %10s %14s\n", "ACCOUNT", "MAILBOX", "MESSAGES", "WHOLE",
					"BYTES");
			header = true;
			fprintf(out, "%-20s %-24s %10s %10s %14s\n", f[1], f[2], f[3], f[4], f[5]);
		} else if (strcmp(f[0], "ITEM") == 0 && count == 4) {
			if (!items)
				fprintf(out, "%shits since start (the whole daemon):\n%-16s %10s %10s %9s\n",
					header ? "\n" : "", "ITEM", "HITS", "MISSES", "HIT RATE");
			items = true;
			fprintf(out, "%-16s %10s %10s %8.1f%%\n", f[1], f[2], f[3], 100.0 * ctl_cache_rate(f[2], f[3]));
		} else if (strcmp(f[0], "SAVED") == 0 && count == 2) {
			fprintf(out, "upstream bytes saved: %s\n", f[1]);
		}
	}
}

int ctl_cache_stats(const struct ctl_client_options *options, int argc, char **argv, FILE *out, FILE *err)
{
	bool json = false;
	char *answer;
	int first = 1;
	int code;

	if (argc > 1 && strcmp(argv[1], "--json") == 0) {
		json = true;
		first = 2;
	}
	if (argc - first > 2 || (argc > first && argv[first][0] == '-')) {
		fprintf(err, "usage: imapcachectl %s\n", ctl_cache_stats_usage);
		return EX_USAGE;
	}
	if (!ctl_cache_names_ok(argv + first, argc - first, err))
		return EX_USAGE;
	code = ctl_cache_ask(options, "STATS", argv + first, argc - first, &answer, err);
	if (code != 0)
		return code;
	if (json)
		ctl_cache_stats_json(answer, out);
	else
		ctl_cache_stats_text(answer, out);
	free(answer);
	return fflush(out) == 0 ? 0 : EX_IOERR;
}

int ctl_cache_purge(const struct ctl_client_options *options, int argc, char **argv, FILE *out, FILE *err)
{
	char *answer, *save_line;
	int code;

	if (argc < 2 || argc > 3 || argv[1][0] == '-') {
		fprintf(err, "usage: imapcachectl %s\n", ctl_cache_purge_usage);
		return EX_USAGE;
	}
	if (!ctl_cache_names_ok(argv + 1, argc - 1, err))
		return EX_USAGE;
	code = ctl_cache_ask(options, "PURGE", argv + 1, argc - 1, &answer, err);
	if (code != 0)
		return code;
	for (char *line = strtok_r(answer, "\n", &save_line); line != NULL; line = strtok_r(NULL, "\n", &save_line)) {
		char *f[CTL_CACHE_MAX_FIELDS];

		if (ctl_cache_split(line, f) == 3 && strcmp(f[0], "PURGED") == 0)
			fprintf(out, "purged %s %s\n", f[1], f[2]);
	}
	free(answer);
	return fflush(out) == 0 ? 0 : EX_IOERR;
}
