/* SPDX-License-Identifier: MIT */
/* ctl-cache: "imapcachectl stats" and "imapcachectl purge", on the running daemon's cache. */
#include "config.h"
#include "ctl-cache.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#define CTL_CACHE_MAX_FIELDS 7 /* the most a line of the answer has: MAILBOX and six values */
#define CTL_CACHE_KINDS 32     /* item kinds kept per mailbox; the daemon counts 10 */

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

/* One mailbox of the answer: its store's figures and its counts (fields
   of the answer, split in place). */
struct ctl_cache_mailbox {
	const char *account, *mailbox;
	const char *messages, *whole, *bytes;  /* NULL: not in the store */
	const char *indexed;                   /* whole messages whose text is indexed (TEXT, BODY) */
	const char *kinds[CTL_CACHE_KINDS], *hits[CTL_CACHE_KINDS], *misses[CTL_CACHE_KINDS];
	unsigned int kind_count;
	const char *saved;                     /* NULL: nothing counted */
	uint64_t all_hits, all_misses;
};

/* The answer, split: mailboxes in order of first mention, daemon-wide counts. */
struct ctl_cache_stats {
	struct ctl_cache_mailbox *mailboxes;
	size_t count;
	const char *kinds[CTL_CACHE_KINDS], *hits[CTL_CACHE_KINDS], *misses[CTL_CACHE_KINDS];
	unsigned int kind_count;
	const char *saved;
};

/* The mailbox account/name of stats, added when new; NULL when memory runs out. */
static struct ctl_cache_mailbox *ctl_cache_mailbox(struct ctl_cache_stats *stats, const char *account,
						   const char *name)
{
	struct ctl_cache_mailbox *grown;

	for (size_t i = 0; i < stats->count; i++) {
		if (strcmp(stats->mailboxes[i].account, account) == 0 && strcmp(stats->mailboxes[i].mailbox, name) == 0)
			return &stats->mailboxes[i];
	}
	grown = realloc(stats->mailboxes, (stats->count + 1) * sizeof(*grown));
	if (grown == NULL)
		return NULL;
	stats->mailboxes = grown;
	memset(&grown[stats->count], 0, sizeof(*grown));
	grown[stats->count].account = account;
	grown[stats->count].mailbox = name;
	return &grown[stats->count++];
}

/* Takes one line of the STATS answer (split into count fields f). */
static void ctl_cache_stats_line(struct ctl_cache_stats *stats, char **f, int count)
{
	struct ctl_cache_mailbox *mailbox;

	if (strcmp(f[0], "MAILBOX") == 0 && count == 7 && (mailbox = ctl_cache_mailbox(stats, f[1], f[2])) != NULL) {
		mailbox->messages = f[3];
		mailbox->whole = f[4];
		mailbox->bytes = f[5];
		mailbox->indexed = f[6];
	} else if (strcmp(f[0], "MAILBOXITEM") == 0 && count == 6 &&
		   (mailbox = ctl_cache_mailbox(stats, f[1], f[2])) != NULL && mailbox->kind_count < CTL_CACHE_KINDS) {
		mailbox->kinds[mailbox->kind_count] = f[3];
		mailbox->hits[mailbox->kind_count] = f[4];
		mailbox->misses[mailbox->kind_count++] = f[5];
		mailbox->all_hits += strtoull(f[4], NULL, 10);
		mailbox->all_misses += strtoull(f[5], NULL, 10);
	} else if (strcmp(f[0], "MAILBOXSAVED") == 0 && count == 4 &&
		   (mailbox = ctl_cache_mailbox(stats, f[1], f[2])) != NULL) {
		mailbox->saved = f[3];
	} else if (strcmp(f[0], "ITEM") == 0 && count == 4 && stats->kind_count < CTL_CACHE_KINDS) {
		stats->kinds[stats->kind_count] = f[1];
		stats->hits[stats->kind_count] = f[2];
		stats->misses[stats->kind_count++] = f[3];
	} else if (strcmp(f[0], "SAVED") == 0 && count == 2) {
		stats->saved = f[1];
	}
}

static void ctl_cache_stats_parse(char *answer, struct ctl_cache_stats *stats)
{
	char *save_line;

	memset(stats, 0, sizeof(*stats));
	for (char *line = strtok_r(answer, "\n", &save_line); line != NULL; line = strtok_r(NULL, "\n", &save_line)) {
		char *f[CTL_CACHE_MAX_FIELDS];

		ctl_cache_stats_line(stats, f, ctl_cache_split(line, f));
	}
}

/* "kind": {"hits": h, "misses": m, "hit_rate": r}, for each kind. */
static void ctl_cache_json_items(FILE *out, const char *const *kinds, const char *const *hits,
				 const char *const *misses, unsigned int count)
{
	fputc('{', out);
	for (unsigned int i = 0; i < count; i++)
		fprintf(out, "%s\"%s\": {\"hits\": %s, \"misses\": %s, \"hit_rate\": %.4f}", i > 0 ? ", " : "", kinds[i],
			hits[i], misses[i], ctl_cache_rate(hits[i], misses[i]));
	fputc('}', out);
}

