/* SPDX-License-Identifier: MIT */
/* search: SEARCH and UID SEARCH answered from a synced view and the store with the upstream's exact answer, or sent upstream. */
#include "config.h"
#include "search.h"

#include "cache.h"
#include "cache-fts.h"
#include "search-string.h"

#include <event2/buffer.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* What the keys of a program read besides the view's UIDs. */
#define SEARCH_NEEDS_FLAGS 0x01
#define SEARCH_NEEDS_SIZE 0x02
#define SEARCH_NEEDS_DATE 0x04
#define SEARCH_NEEDS_HEADER 0x08
#define SEARCH_NEEDS_SENT 0x10   /* the Date field's day, from the header block */
#define SEARCH_NEEDS_MODSEQ 0x20 /* every message's MODSEQ, from the view */
#define SEARCH_NEEDS_TEXT 0x40   /* every message's decoded text, indexed (cache-fts.h) */

#define SEARCH_STRING_KEYS_MAX 32 /* string keys of one program answered here: each reads every header block */

/* Years of a date key answered here: Dovecot turns the day into a time_t
   with mktime(), which fails or goes negative before 1970 (east of UTC)
   and may overflow after 2037 on 32 bits. */
#define SEARCH_YEAR_FIRST 1971
#define SEARCH_YEAR_LAST 2037

/* One message as the program sees it. */
struct search_message {
	uint32_t uid;
	uint64_t modseq;     /* the view's; 0 when no MODSEQ key is used */
	bool recent;         /* \Recent, this session's */
	const char *flags;   /* the view's text; NULL when no flag key is used */
	uint64_t size;
	int32_t day;         /* the INTERNALDATE's day (search_day_number) */
	int32_t sent_day;    /* the Date field's day as written */
	bool has_size;
	bool has_day;
	bool has_header;
	bool has_sent_day;
	bool has_text;       /* its text is indexed and sure */
};

/* A header string key, and its answer for each message. */
struct search_string_key {
	const struct imap_search_key *key;
	const char *field;            /* the header field it reads */
	enum search_string_kind kind;
	struct mime_buffer needle;    /* the key's casemap form */
	signed char *results;         /* enum search_string_result per message; NULL: not read yet */
	bool text;                    /* BODY or TEXT: matched in the indexed text, not the header block */
};

struct search_context {
	const struct imap_command *command;
	struct search_message *messages;
	uint32_t count;
	uint32_t max_uid;
	uint32_t cursor;     /* where the store's rows are matched to messages */
	struct search_string_key *text_key; /* the BODY or TEXT key being matched */
	unsigned int needs;  /* SEARCH_NEEDS_* */
	bool condstore;      /* the client enabled CONDSTORE: a MODSEQ key changes nothing upstream */
	uint64_t negated_modseq; /* the largest n of a NOT MODSEQ n, 0: none */
	struct search_string_key strings[SEARCH_STRING_KEYS_MAX];
	unsigned int string_count;
};

/* Whether a charset is one the local matcher takes as it is: a program
   without strings means the same in both (Dovecot refuses others with
   BADCHARSET, which only the upstream may say). */
static bool search_charset_is_local(const char *charset)
{
	return charset == NULL || strcasecmp(charset, "UTF-8") == 0 || strcasecmp(charset, "US-ASCII") == 0;
}

/* Whether Dovecot takes tag as one: atom characters but '+' and ']'
   (it answers "* BAD Error in IMAP tag" to "x]1", which only the
   upstream can say). */
static bool search_tag_is_dovecots(const char *tag)
{
	for (; *tag != '\0'; tag++) {
		unsigned char c = (unsigned char)*tag;

		if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\]+", c) != NULL)
			return false;
	}
	return true;
}

/* Whether a sequence set's numbers are all within 1..count ("*" is), and
   a "*" comes only in a set of one range: Dovecot 2.3 answers some sets
   of several ranges with "*" wrongly ("74 191:*,186:166,9:*" finds
   nothing in 200 messages), and its answer is the one to give. */
static bool search_seqset_in_range(const struct imap_seqset *set, uint32_t count)
{
	for (unsigned int i = 0; i < set->count; i++) {
		const struct imap_seqset_range *range = &set->ranges[i];

		if (set->count > 1 && imap_seqset_range_has_star(range))
			return false;
		if ((!range->first_star && range->first > count) || (!range->last_star && range->last > count))
			return false;
	}
	return true;
}

/* Whether some message has keyword. Dovecot adds a keyword a search names
   to the mailbox's list if it is not there (and announces a new FLAGS):
   only a keyword some message has is surely in the list. */
static bool search_keyword_in_use(const struct mailbox_view *view, const char *keyword, size_t len)
{
	uint32_t count = mailbox_view_count(view);

	for (uint32_t seq = 1; seq <= count; seq++) {
		const struct mailbox_view_message *entry = mailbox_view_get(view, seq);

		if (entry->flags != NULL && mailbox_view_flags_have(entry->flags, keyword, len))
			return true;
	}
	return false;
}

