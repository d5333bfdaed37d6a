/* SPDX-License-Identifier: MIT */
/* Unit tests for daemon/search: which SEARCH commands are local, and their answers as Dovecot 2.3 writes them. */
#include "config.h"
#include "unit.h"
#include "unit-cache.h"
#include "cache.h"
#include "cache-fts.h"
#include "cache-private.h" /* the store's worker */
#include "cache-worker.h"
#include "search-string.h"
#include "search-text.h"
#include "imap-command.h"
#include "imap-parser.h"
#include "log.h"
#include "mailbox-view.h"
#include "search.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct unit_cache store;
static struct cache *cache;
static struct mailbox_view *view;
static int64_t mailbox_id;
static struct imap_parser *parser;
static struct imap_command_parser *commands;
static struct imap_command command;
static struct search_facts facts;

/*
 * Four messages:
 *   seq 1, UID 3: no flags,             100 bytes, 31-Dec-2018 23:59:59 -0500
 *   seq 2, UID 4: \Seen $Junk,          200 bytes, 01-Jan-2019 00:00:00 +0100
 *   seq 3, UID 7: \Flagged \Answered,   201 bytes,  2-Jan-2019 12:00:00 +0000
 *   seq 4, UID 9: \Deleted \Draft \Seen $label1, 99 bytes, 15-Mar-2020 08:00:00 +0000
 */
static const uint32_t uids[] = { 3, 4, 7, 9 };
static const char *const flags[] = { "", "\\Seen $Junk", "\\Flagged \\Answered", "\\Deleted \\Draft \\Seen $label1" };
static const uint64_t sizes[] = { 100, 200, 201, 99 };
static const char *const dates[] = { "\"31-Dec-2018 23:59:59 -0500\"", "\"01-Jan-2019 00:00:00 +0100\"",
				     "\" 2-Jan-2019 12:00:00 +0000\"", "\"15-Mar-2020 08:00:00 +0000\"" };

static void setup(void)
{
	unit_cache_open(&store, "test-search", (struct cache_settings){ .body_budget = 1 << 20, .body_max_size = 1 << 20 },
			uids, 4);
	cache = store.cache;
	mailbox_id = store.mailbox_id;
	view = store.view;
	for (uint32_t i = 0; i < 4; i++) {
		CU_ASSERT_EQUAL(mailbox_view_set_flags(view, i + 1, flags[i], strlen(flags[i])), 0);
		CU_ASSERT_EQUAL(cache_store_size(cache, mailbox_id, uids[i], sizes[i]), 0);
		CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uids[i], CACHE_ITEM_INTERNALDATE, dates[i],
						 strlen(dates[i])), 0);
	}
	parser = imap_parser_new();
	commands = imap_command_parser_new();
	facts = (struct search_facts){ .cache = cache, .mailbox_id = mailbox_id, .view = view };
}

static void teardown(void)
{
	imap_parser_free(&parser);
	imap_command_parser_free(&commands);
	unit_cache_close(&store);
}

/* The local answer to "T <text>" (its untagged line), or "UPSTREAM: why",
   or "BAD" when the parsers refuse it (the
   session then sends it upstream as it is). Static; valid until the
   next call. */
static const char *answer_tagged(const char *tag, const char *format, ...) __attribute__((format(printf, 2, 3)));
static const char *answer_tagged(const char *tag, const char *format, ...)
{
	static char text[16384];
	static char line[12000];
	char body[11000];
	struct evbuffer *out = evbuffer_new();
	const char *why = NULL, *message;
	size_t consumed, len;
	va_list args;

	va_start(args, format);
	vsnprintf(body, sizeof(body), format, args);
	va_end(args);
	snprintf(line, sizeof(line), "%s %s\r\n", tag, body);
	imap_parser_reset(parser);
	if (imap_parser_feed_bytes(parser, line, strlen(line), &consumed) != IMAP_PARSER_LINE_COMPLETE ||
	    imap_command_parse(commands, imap_parser_get_line(parser), &command, &message) != IMAP_COMMAND_ERROR_NONE) {
		evbuffer_free(out);
		return "BAD";
	}
	if (search_answer(&command, tag, &facts, out, &why) == SEARCH_ROUTE_UPSTREAM) {
		CU_ASSERT_EQUAL(evbuffer_get_length(out), 0);
		CU_ASSERT_PTR_NOT_NULL(why);
		snprintf(text, sizeof(text), "UPSTREAM: %s", why);
		evbuffer_free(out);
		return text;
	}
	len = evbuffer_get_length(out) < sizeof(text) - 1 ? evbuffer_get_length(out) : sizeof(text) - 1;
	evbuffer_remove(out, text, len);
	text[len] = '\0';
	evbuffer_free(out);
	return text;
}

#define answer(...) answer_tagged("T", __VA_ARGS__)

static void expect(const char *got, const char *expected)
{
	if (strcmp(got, expected) != 0)
		fprintf(stderr, "\ngot:      %s\nexpected: %s\n", got, expected);
	CU_ASSERT_STRING_EQUAL(got, expected);
}

static void expect_upstream(const char *got)
{
	if (strncmp(got, "UPSTREAM: ", 10) != 0)
		fprintf(stderr, "\nexpected upstream, got: %s\n", got);
	CU_ASSERT_EQUAL(strncmp(got, "UPSTREAM: ", 10), 0);
}

static void test_flags(void)
{
	setup();
	expect(answer("SEARCH ALL"), "* SEARCH 1 2 3 4\r\n");
	expect(answer("UID SEARCH ALL"), "* SEARCH 3 4 7 9\r\n");
	expect(answer("SEARCH SEEN"), "* SEARCH 2 4\r\n");
	expect(answer("SEARCH UNSEEN"), "* SEARCH 1 3\r\n");
	expect(answer("SEARCH ANSWERED"), "* SEARCH 3\r\n");
	expect(answer("SEARCH UNANSWERED"), "* SEARCH 1 2 4\r\n");
	expect(answer("SEARCH FLAGGED"), "* SEARCH 3\r\n");
	expect(answer("SEARCH UNFLAGGED"), "* SEARCH 1 2 4\r\n");
	expect(answer("SEARCH DELETED"), "* SEARCH 4\r\n");
	expect(answer("SEARCH UNDELETED"), "* SEARCH 1 2 3\r\n");
	expect(answer("SEARCH DRAFT"), "* SEARCH 4\r\n");
	expect(answer("SEARCH UNDRAFT"), "* SEARCH 1 2 3\r\n");
	expect(answer("UID SEARCH SEEN FLAGGED"), "* SEARCH\r\n");
	expect(answer("SEARCH KEYWORD $label1"), "* SEARCH 4\r\n");
	expect(answer("SEARCH UNKEYWORD $Junk"), "* SEARCH 1 3 4\r\n");
	/* a keyword no message has, in this form: Dovecot may add it to the
	   mailbox's list and say FLAGS, which only the upstream can */
	expect_upstream(answer("SEARCH KEYWORD $junk"));
	expect_upstream(answer("SEARCH KEYWORD $Label1"));
	expect_upstream(answer("SEARCH UNKEYWORD $Nothere"));
	expect_upstream(answer("SEARCH KEYWORD $Jun"));
	/* a system flag is no keyword: refused by the parser, so it goes upstream */
	expect(answer("SEARCH KEYWORD \\Seen"), "BAD");
	teardown();
}

static void test_logic(void)
{
	setup();
	expect(answer("SEARCH NOT SEEN"), "* SEARCH 1 3\r\n");
	expect(answer("SEARCH OR SEEN FLAGGED"), "* SEARCH 2 3 4\r\n");
	expect(answer("SEARCH OR (SEEN DELETED) FLAGGED"), "* SEARCH 3 4\r\n");
	expect(answer("SEARCH NOT NOT (OR SEEN FLAGGED)"), "* SEARCH 2 3 4\r\n");
	/* NOT of a group: Dovecot simplifies it its own way */
	expect_upstream(answer("SEARCH NOT (OR SEEN FLAGGED)"));
	expect_upstream(answer("SEARCH OR ANSWERED NOT (ANSWERED 1:3)"));
	expect_upstream(answer("SEARCH NOT NOT NOT (SEEN)"));
	expect(answer("SEARCH NOT NOT SEEN"), "* SEARCH 2 4\r\n");
	expect(answer("SEARCH (SEEN) (UNDELETED)"), "* SEARCH 2\r\n");
	expect(answer("SEARCH charset UTF-8 SEEN"), "* SEARCH 2 4\r\n");
	expect(answer("SEARCH CHARSET us-ascii ALL"), "* SEARCH 1 2 3 4\r\n");
	teardown();
}