/* Writes the answer as one JSON object: mailboxes, items, saved_bytes. */
static void ctl_cache_stats_json(const struct ctl_cache_stats *stats, FILE *out)
{
	fprintf(out, "{\"mailboxes\": [");
	for (size_t i = 0; i < stats->count; i++) {
		const struct ctl_cache_mailbox *m = &stats->mailboxes[i];

		fprintf(out, "%s{\"account\": ", i > 0 ? ", " : "");
		ctl_cache_json_string(out, m->account);
		fprintf(out, ", \"mailbox\": ");
		ctl_cache_json_string(out, m->mailbox);
		fprintf(out, ", \"messages\": %s, \"whole\": %s, \"indexed\": %s, \"bytes\": %s, \"items\": ",
			m->messages != NULL ? m->messages : "null", m->whole != NULL ? m->whole : "null",
			m->indexed != NULL ? m->indexed : "null", m->bytes != NULL ? m->bytes : "null");
		ctl_cache_json_items(out, m->kinds, m->hits, m->misses, m->kind_count);
		fprintf(out, ", \"saved_bytes\": %s}", m->saved != NULL ? m->saved : "0");
	}
	fprintf(out, "], \"items\": ");
	ctl_cache_json_items(out, stats->kinds, stats->hits, stats->misses, stats->kind_count);
	fprintf(out, ", \"saved_bytes\": %s}\n", stats->saved != NULL ? stats->saved : "0");
}

/* A rate as text: "-" when nothing was counted. */
static const char *ctl_cache_rate_text(uint64_t hits, uint64_t misses, char *text, size_t size)
{
	if (hits + misses == 0)
		return "-";
	snprintf(text, size, "%.1f%%", 100.0 * (double)hits / (double)(hits + misses));
	return text;
}

/* The table of mailboxes, then each one's counts per kind. */
static void ctl_cache_stats_text_mailboxes(const struct ctl_cache_stats *stats, FILE *out)
{
	char rate[16];

	fprintf(out, "%-20s %-24s %10s %10s %10s %14s %9s %14s\n", "ACCOUNT", "MAILBOX", "MESSAGES", "WHOLE", "INDEXED",
		"BYTES", "HIT RATE", "SAVED");
	for (size_t i = 0; i < stats->count; i++) {
		const struct ctl_cache_mailbox *m = &stats->mailboxes[i];

		fprintf(out, "%-20s %-24s %10s %10s %10s %14s %9s %14s\n", m->account, m->mailbox,
			m->messages != NULL ? m->messages : "-", m->whole != NULL ? m->whole : "-",
			m->indexed != NULL ? m->indexed : "-", m->bytes != NULL ? m->bytes : "-",
			ctl_cache_rate_text(m->all_hits, m->all_misses, rate, sizeof(rate)), m->saved != NULL ? m->saved : "0");
	}
	for (size_t i = 0; i < stats->count; i++) {
		const struct ctl_cache_mailbox *m = &stats->mailboxes[i];

		if (m->kind_count == 0)
			continue;
		fprintf(out, "\nhits since start, %s %s:\n%-16s %10s %10s %9s\n", m->account, m->mailbox, "ITEM", "HITS",
			"MISSES", "HIT RATE");
		for (unsigned int k = 0; k < m->kind_count; k++)
			fprintf(out, "%-16s %10s %10s %8.1f%%\n", m->kinds[k], m->hits[k], m->misses[k],
				100.0 * ctl_cache_rate(m->hits[k], m->misses[k]));
	}
}

/* Writes the answer as tables for people. */
static void ctl_cache_stats_text(const struct ctl_cache_stats *stats, FILE *out)
{
	if (stats->count > 0)
		ctl_cache_stats_text_mailboxes(stats, out);
	fprintf(out, "%shits since start (the whole daemon):\n%-16s %10s %10s %9s\n", stats->count > 0 ? "\n" : "",
		"ITEM", "HITS", "MISSES", "HIT RATE");
	for (unsigned int k = 0; k < stats->kind_count; k++)
		fprintf(out, "%-16s %10s %10s %8.1f%%\n", stats->kinds[k], stats->hits[k], stats->misses[k],
			100.0 * ctl_cache_rate(stats->hits[k], stats->misses[k]));
	fprintf(out, "upstream bytes saved: %s\n", stats->saved != NULL ? stats->saved : "0");
}

int ctl_cache_stats(const struct ctl_client_options *options, int argc, char **argv, FILE *out, FILE *err)
{
	struct ctl_cache_stats stats;
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
	ctl_cache_stats_parse(answer, &stats);
	if (json)
		ctl_cache_stats_json(&stats, out);
	else
		ctl_cache_stats_text(&stats, out);
	free(stats.mailboxes);
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