/*
 * Dovecot 2.3 simplifies a program before it searches: NOTs are pushed
 * down to the keys, and two keys of one type and one negation in one
 * AND or OR list are merged into one. For LARGER, SMALLER, BEFORE and
 * SINCE the merge keeps the bound that would be right without the NOT:
 * "NOT LARGER 10 NOT LARGER 5" becomes "NOT LARGER 10", so its answer is
 * not the RFC's. A program with two such negated keys of one type goes
 * upstream, whose answer is the one to give.
 */
enum {
	SEARCH_MERGED_LARGER, SEARCH_MERGED_SMALLER, SEARCH_MERGED_BEFORE, SEARCH_MERGED_SINCE,
	SEARCH_MERGED_SENTBEFORE, SEARCH_MERGED_SENTSINCE, SEARCH_MERGED_TYPES
};

/* Counts the keys of the list at key that end up negated (negated: an odd
   number of NOTs above the list), per type that Dovecot merges. */
static void search_count_negated(const struct imap_search_key *key, bool negated,
				 unsigned int counts[SEARCH_MERGED_TYPES])
{
	for (; key != NULL; key = key->next) {
		switch (key->type) {
		case IMAP_SEARCH_AND: case IMAP_SEARCH_OR:
			search_count_negated(key->children, negated, counts);
			break;
		case IMAP_SEARCH_NOT:
			search_count_negated(key->children, !negated, counts);
			break;
		case IMAP_SEARCH_LARGER: counts[SEARCH_MERGED_LARGER] += negated; break;
		case IMAP_SEARCH_SMALLER: counts[SEARCH_MERGED_SMALLER] += negated; break;
		case IMAP_SEARCH_BEFORE: counts[SEARCH_MERGED_BEFORE] += negated; break;
		case IMAP_SEARCH_SINCE: counts[SEARCH_MERGED_SINCE] += negated; break;
		case IMAP_SEARCH_SENTBEFORE: counts[SEARCH_MERGED_SENTBEFORE] += negated; break;
		case IMAP_SEARCH_SENTSINCE: counts[SEARCH_MERGED_SENTSINCE] += negated; break;
		default: break;
		}
	}
}

/* Whether Dovecot's merge could change the program's answer. */
static bool search_dovecot_merges(const struct imap_search_key *program)
{
	unsigned int counts[SEARCH_MERGED_TYPES] = { 0 };

	search_count_negated(program, false, counts);
	for (unsigned int i = 0; i < SEARCH_MERGED_TYPES; i++) {
		if (counts[i] >= 2)
			return true;
	}
	return false;
}

/* The days of month (1..12) in year. A date key with a day past its
   month's end ("31-Feb-2020") goes upstream: Dovecot takes it as a time
   that no message reaches (SINCE finds nothing). */
static int search_month_days(int year, int month)
{
	static const int days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

	return month == 2 && leap ? 29 : days[month - 1];
}

/* Whether a NOT (after any NOT NOT pairs) applies to an AND or OR group.
   Dovecot 2.3 drops or extracts such a group as if it were not negated
   ("OR ANSWERED NOT (ANSWERED 1:5)" finds only ANSWERED; RFC 3501 finds
   every message), and its answer is the one to give. */
static bool search_negates_group(const struct imap_search_key *not)
{
	bool negated = true;
	const struct imap_search_key *key = not->children;

	while (key->type == IMAP_SEARCH_NOT) {
		negated = !negated;
		key = key->children;
	}
	return negated && (key->type == IMAP_SEARCH_AND || key->type == IMAP_SEARCH_OR);
}

/* Checks that every key of the list at key can be answered here and adds
   what it reads to *needs. Returns 0, or -1 with *why_r. */
/* Whether a HEADER key's field name is one matched here: printable
   ASCII without ':' (Dovecot compares names with strcasecmp). */
static bool search_field_is_plain(const char *field, size_t len)
{
	if (len == 0 || strlen(field) != len)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (field[i] <= 0x20 || field[i] >= 0x7f || field[i] == ':')
			return false;
	}
	return true;
}

/* Adds a header string key to ctx->strings. Returns 0, or -1 with
   *why_r when it goes upstream. */
static int search_add_string(struct search_context *ctx, const struct imap_search_key *key, const char **why_r)
{
	static const struct { enum imap_search_key_type type; const char *field; enum search_string_kind kind; } fields[] = {
		{ IMAP_SEARCH_FROM, "From", SEARCH_STRING_ADDRESS }, { IMAP_SEARCH_TO, "To", SEARCH_STRING_ADDRESS },
		{ IMAP_SEARCH_CC, "Cc", SEARCH_STRING_ADDRESS }, { IMAP_SEARCH_BCC, "Bcc", SEARCH_STRING_ADDRESS },
		{ IMAP_SEARCH_SUBJECT, "Subject", SEARCH_STRING_SUBJECT },
	};
	struct search_string_key *string = &ctx->strings[ctx->string_count];
	const char *value = key->type == IMAP_SEARCH_HEADER ? key->str2 : key->str;
	size_t len = key->type == IMAP_SEARCH_HEADER ? key->len2 : key->len;

	if (ctx->string_count == SEARCH_STRING_KEYS_MAX) {
		*why_r = "too many string keys";
		return -1;
	}
	*string = (struct search_string_key){ .key = key, .field = key->str, .kind = SEARCH_STRING_HEADER };
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		if (fields[i].type == key->type) {
			string->field = fields[i].field;
			string->kind = fields[i].kind;
		}
	}
	string->text = key->type == IMAP_SEARCH_BODY || key->type == IMAP_SEARCH_TEXT;
	ctx->string_count++;
	if ((key->type == IMAP_SEARCH_HEADER && !search_field_is_plain(key->str, key->len)) ||
	    search_string_prepare_key(value, len, &string->needle) < 0) {
		*why_r = "a string key that is not UTF-8, holds a line break, or names an odd header field";
		return -1;
	}
	if (string->text && string->needle.len == 0) {
		*why_r = "an empty BODY or TEXT key";
		return -1;
	}
	return 0;
}