static void test_sets(void)
{
	setup();
	expect(answer("SEARCH 2:3"), "* SEARCH 2 3\r\n");
	expect(answer("SEARCH 3:*"), "* SEARCH 3 4\r\n");
	expect(answer("SEARCH *"), "* SEARCH 4\r\n");
	expect(answer("UID SEARCH 1,3"), "* SEARCH 3 7\r\n");
	expect(answer("SEARCH UID 4:8"), "* SEARCH 2 3\r\n");
	expect(answer("UID SEARCH UID 8:*"), "* SEARCH 9\r\n");
	expect(answer("UID SEARCH UID 100:*"), "* SEARCH 9\r\n"); /* "*" is the last UID: 9:100 */
	expect(answer("SEARCH UID 100"), "* SEARCH\r\n");
	expect(answer("SEARCH NOT UID 1:4"), "* SEARCH 3 4\r\n");
	/* a sequence number past the last message: what Dovecot says there is its own */
	expect_upstream(answer("SEARCH 5"));
	expect_upstream(answer("SEARCH 1:5"));
	expect_upstream(answer("SEARCH $"));
	/* "*" among other ranges: Dovecot's answer is its own */
	expect_upstream(answer("SEARCH 1,3:*"));
	expect_upstream(answer("SEARCH UID 1,3:*"));
	expect(answer("SEARCH 1,3:4"), "* SEARCH 1 3 4\r\n");
	teardown();
}

static void test_sizes_and_dates(void)
{
	setup();
	expect(answer("SEARCH LARGER 100"), "* SEARCH 2 3\r\n");
	expect(answer("SEARCH LARGER 200"), "* SEARCH 3\r\n");
	expect(answer("SEARCH SMALLER 100"), "* SEARCH 4\r\n");
	expect(answer("SEARCH SMALLER 101"), "* SEARCH 1 4\r\n");
	expect(answer("SEARCH LARGER 0 SMALLER 4294967295"), "* SEARCH 1 2 3 4\r\n");
	/* the INTERNALDATE's own day, its time and zone disregarded */
	expect(answer("SEARCH ON 31-Dec-2018"), "* SEARCH 1\r\n");
	expect(answer("SEARCH ON 1-Jan-2019"), "* SEARCH 2\r\n");
	expect(answer("SEARCH ON \"02-Jan-2019\""), "* SEARCH 3\r\n");
	expect(answer("SEARCH BEFORE 1-Jan-2019"), "* SEARCH 1\r\n");
	expect(answer("SEARCH SINCE 1-Jan-2019"), "* SEARCH 2 3 4\r\n");
	expect(answer("SEARCH SINCE 3-Jan-2019 BEFORE 1-Jan-2021"), "* SEARCH 4\r\n");
	expect(answer("SEARCH BEFORE 1-Jan-1971"), "* SEARCH\r\n");
	expect(answer("SEARCH SINCE 1-Jan-2037"), "* SEARCH\r\n");
	expect(answer("SEARCH ON 14-Mar-2020"), "* SEARCH\r\n");
	expect(answer("SEARCH ON 43-Feb-2020"), "BAD"); /* the parser takes no day past 31 */
	expect(answer("SEARCH ON 32-Dec-2018"), "BAD");
	expect(answer("SEARCH BEFORE 31-Dec-2018"), "* SEARCH\r\n");
	expect(answer("SEARCH SINCE 29-Feb-2020 BEFORE 16-Mar-2020"), "* SEARCH 4\r\n");
	/* a day past its month's end: Dovecot's answer is its own */
	expect_upstream(answer("SEARCH SINCE 30-Feb-2020"));
	expect_upstream(answer("SEARCH ON 29-Feb-2019"));
	expect_upstream(answer("SEARCH NOT BEFORE 31-Nov-2018"));
	expect(answer("SEARCH ON 29-Feb-2000"), "* SEARCH\r\n");
	expect_upstream(answer("SEARCH ON 29-Feb-2100"));
	/* years Dovecot's time_t may not hold: upstream */
	expect_upstream(answer("SEARCH BEFORE 1-Jan-1970"));
	expect_upstream(answer("SEARCH SINCE 1-Jan-2038"));
	/* two of one kind, negated: Dovecot merges them its own way */
	expect(answer("SEARCH LARGER 99 LARGER 150"), "* SEARCH 2 3\r\n");
	expect(answer("SEARCH NOT LARGER 200 LARGER 100"), "* SEARCH 2\r\n");
	expect(answer("SEARCH NOT LARGER 200 NOT SMALLER 100"), "* SEARCH 1 2\r\n");
	expect_upstream(answer("SEARCH NOT LARGER 200 NOT LARGER 100"));
	expect_upstream(answer("SEARCH OR (NOT LARGER 200) (NOT LARGER 100)"));
	expect_upstream(answer("SEARCH OR (NOT SMALLER 5) NOT SMALLER 6"));
	expect_upstream(answer("SEARCH NOT BEFORE 1-Jan-2019 NOT BEFORE 1-Jan-2020"));
	expect_upstream(answer("SEARCH NOT SINCE 1-Jan-2019 NOT (SINCE 1-Jan-2020)"));
	expect(answer("SEARCH NOT NOT SINCE 1-Jan-2019 NOT SINCE 1-Jan-2020"), "* SEARCH 2 3\r\n");
	/* with a size, a date read from its index too; a damaged INTERNALDATE
	   (its checksum does not hold) is not stored: the dates go upstream */
	expect(answer("SEARCH SINCE 1-Jan-2019 LARGER 150"), "* SEARCH 2 3\r\n");
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache),
				     "UPDATE messages SET internaldate = '\"01-Jan-2017 00:00:00 +0000\"' WHERE uid = 7", NULL,
				     NULL, NULL), SQLITE_OK);
	expect_upstream(answer("SEARCH SINCE 1-Jan-2019"));
	expect(answer("SEARCH LARGER 150"), "* SEARCH 2 3\r\n");
	teardown();
}

/* What the view or the store does not know goes upstream. */
static void test_unknown(void)
{
	static const uint32_t no_uids[] = { 0 };

	setup();
	mailbox_view_forget_flags(view, 2); /* a STORE not confirmed yet */
	expect_upstream(answer("SEARCH SEEN"));
	expect_upstream(answer("SEARCH KEYWORD $label1"));
	expect(answer("SEARCH LARGER 150"), "* SEARCH 2 3\r\n"); /* no flag key: still local */
	CU_ASSERT_EQUAL(mailbox_view_set_flags(view, 2, "\\Seen", 5), 0);
	expect(answer("SEARCH SEEN"), "* SEARCH 2 4\r\n");
	/* a size and a date not in the store */
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, 7, CACHE_ITEM_INTERNALDATE, NULL, 0), 0);
	expect_upstream(answer("SEARCH ON 2-Jan-2019"));
	expect(answer("SEARCH LARGER 150"), "* SEARCH 2 3\r\n");
	facts.cache = NULL;
	expect_upstream(answer("SEARCH LARGER 150"));
	expect(answer("SEARCH SEEN"), "* SEARCH 2 4\r\n");
	facts.cache = cache;
	/* a new message whose UID is not known yet */
	CU_ASSERT_EQUAL(mailbox_view_upstream_exists(view, 5), 0);
	expect_upstream(answer("SEARCH ALL"));
	CU_ASSERT_EQUAL(mailbox_view_set_uid(view, 5, 12), 0);
	expect_upstream(answer("SEARCH SEEN")); /* its flags not known */
	expect_upstream(answer("SEARCH SMALLER 1000")); /* its size not stored */
	expect(answer("UID SEARCH ALL"), "* SEARCH 3 4 7 9 12\r\n");
	/* a held expunge */
	CU_ASSERT_EQUAL(mailbox_view_upstream_expunge(view, 1, true), 1);
	expect_upstream(answer("SEARCH ALL"));
	/* an empty mailbox */
	CU_ASSERT_EQUAL(mailbox_view_load(view, no_uids, 0), 0);
	expect_upstream(answer("SEARCH ALL"));
	teardown();
}

/* Keys, options and charsets the cache leaves to the upstream. */
static void test_upstream_rules(void)
{
	static const char *const programs[] = {
		"FROM x", "TO x", "CC x", "BCC x", "SUBJECT x", "BODY x", "TEXT x",
		"HEADER X-Y z", "SENTON 1-Jan-2019", "SENTBEFORE 1-Jan-2019", "SENTSINCE 1-Jan-2019", /* no headers stored */
		"MODSEQ 5", "NOT (OR ALL FROM x)", "CHARSET ISO-8859-1 ALL", "CHARSET X-UNKNOWN SEEN",
		"RETURN () ALL", "RETURN (MIN) ALL", "RETURN (COUNT) SEEN", /* no ESEARCH upstream */
	};

	setup();
	for (size_t i = 0; i < sizeof(programs) / sizeof(programs[0]); i++)
		expect_upstream(answer("SEARCH %s", programs[i]));
	teardown();
}

