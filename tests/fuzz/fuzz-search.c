/* SPDX-License-Identifier: MIT */
/* fuzz-search: a SEARCH answered locally agrees with a plain reference evaluator on a mailbox made from the input. */
#include "config.h"
#include "cache.h"
#include "imap-command.h"
#include "imap-parser.h"
#include "imap-seqset.h"
#include "log.h"
#include "mailbox-view.h"
#include "search.h"

#include <event2/buffer.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/*
 * The input: a first line that describes the mailbox, then the command
 * line ("T UID SEARCH SEEN"). The first line's first byte holds options
 * (FUZZ_SEARCH_OPTION_*); every next four bytes make one message: UID gap,
 * flags, size, INTERNALDATE day. Only search_answer (search.h) is called;
 * the reference below reads the parsed key tree (imap-command.h) and the
 * mailbox it built itself, and knows nothing of search.c.
 *
 * A LOCAL answer must equal the reference's, and must not rest on
 * anything the mailbox does not know. Keys the reference does not know
 * (the string keys, RECENT, MODSEQ...) are not checked: search.c may
 * answer them locally one day, and then they need a reference of their own.
 * With FUZZ_SEARCH_VERBOSE set, each input's route and answer go to stderr.
 */

#define FUZZ_SEARCH_MAX_MESSAGES 12 /* enough for every set shape; small keeps runs fast */
#define FUZZ_SEARCH_LINE_MAX 8192   /* a command line; longer ones only slow the run */

#define FUZZ_SEARCH_OPTION_ESEARCH 0x01     /* the upstream offers ESEARCH */
#define FUZZ_SEARCH_OPTION_NO_STORE 0x02    /* facts.cache is NULL */
#define FUZZ_SEARCH_OPTION_HELD 0x0c        /* both bits: the first message's expunge is held */
#define FUZZ_SEARCH_OPTION_NEW_MESSAGE 0x10 /* a message whose UID is not known yet at the end */
#define FUZZ_SEARCH_OPTION_FORGET 0x20      /* the last message's flags are not known */

/* Flag bits of a message's second byte. */
static const char *const fuzz_search_flag_names[] = { "\\Seen", "\\Answered", "\\Flagged", "\\Deleted",
						       "\\Draft", "$Junk", "$label1" };
#define FUZZ_SEARCH_FLAG_COUNT 7
#define FUZZ_SEARCH_FLAG_UPPER 0x80 /* system flags written in capitals */

/* What the reference knows of one message. */
struct fuzz_message {
	uint32_t uid;
	unsigned int flags;        /* bits of fuzz_search_flag_names */
	bool flags_known;
	uint64_t size;
	bool size_known;
	int year, month, day;      /* the INTERNALDATE's own day */
	bool date_known;
};

struct fuzz_mailbox {
	struct fuzz_message messages[FUZZ_SEARCH_MAX_MESSAGES];
	uint32_t count;
	uint32_t max_uid;
	bool uid_unknown;          /* a message at the end has no UID yet */
	bool held;
};

/* The evaluation: did it read anything the mailbox does not know, or a
   key the reference does not check? */