static int search_check_keys(const struct imap_search_key *key, struct search_context *ctx,
			     const struct mailbox_view *view, unsigned int *needs, const char **why_r)
{
	for (; key != NULL; key = key->next) {
		switch (key->type) {
		case IMAP_SEARCH_NOT: {
			const struct imap_search_key *inner = key->children;

			if (search_negates_group(key)) {
				*why_r = "NOT of a group, which Dovecot simplifies its own way";
				return -1;
			}
			while (inner->type == IMAP_SEARCH_NOT)
				inner = inner->children; /* a NOT NOT group is the group */
			if (inner->type == IMAP_SEARCH_MODSEQ && inner->number > ctx->negated_modseq)
				ctx->negated_modseq = inner->number;
			if (search_check_keys(inner, ctx, view, needs, why_r) < 0)
				return -1;
			break;
		}
		case IMAP_SEARCH_AND:
		case IMAP_SEARCH_OR:
			if (search_check_keys(key->children, ctx, view, needs, why_r) < 0)
				return -1;
			break;
		case IMAP_SEARCH_ALL:
			break;
		case IMAP_SEARCH_ANSWERED: case IMAP_SEARCH_DELETED: case IMAP_SEARCH_DRAFT:
		case IMAP_SEARCH_FLAGGED: case IMAP_SEARCH_SEEN: case IMAP_SEARCH_UNANSWERED:
		case IMAP_SEARCH_UNDELETED: case IMAP_SEARCH_UNDRAFT: case IMAP_SEARCH_UNFLAGGED:
		case IMAP_SEARCH_UNSEEN:
		case IMAP_SEARCH_RECENT: case IMAP_SEARCH_NEW: case IMAP_SEARCH_OLD:
			/* \Recent: the view marks it from the SELECT's RECENT and from
			   every FLAGS the upstream sends this session (fetch-fill) */
			*needs |= SEARCH_NEEDS_FLAGS;
			break;
		case IMAP_SEARCH_KEYWORD:
		case IMAP_SEARCH_UNKEYWORD:
			if (key->str[0] == '\\' || strlen(key->str) != key->len ||
			    !search_keyword_in_use(view, key->str, key->len)) {
				*why_r = "a keyword no message has (Dovecot may add it to the mailbox)";
				return -1;
			}
			*needs |= SEARCH_NEEDS_FLAGS;
			break;
		case IMAP_SEARCH_LARGER:
		case IMAP_SEARCH_SMALLER:
			*needs |= SEARCH_NEEDS_SIZE;
			break;
		case IMAP_SEARCH_BEFORE: case IMAP_SEARCH_ON: case IMAP_SEARCH_SINCE:
		case IMAP_SEARCH_SENTBEFORE: case IMAP_SEARCH_SENTON: case IMAP_SEARCH_SENTSINCE:
			if (key->year < SEARCH_YEAR_FIRST || key->year > SEARCH_YEAR_LAST ||
			    key->day > search_month_days(key->year, key->month)) {
				*why_r = "a year Dovecot's time_t may not hold, or a day past its month's end";
				return -1;
			}
			*needs |= key->type == IMAP_SEARCH_SENTBEFORE || key->type == IMAP_SEARCH_SENTON ||
						  key->type == IMAP_SEARCH_SENTSINCE ? SEARCH_NEEDS_SENT | SEARCH_NEEDS_HEADER :
										       SEARCH_NEEDS_DATE;
			break;
		case IMAP_SEARCH_UID:
		case IMAP_SEARCH_SEQUENCE_SET:
			if (key->set->saved) {
				*why_r = "a saved result ($)";
				return -1;
			}
			if (!search_seqset_in_range(key->set, key->type == IMAP_SEARCH_UID ? UINT32_MAX - 1 :
										  mailbox_view_count(view))) {
				*why_r = "a sequence number past the last message, or a \"*\" among ranges";
				return -1;
			}
			break;
		case IMAP_SEARCH_FROM: case IMAP_SEARCH_TO: case IMAP_SEARCH_CC: case IMAP_SEARCH_BCC:
		case IMAP_SEARCH_SUBJECT: case IMAP_SEARCH_HEADER:
			if (search_add_string(ctx, key, why_r) < 0)
				return -1;
			*needs |= SEARCH_NEEDS_HEADER;
			break;
		case IMAP_SEARCH_MODSEQ:
			if (key->str != NULL || !ctx->condstore) {
				/* without CONDSTORE the key enables it upstream, and every
				   later answer changes */
				*why_r = key->str != NULL ? "MODSEQ with an entry name" :
							    "MODSEQ before the client enabled CONDSTORE";
				return -1;
			}
			*needs |= SEARCH_NEEDS_MODSEQ;
			break;
		case IMAP_SEARCH_BODY:
		case IMAP_SEARCH_TEXT:
			if (search_add_string(ctx, key, why_r) < 0)
				return -1;
			*needs |= SEARCH_NEEDS_TEXT;
			break;
		default:
			*why_r = "a key the cache does not answer";
			return -1;
		}
	}
	return 0;
}