/* Bad input: deep nesting and long strings never crash; what the command
   parser refuses goes upstream (the session sends it on), what it takes
   is answered or routed. */
static void test_bad_input(void)
{
	static char text[10500];
	const char *got;
	size_t at = 0;

	setup();
	at += (size_t)snprintf(text + at, sizeof(text) - at, "SEARCH ");
	for (int i = 0; i < 1000; i++)
		text[at++] = '(';
	at += (size_t)snprintf(text + at, sizeof(text) - at, "SEEN");
	for (int i = 0; i < 1000; i++)
		text[at++] = ')';
	text[at] = '\0';
	got = answer("%s", text);
	CU_ASSERT(strcmp(got, "BAD") == 0 || strncmp(got, "UPSTREAM: ", 10) == 0);
	at = (size_t)snprintf(text, sizeof(text), "SEARCH NOT ");
	for (int i = 0; i < 1000; i++)
		at += (size_t)snprintf(text + at, sizeof(text) - at, "NOT ");
	snprintf(text + at, sizeof(text) - at, "SEEN");
	got = answer("%s", text);
	CU_ASSERT(strcmp(got, "BAD") == 0 || strncmp(got, "UPSTREAM: ", 10) == 0);
	at = (size_t)snprintf(text, sizeof(text), "SEARCH KEYWORD ");
	memset(text + at, 'k', 10000);
	text[at + 10000] = '\0';
	got = answer("%s", text);
	CU_ASSERT(strcmp(got, "BAD") == 0 || strncmp(got, "UPSTREAM: ", 10) == 0);
	/* 63 levels of nesting, within the parser's limit: answered */
	at = (size_t)snprintf(text, sizeof(text), "SEARCH ");
	for (int i = 0; i < 60; i++)
		at += (size_t)snprintf(text + at, sizeof(text) - at, "NOT ");
	snprintf(text + at, sizeof(text) - at, "SEEN");
	expect(answer("%s", text), "* SEARCH 2 4\r\n");
	teardown();
}

/* RETURN, when the upstream offers ESEARCH: Dovecot's order and sets. */
/* RECENT, NEW, OLD: \Recent as the view has it (the SELECT's last RECENT
   messages, and every FLAGS the upstream sent this session). */
static void test_recent(void)
{
	setup();
	expect(answer("SEARCH RECENT"), "* SEARCH\r\n");
	expect(answer("SEARCH OLD"), "* SEARCH 1 2 3 4\r\n");
	mailbox_view_set_recent(view, 4, true);
	CU_ASSERT_EQUAL(mailbox_view_set_flags(view, 3, "\\Recent", 7), 0); /* from a FETCH FLAGS line */
	expect(answer("SEARCH RECENT"), "* SEARCH 3 4\r\n");
	expect(answer("UID SEARCH OLD"), "* SEARCH 3 4\r\n");
	expect(answer("SEARCH NEW"), "* SEARCH 3\r\n"); /* message 4 is seen */
	mailbox_view_forget_flags(view, 3);
	expect_upstream(answer("SEARCH NEW")); /* flags not known */
	teardown();
}

/* MODSEQ (RFC 7162 3.1.5), once the client enabled CONDSTORE: the
   highest MODSEQ of what was found after the numbers, as Dovecot writes
   it; nothing found, no MODSEQ. */
static void test_modseq(void)
{
	setup();
	facts.condstore = true;
	for (uint32_t i = 0; i < 3; i++)
		CU_ASSERT_EQUAL(mailbox_view_set_modseq(view, i + 1, 5 + i), 0);
	expect_upstream(answer("SEARCH MODSEQ 7")); /* message 4's MODSEQ is not known */
	CU_ASSERT_EQUAL(mailbox_view_set_modseq(view, 4, 8), 0);
	facts.condstore = false;
	expect_upstream(answer("SEARCH MODSEQ 7")); /* it would enable CONDSTORE upstream */
	facts.condstore = true;
	expect(answer("SEARCH MODSEQ 7"), "* SEARCH 3 4 (MODSEQ 8)\r\n");
	expect(answer("UID SEARCH MODSEQ 7 SEEN"), "* SEARCH 9 (MODSEQ 8)\r\n");
	expect(answer("SEARCH NOT MODSEQ 7"), "* SEARCH 1 2 (MODSEQ 6)\r\n");
	expect(answer("SEARCH NOT MODSEQ 8"), "* SEARCH 1 2 3 (MODSEQ 7)\r\n");
	/* past every message's MODSEQ Dovecot finds nothing, RFC 7162 all:
	   the upstream answers, nested or not */
	expect_upstream(answer("SEARCH NOT MODSEQ 9"));
	expect_upstream(answer("SEARCH 1:2 NOT MODSEQ 100 SEEN"));
	expect_upstream(answer("SEARCH OR SEEN NOT MODSEQ 9"));
	expect_upstream(answer("SEARCH NOT NOT NOT MODSEQ 9"));
	expect(answer("SEARCH OR MODSEQ 8 1"), "* SEARCH 1 4 (MODSEQ 8)\r\n");
	expect(answer("SEARCH MODSEQ 100"), "* SEARCH\r\n");
	expect(answer("SEARCH ALL"), "* SEARCH 1 2 3 4\r\n"); /* no MODSEQ key, no MODSEQ */
	facts.esearch = true;
	expect(answer("SEARCH RETURN (COUNT) MODSEQ 6"), "* ESEARCH (TAG \"T\") COUNT 3 MODSEQ 8\r\n");
	expect(answer("SEARCH RETURN (MIN MAX ALL COUNT) MODSEQ 100"), "* ESEARCH (TAG \"T\") COUNT 0\r\n");
	expect_upstream(answer("SEARCH MODSEQ \"/flags/\\\\seen\" all 7"));
	teardown();
}

static void test_esearch(void)
{
	setup();
	facts.esearch = true;
	expect(answer("SEARCH RETURN () ALL"), "* ESEARCH (TAG \"T\") ALL 1:4\r\n");
	expect(answer("UID SEARCH RETURN (COUNT MAX MIN ALL) ALL"),
	       "* ESEARCH (TAG \"T\") UID MIN 3 MAX 9 ALL 3:4,7,9 COUNT 4\r\n");
	expect(answer("SEARCH RETURN (MIN) SEEN"), "* ESEARCH (TAG \"T\") MIN 2\r\n");
	expect(answer("SEARCH RETURN (MAX COUNT) UNSEEN"), "* ESEARCH (TAG \"T\") MAX 3 COUNT 2\r\n");
	expect(answer("SEARCH RETURN (ALL) NOT ALL"), "* ESEARCH (TAG \"T\")\r\n");
	expect(answer("UID SEARCH RETURN (MIN MAX ALL COUNT) UID 100"), "* ESEARCH (TAG \"T\") UID COUNT 0\r\n");
	expect_upstream(answer("SEARCH RETURN (SAVE) ALL"));
	expect_upstream(answer("SEARCH RETURN (SAVE MIN) ALL"));
	/* CONTEXT=SEARCH's UPDATE and RFC 9394's PARTIAL: the command parser
	   does not take them, and the session sends a line it can't parse
	   upstream as it is (test-forwarding.py follows them through) */
	CU_ASSERT_STRING_EQUAL(answer("SEARCH RETURN (UPDATE) ALL"), "BAD");
	CU_ASSERT_STRING_EQUAL(answer("SEARCH RETURN (PARTIAL 1:10) ALL"), "BAD");
	expect(answer_tagged("q[3.x-y:z", "SEARCH RETURN (MIN) ALL"), "* ESEARCH (TAG \"q[3.x-y:z\") MIN 1\r\n");
	/* a tag Dovecot refuses: its answer is its own */
	expect_upstream(answer_tagged("q]2", "SEARCH RETURN (COUNT) ALL"));
	expect_upstream(answer_tagged("q]2", "SEARCH ALL"));
	facts.esearch = false;
	expect_upstream(answer("SEARCH RETURN (MIN) ALL"));
	teardown();
}

/* Header blocks for the string keys (what test-search-differential.py
   and Dovecot 2.3.19 by hand showed). */