struct fuzz_eval {
	bool used_unknown;
	bool unchecked_key;
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct cache *store;
static uint32_t store_uidvalidity;
static struct imap_parser *parser;
static struct imap_command_parser *commands;

static void fuzz_log_drop(enum log_level level, const char *line, void *context)
{
	(void)level;
	(void)line;
	(void)context;
}

/* Opens the store once, in a directory removed at exit. */
static char store_dir[64];
static void fuzz_remove_store(void)
{
	char command[128];

	cache_unref(&store);
	snprintf(command, sizeof(command), "rm -rf '%s'", store_dir);
	if (system(command) != 0)
		fprintf(stderr, "fuzz-search: could not remove %s\n", store_dir);
}

static void fuzz_setup(void)
{
	struct cache_settings settings = { .body_budget = 1 << 20, .body_max_size = 1 << 20 };
	char dir[128];
	const char *error;

	log_set_sink(fuzz_log_drop, NULL);
	snprintf(store_dir, sizeof(store_dir), "/tmp/fuzz-search-XXXXXX");
	if (mkdtemp(store_dir) == NULL)
		abort();
	snprintf(dir, sizeof(dir), "%s/cache", store_dir);
	settings.dir = dir;
	store = cache_open(&settings, "up", "fuzz", &error);
	if (store == NULL)
		abort();
	atexit(fuzz_remove_store);
	parser = imap_parser_new();
	commands = imap_command_parser_new();
}

/* ---- the mailbox ---- */

/* Days from 1970-01-01 back to year-month-day: the civil date of day n. */
static void fuzz_civil_date(int32_t n, int *year_r, int *month_r, int *day_r)
{
	static const int month_days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int year = 1970, month = 1;

	for (;;) {
		bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
		int days = leap ? 366 : 365;

		if (n < days)
			break;
		n -= days;
		year++;
	}
	for (;; month++) {
		bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
		int days = month_days[month - 1] + (month == 2 && leap);

		if (n < days)
			break;
		n -= days;
	}
	*year_r = year;
	*month_r = month;
	*day_r = n + 1;
}

/* Builds the reference's mailbox from the description bytes. */
static void fuzz_build_mailbox(const uint8_t *spec, size_t size, struct fuzz_mailbox *mailbox)
{
	uint32_t uid = 0;

	memset(mailbox, 0, sizeof(*mailbox));
	for (size_t at = 1; at + 4 <= size && mailbox->count < FUZZ_SEARCH_MAX_MESSAGES; at += 4) {
		struct fuzz_message *message = &mailbox->messages[mailbox->count++];
		uint8_t gap = spec[at], flags = spec[at + 1], bytes = spec[at + 2], day = spec[at + 3];

		uid += gap < 0xf0 ? (uint32_t)(gap % 4) + 1 : (uint32_t)gap * 100000u;
		message->uid = uid;
		message->flags = flags;
		message->flags_known = true;
		message->size = bytes == 0xff ? UINT32_MAX + (uint64_t)3 : (uint64_t)bytes * 3;
		message->size_known = bytes != 0xfe;
		/* around 2019, a span that crosses month and year ends; a few near the years search.c takes */
		int32_t days = day < 0xf0 ? 17867 + (int32_t)(day % 0x78) - 60 : (day & 1 ? 365 + (day & 7) : 24835 - (day & 7));
		fuzz_civil_date(days, &message->year, &message->month, &message->day);
		message->date_known = day != 0xfd;
	}
	mailbox->max_uid = uid;
	mailbox->held = (spec[0] & FUZZ_SEARCH_OPTION_HELD) == FUZZ_SEARCH_OPTION_HELD && mailbox->count > 0;
	mailbox->uid_unknown = (spec[0] & FUZZ_SEARCH_OPTION_NEW_MESSAGE) != 0;
	if ((spec[0] & FUZZ_SEARCH_OPTION_FORGET) != 0 && mailbox->count > 0)
		mailbox->messages[mailbox->count - 1].flags_known = false;
}

/* The message's flag list text, as an upstream would send it. */
static void fuzz_flags_text(const struct fuzz_message *message, char *text, size_t size)
{
	size_t len = 0;

	text[0] = '\0';
	for (unsigned int i = 0; i < FUZZ_SEARCH_FLAG_COUNT; i++) {
		if ((message->flags & (1u << i)) == 0)
			continue;
		len += (size_t)snprintf(text + len, size - len, "%s%s", len > 0 ? " " : "", fuzz_search_flag_names[i]);
		if ((message->flags & FUZZ_SEARCH_FLAG_UPPER) != 0 && fuzz_search_flag_names[i][0] == '\\') {
			for (char *p = text + len - strlen(fuzz_search_flag_names[i]); *p != '\0'; p++)
				*p = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
		}
	}
}

/* The INTERNALDATE value as Dovecot writes it, in a zone and at an hour
   that keep its own day (the day the reference compares). */
static int fuzz_internaldate_text(const struct fuzz_message *message, char *text, size_t size)
{
	static const char months[][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	static const char *const zones[] = { "+0000", "-0500", "+0100", "+1400", "-1200" };
	unsigned int pick = message->uid + (unsigned int)message->day;

	return snprintf(text, size, pick % 2 ? "\"%2d-%s-%04d %s +0000\"" : "\"%02d-%s-%04d %s %s\"", message->day,
			months[message->month - 1], message->year, pick % 3 ? "23:59:59" : "00:00:00",
			zones[pick % 5]);
}

/* Makes the view and the store hold the mailbox. Returns the view, or
   NULL when it could not be made. */
static struct mailbox_view *fuzz_make_view(const struct fuzz_mailbox *mailbox, int64_t *mailbox_id_r)
{
	struct mailbox_view *view = mailbox_view_new();
	struct cache_mailbox stored;
	uint32_t uids[FUZZ_SEARCH_MAX_MESSAGES];
	char text[128];

	for (uint32_t i = 0; i < mailbox->count; i++)
		uids[i] = mailbox->messages[i].uid;
	if (view == NULL || mailbox_view_load(view, uids, mailbox->count) < 0 ||
	    cache_mailbox_open(store, "INBOX", ++store_uidvalidity, &stored, NULL) < 0)
		abort();
	cache_batch_begin(store);
	for (uint32_t i = 0; i < mailbox->count; i++) {
		const struct fuzz_message *message = &mailbox->messages[i];
		int len;

		fuzz_flags_text(message, text, sizeof(text));
		if (message->flags_known && mailbox_view_set_flags(view, i + 1, text, strlen(text)) < 0)
			abort();
		if (message->size_known && cache_store_size(store, stored.id, message->uid, message->size) < 0)
			abort();
		len = fuzz_internaldate_text(message, text, sizeof(text));
		if (message->date_known &&
		    cache_store_item(store, stored.id, message->uid, CACHE_ITEM_INTERNALDATE, text, (size_t)len) < 0)
			abort();
	}
	if (cache_batch_end(store) < 0)
		abort();
	if (mailbox->uid_unknown && mailbox_view_upstream_exists(view, mailbox->count + 1) < 0)
		abort();
	if (mailbox->held && mailbox_view_upstream_expunge(view, 1, true) != 1)
		abort();
	*mailbox_id_r = stored.id;
	return view;
}

/* ---- the reference ---- */

struct fuzz_eval_context {
	const struct fuzz_mailbox *mailbox;
	struct fuzz_eval *eval;
};

static bool fuzz_has_flag(const struct fuzz_eval_context *context, const struct fuzz_message *message, unsigned int bit)
{
	if (!message->flags_known)
		context->eval->used_unknown = true;
	return (message->flags & (1u << bit)) != 0;
}

/* Whether a keyword (len bytes) is one of the message's. */
static bool fuzz_has_keyword(const struct fuzz_eval_context *context, const struct fuzz_message *message,
			     const char *keyword, size_t len)
{
	for (unsigned int i = 0; i < FUZZ_SEARCH_FLAG_COUNT; i++) {
		const char *name = fuzz_search_flag_names[i];

		if (name[0] != '\\' && strlen(name) == len && memcmp(name, keyword, len) == 0)
			return fuzz_has_flag(context, message, i);
	}
	if (!message->flags_known)
		context->eval->used_unknown = true;
	return false;
}

/* Whether number is in set, "*" standing for star. */
static bool fuzz_set_has(const struct imap_seqset *set, uint32_t number, uint32_t star)
{
	for (unsigned int i = 0; i < set->count; i++) {
		uint32_t low = imap_seqset_range_first(&set->ranges[i], star);
		uint32_t high = imap_seqset_range_last(&set->ranges[i], star);

		if ((low <= number && number <= high) || (high <= number && number <= low))
			return true;
	}
	return false;
}

/* -1, 0 or 1 as the message's day is before, on or after the key's. */
static int fuzz_compare_day(const struct fuzz_eval_context *context, const struct fuzz_message *message,
			    const struct imap_search_key *key)
{
	int ours[3] = { message->year, message->month, message->day };
	int theirs[3] = { key->year, key->month, key->day };

	if (!message->date_known)
		context->eval->used_unknown = true;
	for (int i = 0; i < 3; i++) {
		if (ours[i] != theirs[i])
			return ours[i] < theirs[i] ? -1 : 1;
	}
	return 0;
}

static bool fuzz_match_list(const struct fuzz_eval_context *context, const struct imap_search_key *key,
			    uint32_t seq);

/* RFC 3501's meaning of one key for message seq. */
static bool fuzz_match_key(const struct fuzz_eval_context *context, const struct imap_search_key *key, uint32_t seq)
{
	const struct fuzz_message *message = &context->mailbox->messages[seq - 1];

	switch (key->type) {
	case IMAP_SEARCH_AND: return fuzz_match_list(context, key->children, seq);
	case IMAP_SEARCH_OR: {
		/* both evaluated: each is looked at for what it reads */
		bool left = fuzz_match_key(context, key->children, seq);
		bool right = fuzz_match_key(context, key->children->next, seq);

		return left || right;
	}
	case IMAP_SEARCH_NOT: return !fuzz_match_key(context, key->children, seq);
	case IMAP_SEARCH_ALL: return true;
	case IMAP_SEARCH_SEEN: return fuzz_has_flag(context, message, 0);
	case IMAP_SEARCH_ANSWERED: return fuzz_has_flag(context, message, 1);
	case IMAP_SEARCH_FLAGGED: return fuzz_has_flag(context, message, 2);
	case IMAP_SEARCH_DELETED: return fuzz_has_flag(context, message, 3);
	case IMAP_SEARCH_DRAFT: return fuzz_has_flag(context, message, 4);
	case IMAP_SEARCH_UNSEEN: return !fuzz_has_flag(context, message, 0);
	case IMAP_SEARCH_UNANSWERED: return !fuzz_has_flag(context, message, 1);
	case IMAP_SEARCH_UNFLAGGED: return !fuzz_has_flag(context, message, 2);
	case IMAP_SEARCH_UNDELETED: return !fuzz_has_flag(context, message, 3);
	case IMAP_SEARCH_UNDRAFT: return !fuzz_has_flag(context, message, 4);
	case IMAP_SEARCH_KEYWORD: return fuzz_has_keyword(context, message, key->str, key->len);
	case IMAP_SEARCH_UNKEYWORD: return !fuzz_has_keyword(context, message, key->str, key->len);
	case IMAP_SEARCH_LARGER:
	case IMAP_SEARCH_SMALLER:
		if (!message->size_known)
			context->eval->used_unknown = true;
		return key->type == IMAP_SEARCH_LARGER ? message->size > key->number : message->size < key->number;
	case IMAP_SEARCH_BEFORE: return fuzz_compare_day(context, message, key) < 0;
	case IMAP_SEARCH_ON: return fuzz_compare_day(context, message, key) == 0;
	case IMAP_SEARCH_SINCE: return fuzz_compare_day(context, message, key) >= 0;
	case IMAP_SEARCH_UID: return fuzz_set_has(key->set, message->uid, context->mailbox->max_uid);
	case IMAP_SEARCH_SEQUENCE_SET: return fuzz_set_has(key->set, seq, context->mailbox->count);
	default:
		context->eval->unchecked_key = true;
		return false;
	}
}

/* Every key of the list, each evaluated (no short cut: every key is
   looked at for what it reads). */
static bool fuzz_match_list(const struct fuzz_eval_context *context, const struct imap_search_key *key, uint32_t seq)
{
	bool all = true;

	for (; key != NULL; key = key->next) {
		if (!fuzz_match_key(context, key, seq))
			all = false;
	}
	return all;
}

/* The answer the reference expects, into out. */
static void fuzz_expected_answer(const struct imap_command *command, const struct fuzz_mailbox *mailbox,
				 struct fuzz_eval *eval, struct evbuffer *out)
{
	struct fuzz_eval_context context = { mailbox, eval };
	uint32_t numbers[FUZZ_SEARCH_MAX_MESSAGES];
	uint32_t found = 0;
	unsigned int options = command->u.search.return_options;
	char set[FUZZ_SEARCH_MAX_MESSAGES * 24];

	for (uint32_t seq = 1; seq <= mailbox->count; seq++) {
		if (fuzz_match_list(&context, command->u.search.program, seq))
			numbers[found++] = command->uid ? mailbox->messages[seq - 1].uid : seq;
	}
	if (!command->u.search.has_return) {
		evbuffer_add_printf(out, "* SEARCH");
		for (uint32_t i = 0; i < found; i++)
			evbuffer_add_printf(out, " %u", numbers[i]);
		evbuffer_add_printf(out, "\r\n");
		return;
	}
	evbuffer_add_printf(out, "* ESEARCH (TAG \"%s\")%s", command->tag, command->uid ? " UID" : "");
	if ((options & IMAP_SEARCH_RETURN_MIN) != 0 && found > 0)
		evbuffer_add_printf(out, " MIN %u", numbers[0]);
	if ((options & IMAP_SEARCH_RETURN_MAX) != 0 && found > 0)
		evbuffer_add_printf(out, " MAX %u", numbers[found - 1]);
	if ((options & IMAP_SEARCH_RETURN_ALL) != 0 && found > 0) {
		if (imap_seqset_format(set, sizeof(set), numbers, found) >= sizeof(set))
			abort();
		evbuffer_add_printf(out, " ALL %s", set);
	}
	if ((options & IMAP_SEARCH_RETURN_COUNT) != 0)
		evbuffer_add_printf(out, " COUNT %u", found);
	evbuffer_add_printf(out, "\r\n");
}

/* Whether two buffers hold the same bytes; prints both when not. */
static bool fuzz_same(struct evbuffer *got, struct evbuffer *expected)
{
	size_t len = evbuffer_get_length(got);

	if (len == evbuffer_get_length(expected) &&
	    (len == 0 || memcmp(evbuffer_pullup(got, -1), evbuffer_pullup(expected, -1), len) == 0))
		return true;
	fprintf(stderr, "search.c:  %.*s\nreference: %.*s\n", (int)len, (const char *)evbuffer_pullup(got, -1),
		(int)evbuffer_get_length(expected), (const char *)evbuffer_pullup(expected, -1));
	return false;
}

/* Runs the command line on the mailbox and checks a local answer. */
static void fuzz_check(const struct fuzz_mailbox *mailbox, const uint8_t *options, const char *line, size_t len)
{
	struct imap_command command;
	struct search_facts facts = { .cache = store, .esearch = (*options & FUZZ_SEARCH_OPTION_ESEARCH) != 0 };
	struct evbuffer *got = evbuffer_new(), *expected = evbuffer_new();
	struct mailbox_view *view;
	const char *why = NULL, *message;
	size_t consumed;

	imap_parser_reset(parser);
	if (imap_parser_feed_bytes(parser, line, len, &consumed) != IMAP_PARSER_LINE_COMPLETE ||
	    imap_command_parse(commands, imap_parser_get_line(parser), &command, &message) != IMAP_COMMAND_ERROR_NONE ||
	    command.name != IMAP_COMMAND_SEARCH) {
		evbuffer_free(got);
		evbuffer_free(expected);
		return; /* the session sends what the parsers refuse upstream as it is */
	}
	view = fuzz_make_view(mailbox, &facts.mailbox_id);
	facts.view = view;
	if ((*options & FUZZ_SEARCH_OPTION_NO_STORE) != 0)
		facts.cache = NULL;
	if (search_answer(&command, command.tag, &facts, got, &why) == SEARCH_ROUTE_UPSTREAM) {
		if (evbuffer_get_length(got) != 0 || why == NULL)
			abort(); /* routed: nothing written, and a reason for the log */
		if (getenv("FUZZ_SEARCH_VERBOSE") != NULL)
			fprintf(stderr, "upstream: %s\n", why);
	} else {
		struct fuzz_eval eval = { false, false };

		fuzz_expected_answer(&command, mailbox, &eval, expected);
		if (mailbox->count == 0 || mailbox->held || mailbox->uid_unknown)
			abort(); /* answered on a view that can't vouch for it */
		if (eval.used_unknown)
			abort(); /* answered from a flag, size or date not known */
		if (!eval.unchecked_key && !fuzz_same(got, expected))
			abort();
		if (getenv("FUZZ_SEARCH_VERBOSE") != NULL)
			fprintf(stderr, "local%s: %.*s", eval.unchecked_key ? " (not checked)" : "",
				(int)evbuffer_get_length(got), (const char *)evbuffer_pullup(got, -1));
	}
	mailbox_view_free(&view);
	evbuffer_free(got);
	evbuffer_free(expected);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_mailbox mailbox;
	const uint8_t *lf = memchr(data, '\n', size);
	char *line;
	size_t spec_len, line_len;

	if (lf == NULL || lf == data)
		return 0;
	spec_len = (size_t)(lf - data);
	line_len = size - spec_len - 1;
	if (line_len > FUZZ_SEARCH_LINE_MAX)
		return 0;
	if (store == NULL)
		fuzz_setup();
	fuzz_build_mailbox(data, spec_len, &mailbox);
	line = malloc(line_len + 2);
	if (line == NULL)
		abort();
	memcpy(line, lf + 1, line_len);
	memcpy(line + line_len, "\r\n", 2);
	fuzz_check(&mailbox, data, line, line_len + 2);
	free(line);
	return 0;
}