/* Days from 1970-01-01 to year-month-day (proleptic Gregorian; the day
   within its month). */
static int32_t search_day_number(int year, int month, int day)
{
	int y = year - (month <= 2);
	int era = (y >= 0 ? y : y - 399) / 400;
	int year_of_era = y - era * 400;
	int day_of_year = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5;
	int day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;

	return (int32_t)(era * 146097 + day_of_era - 719468 + day - 1);
}

/* The day of an INTERNALDATE value ("\" 7-Jul-1996 02:44:25 -0700\"") in
   its own zone, which is the day Dovecot compares. Returns false when it
   does not read as one. */
static bool search_parse_day(const unsigned char *data, size_t size, int32_t *day_r)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	char text[40];
	unsigned int day = 0, year = 0, month;
	const char *p = text, *found;

	if (size < 2 || size >= sizeof(text) || data[0] != '"')
		return false;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	p += strspn(p, " ");
	while (*p >= '0' && *p <= '9' && day < 100)
		day = day * 10 + (unsigned int)(*p++ - '0');
	if (*p++ != '-' || strlen(p) < 9 || p[3] != '-')
		return false;
	found = strstr(months, (char[4]){ p[0], p[1], p[2], '\0' });
	if (found == NULL || (found - months) % 3 != 0)
		return false;
	month = (unsigned int)(found - months) / 3 + 1;
	for (p += 4; *p >= '0' && *p <= '9' && year < 100000; p++)
		year = year * 10 + (unsigned int)(*p - '0');
	if (day < 1 || day > 31 || year < 1 || year > 9999)
		return false;
	*day_r = search_day_number((int)year, (int)month, (int)day);
	return true;
}

/* cache_lookup_headers's callback: what the string keys and SENT* read
   in a message's stored header block. */
static void search_take_header(uint32_t uid, const unsigned char *data, size_t size, void *context)
{
	struct search_context *ctx = context;
	struct search_message *message;

	while (ctx->cursor < ctx->count && ctx->messages[ctx->cursor].uid < uid)
		ctx->cursor++;
	if (ctx->cursor == ctx->count || ctx->messages[ctx->cursor].uid != uid)
		return;
	message = &ctx->messages[ctx->cursor];
	for (unsigned int i = 0; i < ctx->string_count; i++) {
		struct search_string_key *string = &ctx->strings[i];

		if (!string->text)
			string->results[ctx->cursor] = (signed char)search_string_match_header(
				data, size, string->field, string->kind, &string->needle);
	}
	message->has_header = true;
	if ((ctx->needs & SEARCH_NEEDS_SENT) != 0) {
		int year, month, day;

		message->has_sent_day = search_string_sent_date(data, size, &year, &month, &day) == 0 &&
					year >= SEARCH_YEAR_FIRST && year <= SEARCH_YEAR_LAST &&
					day <= search_month_days(year, month);
		if (message->has_sent_day)
			message->sent_day = search_day_number(year, month, day);
	}
}

/* cache_lookup_sizes's callback: the stored size of a message. */
static void search_take_size(uint32_t uid, uint64_t size, void *context)
{
	struct search_context *ctx = context;

	while (ctx->cursor < ctx->count && ctx->messages[ctx->cursor].uid < uid)
		ctx->cursor++;
	if (ctx->cursor == ctx->count || ctx->messages[ctx->cursor].uid != uid)
		return;
	ctx->messages[ctx->cursor].size = size;
	ctx->messages[ctx->cursor].has_size = true;
}

/* cache_lookup_internaldates's callback: the day of a message's stored INTERNALDATE. */
static void search_take_internaldate(uint32_t uid, const unsigned char *data, size_t size, void *context)
{
	struct search_context *ctx = context;

	while (ctx->cursor < ctx->count && ctx->messages[ctx->cursor].uid < uid)
		ctx->cursor++;
	if (ctx->cursor == ctx->count || ctx->messages[ctx->cursor].uid != uid)
		return;
	ctx->messages[ctx->cursor].has_day = search_parse_day(data, size, &ctx->messages[ctx->cursor].day);
}

/* Reads the sizes, days and header blocks the program needs from the
   store. Returns 0 when every message has them, -1 with *why_r otherwise. */