static const char *const headers[] = {
	"From: Alice Example <alice@example.org>\r\nTo: bob@example.net, \"Carol, J\" <carol@example.com>\r\n"
	"Subject: Caf\xc3\xa9   na\xc3\xafve\r\n\tresume\r\nX-Empty:\r\n\r\n",
	"From: =?utf-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.de>\r\n"
	"Subject: =?utf-8?B?Q2Fmw6k=?= =?utf-8?Q?_time?=\r\nSubject: second subject\r\n"
	"Cc: \"Zo\xc3\xab O'Brien\" <zoe@example.ie>\r\n\r\n",
	"From: Cafe\xcc\x81 <cafe@example.org>\r\nSubject: \xef\xac\x81ne \xef\xac\x81sh \xc7\x84\r\n"
	"X-Test: a=?iso-8859-1?q?=E9?=b\r\n\r\n",
	"From: dave@lists.example.org\r\nBcc: undisclosed-recipients:;\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\n",
};

static void store_headers(void)
{
	for (uint32_t i = 0; i < 4; i++)
		CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uids[i], CACHE_ITEM_HEADER, headers[i],
						 strlen(headers[i])), 0);
}

static void test_strings(void)
{
	setup();
	expect_upstream(answer("SEARCH SUBJECT caf"));          /* no header block stored yet */
	store_headers();
	/* casemap: é and É and e + U+0301 alike; encoded words decoded */
	expect(answer("SEARCH SUBJECT \"caf\xc3\xa9\""), "* SEARCH 1 2 4\r\n");
	expect(answer("SEARCH SUBJECT \"CAF\xc3\x89\""), "* SEARCH 1 2 4\r\n");
	expect(answer("SEARCH SUBJECT \"cafe\xcc\x81\""), "* SEARCH 1 2 4\r\n");
	expect(answer("UID SEARCH NOT SUBJECT \"caf\xc3\xa9\""), "* SEARCH 7\r\n");
	/* SUBJECT: white space runs made one space, the fold's tab too */
	expect(answer("SEARCH SUBJECT \"na\xc3\xafve resume\""), "* SEARCH 1\r\n");
	expect(answer("SEARCH SUBJECT \"na\xc3\xafve  resume\""), "* SEARCH\r\n");
	/* every occurrence counts; white space between encoded words dropped */
	expect(answer("SEARCH SUBJECT second"), "* SEARCH 2\r\n");
	expect(answer("SEARCH SUBJECT \"caf\xc3\xa9 time\""), "* SEARCH 2\r\n");
	expect(answer("SEARCH SUBJECT \"caf\xc3\xa9time\""), "* SEARCH\r\n");
	/* one level of compatibility decomposition, after titlecase */
	expect(answer("SEARCH SUBJECT fi"), "* SEARCH\r\n");
	expect(answer("SEARCH SUBJECT \"\xef\xac\x81\""), "* SEARCH 3\r\n");
	expect(answer("SEARCH SUBJECT \"d\xc5\xbe\""), "* SEARCH\r\n");
	expect(answer("SEARCH SUBJECT \"\xc7\x86\""), "* SEARCH 3\r\n");
	/* addresses as Dovecot rewrites them */
	expect(answer("SEARCH FROM \"j\xc3\xbcrgen\""), "* SEARCH 2\r\n");
	expect(answer("SEARCH FROM \"<dave@lists.example.org>\""), "* SEARCH 4\r\n");
	expect_upstream(answer("SEARCH BCC x"));               /* message 4's group */
	expect(answer("SEARCH TO \"<bob@example.net>, \\\"carol, j\\\" <\""), "* SEARCH 1\r\n");
	expect(answer("SEARCH TO \"bob@example.net,\""), "* SEARCH\r\n");
	expect(answer("SEARCH CC \"brien\\\" <zoe\""), "* SEARCH 2\r\n");
	expect(answer("SEARCH CC \"o'brien\""), "* SEARCH\r\n");
	expect(answer("SEARCH OR CC zoe TO carol"), "* SEARCH 1 2\r\n");
	/* HEADER: the value as it is, an empty key asks whether the field is there */
	expect(answer("SEARCH HEADER To \"carol, j\\\" <\""), "* SEARCH 1\r\n");
	expect(answer("SEARCH HEADER X-Empty \"\""), "* SEARCH 1\r\n");
	expect(answer("SEARCH HEADER X-Nothere \"\""), "* SEARCH\r\n");
	expect(answer("SEARCH FROM \"\""), "* SEARCH 1 2 3 4\r\n");
	expect(answer("SEARCH HEADER x-test \"A\xc3\x89" "B\""), "* SEARCH 3\r\n");
	expect(answer("SEARCH HEADER X-Test \"a \xc3\xa9\""), "* SEARCH\r\n");
	expect_upstream(answer("SEARCH HEADER \"\" x"));
	expect(answer("SEARCH CHARSET UTF-8 SUBJECT \"caf\xc3\xa9\""), "* SEARCH 1 2 4\r\n");
	expect(answer("SEARCH CHARSET us-ascii SUBJECT second"), "* SEARCH 2\r\n");
	expect_upstream(answer("SEARCH CHARSET X-UNKNOWN SUBJECT second"));
	expect_upstream(answer("SEARCH CHARSET ISO-8859-1 SUBJECT second"));
	{
		static char long_key[10001];

		memset(long_key, 'x', 10000);
		expect(answer("SEARCH SUBJECT \"%s\"", long_key), "* SEARCH\r\n");
	}
	expect_upstream(answer("SEARCH SUBJECT {2+}\r\na\n"));
	/* a header Dovecot reads its own way: that key's SEARCH goes upstream */
	static const struct { const char *header, *program; } odd[] = {
		{ "From: a@b.c\r\nno colon here\r\n\r\n", "SUBJECT x" },
		{ "Subject: caf\xe9\r\n\r\n", "SUBJECT x" },                          /* Latin-1, not UTF-8 */
		{ "Subject: =?x-unknown?q?abc?=\r\n\r\n", "SUBJECT x" },
		{ "Subject: =?utf-8?b?Q2Fmw6k?=\r\n\r\n", "SUBJECT x" },              /* broken base64 */
		{ "Subject: =?utf-8?q?a=ZZ?=\r\n\r\n", "SUBJECT x" },
		{ "Subject: what =? is this\r\n\r\n", "SUBJECT x" },
		{ "To: a@b.c (Comment)\r\n\r\n", "TO x" },
		{ "To: <a@b.c>\r\n\r\n", "TO x" },
		{ "To: \"a\"@b.c\r\n\r\n", "TO x" },
		{ "To: a@[1.2.3.4]\r\n\r\n", "TO x" },
		{ "To: a@b.c,\r\n\r\n", "TO x" },
		{ "To: J. Doe <j@b.c>\r\n\r\n", "TO x" },
	};
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
		CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uids[3], CACHE_ITEM_HEADER, odd[i].header,
						 strlen(odd[i].header)), 0);
		expect_upstream(answer("SEARCH %s", odd[i].program));
	}
	/* ... but only where the field is read: an empty key, another field */
	expect(answer("SEARCH TO \"\""), "* SEARCH 1 4\r\n");
	expect(answer("SEARCH SUBJECT second"), "* SEARCH 2\r\n");
	/* a message without its header block stored */
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uids[3], CACHE_ITEM_HEADER, NULL, 0), 0);
	expect_upstream(answer("SEARCH SUBJECT x"));
	teardown();
}

/* SENT*: the Date field's day as written, its zone and time disregarded. */
static void test_sent(void)
{
	static const char *const dated[] = {
		"Subject: a\r\nDate: Tue, 1 Jan 2019 23:30:00 -0500\r\n\r\n",
		"Date: 2 Jan 2019 00:30:00 +1400\r\n\r\n",
		"Date: Mon, 31 Dec 2018 23:59 -1200\r\nSubject: c\r\n\r\n",
		"Date: Sat, 29 Feb 2020 12:00:00 +0000\r\n\r\n",
	};

	setup();
	expect_upstream(answer("SEARCH SENTON 1-Jan-2019"));   /* no header block stored */
	for (uint32_t i = 0; i < 4; i++)
		CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uids[i], CACHE_ITEM_HEADER, dated[i],
						 strlen(dated[i])), 0);
	expect(answer("SEARCH SENTON 1-Jan-2019"), "* SEARCH 1\r\n");
	expect(answer("SEARCH SENTON 2-Jan-2019"), "* SEARCH 2\r\n");
	expect(answer("SEARCH SENTBEFORE 1-Jan-2019"), "* SEARCH 3\r\n");
	expect(answer("SEARCH SENTSINCE 2-Jan-2019"), "* SEARCH 2 4\r\n");
	expect(answer("UID SEARCH NOT SENTSINCE 29-Feb-2020"), "* SEARCH 3 4 7\r\n");
	expect(answer("SEARCH OR SENTON 29-Feb-2020 SUBJECT c"), "* SEARCH 3 4\r\n");
	expect_upstream(answer("SEARCH SENTON 31-Feb-2020"));
	expect_upstream(answer("SEARCH NOT SENTSINCE 1-Jan-2019 NOT SENTSINCE 2-Jan-2019"));
	/* a Date Dovecot reads its own way, two Dates, none: upstream */
	static const char *const odd[] = { "Date: someday\r\n\r\n", "Date: 1 Jan 19 00:00:00 GMT\r\n\r\n",
					   "Date: Tue, 1 Jan 2019 00:00:00 +0000 (UTC)\r\n\r\n",
					   "Date: 1 Jan 2019 00:00:00 +0000\r\nDate: 2 Jan 2019 00:00:00 +0000\r\n\r\n",
					   "Subject: none\r\n\r\n" };
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
		CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uids[3], CACHE_ITEM_HEADER, odd[i], strlen(odd[i])), 0);
		expect_upstream(answer("SEARCH SENTON 1-Jan-2019"));
	}
	teardown();
}