static int search_read_store(struct search_context *ctx, const struct search_facts *facts, unsigned int needs,
			     const char **why_r)
{
	uint32_t first, last;
	long found = 0;

	if (facts->cache == NULL || facts->mailbox_id == 0) {
		*why_r = "no store";
		return -1;
	}
	if (ctx->count == 0)
		return 0;
	first = ctx->messages[0].uid;
	last = ctx->messages[ctx->count - 1].uid;
	/* each item by a range scan of its own: sizes and days from their
	   indexes (a tenth of the rows' time), header blocks from the rows
	   with no body joined */
	ctx->cursor = 0;
	if ((needs & SEARCH_NEEDS_SIZE) != 0)
		found = cache_lookup_sizes(facts->cache, facts->mailbox_id, first, last, search_take_size, ctx);
	ctx->cursor = 0;
	if (found >= 0 && (needs & SEARCH_NEEDS_DATE) != 0)
		found = cache_lookup_internaldates(facts->cache, facts->mailbox_id, first, last, search_take_internaldate,
						   ctx);
	ctx->cursor = 0;
	if (found >= 0 && (needs & (SEARCH_NEEDS_HEADER | SEARCH_NEEDS_SENT)) != 0)
		found = cache_lookup_headers(facts->cache, facts->mailbox_id, first, last, search_take_header, ctx);
	for (uint32_t i = 0; found >= 0 && i < ctx->count; i++) {
		if (((needs & SEARCH_NEEDS_SIZE) != 0 && !ctx->messages[i].has_size) ||
		    ((needs & SEARCH_NEEDS_DATE) != 0 && !ctx->messages[i].has_day) ||
		    ((needs & SEARCH_NEEDS_HEADER) != 0 && !ctx->messages[i].has_header))
			found = -1;
	}
	if (found < 0) {
		*why_r = "a size, INTERNALDATE or header block not in the store";
		return -1;
	}
	for (uint32_t i = 0; (needs & SEARCH_NEEDS_SENT) != 0 && i < ctx->count; i++) {
		if (!ctx->messages[i].has_sent_day) {
			*why_r = "a Date field missing, repeated, or not in the plain form";
			return -1;
		}
	}
	for (unsigned int k = 0; k < ctx->string_count; k++) {
		for (uint32_t i = 0; !ctx->strings[k].text && i < ctx->count; i++) {
			if (ctx->strings[k].results[i] == SEARCH_STRING_UNSURE) {
				*why_r = "a header the cache can't match exactly as Dovecot does";
				return -1;
			}
		}
	}
	return 0;
}

/* The index of the message of uid at or after ctx->cursor, or ctx->count. */
static uint32_t search_seek_uid(struct search_context *ctx, uint32_t uid)
{
	while (ctx->cursor < ctx->count && ctx->messages[ctx->cursor].uid < uid)
		ctx->cursor++;
	return ctx->cursor < ctx->count && ctx->messages[ctx->cursor].uid == uid ? ctx->cursor : ctx->count;
}

/* cache_fts_each_state's callback. */
static void search_take_text_state(uint32_t uid, bool sure, void *context)
{
	struct search_context *ctx = context;
	uint32_t i = search_seek_uid(ctx, uid);

	if (i < ctx->count)
		ctx->messages[i].has_text = sure;
}

/* cache_fts_find's callback: the message of uid holds ctx->text_key. */
static void search_take_text_match(uint32_t uid, void *context)
{
	struct search_context *ctx = context;
	uint32_t i = search_seek_uid(ctx, uid);

	if (i < ctx->count)
		ctx->text_key->results[i] = SEARCH_STRING_YES;
}

/* Answers the BODY and TEXT keys from the indexed text. Returns 0 when
   every message's text is indexed and sure, -1 with *why_r otherwise. */
static int search_read_text(struct search_context *ctx, const struct search_facts *facts, const char **why_r)
{
	if (facts->cache == NULL || facts->mailbox_id == 0) {
		*why_r = "no store";
		return -1;
	}
	for (unsigned int k = 0; k < ctx->string_count; k++) {
		if (ctx->strings[k].text && ctx->strings[k].needle.len > CACHE_FTS_KEY_MAX) {
			*why_r = "a BODY or TEXT key longer than the text index's pieces overlap";
			return -1;
		}
	}
	ctx->cursor = 0;
	if (cache_fts_each_state(facts->cache, facts->mailbox_id, search_take_text_state, ctx) < 0) {
		*why_r = "the store failed";
		return -1;
	}
	for (uint32_t i = 0; i < ctx->count; i++) {
		if (!ctx->messages[i].has_text) {
			*why_r = "a body not cached whole, not indexed yet, or one the cache can't read as Dovecot does";
			return -1;
		}
	}
	for (unsigned int k = 0; k < ctx->string_count; k++) {
		struct search_string_key *string = &ctx->strings[k];

		if (!string->text)
			continue;
		memset(string->results, SEARCH_STRING_NO, ctx->count);
		ctx->text_key = string;
		ctx->cursor = 0;
		if (cache_fts_find(facts->cache, facts->mailbox_id, string->needle.data, string->needle.len,
				   string->key->type == IMAP_SEARCH_BODY, search_take_text_match, ctx) < 0) {
			*why_r = "the store failed";
			return -1;
		}
	}
	return 0;
}