static void test_not_search(void)
{
	setup();
	expect_upstream(answer("NOOP"));
	teardown();
}

/* Stores message text as uid's whole body. */
static void store_body(uint32_t uid, const char *text)
{
	struct cache_body_writer *writer = cache_body_begin(cache, mailbox_id, uid, strlen(text), NULL);

	CU_ASSERT_PTR_NOT_NULL_FATAL(writer);
	CU_ASSERT_EQUAL(cache_body_write(writer, text, strlen(text)), 0);
	CU_ASSERT_EQUAL(cache_body_finish(&writer), 0);
}

/* The one integer of sql, run on the store's handle; -1: no row. */
static int64_t count_of(const char *sql)
{
	sqlite3_stmt *stmt;
	int64_t rows = -1;

	CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(cache_sqlite_handle(cache), sql, -1, &stmt, NULL), SQLITE_OK);
	if (sqlite3_step(stmt) == SQLITE_ROW)
		rows = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	return rows;
}

/* Rows of body_text. */
static long text_rows(void)
{
	return (long)count_of("SELECT count(*) FROM body_text");
}

static const char *const bodies[] = {
	"Subject: Hello there\r\nFrom: a@example.org\r\n\r\nThe quick brown fox\r\n-- \r\nsig\r\n",
	"Subject: =?utf-8?q?R=C3=A9union?= today\r\nContent-Type: text/plain; charset=utf-8\r\n"
	"Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 meet=\r\ning, the ze=\r\nbra=\r\n",
	"Subject: parts\r\nContent-Type: multipart/mixed; boundary=\"xx\"\r\n\r\npreamble words\r\n--xx\r\n"
	"Content-Type: text/html\r\n\r\n<b>bold</b> &eacute;\r\n--xx\r\nContent-Type: application/octet-stream\r\n"
	"Content-Transfer-Encoding: base64\r\n\r\nc2VjcmV0IHdvcmRz\r\n--xx\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
	"Content-Transfer-Encoding: base64\r\n\r\nV/ZydA==\r\n--xx--\r\nepilogue\r\n",
	"Subject: outer\r\nContent-Type: message/rfc822\r\n\r\nSubject: Inner zebra\r\n\r\ninner body\r\n",
};

static int commits_counted(void *count)
{
	(*(int *)count)++;
	return 0;
}

/* A batch of bodies is indexed in one transaction: a text row and its
   mark commit together, or a kill between them leaves a row the store
   says is not indexed. */
static void test_text_batch_atomic(void)
{
	int commits = 0;

	setup();
	for (uint32_t i = 0; i < 4; i++)
		store_body(uids[i], bodies[i]);
	sqlite3_commit_hook(cache_sqlite_handle(cache), commits_counted, &commits);
	CU_ASSERT_EQUAL(cache_fts_index_batch(cache, CACHE_FTS_BATCH_BYTES), 0);
	sqlite3_commit_hook(cache_sqlite_handle(cache), NULL, NULL);
	CU_ASSERT_EQUAL(text_rows(), 4);
	CU_ASSERT_EQUAL(commits, 1);
	teardown();
}

#define WORKER_BODIES 120
#define WORKER_SECONDS 120 /* the longest the index may take, under sanitizers on a busy machine */

static void add_worker_body(struct mime_buffer *text, uint32_t uid)
{
	char line[96];

	mime_buffer_reset(text);
	snprintf(line, sizeof(line), "Subject: body %u\r\nFrom: w@example.org\r\n\r\nneedle%u\r\n", uid, uid);
	mime_buffer_append_str(text, line);
	for (int i = 0; i < 500; i++) /* about 40 KB */
		mime_buffer_append_str(text, "the store's worker indexes this while the loop writes\r\n");
	mime_buffer_append_byte(text, '\0');
	store_body(uid, (const char *)text->data);
}

static double seconds_now(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static int64_t indexed_bodies(void)
{
	return count_of("SELECT count(*) FROM bodies WHERE text_indexed = 1");
}

static void count_match(uint32_t uid, void *context)
{
	(void)uid;
	(*(int *)context)++;
}

/* With an event base the store's worker indexes the bodies, off the
   loop: the loop hands it the work and sees it end, the loop's own
   writes meanwhile all succeed (the worker steps aside for them), and
   every body is indexed once. */
static void test_text_indexed_by_worker(void)
{
	static uint32_t many[WORKER_BODIES];
	struct event_base *base = event_base_new();
	struct cache_worker_counts counts;
	struct mime_buffer text = { 0 };
	struct cache_mailbox other;
	double deadline;
	int writes = 0, failed = 0, found = 0;
	bool dropped_while_indexing = false;

	CU_ASSERT_PTR_NOT_NULL_FATAL(base);
	for (uint32_t i = 0; i < WORKER_BODIES; i++)
		many[i] = i + 1;
	unit_cache_open(&store, "test-search-worker",
			(struct cache_settings){ .body_budget = 64 << 20, .body_max_size = 1 << 20, .base = base }, many,
			WORKER_BODIES);
	cache = store.cache;
	mailbox_id = store.mailbox_id;
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache->worker);
	for (uint32_t i = 0; i < WORKER_BODIES; i++)
		add_worker_body(&text, many[i]);
	mime_buffer_free(&text);
	/* a mailbox whose drop reads before it writes (its bodies' bytes) */
	CU_ASSERT_EQUAL_FATAL(cache_mailbox_open(cache, "Other", 9, &other, NULL), 0);
	CU_ASSERT_EQUAL(cache_store_item(cache, other.id, 1, CACHE_ITEM_ENVELOPE, "(o)", 3), 0);
	cache_pending_flush(cache);
	deadline = seconds_now() + WORKER_SECONDS;
	while ((indexed_bodies() < WORKER_BODIES || cache->fts_run_started != 0) && seconds_now() < deadline) {
		struct timespec pause = { 0, 2000000 };

		CU_ASSERT(event_base_loop(base, EVLOOP_NONBLOCK) >= 0);
		failed += cache_store_item(cache, mailbox_id, many[writes % WORKER_BODIES], CACHE_ITEM_ENVELOPE, "(w)",
					   3) != 0;
		cache_pending_flush(cache);
		if (!dropped_while_indexing && cache_worker_counts(cache->worker).jobs != 0) {
			/* the worker held inside a batch, the lock its: the drop,
			   which reads before it writes, waits for it and does not fail */
			cache_worker_hold(cache->worker, true);
			for (int waits = 0; waits < 5000 && !cache_worker_counts(cache->worker).held; waits++)
				nanosleep(&pause, NULL);
			dropped_while_indexing = cache_worker_counts(cache->worker).held;
			CU_ASSERT_EQUAL(cache_mailbox_delete(cache, "Other"), 0);
			cache_worker_hold(cache->worker, false);
		}
		writes++;
		nanosleep(&pause, NULL);
	}
	counts = cache_worker_counts(cache->worker);
	CU_ASSERT_EQUAL(indexed_bodies(), WORKER_BODIES);
	CU_ASSERT_EQUAL(text_rows(), WORKER_BODIES);
	CU_ASSERT_EQUAL(cache->fts_run_started, 0); /* the loop saw the run end */
	CU_ASSERT_EQUAL(counts.indexed_bodies, WORKER_BODIES);
	CU_ASSERT_EQUAL(counts.last_error, SQLITE_OK);
	CU_ASSERT_EQUAL(failed, 0);
	CU_ASSERT_TRUE(writes > 0 && counts.yields > 0);
	CU_ASSERT_TRUE(dropped_while_indexing);
	CU_ASSERT_EQUAL(cache_mailbox_lookup(cache, "Other", &other), 0);
	CU_ASSERT_FALSE(cache_writes_off(cache));
	/* the key in casemap form, as search-text writes the text */
	CU_ASSERT_EQUAL(cache_fts_find(cache, mailbox_id, (const unsigned char *)"NEEDLE17", 8, true, count_match, &found),
			1);
	CU_ASSERT_EQUAL(found, 1);
	unit_cache_close(&store);
	event_base_free(base);
}