static bool search_match_list(const struct search_context *ctx, const struct imap_search_key *key, uint32_t seq);

/* Whether message seq (1-based) matches one key. */
static bool search_match_key(const struct search_context *ctx, const struct imap_search_key *key, uint32_t seq)
{
	const struct search_message *message = &ctx->messages[seq - 1];
	int32_t day = search_day_number(key->year, key->month, key->day);

	switch (key->type) {
	case IMAP_SEARCH_AND: return search_match_list(ctx, key->children, seq);
	case IMAP_SEARCH_OR:
		return search_match_key(ctx, key->children, seq) || search_match_key(ctx, key->children->next, seq);
	case IMAP_SEARCH_NOT: return !search_match_key(ctx, key->children, seq);
	case IMAP_SEARCH_ALL: return true;
	case IMAP_SEARCH_ANSWERED: return mailbox_view_flags_have(message->flags, "\\Answered", 9);
	case IMAP_SEARCH_DELETED: return mailbox_view_flags_have(message->flags, "\\Deleted", 8);
	case IMAP_SEARCH_DRAFT: return mailbox_view_flags_have(message->flags, "\\Draft", 6);
	case IMAP_SEARCH_FLAGGED: return mailbox_view_flags_have(message->flags, "\\Flagged", 8);
	case IMAP_SEARCH_SEEN: return mailbox_view_flags_have(message->flags, "\\Seen", 5);
	case IMAP_SEARCH_UNANSWERED: return !mailbox_view_flags_have(message->flags, "\\Answered", 9);
	case IMAP_SEARCH_UNDELETED: return !mailbox_view_flags_have(message->flags, "\\Deleted", 8);
	case IMAP_SEARCH_UNDRAFT: return !mailbox_view_flags_have(message->flags, "\\Draft", 6);
	case IMAP_SEARCH_UNFLAGGED: return !mailbox_view_flags_have(message->flags, "\\Flagged", 8);
	case IMAP_SEARCH_UNSEEN: return !mailbox_view_flags_have(message->flags, "\\Seen", 5);
	case IMAP_SEARCH_KEYWORD: return mailbox_view_flags_have(message->flags, key->str, key->len);
	case IMAP_SEARCH_UNKEYWORD: return !mailbox_view_flags_have(message->flags, key->str, key->len);
	case IMAP_SEARCH_RECENT: return message->recent;
	case IMAP_SEARCH_NEW: return message->recent && !mailbox_view_flags_have(message->flags, "\\Seen", 5);
	case IMAP_SEARCH_OLD: return !message->recent;
	case IMAP_SEARCH_MODSEQ: return message->modseq >= key->number;
	case IMAP_SEARCH_LARGER: return message->size > key->number;
	case IMAP_SEARCH_SMALLER: return message->size < key->number;
	case IMAP_SEARCH_BEFORE: return message->day < day;
	case IMAP_SEARCH_ON: return message->day == day;
	case IMAP_SEARCH_SINCE: return message->day >= day;
	case IMAP_SEARCH_SENTBEFORE: return message->sent_day < day;
	case IMAP_SEARCH_SENTON: return message->sent_day == day;
	case IMAP_SEARCH_SENTSINCE: return message->sent_day >= day;
	case IMAP_SEARCH_UID: return imap_seqset_contains(key->set, message->uid, ctx->max_uid);
	case IMAP_SEARCH_SEQUENCE_SET: return imap_seqset_contains(key->set, seq, ctx->count);
	case IMAP_SEARCH_FROM: case IMAP_SEARCH_TO: case IMAP_SEARCH_CC: case IMAP_SEARCH_BCC:
	case IMAP_SEARCH_SUBJECT: case IMAP_SEARCH_HEADER: case IMAP_SEARCH_BODY: case IMAP_SEARCH_TEXT:
		for (unsigned int i = 0; i < ctx->string_count; i++) {
			if (ctx->strings[i].key == key)
				return ctx->strings[i].results[seq - 1] == SEARCH_STRING_YES;
		}
		break;
	default: break;
	}
	return false; /* search_check_keys let no other key through */
}

/* Whether message seq matches every key of the list at key. */
static bool search_match_list(const struct search_context *ctx, const struct imap_search_key *key, uint32_t seq)
{
	for (; key != NULL; key = key->next) {
		if (!search_match_key(ctx, key, seq))
			return false;
	}
	return true;
}

/* Fills ctx->messages from the view. Returns 0, or -1 with *why_r when a
   message lacks what the program needs. */