static void test_text(void)
{
	setup();
	for (uint32_t i = 0; i < 4; i++)
		store_body(uids[i], bodies[i]);
	CU_ASSERT_STRING_EQUAL(answer("SEARCH TEXT \"quick\""),
			       "UPSTREAM: a body not cached whole, not indexed yet, or one the cache can't read as "
			       "Dovecot does");
	CU_ASSERT_EQUAL(cache_fts_index_batch(cache, 1), 1); /* one body at least, then more remain */
	while (cache_fts_index_batch(cache, CACHE_FTS_BATCH_BYTES) > 0)
		;
	CU_ASSERT_EQUAL(text_rows(), 4);
	expect(answer("SEARCH TEXT \"quick\""), "* SEARCH 1\r\n");
	expect(answer("SEARCH BODY \"QUICK\""), "* SEARCH 1\r\n");
	expect(answer("SEARCH BODY \"hello\""), "* SEARCH\r\n");        /* a header: TEXT only */
	expect(answer("SEARCH TEXT \"hello\""), "* SEARCH 1\r\n");
	expect(answer("SEARCH TEXT \"subject: hello\""), "* SEARCH 1\r\n"); /* name, colon, value */
	expect(answer("SEARCH TEXT \"from: a@\""), "* SEARCH 1\r\n");
	expect(answer("SEARCH BODY \"meeting\""), "* SEARCH 2\r\n");     /* across a soft break */
	expect(answer("SEARCH BODY \"zebra\""), "* SEARCH 2\r\n");       /* the inner Subject is a header */
	expect(answer("SEARCH TEXT \"zebra\""), "* SEARCH 2 4\r\n");
	expect(answer("SEARCH BODY {5+}\r\ncaf\xc3\xa9"), "* SEARCH 2\r\n");
	expect(answer("SEARCH BODY {6+}\r\nCAFE\xcc\x81"), "* SEARCH 2\r\n"); /* decomposed */
	expect(answer("SEARCH TEXT {8+}\r\nr\xc3\xa9union"), "* SEARCH 2\r\n"); /* RFC 2047 in a header */
	expect(answer("SEARCH TEXT {9+}\r\nr\xc3\xa9union "), "* SEARCH 2\r\n");
	expect(answer("SEARCH BODY \"<b>bold\""), "* SEARCH 3\r\n");    /* HTML as it is */
	expect(answer("SEARCH BODY \"&eacute;\""), "* SEARCH 3\r\n");
	expect(answer("SEARCH TEXT \"secret\""), "* SEARCH\r\n");        /* an attachment's text */
	expect(answer("SEARCH TEXT \"preamble\""), "* SEARCH\r\n");
	expect(answer("SEARCH TEXT \"epilogue\""), "* SEARCH\r\n");
	expect(answer("SEARCH BODY {5+}\r\nw\xc3\xb6rt"), "* SEARCH 3\r\n"); /* base64 ISO-8859-1 */
	expect(answer("SEARCH BODY \"fo\""), "* SEARCH 1\r\n");          /* short: scanned */
	expect(answer("SEARCH BODY \"e\""), "* SEARCH 1 2 3 4\r\n");
	expect(answer("SEARCH TEXT \"--\""), "* SEARCH 1\r\n");
	expect(answer("SEARCH NOT BODY \"fox\" TEXT \"subject\""), "* SEARCH 2 3 4\r\n");
	expect(answer("SEARCH OR BODY \"fox\" BODY \"inner\" UNSEEN"), "* SEARCH 1\r\n");
	expect_upstream(answer("SEARCH BODY \"\""));
	/* purge takes the rows along */
	CU_ASSERT_EQUAL(cache_mailbox_delete(cache, "INBOX"), 0);
	CU_ASSERT_EQUAL(text_rows(), 0);
	teardown();
}

#define LINGER_BODIES 50

/* The count of sql's first column in the store at path, read from outside. */
static int64_t count_outside(const char *path, const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *stmt;
	int64_t count = -1;

	CU_ASSERT_EQUAL_FATAL(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK && sqlite3_step(stmt) == SQLITE_ROW)
		count = sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	sqlite3_close(db);
	return count;
}

/* Whether the store at path is open: SQLite removes its -wal file at the
   last close. */
static bool store_open(const char *path)
{
	char wal[300];

	snprintf(wal, sizeof(wal), "%s-wal", path);
	return access(wal, F_OK) == 0;
}

/* The last session of an account leaves while its bodies' text is being
   indexed: the store stays open past its linger until the index is done
   (imapcachectl warm logs out at once), then closes. The worker is held
   back until the linger is long over, so the index outlasts it. */
static void test_text_indexed_after_last_session(void)
{
	static uint32_t many[LINGER_BODIES];
	struct event_base *base = event_base_new();
	const struct timeval past_linger = { 2, 500000 };
	struct mime_buffer text = { 0 };
	struct cache *lingering;
	char *path;

	CU_ASSERT_PTR_NOT_NULL_FATAL(base);
	for (uint32_t i = 0; i < LINGER_BODIES; i++)
		many[i] = i + 1;
	unit_cache_open(&store, "test-search-linger",
			(struct cache_settings){ .body_budget = 64 << 20, .body_max_size = 1 << 20, .base = base,
						 .linger_seconds = 1 },
			many, LINGER_BODIES);
	cache = store.cache;
	mailbox_id = store.mailbox_id;
	path = cache_file_path(store.cache_dir, "up", "alice");
	CU_ASSERT_PTR_NOT_NULL_FATAL(path);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cache->worker);
	cache_worker_pause(cache->worker, true);
	for (uint32_t i = 0; i < LINGER_BODIES; i++)
		add_worker_body(&text, many[i]);
	mime_buffer_free(&text);
	lingering = cache;
	cache_unref(&store.cache); /* the last session goes: the store lingers */
	cache = NULL;
	event_base_loopexit(base, &past_linger);
	CU_ASSERT(event_base_dispatch(base) >= 0);
	CU_ASSERT_TRUE(store_open(path)); /* past its linger, open for the index */
	if (store_open(path))
		cache_worker_pause(lingering->worker, false);
	CU_ASSERT(event_base_dispatch(base) >= 0); /* until the store closed: nothing is left on the base */
	CU_ASSERT_FALSE(store_open(path));
	CU_ASSERT_EQUAL(count_outside(path, "SELECT count(*) FROM bodies WHERE complete = 1 AND text_indexed = 1"),
			LINGER_BODIES);
	free(path);
	unit_cache_close(&store);
	event_base_free(base);
}

/* A body that can't be read as Dovecot does: BODY and TEXT go upstream. */
static void test_text_unsure(void)
{
	static const char *const odd[] = {
		"Content-Type: text/plain; charset=x-broken\r\n\r\nw\xf6rd\r\n",    /* unknown charset, 8-bit */
		"Content-Type: text/plain; charset=utf-8\r\n\r\nw\xf6rd\r\n",       /* not UTF-8 */
		"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\r\nx\r\n", /* no closing line */
		"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na=3Z\r\n",
		"Subject: x\r\nno colon\r\n\r\nbody\r\n",
		"Subject: x\r\n",                                                   /* no header end */
	};

	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
		setup();
		store_body(uids[0], odd[i]);
		for (uint32_t j = 1; j < 4; j++)
			store_body(uids[j], bodies[j]);
		while (cache_fts_index_batch(cache, CACHE_FTS_BATCH_BYTES) > 0)
			;
		expect_upstream(answer("SEARCH TEXT \"zebra\""));
		teardown();
	}
	setup();
	store_body(uids[0], "Content-Type: text/plain; charset=x-broken\r\n\r\nplain\r\n");
	for (uint32_t j = 1; j < 4; j++)
		store_body(uids[j], bodies[j]);
	while (cache_fts_index_batch(cache, CACHE_FTS_BATCH_BYTES) > 0)
		;
	expect(answer("SEARCH BODY \"plain\""), "* SEARCH 1\r\n"); /* read as UTF-8, as Dovecot reads it */
	teardown();
	setup();
	store_body(uids[0], "Content-Type: text/plain; charset=utf-16\r\n\r\nplain\r\n");
	for (uint32_t j = 1; j < 4; j++)
		store_body(uids[j], bodies[j]);
	while (cache_fts_index_batch(cache, CACHE_FTS_BATCH_BYTES) > 0)
		;
	expect_upstream(answer("SEARCH TEXT \"plain\"")); /* iconv reads these bytes otherwise */
	teardown();
}

#define PIECES_TEXT 300000 /* bytes of body text: five pieces */
#define STRADDLE "zqxstraddlezqx"

/* A message whose body text (PIECES_TEXT bytes of lower-case filler)
   has STRADDLE across the first piece boundary and long (a key of
   CACHE_FTS_KEY_MAX bytes) across the second, each at an offset where
   only a piece's overlap holds it whole. */
static char *pieces_message(char *long_key)
{
	static const char head[] = "Subject: pieces\r\n\r\n";
	char *message = malloc(sizeof(head) + PIECES_TEXT);
	char *text = message + sizeof(head) - 1;

	CU_ASSERT_PTR_NOT_NULL_FATAL(message);
	memcpy(message, head, sizeof(head) - 1);
	for (size_t i = 0; i < PIECES_TEXT; i++)
		text[i] = i % 40 == 38 ? '\r' : i % 40 == 39 ? '\n' : i % 8 == 7 ? ' ' : (char)('a' + i % 7);
	memcpy(text + CACHE_FTS_PIECE_BYTES - 7, STRADDLE, strlen(STRADDLE));
	memset(long_key, 'j', CACHE_FTS_KEY_MAX);
	memcpy(long_key, "zq", 2);
	memcpy(long_key + CACHE_FTS_KEY_MAX - 2, "qz", 2);
	long_key[CACHE_FTS_KEY_MAX] = '\0';
	/* ending one byte past piece 1's end: whole only in piece 2, and
	   only if it repeats the CACHE_FTS_KEY_MAX - 1 bytes before */
	memcpy(text + 2 * CACHE_FTS_PIECE_BYTES - (CACHE_FTS_KEY_MAX - 1), long_key, CACHE_FTS_KEY_MAX);
	text[PIECES_TEXT] = '\0';
	return message;
}

/* setup(), the other three bodies stored and indexed, then message
   stored as the first message's body, its text not indexed yet. */
static void setup_beside_indexed(const char *message)
{
	setup();
	for (uint32_t i = 1; i < 4; i++)
		store_body(uids[i], bodies[i]);
	while (cache_fts_index_batch(cache, CACHE_FTS_BATCH_BYTES) > 0)
		;
	store_body(uids[0], message);
}

/* The cut of a text into pieces: at most CACHE_FTS_PIECES_MAX (a 257th
   piece's rowid would be the next UID's piece 0), every byte in one, and
   the last piece never empty; a text past 16 MiB has longer pieces. */
static void test_piece_plan(void)
{
	const size_t pieces_max = CACHE_FTS_PIECES_MAX, piece = CACHE_FTS_PIECE_BYTES;
	const size_t lengths[] = { 0, 1, piece - 1, piece, piece + 1, pieces_max * piece - 1, pieces_max * piece,
				   pieces_max * piece + 1, pieces_max * piece + pieces_max, 100u << 20,
				   (size_t)INT32_MAX, (size_t)UINT32_MAX + 7 };

	for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
		size_t len = lengths[i], step = 0;
		unsigned int pieces = cache_fts_piece_plan(len, &step);

		CU_ASSERT(pieces >= 1 && pieces <= pieces_max);
		CU_ASSERT(step >= piece);
		CU_ASSERT(len < piece * pieces_max ? step == piece : step > piece);
		CU_ASSERT((uint64_t)pieces * step >= len);                  /* every byte in a piece */
		CU_ASSERT(len == 0 || (uint64_t)(pieces - 1) * step < len); /* the last one not empty */
	}
	CU_ASSERT_EQUAL(cache_fts_piece_plan(pieces_max * piece, &(size_t){ 0 }), pieces_max);
	CU_ASSERT_EQUAL(cache_fts_piece_plan(PIECES_TEXT, &(size_t){ 0 }), 5);
}

/* A long body's text is indexed a piece per transaction, piece 0 last:
   no search takes it as indexed before, and a key that crosses a piece
   boundary is found after. */
static void test_text_in_pieces(void)
{
	char long_key[CACHE_FTS_KEY_MAX + 1];
	char *message = pieces_message(long_key);
	int batches = 0, more;
	char sql[160];

	setup_beside_indexed(message);
	while ((more = cache_fts_index_batch(cache, 1)) > 0) { /* one piece a batch */
		if (++batches < 5)
			expect_upstream(answer("SEARCH BODY \"" STRADDLE "\""));
	}
	CU_ASSERT_EQUAL(more, 0);
	CU_ASSERT_EQUAL(batches, 5);
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM body_text WHERE rowid >> 8 = (%lld << 32) | %u",
		 (long long)mailbox_id, uids[0]);
	CU_ASSERT_EQUAL(count_of(sql), 5);
	expect(answer("SEARCH BODY \"" STRADDLE "\""), "* SEARCH 1\r\n");
	expect(answer("SEARCH TEXT {%d+}\r\n%s", CACHE_FTS_KEY_MAX, long_key), "* SEARCH 1\r\n");
	expect(answer("SEARCH TEXT \"pieces\""), "* SEARCH 1\r\n"); /* the header lines, with piece 0 */
	expect(answer("SEARCH BODY \"pieces\""), "* SEARCH\r\n");
	expect(answer("SEARCH BODY \"ab\""), "* SEARCH 1\r\n"); /* a short key scans every piece */
	teardown();
	free(message);
}

/* A body evicted and stored again while its pieces are being written
   starts over: the pieces the eviction took are written again before
   piece 0 says it is indexed. */
static void test_text_pieces_survive_eviction(void)
{
	char long_key[CACHE_FTS_KEY_MAX + 1];
	char *message = pieces_message(long_key);
	char sql[160];

	setup_beside_indexed(message);
	CU_ASSERT_EQUAL(cache_fts_index_batch(cache, 1), 1); /* pieces 1 and 2 */
	CU_ASSERT_EQUAL(cache_fts_index_batch(cache, 1), 1);
	snprintf(sql, sizeof(sql), "DELETE FROM bodies WHERE mailbox_id = %lld AND uid = %u", (long long)mailbox_id,
		 uids[0]);
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache), sql, NULL, NULL, NULL), SQLITE_OK);
	CU_ASSERT_EQUAL(text_rows(), 3); /* the trigger took its pieces */
	store_body(uids[0], message);
	while (cache_fts_index_batch(cache, 1) > 0)
		;
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM body_text WHERE rowid >> 8 = (%lld << 32) | %u",
		 (long long)mailbox_id, uids[0]);
	CU_ASSERT_EQUAL(count_of(sql), 5);
	expect(answer("SEARCH BODY \"" STRADDLE "\""), "* SEARCH 1\r\n");
	expect(answer("SEARCH TEXT {%d+}\r\n%s", CACHE_FTS_KEY_MAX, long_key), "* SEARCH 1\r\n");
	teardown();
	free(message);
}

/* Whether len bytes at text are whole UTF-8 characters. */
static bool whole_utf8(const unsigned char *text, size_t len)
{
	for (size_t i = 0; i < len;) {
		size_t need = text[i] < 0x80 ? 1 : (text[i] & 0xe0) == 0xc0 ? 2 : (text[i] & 0xf0) == 0xe0 ? 3
			      : (text[i] & 0xf8) == 0xf0 ? 4 : 0;

		if (need == 0 || i + need > len)
			return false;
		for (size_t k = 1; k < need; k++) {
			if ((text[i + k] & 0xc0) != 0x80)
				return false;
		}
		i += need;
	}
	return true;
}

/* Pieces of a text of three-byte characters, whose nominal boundaries
   (multiples of 64 KiB) fall inside characters: each piece starts and
   ends on a character, and a key across a boundary is found. */