static int search_read_view(struct search_context *ctx, const struct mailbox_view *view, unsigned int needs,
			    const char **why_r)
{
	uint64_t highest = 0;

	for (uint32_t seq = 1; seq <= ctx->count; seq++) {
		const struct mailbox_view_message *entry = mailbox_view_get(view, seq);

		if (entry->uid == 0 || entry->expunged) {
			*why_r = "a message whose UID is not known";
			return -1;
		}
		if ((needs & SEARCH_NEEDS_FLAGS) != 0 && entry->flags == NULL) {
			*why_r = "a message whose flags are not known";
			return -1;
		}
		if ((needs & SEARCH_NEEDS_MODSEQ) != 0 && entry->modseq == 0) {
			*why_r = "a message whose MODSEQ is not known";
			return -1;
		}
		ctx->messages[seq - 1].modseq = entry->modseq;
		if (entry->modseq > highest)
			highest = entry->modseq;
		ctx->messages[seq - 1].recent = entry->recent ||
						(entry->flags != NULL && mailbox_view_flags_have(entry->flags, "\\Recent", 7));
		ctx->messages[seq - 1].uid = entry->uid;
		ctx->messages[seq - 1].flags = entry->flags;
	}
	ctx->max_uid = mailbox_view_max_uid(view);
	if (ctx->negated_modseq > highest) {
		/* Dovecot finds nothing for NOT MODSEQ n among the program's
		   keys when n is past the mailbox's highest (RFC 7162 says every
		   message): the upstream's answer is the one to give */
		*why_r = "NOT MODSEQ past every message's MODSEQ, which Dovecot answers its own way";
		return -1;
	}
	return 0;
}

/* Appends the numbers of an ascending list as a sequence set, runs as
   ranges ("1:3,5"), as Dovecot writes ALL. */
static void search_write_set(struct evbuffer *out, const uint32_t *numbers, uint32_t count)
{
	for (uint32_t i = 0; i < count;) {
		uint32_t last = i;

		while (last + 1 < count && numbers[last + 1] == numbers[last] + 1)
			last++;
		if (last == i)
			evbuffer_add_printf(out, "%s%u", i == 0 ? "" : ",", numbers[i]);
		else
			evbuffer_add_printf(out, "%s%u:%u", i == 0 ? "" : ",", numbers[i], numbers[last]);
		i = last + 1;
	}
}

/* Appends the RFC 4731 answer to RETURN, in Dovecot's order: MIN, MAX,
   ALL (left out when nothing matched), COUNT. */
static void search_write_esearch(const struct search_context *ctx, const char *tag, const uint32_t *numbers,
				 uint32_t count, uint64_t modseq, struct evbuffer *out)
{
	unsigned int options = ctx->command->u.search.return_options;

	evbuffer_add_printf(out, "* ESEARCH (TAG \"%s\")%s", tag, ctx->command->uid ? " UID" : "");
	if ((options & IMAP_SEARCH_RETURN_MIN) != 0 && count > 0)
		evbuffer_add_printf(out, " MIN %u", numbers[0]);
	if ((options & IMAP_SEARCH_RETURN_MAX) != 0 && count > 0)
		evbuffer_add_printf(out, " MAX %u", numbers[count - 1]);
	if ((options & IMAP_SEARCH_RETURN_ALL) != 0 && count > 0) {
		evbuffer_add(out, " ALL ", 5);
		search_write_set(out, numbers, count);
	}
	if ((options & IMAP_SEARCH_RETURN_COUNT) != 0)
		evbuffer_add_printf(out, " COUNT %u", count);
	if (modseq != 0)
		evbuffer_add_printf(out, " MODSEQ %" PRIu64, modseq);
	evbuffer_add(out, "\r\n", 2);
}

/* The MODSEQ a search with a MODSEQ key answers with (RFC 7162 3.1.5):
   the highest of the messages it returns, which for RETURN (MIN), (MAX)
   or (MIN MAX) are those one or two alone, as Dovecot counts them; of
   every message found otherwise (highest). 0 when none was found. */
static uint64_t search_answer_modseq(const struct search_context *ctx, uint32_t first_seq, uint32_t last_seq,
				     uint64_t highest)
{
	unsigned int options = ctx->command->u.search.return_options;
	uint64_t modseq = 0;

	if (first_seq == 0 || !ctx->command->u.search.has_return ||
	    (options & (IMAP_SEARCH_RETURN_MIN | IMAP_SEARCH_RETURN_MAX)) == 0 ||
	    (options & (IMAP_SEARCH_RETURN_ALL | IMAP_SEARCH_RETURN_COUNT)) != 0)
		return highest;
	if ((options & IMAP_SEARCH_RETURN_MIN) != 0)
		modseq = ctx->messages[first_seq - 1].modseq;
	if ((options & IMAP_SEARCH_RETURN_MAX) != 0 && ctx->messages[last_seq - 1].modseq > modseq)
		modseq = ctx->messages[last_seq - 1].modseq;
	return modseq;
}

/* Appends the untagged answer: "* SEARCH" and the matching numbers,
   ascending, or the ESEARCH line for RETURN. Returns -1 when memory runs
   out (nothing appended). */