static void test_text_pieces_whole_characters(void)
{
	static const char head[] = "Subject: wide\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n";
	size_t chars = 3 * CACHE_FTS_PIECE_BYTES / 3 + 1000, len = sizeof(head) - 1 + 3 * chars + 2;
	char *message = malloc(len + 1), *text = message + sizeof(head) - 1;
	sqlite3_stmt *stmt;
	int pieces = 0, whole = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(message);
	memcpy(message, head, sizeof(head) - 1);
	for (size_t i = 0; i < chars; i++)
		memcpy(text + 3 * i, i % 2 ? "\xe6\x97\xa5" : "\xe6\x9c\x88", 3); /* U+65E5, U+6708 */
	memcpy(text + 3 * (CACHE_FTS_PIECE_BYTES / 3), "\xe7\x81\xab", 3);    /* U+706B once, at the boundary */
	memcpy(text + 3 * chars, "\r\n", 3);
	setup();
	for (uint32_t i = 1; i < 4; i++)
		store_body(uids[i], bodies[i]);
	store_body(uids[0], message);
	while (cache_fts_index_batch(cache, CACHE_FTS_BATCH_BYTES) > 0)
		;
	CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(cache_sqlite_handle(cache), "SELECT body FROM body_text", -1, &stmt, NULL),
			      SQLITE_OK);
	while (sqlite3_step(stmt) == SQLITE_ROW) {
		pieces++;
		whole += whole_utf8(sqlite3_column_blob(stmt, 0), (size_t)sqlite3_column_bytes(stmt, 0));
	}
	sqlite3_finalize(stmt);
	CU_ASSERT_EQUAL(pieces, 4 + 4 - 1);
	CU_ASSERT_EQUAL(whole, pieces);
	expect(answer("SEARCH BODY {9+}\r\n\xe6\x9c\x88\xe7\x81\xab\xe6\x9c\x88"), "* SEARCH 1\r\n"); /* U+6708 U+706B U+6708 */
	teardown();
	free(message);
}

/* Pieces an earlier try left (a crash, a build that cut them otherwise)
   go when a body starts: none is found in place of the body's text. */
static void test_text_pieces_left_over_cleared(void)
{
	char sql[200];

	setup();
	for (uint32_t i = 0; i < 4; i++)
		store_body(uids[i], bodies[i]);
	snprintf(sql, sizeof(sql), "INSERT INTO body_text(rowid, sure, head, body) VALUES((((%lld << 32) | %u) << 8) | 7, 1, "
		 "'', 'STALE LEFTOVER')", (long long)mailbox_id, uids[1]);
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache), sql, NULL, NULL, NULL), SQLITE_OK);
	while (cache_fts_index_batch(cache, CACHE_FTS_BATCH_BYTES) > 0)
		;
	CU_ASSERT_EQUAL(text_rows(), 4);
	expect(answer("SEARCH BODY \"leftover\""), "* SEARCH\r\n");
	expect(answer("SEARCH BODY \"zebra\""), "* SEARCH 2\r\n");
	teardown();
}

/* A long key, odd UTF-8, bodies evicted at a lower budget. */
static void test_text_bad_input(void)
{
	char key[10001];
	struct cache_settings settings = { .body_budget = 1, .body_max_size = 1 << 20 };
	struct cache *again;
	const char *error;

	setup();
	for (uint32_t i = 0; i < 4; i++)
		store_body(uids[i], bodies[i]);
	while (cache_fts_index_batch(cache, CACHE_FTS_BATCH_BYTES) > 0)
		;
	memset(key, 'q', sizeof(key) - 1);
	key[CACHE_FTS_KEY_MAX] = '\0';
	expect(answer("SEARCH TEXT {%d+}\r\n%s", CACHE_FTS_KEY_MAX, key), "* SEARCH\r\n");
	key[CACHE_FTS_KEY_MAX] = 'q';
	key[sizeof(key) - 1] = '\0'; /* longer than a piece repeats of the one before it */
	expect_upstream(answer("SEARCH TEXT {10000+}\r\n%s", key));
	expect(answer("SEARCH TEXT {4+}\r\n\xf0\x9d\x84\x9e"), "* SEARCH\r\n");  /* outside the BMP */
	expect(answer("SEARCH BODY {2+}\r\n\xcc\x81"), "* SEARCH 2\r\n");       /* a lone combining mark */
	expect(answer("SEARCH BODY \"\\\"\""), "* SEARCH\r\n");                   /* FTS5 quoting */
	expect_upstream(answer("SEARCH BODY {2+}\r\n\xc3("));                    /* not UTF-8 */
	/* a budget of one byte evicts every body, and its row with it */
	settings.dir = store.cache_dir;
	again = cache_open(&settings, "up", "alice", &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(again);
	CU_ASSERT_EQUAL(text_rows(), 0);
	expect_upstream(answer("SEARCH TEXT \"zebra\""));
	/* the index merges its tombstones away, a bounded step at a time */
	int steps = 0, more;
	while ((more = cache_fts_merge_step(cache)) > 0 && steps < 100)
		steps++;
	CU_ASSERT_EQUAL(more, 0);
	CU_ASSERT_EQUAL(cache_fts_merge_step(cache), 0);
	cache_unref(&again);
	teardown();
}

/* The extraction itself: header lines and body text kept apart. */
static void test_text_extract(void)
{
	struct mime_buffer head = { 0 }, body = { 0 };
	const char *message = "Subject:  =?utf-8?b?w6k=?= x\r\nX-Empty:\r\n\r\nL1\r\nL2";

	CU_ASSERT_EQUAL(search_text_extract((const unsigned char *)message, strlen(message), &head, &body), 0);
	CU_ASSERT_EQUAL(head.len, strlen("SUBJECT:  E\xcc\x81 X\nX-EMPTY:\n\n"));
	CU_ASSERT_EQUAL(memcmp(head.data, "SUBJECT:  E\xcc\x81 X\nX-EMPTY:\n\n", head.len), 0);
	CU_ASSERT_EQUAL(body.len, strlen("L1\r\nL2\n"));
	CU_ASSERT_EQUAL(memcmp(body.data, "L1\r\nL2\n", body.len), 0);
	mime_buffer_free(&head);
	mime_buffer_free(&body);
	CU_ASSERT_EQUAL(search_text_extract((const unsigned char *)"a: b\r\n\r\nx\ry", 11, &head, &body), -1);
	mime_buffer_free(&head);
	mime_buffer_free(&body);
	/* a parameter with no value at the field's end (fuzz-search-text read past the field) */
	message = "Content-Type: text/plain; charset=\r\n\r\nbody\r\n";
	CU_ASSERT_EQUAL(search_text_extract((const unsigned char *)message, strlen(message), &head, &body), -1);
	message = "Content-Type: text/plain; charset=\"\r\n\r\nbody\r\n";
	CU_ASSERT_EQUAL(search_text_extract((const unsigned char *)message, strlen(message), &head, &body), -1);
	mime_buffer_free(&head);
	mime_buffer_free(&body);
	/* a NUL from an encoded word in a header is given up on, as in a body
	   (fuzz-search-text found it in the text) */
	message = "From: me =?iso-8859-1?b?APRI?=A\r\n\r\nbody\r\n";
	CU_ASSERT_EQUAL(search_text_extract((const unsigned char *)message, strlen(message), &head, &body), -1);
	mime_buffer_free(&head);
	mime_buffer_free(&body);
}

const char unit_suite_name[] = "search";
const struct unit_test unit_tests[] = {
	{ "flag and keyword keys", test_flags },
	{ "NOT, OR, parentheses, CHARSET", test_logic },
	{ "sequence and UID sets", test_sets },
	{ "sizes and INTERNALDATE days", test_sizes_and_dates },
	{ "what the view or store lacks goes upstream", test_unknown },
	{ "keys and options left to the upstream", test_upstream_rules },
	{ "deep nesting and long strings", test_bad_input },
	{ "RECENT, NEW, OLD", test_recent },
	{ "MODSEQ after CONDSTORE", test_modseq },
	{ "ESEARCH RETURN", test_esearch },
	{ "not a SEARCH", test_not_search },
	{ "header string keys, as Dovecot matches them", test_strings },
	{ "SENTBEFORE, SENTON, SENTSINCE from the Date field", test_sent },
	{ "BODY and TEXT from the indexed text", test_text },
	{ "a batch of bodies is indexed in one transaction", test_text_batch_atomic },
	{ "the store's worker indexes behind the loop, and steps aside for its writes", test_text_indexed_by_worker },
	{ "a store stays open past its linger until its text is indexed", test_text_indexed_after_last_session },
	{ "BODY and TEXT upstream beside a body read otherwise", test_text_unsure },
	{ "a long body's text: a piece per transaction, piece 0 last, keys across pieces found", test_text_in_pieces },
	{ "a text's cut: at most 256 pieces, every byte in one, longer pieces past 16 MiB", test_piece_plan },
	{ "a body evicted while its pieces are written starts over", test_text_pieces_survive_eviction },
	{ "pieces start and end on whole characters", test_text_pieces_whole_characters },
	{ "pieces left by an earlier try go when a body starts", test_text_pieces_left_over_cleared },
	{ "BODY and TEXT: a long key, odd UTF-8, eviction", test_text_bad_input },
	{ "search-text: header lines and body text", test_text_extract },
	{ NULL, NULL },
};