static int search_write_answer(const struct search_context *ctx, const char *tag, struct evbuffer *out)
{
	uint32_t *numbers = malloc(ctx->count * sizeof(*numbers));
	uint32_t found = 0, first_seq = 0, last_seq = 0;
	uint64_t modseq = 0; /* the highest of the messages found; answered with a MODSEQ key only */

	if (numbers == NULL)
		return -1;
	for (uint32_t seq = 1; seq <= ctx->count; seq++) {
		if (search_match_list(ctx, ctx->command->u.search.program, seq)) {
			numbers[found++] = ctx->command->uid ? ctx->messages[seq - 1].uid : seq;
			first_seq = first_seq == 0 ? seq : first_seq;
			last_seq = seq;
			if (ctx->messages[seq - 1].modseq > modseq)
				modseq = ctx->messages[seq - 1].modseq;
		}
	}
	modseq = (ctx->needs & SEARCH_NEEDS_MODSEQ) != 0 ? search_answer_modseq(ctx, first_seq, last_seq, modseq) : 0;
	if (ctx->command->u.search.has_return) {
		search_write_esearch(ctx, tag, numbers, found, modseq, out);
	} else {
		evbuffer_add(out, "* SEARCH", 8);
		for (uint32_t i = 0; i < found; i++)
			evbuffer_add_printf(out, " %u", numbers[i]);
		if (modseq != 0)
			evbuffer_add_printf(out, " (MODSEQ %" PRIu64 ")", modseq);
		evbuffer_add(out, "\r\n", 2);
	}
	free(numbers);
	return 0;
}

/* Whether the command's RETURN, if any, is one the cache answers. */
static bool search_return_is_local(const struct imap_command *command, const struct search_facts *facts)
{
	return !command->u.search.has_return ||
	       (facts->esearch && (command->u.search.return_options & IMAP_SEARCH_RETURN_SAVE) == 0);
}

/* Frees what ctx holds. */
static void search_context_clear(struct search_context *ctx)
{
	for (unsigned int i = 0; i < ctx->string_count; i++) {
		mime_buffer_free(&ctx->strings[i].needle);
		free(ctx->strings[i].results);
	}
	ctx->string_count = 0;
	free(ctx->messages);
	ctx->messages = NULL;
}

/* Allocates the messages and the string keys' answers. Returns -1 when
   memory runs out. */
static int search_context_alloc(struct search_context *ctx)
{
	ctx->messages = calloc(ctx->count, sizeof(*ctx->messages));
	if (ctx->messages == NULL)
		return -1;
	for (unsigned int i = 0; i < ctx->string_count; i++) {
		ctx->strings[i].results = malloc(ctx->count);
		if (ctx->strings[i].results == NULL)
			return -1;
		memset(ctx->strings[i].results, SEARCH_STRING_UNSURE, ctx->count);
	}
	return 0;
}

/* Whether the program can be answered here: every key, and the view. */
static int search_check_program(const struct imap_command *command, const char *tag, struct search_context *ctx,
				const struct search_facts *facts, unsigned int *needs, const char **why_r)
{
	if (command->name != IMAP_COMMAND_SEARCH) {
		*why_r = "not a SEARCH";
		return -1;
	}
	if (!search_return_is_local(command, facts) || !search_charset_is_local(command->u.search.charset)) {
		*why_r = !search_return_is_local(command, facts) ? "RETURN SAVE, or RETURN without ESEARCH upstream" :
								     "a charset the cache does not take";
		return -1;
	}
	if (!search_tag_is_dovecots(tag)) {
		*why_r = "a tag Dovecot refuses";
		return -1;
	}
	if (ctx->count == 0 || mailbox_view_has_held(facts->view)) {
		*why_r = ctx->count == 0 ? "an empty mailbox" : "an expunge the client is not told of yet";
		return -1;
	}
	if (search_check_keys(command->u.search.program, ctx, facts->view, needs, why_r) < 0)
		return -1;
	if (search_dovecot_merges(command->u.search.program)) {
		*why_r = "negated size or date keys that Dovecot merges its own way";
		return -1;
	}
	return 0;
}

enum search_route search_answer(const struct imap_command *command, const char *tag,
				const struct search_facts *facts, struct evbuffer *out, const char **why_r)
{
	struct search_context ctx = { .command = command, .count = mailbox_view_count(facts->view),
				      .condstore = facts->condstore };
	unsigned int needs = 0;
	enum search_route route = SEARCH_ROUTE_UPSTREAM;

	if (search_check_program(command, tag, &ctx, facts, &needs, why_r) < 0)
		goto out;
	ctx.needs = needs;
	if (search_context_alloc(&ctx) < 0) {
		*why_r = "out of memory";
		goto out;
	}
	if (search_read_view(&ctx, facts->view, needs, why_r) < 0 ||
	    ((needs & (SEARCH_NEEDS_SIZE | SEARCH_NEEDS_DATE | SEARCH_NEEDS_HEADER)) != 0 &&
	     search_read_store(&ctx, facts, needs, why_r) < 0) ||
	    ((needs & SEARCH_NEEDS_TEXT) != 0 && search_read_text(&ctx, facts, why_r) < 0))
		goto out;
	if (search_write_answer(&ctx, tag, out) < 0) {
		*why_r = "out of memory";
		goto out;
	}
	route = SEARCH_ROUTE_LOCAL;
out:
	search_context_clear(&ctx);
	return route;
}
