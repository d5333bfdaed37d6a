/* SPDX-License-Identifier: MIT */
/* Unit tests for daemon/fetch: which FETCH commands are local, and the bytes of their answers as Dovecot 2.3 writes them. */
#include "config.h"
#include "unit.h"
#include "unit-cache.h"
#include "cache.h"
#include "cache-private.h" /* CACHE_VERIFY_BODIES_MAX */
#include "fetch.h"
#include "fetch-derive.h"
#include "fetch-splice.h"
#include "imap-command.h"
#include "imap-parser.h"
#include "log.h"
#include "mailbox-view.h"
#include "mime-imap.h"

#include <event2/buffer.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct unit_cache store;
static struct cache *cache;
static struct mailbox_view *view;
static int64_t mailbox_id;
static struct imap_parser *parser;
static struct imap_command_parser *commands;
static struct imap_command command;
static char line[2100];
static struct fetch_facts facts;

/* Message 1 (UID 1): single part, whole, our structure agrees. */
static const char text1[] = "Subject: hi\r\nFrom: a@b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nhello\r\n";
static const char header1[] = "Subject: hi\r\nFrom: a@b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n";
/* Message 2 (UID 2): a text part and a base64 part, whole, agrees. */
static const char text2[] = "Subject: two\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
			    "--b\r\nContent-Type: text/plain\r\n\r\npart one\r\n"
			    "--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
			    "AGFi\r\n--b--\r\n";
/* Message 3 (UID 5): fixed items only. */
#define ENVELOPE "(\"Mon, 1 Jan 2019\" \"hi\" NIL NIL NIL NIL NIL NIL NIL NIL)"
#define STRUCTURE "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 7 1 NIL NIL NIL NIL)"
#define BODY "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 7 1)"
#define DATE "\"01-Jan-2019 00:16:18 +0000\""

static void store_message(uint32_t uid, const char *text, const char *header, bool agrees)
{
	struct cache_body_writer *writer;

	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uid, CACHE_ITEM_INTERNALDATE, DATE, strlen(DATE)), 0);
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uid, CACHE_ITEM_ENVELOPE, ENVELOPE, strlen(ENVELOPE)), 0);
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uid, CACHE_ITEM_BODYSTRUCTURE, STRUCTURE, strlen(STRUCTURE)), 0);
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uid, CACHE_ITEM_BODY, BODY, strlen(BODY)), 0);
	CU_ASSERT_EQUAL(cache_store_size(cache, mailbox_id, uid, 1234), 0);
	if (header != NULL)
		CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uid, CACHE_ITEM_HEADER, header, strlen(header)), 0);
	if (text == NULL)
		return;
	writer = cache_body_begin(cache, mailbox_id, uid, strlen(text), NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(writer);
	CU_ASSERT_EQUAL(cache_body_write(writer, text, strlen(text)), 0);
	CU_ASSERT_EQUAL(cache_body_finish(&writer), 0);
	CU_ASSERT_EQUAL(cache_set_structure_agrees(cache, mailbox_id, uid, agrees), 0);
}

/* Deletes uid's row and body under the store (another process, or a
   damaged value dropped): no pin holds those back. */
static void delete_behind(uint32_t uid)
{
	char sql[160];

	snprintf(sql, sizeof(sql), "DELETE FROM messages WHERE uid = %u; DELETE FROM bodies WHERE uid = %u",
		 (unsigned int)uid, (unsigned int)uid);
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache), sql, NULL, NULL, NULL), SQLITE_OK);
}

static void setup(void)
{
	static const uint32_t uids[] = { 1, 2, 5 };

	unit_cache_open(&store, "test-fetch", (struct cache_settings){ .body_budget = 1 << 20, .body_max_size = 1 << 20 },
			uids, 3);
	cache = store.cache;
	mailbox_id = store.mailbox_id;
	view = store.view;
	CU_ASSERT_EQUAL(mailbox_view_set_flags(view, 1, "", 0), 0);
	CU_ASSERT_EQUAL(mailbox_view_set_flags(view, 2, "\\Seen $Junk", 11), 0);
	CU_ASSERT_EQUAL(mailbox_view_set_flags(view, 3, "\\Flagged", 8), 0);
	CU_ASSERT_EQUAL(mailbox_view_set_modseq(view, 1, 10), 0);
	CU_ASSERT_EQUAL(mailbox_view_set_modseq(view, 2, 20), 0);
	CU_ASSERT_EQUAL(mailbox_view_set_modseq(view, 3, 30), 0);
	store_message(1, text1, header1, true);
	store_message(2, text2, NULL, true);
	store_message(5, NULL, "X: y\r\n\r\n", false);
	parser = imap_parser_new();
	commands = imap_command_parser_new();
	facts = (struct fetch_facts){ .cache = cache, .mailbox_id = mailbox_id, .view = view, .read_only = true };
}

static void teardown(void)
{
	imap_parser_free(&parser);
	imap_command_parser_free(&commands);
	unit_cache_close(&store);
}

/* Parses "T " and the command into command, with the line in facts. */
static void parse(const char *format, va_list args)
{
	char text[2048];
	size_t consumed;
	const char *message;

	vsnprintf(text, sizeof(text), format, args);
	snprintf(line, sizeof(line), "T %s\r\n", text);
	imap_parser_reset(parser);
	CU_ASSERT_EQUAL_FATAL(imap_parser_feed_bytes(parser, line, strlen(line), &consumed), IMAP_PARSER_LINE_COMPLETE);
	CU_ASSERT_EQUAL_FATAL(imap_command_parse(commands, imap_parser_get_line(parser), &command, &message),
			      IMAP_COMMAND_ERROR_NONE);
	facts.line = line;
	facts.line_len = strlen(line) - 2;
}

static void parse_only(const char *format, ...) __attribute__((format(printf, 1, 2)));
static void parse_only(const char *format, ...)
{
	va_list args;

	va_start(args, format);
	parse(format, args);
	va_end(args);
}

static enum fetch_route plan_route(const char **why_r)
{
	struct fetch_answer *plan = NULL;
	enum fetch_route route = fetch_plan(&command, &facts, &plan, why_r);

	fetch_answer_free(&plan);
	return route;
}

/* The local answer to the command (its lines and the tagged OK), or
   "UPSTREAM: why". Static; valid until the next call. */
static const char *answer(const char *format, ...) __attribute__((format(printf, 1, 2)));
static const char *answer(const char *format, ...)
{
	static char text[8192];
	char raw[4096];
	struct fetch_answer *plan = NULL;
	const char *why = NULL;
	struct evbuffer *out = evbuffer_new();
	va_list args;
	size_t len;

	va_start(args, format);
	parse(format, args);
	va_end(args);
	if (fetch_plan(&command, &facts, &plan, &why) == FETCH_ROUTE_UPSTREAM) {
		CU_ASSERT_PTR_NULL(plan);
		snprintf(text, sizeof(text), "UPSTREAM: %s", why);
		evbuffer_free(out);
		return text;
	}
	if (fetch_answer_missing_count(plan) > 0) {
		uint32_t *uids, *seqs;
		char items[FETCH_MISSING_ITEMS_MAX];
		long count = fetch_answer_missing(plan, &uids, &seqs, items, sizeof(items));
		size_t at = (size_t)snprintf(text, sizeof(text), "MISSING:");

		for (long i = 0; i < count && at < sizeof(text); i++)
			at += (size_t)snprintf(text + at, sizeof(text) - at, " %u/%u", seqs[i], uids[i]);
		if (at < sizeof(text))
			at += (size_t)snprintf(text + at, sizeof(text) - at, " (%s)", items);
		if (at < sizeof(text) && fetch_answer_missing_changedsince(plan) != 0)
			snprintf(text + at, sizeof(text) - at, " (CHANGEDSINCE %llu)",
				 (unsigned long long)fetch_answer_missing_changedsince(plan));
		free(uids);
		free(seqs);
		fetch_answer_free(&plan);
		evbuffer_free(out);
		return text;
	}
	if (fetch_answer_spliced_count(plan) > 0) {
		struct fetch_splice_group *groups;
		long count = fetch_answer_splice_groups(plan, &groups);
		size_t at = (size_t)snprintf(text, sizeof(text), "SPLICE:");

		for (long g = 0; g < count && at < sizeof(text); g++) {
			at += (size_t)snprintf(text + at, sizeof(text) - at, "%s", g > 0 ? ";" : "");
			for (size_t i = 0; i < groups[g].count && at < sizeof(text); i++)
				at += (size_t)snprintf(text + at, sizeof(text) - at, " %u/%u", groups[g].seqs[i],
						       groups[g].uids[i]);
			if (at < sizeof(text))
				at += (size_t)snprintf(text + at, sizeof(text) - at, " (%s)", groups[g].items);
		}
		fetch_splice_groups_free(groups, count > 0 ? (size_t)count : 0);
		fetch_answer_free(&plan);
		evbuffer_free(out);
		return text;
	}
	if (fetch_answer_needs_vanished(plan)) {
		snprintf(text, sizeof(text), "VANISHED STEP");
		fetch_answer_free(&plan);
		evbuffer_free(out);
		return text;
	}
	if (fetch_answer_needs_seen(plan)) {
		uint32_t *uids, *seqs;
		long count = fetch_answer_unseen(plan, &uids, &seqs);
		size_t at = (size_t)snprintf(text, sizeof(text), "SEEN FIRST:");

		for (long i = 0; i < count && at < sizeof(text); i++)
			at += (size_t)snprintf(text + at, sizeof(text) - at, " %u/%u", seqs[i], uids[i]);
		free(uids);
		free(seqs);
		fetch_answer_free(&plan);
		evbuffer_free(out);
		return text;
	}
	CU_ASSERT_EQUAL(fetch_answer_write(plan, out, 0), FETCH_WRITE_DONE);
	fetch_answer_free(&plan);
	CU_ASSERT_PTR_NULL(plan);
	fetch_write_tagged_ok(out, "T");
	len = evbuffer_get_length(out) < sizeof(raw) ? evbuffer_get_length(out) : sizeof(raw);
	evbuffer_remove(out, raw, len);
	/* a NUL is written "\\0", so that the answer is a C string */
	for (size_t i = 0, at = 0; i <= len; i++) {
		if (i == len)
			text[at] = '\0';
		else if (raw[i] == '\0')
			at += (size_t)snprintf(text + at, sizeof(text) - at, "\\0");
		else
			text[at++] = raw[i];
	}
	evbuffer_free(out);
	return text;
}

#define OK "T OK Fetch completed.\r\n"

static void expect(const char *got, const char *expected)
{
	if (strcmp(got, expected) != 0)
		fprintf(stderr, "\ngot:      %s\nexpected: %s\n", got, expected);
	CU_ASSERT_STRING_EQUAL(got, expected);
}

static bool upstream(const char *got)
{
	return strncmp(got, "UPSTREAM: ", 10) == 0;
}

/* Buffered items (UID, FLAGS, INTERNALDATE, RFC822.SIZE, MODSEQ) first in
   the order asked, the rest after in the order asked; repeats once. */
static void test_item_order(void)
{
	setup();
	expect(answer("FETCH 1 (FLAGS UID)"), "* 1 FETCH (FLAGS () UID 1)\r\n" OK);
	expect(answer("FETCH 1 (UID FLAGS)"), "* 1 FETCH (UID 1 FLAGS ())\r\n" OK);
	expect(answer("UID FETCH 2 (FLAGS)"), "* 2 FETCH (UID 2 FLAGS (\\Seen $Junk))\r\n" OK);
	expect(answer("UID FETCH 2 (FLAGS UID)"), "* 2 FETCH (UID 2 FLAGS (\\Seen $Junk))\r\n" OK);
	expect(answer("FETCH 3 (ENVELOPE FLAGS ENVELOPE)"), "* 3 FETCH (FLAGS (\\Flagged) ENVELOPE " ENVELOPE ")\r\n" OK);
	expect(answer("FETCH 3 (BODYSTRUCTURE RFC822.SIZE UID BODY INTERNALDATE)"),
	       "* 3 FETCH (RFC822.SIZE 1234 UID 5 INTERNALDATE " DATE " BODYSTRUCTURE " STRUCTURE " BODY " BODY ")\r\n" OK);
	expect(answer("FETCH 3 FAST"), "* 3 FETCH (FLAGS (\\Flagged) INTERNALDATE " DATE " RFC822.SIZE 1234)\r\n" OK);
	expect(answer("FETCH 3 ALL"),
	       "* 3 FETCH (FLAGS (\\Flagged) INTERNALDATE " DATE " RFC822.SIZE 1234 ENVELOPE " ENVELOPE ")\r\n" OK);
	expect(answer("UID FETCH 5 FULL"), "* 3 FETCH (UID 5 FLAGS (\\Flagged) INTERNALDATE " DATE
					   " RFC822.SIZE 1234 ENVELOPE " ENVELOPE " BODY " BODY ")\r\n" OK);
	expect(answer("FETCH 1 (BODY.PEEK[HEADER.FIELDS (subject FROM)] UID)"),
	       "* 1 FETCH (UID 1 BODY[HEADER.FIELDS (SUBJECT FROM)] {26}\r\nSubject: hi\r\nFrom: a@b\r\n\r\n)\r\n" OK);
	expect(answer("FETCH 1 (BODY.PEEK[]<0.5> BODY.PEEK[TEXT]<1.3> BODY.PEEK[]<0.5>)"),
	       "* 1 FETCH (BODY[]<0> {5}\r\nSubje BODY[TEXT]<1> {3}\r\nell BODY[]<0> {5}\r\nSubje)\r\n" OK);
	teardown();
}

/* Sections are literals, empty ones "{0}", NIL never; partials past the end are empty. */
static void test_sections(void)
{
	char expected[1024];

	setup();
	snprintf(expected, sizeof(expected), "* 1 FETCH (RFC822.HEADER {%zu}\r\n%s BODY[HEADER]<70> {%zu}\r\n%s)\r\n" OK,
		 strlen(header1), header1, strlen(header1) - 70, header1 + 70);
	expect(answer("FETCH 1 (RFC822.HEADER body.peek[header]<70.100>)"), expected);
	snprintf(expected, sizeof(expected), "* 1 FETCH (RFC822 {%zu}\r\n%s RFC822.TEXT {7}\r\nhello\r\n)\r\n" OK,
		 strlen(text1), text1);
	expect(answer("FETCH 1 (RFC822 RFC822.TEXT RFC822)"), expected);
	expect(answer("FETCH 1 (BODY.PEEK[]<999.10> BODY.PEEK[HEADER.FIELDS (X-NOPE)] BODY.PEEK[1.MIME]<0.8>)"),
	       "* 1 FETCH (BODY[]<999> {0}\r\n BODY[HEADER.FIELDS (X-NOPE)] {2}\r\n\r\n"
	       " BODY[1.MIME]<0> {8}\r\nSubject:)\r\n" OK);
	/* a part our library does not find goes upstream: Dovecot numbers
	   some of them itself (a leaf's "1.1" is the leaf) */
	/* parts Dovecot does not find are empty: 1.1 of a single-part message is nothing */
	expect(answer("FETCH 1 (BODY.PEEK[2] BODY.PEEK[1.1] BODY.PEEK[1.MIME]<0.10>)"),
	       "* 1 FETCH (BODY[2] {0}\r\n BODY[1.1] {0}\r\n BODY[1.MIME]<0> {10}\r\nSubject: h)\r\n" OK);
	expect(answer("FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT Content-Type)] BODY.PEEK[1])"),
	       "* 1 FETCH (BODY[HEADER.FIELDS.NOT (SUBJECT CONTENT-TYPE)] {13}\r\nFrom: a@b\r\n\r\n BODY[1] {7}\r\nhello\r\n)\r\n" OK);
	/* message 2 has no stored header block: BODY[HEADER] and TEXT come from our parse */
	expect(answer("FETCH 2 (BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[HEADER]<0.13>)"),
	       "* 2 FETCH (BODY[1] {8}\r\npart one BODY[2.MIME] {77}\r\nContent-Type: application/octet-stream\r\n"
	       "Content-Transfer-Encoding: base64\r\n\r\n BODY[HEADER]<0> {13}\r\nSubject: two\r)\r\n" OK);
	/* RFC822.SIZE from the stored message when none is stored */
	CU_ASSERT_EQUAL(cache_store_size(cache, mailbox_id, 1, 0), 0);
	teardown();
}

/* BINARY: decoded parts are "~{n}" (Dovecot's "converted"), others "{n}". */
static void test_binary(void)
{
	setup();
	expect(answer("FETCH 2 (BINARY.PEEK[2] BINARY.PEEK[1]<1.3> UID)"),
	       "* 2 FETCH (UID 2 BINARY[2] ~{3}\r\n\\0ab BINARY[1]<1> {3}\r\nart)\r\n" OK);
	expect(answer("FETCH 2 (BINARY.PEEK[2]<2.5>)"), "* 2 FETCH (BINARY[2]<2> ~{1}\r\nb)\r\n" OK);
	/* BINARY.SIZE goes upstream: Dovecot sums other parts' sizes into a
	   part's, and its first one leaves a stream behind */
	CU_ASSERT(upstream(answer("FETCH 2 (BINARY.SIZE[2])")));
	CU_ASSERT(upstream(answer("FETCH 2 (BINARY.SIZE[] UID)")));
	/* after a BINARY or BINARY.SIZE upstream Dovecot may send BINARY[] of
	   a message it did not decode as "~{n}": upstream; decoded ones are
	   "~{n}" anyway */
	CU_ASSERT(strncmp(answer("FETCH 1 (BINARY.PEEK[])"), "* 1 FETCH (BINARY[] {", 21) == 0);
	facts.binary_marked = true;
	CU_ASSERT(upstream(answer("FETCH 1 (BINARY.PEEK[])")));
	CU_ASSERT(strncmp(answer("FETCH 2 (BINARY.PEEK[])"), "* 2 FETCH (BINARY[] ~{198}", 26) == 0);
	expect(answer("FETCH 1 (BINARY.PEEK[1])"), "* 1 FETCH (BINARY[1] {7}\r\nhello\r\n)\r\n" OK);
	facts.binary_marked = false;
	/* a container: its bytes, each decoded part's header rewritten as Dovecot does */
	expect(answer("FETCH 2 (BINARY.PEEK[])"),
	       "* 2 FETCH (BINARY[] ~{198}\r\nSubject: two\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
	       "--b\r\nContent-Type: text/plain\r\n\r\npart one\r\n--b\r\nContent-Type: application/octet-stream\r\n"
	       "Content-Transfer-Encoding: binary\r\n\r\n\\0ab\r\n--b--\r\n)\r\n" OK);
	/* no such part (a leaf's 1 is the leaf, and the path ends there): empty */
	expect(answer("FETCH 2 (BINARY.PEEK[3] BINARY.PEEK[2.1] BINARY.PEEK[1.1.1])"),
	       "* 2 FETCH (BINARY[3] {0}\r\n BINARY[2.1] ~{3}\r\n\\0ab BINARY[1.1.1] {0}\r\n)\r\n" OK);
	teardown();
}

/* Message 2 again with another second part. */
static void replace_part(const char *headers, const char *body)
{
	char text[1024];
	const uint32_t uids[] = { 2 };

	snprintf(text, sizeof(text), "Subject: two\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
		 "--b\r\nContent-Type: text/plain\r\n\r\npart one\r\n--b\r\n%s\r\n\r\n%s\r\n--b--\r\n", headers, body);
	CU_ASSERT_EQUAL(cache_mailbox_remove_uids(cache, mailbox_id, uids, 1), 0);
	store_message(2, text, NULL, true);
}

/* What Dovecot decodes otherwise, or can't tell: upstream. */
static void test_binary_upstream(void)
{
	setup();
	/* 8-bit: the stored BODY[] has 0x80 where the message had NUL */
	replace_part("Content-Transfer-Encoding: 8bit", "caf\xc3\xa9 \xe2\x80\x94");
	CU_ASSERT(upstream(answer("FETCH 2 (BINARY.PEEK[2])")));
	expect(answer("FETCH 2 (BODY.PEEK[2])"), "* 2 FETCH (BODY[2] {9}\r\ncaf\xc3\xa9 \xe2\x80\x94)\r\n" OK);
	replace_part("Content-Transfer-Encoding: 8bit", "cafe");
	expect(answer("FETCH 2 (BINARY.PEEK[2])"), "* 2 FETCH (BINARY[2] {4}\r\ncafe)\r\n" OK);
	/* base64 that Dovecot's decoder refuses (it drops the connection) */
	replace_part("Content-Transfer-Encoding: base64", "AGF");
	CU_ASSERT(upstream(answer("FETCH 2 (BINARY.PEEK[2])")));
	replace_part("Content-Transfer-Encoding: base64", "AG=F");
	CU_ASSERT(upstream(answer("FETCH 2 (BINARY.PEEK[2])")));
	replace_part("Content-Transfer-Encoding: base64", "AG Fi");
	CU_ASSERT(upstream(answer("FETCH 2 (BINARY.PEEK[2])")));
	/* quoted-printable: lower-case hex, a bad escape, a trailing blank, 8-bit */
	replace_part("Content-Transfer-Encoding: quoted-printable", "caf=c3=a9");
	CU_ASSERT(upstream(answer("FETCH 2 (BINARY.PEEK[2])")));
	replace_part("Content-Transfer-Encoding: quoted-printable", "bad=ZZ");
	CU_ASSERT(upstream(answer("FETCH 2 (BINARY.PEEK[2])")));
	replace_part("Content-Transfer-Encoding: quoted-printable", "blank \r\nline");
	CU_ASSERT(upstream(answer("FETCH 2 (BINARY.PEEK[2])")));
	replace_part("Content-Transfer-Encoding: quoted-printable", "caf\xc3\xa9");
	CU_ASSERT(upstream(answer("FETCH 2 (BINARY.PEEK[2])")));
	replace_part("Content-Transfer-Encoding: quoted-printable", "caf=C3=A9 =\r\nau lait=3D");
	expect(answer("FETCH 2 (BINARY.PEEK[2])"), "* 2 FETCH (BINARY[2] ~{14}\r\ncaf\xc3\xa9 au lait=)\r\n" OK);
	/* an encoding Dovecot does not know, a message/rfc822 part */
	replace_part("Content-Transfer-Encoding: x-uuencode", "begin 644 x");
	CU_ASSERT(upstream(answer("FETCH 2 (BINARY.PEEK[2])")));
	replace_part("Content-Type: message/rfc822", "Subject: inner\r\nContent-Transfer-Encoding: base64\r\n\r\nAGFi");
	expect(answer("FETCH 2 (BINARY.PEEK[2])"), /* Dovecot rewrites the inner header */
	       "* 2 FETCH (BINARY[2] ~{56}\r\nSubject: inner\r\nContent-Transfer-Encoding: binary\r\n\r\n\\0ab)\r\n" OK);
	/* a folded encoding is unknown to Dovecot (NO [UNKNOWN-CTE]) */
	replace_part("Content-Type: message/rfc822",
		     "Subject: inner\r\nContent-Transfer-Encoding:\r\n base64\r\nX: y\r\n\r\nAGFi");
	CU_ASSERT(upstream(answer("FETCH 2 (BINARY.PEEK[2])")));
	/* an empty encoded part and nothing decoded: Dovecot sends the original, cut */
	replace_part("Content-Transfer-Encoding: base64", "");
	CU_ASSERT(upstream(answer("FETCH 2 (BINARY.PEEK[])")));
	/* a part header without its blank line: Dovecot reads on into the next part */
	CU_ASSERT_EQUAL(cache_mailbox_remove_uids(cache, mailbox_id, (const uint32_t[]){ 2 }, 1), 0);
	store_message(2, "Subject: two\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
		      "--b\r\nContent-Type: text/plain\r\n--b\r\nContent-Type: application/octet-stream\r\n"
		      "Content-Transfer-Encoding: base64\r\n\r\nAGFi\r\n--b--\r\n", NULL, true);
	CU_ASSERT(upstream(answer("FETCH 2 (BINARY.PEEK[])")));
	expect(answer("FETCH 2 (BINARY.PEEK[2])"), "* 2 FETCH (BINARY[2] ~{3}\r\n\\0ab)\r\n" OK);
	replace_part("Content-Type: message/rfc822",
		     "Subject: inner\r\nContent-Transfer-Encoding: base64\r\nContent-Transfer-Encoding: 7bit\r\n\r\nAGFi");
	CU_ASSERT(upstream(answer("FETCH 2 (BINARY.PEEK[2])"))); /* which one counts is Dovecot's business */
	replace_part("Content-Type: message/rfc822", "Subject: inner\r\n\r\ninn\xc3\xa9r \xe2\x80\x94");
	CU_ASSERT(upstream(answer("FETCH 2 (BINARY.PEEK[2])"))); /* a 0x80 */
	replace_part("Content-Type: message/rfc822", "Subject: inner\r\n\r\ninner");
	expect(answer("FETCH 2 (BINARY.PEEK[2] BINARY.PEEK[2.1])"),
	       "* 2 FETCH (BINARY[2] {23}\r\nSubject: inner\r\n\r\ninner BINARY[2.1] {5}\r\ninner)\r\n" OK);
	expect(answer("FETCH 2 (BODY.PEEK[2.TEXT] BODY.PEEK[2.HEADER])"),
	       "* 2 FETCH (BODY[2.TEXT] {5}\r\ninner BODY[2.HEADER] {18}\r\nSubject: inner\r\n\r\n)\r\n" OK);
	teardown();
}

/* Sets: "*", ranges in any order, UIDs not in the view skipped, numbers past the end upstream. */
static void test_sets(void)
{
	setup();
	expect(answer("FETCH 3,1:2,2 (UID)"), "* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 5)\r\n" OK);
	expect(answer("FETCH *:2 (UID)"), "* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 5)\r\n" OK);
	expect(answer("UID FETCH 9:* (FLAGS)"), "* 3 FETCH (UID 5 FLAGS (\\Flagged))\r\n" OK);
	expect(answer("UID FETCH 3:4,7 (FLAGS)"), OK);
	expect(answer("UID FETCH 2,* (UID)"), "* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 5)\r\n" OK);
	CU_ASSERT(upstream(answer("FETCH 4 (UID)")));
	CU_ASSERT(upstream(answer("FETCH 2:4 (UID)")));
	CU_ASSERT(upstream(answer("FETCH $ (UID)")));
	/* a new message whose UID is not known yet */
	CU_ASSERT_EQUAL(mailbox_view_upstream_exists(view, 4), 0);
	expect(answer("FETCH 1 (UID)"), "* 1 FETCH (UID 1)\r\n" OK);
	CU_ASSERT(upstream(answer("FETCH 4 (UID)")));
	CU_ASSERT(upstream(answer("FETCH * (UID)")));
	CU_ASSERT(upstream(answer("UID FETCH 1 (UID)")));
	/* an empty mailbox */
	CU_ASSERT_EQUAL(mailbox_view_load(view, NULL, 0), 0);
	CU_ASSERT(upstream(answer("UID FETCH 1:* (UID)")));
	teardown();
}

/* What only the upstream can answer the same way. */
static void test_upstream_rules(void)
{
	const char *why;

	setup();
	/* a message the store knows only partly */
	CU_ASSERT(upstream(answer("FETCH 3 (BODY.PEEK[])")));
	CU_ASSERT(upstream(answer("FETCH 1:3 (BODY.PEEK[TEXT])")));
	expect(answer("FETCH 3 (BODY.PEEK[HEADER] UID)"), "* 3 FETCH (UID 5 BODY[HEADER] {8}\r\nX: y\r\n\r\n)\r\n" OK);
	/* derived items of a message our library reads otherwise */
	CU_ASSERT_EQUAL(cache_set_structure_agrees(cache, mailbox_id, 2, false), 0);
	CU_ASSERT(upstream(answer("FETCH 2 (BODY.PEEK[1])")));
	CU_ASSERT(upstream(answer("FETCH 2 (BINARY.PEEK[1])")));
	CU_ASSERT(upstream(answer("FETCH 2 (BODY.PEEK[HEADER])"))); /* no stored header block to fall back on */
	CU_ASSERT_FALSE(upstream(answer("FETCH 2 (BODY.PEEK[] RFC822.SIZE)")));
	/* ENVELOPE, BODY and BODYSTRUCTURE are the upstream's, never derived */
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, 1, CACHE_ITEM_ENVELOPE, NULL, 0), 0);
	CU_ASSERT(upstream(answer("FETCH 1 (ENVELOPE)")));
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, 1, CACHE_ITEM_BODYSTRUCTURE, NULL, 0), 0);
	CU_ASSERT(upstream(answer("FETCH 1 (BODYSTRUCTURE)")));
	/* RFC822.SIZE of a stored message when none is stored */
	expect(answer("FETCH 1 (RFC822.SIZE)"), "* 1 FETCH (RFC822.SIZE 1234)\r\n" OK);
	/* HEADER.FIELDS: a name the client quoted is echoed quoted, of a part
	   that is no message it is empty; a literal name, no line: upstream */
	expect(answer("FETCH 1 (BODY.PEEK[HEADER.FIELDS (\"subject\" FROM)] BODY.PEEK[1.HEADER.FIELDS (SUBJECT)])"),
	       "* 1 FETCH (BODY[HEADER.FIELDS (\"SUBJECT\" FROM)] {26}\r\nSubject: hi\r\nFrom: a@b\r\n\r\n "
	       "BODY[1.HEADER.FIELDS (SUBJECT)] {0}\r\n)\r\n" OK);
	CU_ASSERT(upstream(answer("FETCH 1 (BODY.PEEK[HEADER.FIELDS (\"a\\\"b\")])")));
	CU_ASSERT(upstream(answer("FETCH 1 (BODY.PEEK[01])")));
	parse_only("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
	facts.line = NULL;
	CU_ASSERT_EQUAL(plan_route(&why), FETCH_ROUTE_UPSTREAM);
	/* a header block that is no plain RFC 5322 */
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, 5, CACHE_ITEM_HEADER, "X y\r\n\r\n", 7), 0);
	CU_ASSERT(upstream(answer("FETCH 3 (BODY.PEEK[HEADER.FIELDS (X)])")));
	/* MODSEQ and CHANGEDSINCE before the client enabled CONDSTORE; VANISHED */
	CU_ASSERT(upstream(answer("FETCH 1 (MODSEQ)")));
	CU_ASSERT(upstream(answer("FETCH 1 (UID) (CHANGEDSINCE 1)")));
	facts.condstore = true;
	CU_ASSERT(upstream(answer("UID FETCH 1 (UID) (CHANGEDSINCE 1 VANISHED)"))); /* QRESYNC not enabled */
	teardown();
}

/* The VANISHED modifier: local after its step, the upstream's VANISHED
   (EARLIER) first, and only when the upstream named the answer's
   messages. */
static void test_vanished(void)
{
	static const char earlier[] = "* VANISHED (EARLIER) 3:4\r\n";
	static const uint32_t changed[] = { 2, 5 }, other[] = { 5 };

	setup();
	facts.condstore = facts.qresync = true;
	expect(answer("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 15 VANISHED)"), "VANISHED STEP");
	facts.vanished_known = true;
	facts.vanished_lines = earlier;
	facts.vanished_len = strlen(earlier);
	facts.vanished_uids = changed;
	facts.vanished_uid_count = 2;
	expect(answer("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 15 VANISHED)"),
	       "* VANISHED (EARLIER) 3:4\r\n"
	       "* 2 FETCH (UID 2 FLAGS (\\Seen $Junk) MODSEQ (20))\r\n"
	       "* 3 FETCH (UID 5 FLAGS (\\Flagged) MODSEQ (30))\r\n" OK);
	/* nothing vanished: no such line */
	facts.vanished_len = 0;
	expect(answer("UID FETCH 2:5 (UID BODY.PEEK[HEADER]<0.1>) (VANISHED CHANGEDSINCE 15)"),
	       "* 2 FETCH (UID 2 MODSEQ (20) BODY[HEADER]<0> {1}\r\nS)\r\n"
	       "* 3 FETCH (UID 5 MODSEQ (30) BODY[HEADER]<0> {1}\r\nX)\r\n" OK);
	/* the upstream named other messages than the view's MODSEQs would */
	facts.vanished_uids = other;
	facts.vanished_uid_count = 1;
	CU_ASSERT(upstream(answer("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 15 VANISHED)")));
	facts.vanished_uids = NULL;
	facts.vanished_uid_count = 0;
	CU_ASSERT(upstream(answer("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 15 VANISHED)")));
	expect(answer("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 30 VANISHED)"), OK);
	teardown();
}

/* A non-PEEK body item on a read-write mailbox sets \Seen: local only when it is set already. */
static void test_seen(void)
{
	static const struct fetch_seen seen[] = { { .uid = 1, .old_modseq = 10, .changed = true } };

	setup();
	facts.read_only = false;
	/* the upstream must set \Seen first, for every message: the view's
	   \Seen of message 2 may be stale */
	expect(answer("FETCH 1 (BODY[TEXT])"), "SEEN FIRST: 1/1");
	expect(answer("UID FETCH 1:2 (RFC822)"), "SEEN FIRST: 1/1 2/2");
	expect(answer("FETCH 1:2 (BODY[1])"), "SEEN FIRST: 1/1 2/2");
	expect(answer("FETCH 2 (BODY[1] BINARY[1]<0.4>)"), "SEEN FIRST: 2/2");
	/* the STORE reported nothing of message 2: it had \Seen, no FLAGS shown */
	facts.seen_stored = true;
	expect(answer("FETCH 2 (BODY[1] BINARY[1]<0.4>)"), "* 2 FETCH (BODY[1] {8}\r\npart one BINARY[1]<0> {4}\r\npart)\r\n" OK);
	facts.seen_stored = false;
	expect(answer("FETCH 1 (BODY.PEEK[TEXT] RFC822.HEADER)"),
	       "* 1 FETCH (BODY[TEXT] {7}\r\nhello\r\n RFC822.HEADER {70}\r\n" "Subject: hi\r\nFrom: a@b\r\n"
	       "Content-Type: text/plain; charset=us-ascii\r\n\r\n)\r\n" OK);
	/* set: FLAGS after the buffered items, once; the new MODSEQ after the lines */
	CU_ASSERT_EQUAL(mailbox_view_set_flags(view, 1, "\\Seen", 5), 0);
	CU_ASSERT_EQUAL(mailbox_view_set_modseq(view, 1, 11), 0);
	facts.seen_stored = true;
	facts.seen = seen;
	facts.seen_count = 1;
	expect(answer("FETCH 1 (BODY[TEXT])"), "* 1 FETCH (FLAGS (\\Seen) BODY[TEXT] {7}\r\nhello\r\n)\r\n" OK);
	expect(answer("FETCH 1:2 (UID BODY[1] RFC822.SIZE)"),
	       "* 1 FETCH (UID 1 RFC822.SIZE 1234 FLAGS (\\Seen) BODY[1] {7}\r\nhello\r\n)\r\n"
	       "* 2 FETCH (UID 2 RFC822.SIZE 1234 BODY[1] {8}\r\npart one)\r\n" OK);
	expect(answer("FETCH 1 (BODY[TEXT] FLAGS)"), "* 1 FETCH (FLAGS (\\Seen) BODY[TEXT] {7}\r\nhello\r\n)\r\n" OK);
	facts.condstore = true;
	expect(answer("FETCH 1 (MODSEQ BODY[TEXT])"), "* 1 FETCH (MODSEQ (10) FLAGS (\\Seen) BODY[TEXT] {7}\r\nhello\r\n)\r\n"
	       "* 1 FETCH (MODSEQ (11))\r\n" OK);
	facts.qresync = true;
	expect(answer("FETCH 1 (RFC822.TEXT)"), "* 1 FETCH (FLAGS (\\Seen) RFC822.TEXT {7}\r\nhello\r\n)\r\n"
	       "* 1 FETCH (UID 1 MODSEQ (11))\r\n" OK);
	/* flags not known after the step: upstream */
	mailbox_view_forget_flags(view, 1);
	CU_ASSERT(upstream(answer("FETCH 1 (BODY[TEXT])")));
	/* still without \Seen after the step: asked again (the session then sends it upstream) */
	CU_ASSERT_EQUAL(mailbox_view_set_flags(view, 1, "", 0), 0);
	expect(answer("FETCH 1 (BODY[TEXT])"), "SEEN FIRST: 1/1");
	/* refused upstream: as for .PEEK */
	facts.seen_stored = false;
	facts.seen = NULL;
	facts.seen_count = 0;
	facts.peek_only = true;
	expect(answer("FETCH 1 (BODY[TEXT])"), "* 1 FETCH (BODY[TEXT] {7}\r\nhello\r\n)\r\n" OK);
	facts.peek_only = false;
	facts.read_only = true;
	expect(answer("FETCH 1 (BODY[TEXT])"), "* 1 FETCH (BODY[TEXT] {7}\r\nhello\r\n)\r\n" OK);
	teardown();
}

/* Partly stored: up to half the messages may lack what is asked; they are
   fetched first, with what the store keeps of the items asked. */
static void test_missing(void)
{
	setup();
	facts.fill_missing = true;
	facts.body_max_size = 1 << 20;
	/* only what lacks: the whole message, with its structure and header block */
	expect(answer("FETCH 1:3 (ENVELOPE BODY.PEEK[TEXT])"), "MISSING: 3/5 (UID BODYSTRUCTURE BODY.PEEK[HEADER] BODY.PEEK[])");
	expect(answer("UID FETCH 1:5 (RFC822.SIZE BODY.PEEK[1] INTERNALDATE UID)"),
	       "MISSING: 3/5 (UID BODYSTRUCTURE BODY.PEEK[HEADER] BODY.PEEK[])");
	expect(answer("FETCH 1:3 (ENVELOPE RFC822.HEADER BODY.PEEK[HEADER.FIELDS (FROM)])"),
	       "* 1 FETCH (ENVELOPE " ENVELOPE " RFC822.HEADER {70}\r\n" "Subject: hi\r\nFrom: a@b\r\n"
	       "Content-Type: text/plain; charset=us-ascii\r\n\r\n BODY[HEADER.FIELDS (FROM)] {13}\r\nFrom: a@b\r\n\r\n)\r\n"
	       "* 2 FETCH (ENVELOPE " ENVELOPE " RFC822.HEADER {61}\r\nSubject: two\r\n"
	       "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n BODY[HEADER.FIELDS (FROM)] {2}\r\n\r\n)\r\n"
	       "* 3 FETCH (ENVELOPE " ENVELOPE " RFC822.HEADER {8}\r\nX: y\r\n\r\n BODY[HEADER.FIELDS (FROM)] {2}\r\n\r\n)\r\n" OK);
	/* more than half missing: the whole FETCH goes upstream */
	CU_ASSERT(upstream(answer("FETCH 3 (BODY.PEEK[TEXT])")));
	CU_ASSERT(upstream(answer("FETCH 2:3 (BODY.PEEK[TEXT])")) == false);
	/* a body larger than the store keeps is never asked for */
	facts.body_max_size = 1000;
	CU_ASSERT(upstream(answer("FETCH 1:3 (BODY.PEEK[TEXT])")));
	/* a message the store has nothing of: only items without a body */
	CU_ASSERT_EQUAL(mailbox_view_upstream_exists(view, 4), 0);
	CU_ASSERT_EQUAL(mailbox_view_set_uid(view, 4, 9), 0);
	CU_ASSERT_EQUAL(mailbox_view_set_flags(view, 4, "", 0), 0);
	expect(answer("FETCH 1:4 (FLAGS BODYSTRUCTURE ENVELOPE)"), "MISSING: 4/9 (UID ENVELOPE BODYSTRUCTURE)");
	CU_ASSERT(upstream(answer("FETCH 1:4 (BODY.PEEK[])")));
	/* asked once: planned again without it, what lacks goes upstream */
	facts.fill_missing = false;
	CU_ASSERT(upstream(answer("FETCH 1:4 (FLAGS BODYSTRUCTURE ENVELOPE)")));
	teardown();
}

/* What one plan did with the store: statements begun, presence reads of them. */
struct plan_reads {
	unsigned int statements, presence;
};

static int statements_begun(unsigned int event, void *context, void *statement, void *sql)
{
	struct plan_reads *reads = context;

	(void)event;
	(void)statement;
	reads->statements++;
	reads->presence += strstr((const char *)sql, "m.header IS NOT NULL, m.flags IS NOT NULL") != NULL;
	return 0;
}

/* Plans "FETCH set items" (items with its parentheses), counting the
   reads into *reads; the answer into *plan_r. */
static enum fetch_route plan_read(const char *set, const char *items, struct fetch_answer **plan_r,
				  const char **why_r, struct plan_reads *reads)
{
	enum fetch_route route;

	*reads = (struct plan_reads){ 0 };
	parse_only("FETCH %s %s", set, items);
	sqlite3_trace_v2(cache_sqlite_handle(cache), SQLITE_TRACE_STMT, statements_begun, reads);
	route = fetch_plan(&command, &facts, plan_r, why_r);
	sqlite3_trace_v2(cache_sqlite_handle(cache), 0, NULL, NULL);
	return route;
}

/* An answer of more than FETCH_LOOKUP_CHUNK messages whose first ones
   lack their header block (rows without it, or no row): half of them
   missing is fetched first as before; past half, the FETCH goes upstream
   after the first messages' lookup and one read of what the store holds,
   no lookup of the rest's values. Not read: for an answer whose first
   messages are stored, or whose UIDs are sparse in their span. Messages
   that lack only light items (RFC822.SIZE) are not counted. */
static void test_mostly_missing_at_once(void)
{
	enum { HALF = FETCH_LOOKUP_CHUNK + 100, COUNT = 2 * HALF };
	uint32_t *uids = calloc(COUNT, sizeof(*uids));
	struct fetch_answer *plan = NULL;
	struct plan_reads reads;
	const char *why;
	char header[64], set[32];

	setup();
	CU_ASSERT_PTR_NOT_NULL_FATAL(uids);
	facts.fill_missing = true;
	facts.body_max_size = 1 << 20;
	for (uint32_t i = 0; i < COUNT; i++) {
		uids[i] = 10 + i;
		snprintf(header, sizeof(header), "Subject: %u\r\n\r\n", (unsigned int)i);
		if (i >= HALF) {
			CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uids[i], CACHE_ITEM_HEADER, header,
							 strlen(header)), 0);
		} else if (i % 2 == 0) {
			CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uids[i], CACHE_ITEM_BODY, BODY,
							 strlen(BODY)), 0);
		}
		if (i >= FETCH_CHECKED_FIRST && i < HALF) /* the others lack no more than their size */
			CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uids[i], CACHE_ITEM_HEADER, header,
							 strlen(header)), 0);
	}
	CU_ASSERT_EQUAL(mailbox_view_load(view, uids, COUNT), 0);
	/* the first FETCH_CHECKED_FIRST lack their header block, the rest of
	   the first half only RFC822.SIZE: read, and local */
	CU_ASSERT_EQUAL_FATAL(plan_read("1:*", "(RFC822.SIZE BODY.PEEK[HEADER])", &plan, &why, &reads),
			      FETCH_ROUTE_LOCAL);
	CU_ASSERT_EQUAL(reads.presence, 1);
	CU_ASSERT_EQUAL(fetch_answer_missing_count(plan), COUNT);
	fetch_answer_free(&plan);
	/* half of them lacking the header block: read, and local */
	for (uint32_t i = FETCH_CHECKED_FIRST; i < HALF; i++)
		delete_behind(uids[i]);
	CU_ASSERT_EQUAL_FATAL(plan_read("1:*", "(BODY.PEEK[HEADER])", &plan, &why, &reads), FETCH_ROUTE_LOCAL);
	CU_ASSERT_EQUAL(reads.presence, 1);
	CU_ASSERT_EQUAL(fetch_answer_missing_count(plan), HALF);
	fetch_answer_free(&plan);
	/* one message fewer of those stored: past half, after two statements */
	snprintf(set, sizeof(set), "1:%u", (unsigned int)COUNT - 1);
	CU_ASSERT_EQUAL(plan_read(set, "(BODY.PEEK[HEADER])", &plan, &why, &reads), FETCH_ROUTE_UPSTREAM);
	CU_ASSERT_STRING_EQUAL(why, "most of its messages are not stored");
	CU_ASSERT_EQUAL(reads.statements, 2);
	CU_ASSERT_EQUAL(reads.presence, 1);
	/* the stored half alone: no presence read */
	snprintf(set, sizeof(set), "%u:*", (unsigned int)HALF + 1);
	CU_ASSERT_EQUAL_FATAL(plan_read(set, "(BODY.PEEK[HEADER])", &plan, &why, &reads), FETCH_ROUTE_LOCAL);
	CU_ASSERT_EQUAL(reads.presence, 0);
	CU_ASSERT_EQUAL(fetch_answer_missing_count(plan), 0);
	fetch_answer_free(&plan);
	/* UIDs five apart: checked chunk by chunk, no presence read */
	for (uint32_t i = 0; i < COUNT; i++)
		uids[i] = 10 + 5 * i;
	CU_ASSERT_EQUAL(mailbox_view_load(view, uids, COUNT), 0);
	CU_ASSERT_EQUAL(plan_read(set, "(BODY.PEEK[HEADER])", &plan, &why, &reads), FETCH_ROUTE_UPSTREAM);
	CU_ASSERT_STRING_EQUAL(why, "most of its messages are not stored");
	CU_ASSERT_EQUAL(reads.presence, 0);
	free(uids);
	teardown();
}

/* With CONDSTORE enabled: MODSEQ from the view; CHANGEDSINCE filters and adds MODSEQ after the buffered items. */
static void test_condstore(void)
{
	setup();
	facts.condstore = true;
	expect(answer("FETCH 1:2 (MODSEQ FLAGS)"), "* 1 FETCH (MODSEQ (10) FLAGS ())\r\n* 2 FETCH (MODSEQ (20) FLAGS (\\Seen $Junk))\r\n" OK);
	expect(answer("FETCH 1:* (BODY.PEEK[HEADER]<0.1> UID FLAGS) (CHANGEDSINCE 15)"),
	       "* 2 FETCH (UID 2 FLAGS (\\Seen $Junk) MODSEQ (20) BODY[HEADER]<0> {1}\r\nS)\r\n"
	       "* 3 FETCH (UID 5 FLAGS (\\Flagged) MODSEQ (30) BODY[HEADER]<0> {1}\r\nX)\r\n" OK);
	expect(answer("UID FETCH 1:* (MODSEQ) (CHANGEDSINCE 30)"), OK);
	CU_ASSERT_EQUAL(mailbox_view_upstream_exists(view, 4), 0);
	CU_ASSERT_EQUAL(mailbox_view_set_uid(view, 4, 9), 0);
	CU_ASSERT(upstream(answer("FETCH 1:* (UID) (CHANGEDSINCE 1)"))); /* MODSEQ of 4 not known */
	teardown();
}

/* MODSEQ the view lacks (CONDSTORE enabled after the SELECT): with a
   vouched HIGHESTMODSEQ, one CHANGEDSINCE step for every message of the
   view that lacks one; without, or when something else is missing too,
   the plain step for the command's messages. */
static void test_modseq_step(void)
{
	setup();
	CU_ASSERT_EQUAL(mailbox_view_load(view, (const uint32_t[]){ 1, 2, 5 }, 3), 0);
	CU_ASSERT_EQUAL(mailbox_view_set_flags(view, 1, "", 0), 0);
	CU_ASSERT_EQUAL(mailbox_view_set_flags(view, 2, "\\Seen $Junk", 11), 0);
	CU_ASSERT_EQUAL(mailbox_view_set_flags(view, 3, "\\Flagged", 8), 0);
	facts.condstore = true;
	facts.fill_missing = true;
	facts.body_max_size = 1 << 20;
	expect(answer("FETCH 1 (MODSEQ)"), "MISSING: 1/1 (UID RFC822.SIZE MODSEQ)");
	facts.vouched_modseq = 40;
	expect(answer("FETCH 1 (MODSEQ)"), "MISSING: 1/1 2/2 3/5 (UID RFC822.SIZE MODSEQ) (CHANGEDSINCE 40)");
	expect(answer("UID FETCH 2 (FLAGS) (CHANGEDSINCE 7)"),
	       "MISSING: 1/1 2/2 3/5 (UID RFC822.SIZE MODSEQ) (CHANGEDSINCE 40)");
	/* a message the view has a MODSEQ of is not asked again */
	CU_ASSERT_EQUAL(mailbox_view_set_modseq(view, 2, 20), 0);
	expect(answer("FETCH 1 (MODSEQ)"), "MISSING: 1/1 3/5 (UID RFC822.SIZE MODSEQ) (CHANGEDSINCE 40)");
	/* a whole message lacking too: the plain step, the command's messages */
	expect(answer("FETCH 1:3 (MODSEQ BODY.PEEK[])"),
	       "MISSING: 1/1 3/5 (UID RFC822.SIZE BODYSTRUCTURE BODY.PEEK[HEADER] BODY.PEEK[] MODSEQ)");
	/* a held expunge: the numberings differ, the command's messages only */
	CU_ASSERT_NOT_EQUAL(mailbox_view_upstream_expunge(view, 2, true), 0);
	expect(answer("FETCH 1 (MODSEQ)"), "MISSING: 1/1 (UID RFC822.SIZE MODSEQ)");
	/* not before the client enabled CONDSTORE: no MODSEQ item to plan */
	facts.condstore = false;
	CU_ASSERT(upstream(answer("FETCH 1 (MODSEQ)")));
	teardown();
}

/* FLAGS as the view holds them; \Recent where Dovecot writes it; unknown flags go upstream. */
static void test_flags(void)
{
	setup();
	mailbox_view_set_recent(view, 2, true);
	expect(answer("FETCH 2 (FLAGS)"), "* 2 FETCH (FLAGS (\\Seen \\Recent $Junk))\r\n" OK);
	mailbox_view_set_recent(view, 1, true);
	expect(answer("FETCH 1 (FLAGS)"), "* 1 FETCH (FLAGS (\\Recent))\r\n" OK);
	CU_ASSERT_EQUAL(mailbox_view_set_flags(view, 1, "$A \\Recent", 10), 0);
	expect(answer("FETCH 1 (FLAGS)"), "* 1 FETCH (FLAGS ($A \\Recent))\r\n" OK);
	CU_ASSERT_EQUAL(mailbox_view_set_flags(view, 1, "$A", 2), 0);
	expect(answer("FETCH 1 (FLAGS)"), "* 1 FETCH (FLAGS (\\Recent $A))\r\n" OK);
	CU_ASSERT_EQUAL(mailbox_view_load(view, (const uint32_t[]){ 1, 2, 5 }, 3), 0);
	CU_ASSERT(upstream(answer("FETCH 1 (FLAGS)")));
	expect(answer("FETCH 1 (UID)"), "* 1 FETCH (UID 1)\r\n" OK);
	teardown();
}

/* The writer stops past its limit, whole lines only; a message gone from the store is LOST. */
static void test_writer(void)
{
	struct fetch_answer *plan;
	struct evbuffer *out = evbuffer_new();
	const char *why;
	const uint32_t gone[] = { 2 };

	setup();
	parse_only("FETCH 1:3 (UID RFC822.SIZE)");
	CU_ASSERT_EQUAL_FATAL(fetch_plan(&command, &facts, &plan, &why), FETCH_ROUTE_LOCAL);
	CU_ASSERT_EQUAL(fetch_answer_count(plan), 3);
	CU_ASSERT_EQUAL(fetch_answer_write(plan, out, 1), FETCH_WRITE_MORE);
	CU_ASSERT_EQUAL(evbuffer_get_length(out), strlen("* 1 FETCH (UID 1 RFC822.SIZE 1234)\r\n"));
	CU_ASSERT_EQUAL(fetch_answer_write(plan, out, 1), FETCH_WRITE_MORE);
	CU_ASSERT_EQUAL(fetch_answer_write(plan, out, 1000), FETCH_WRITE_DONE);
	CU_ASSERT_EQUAL(fetch_answer_write(plan, out, 1000), FETCH_WRITE_DONE);
	fetch_answer_free(&plan);
	/* a body the plan read and checked is written from those bytes, not
	   read again: dropping it from the store between plan and write
	   changes nothing */
	evbuffer_drain(out, evbuffer_get_length(out));
	parse_only("FETCH 1:2 (BODY.PEEK[]<0.4>)");
	CU_ASSERT_EQUAL_FATAL(fetch_plan(&command, &facts, &plan, &why), FETCH_ROUTE_LOCAL);
	CU_ASSERT_EQUAL(cache_mailbox_remove_uids(cache, mailbox_id, gone, 1), 0);
	CU_ASSERT_EQUAL(fetch_answer_write(plan, out, 0), FETCH_WRITE_DONE);
	CU_ASSERT_EQUAL(evbuffer_add(out, "", 1), 0);
	expect((const char *)evbuffer_pullup(out, -1), "* 1 FETCH (BODY[]<0> {4}\r\nSubj)\r\n* 2 FETCH (BODY[]<0> {4}\r\nSubj)\r\n");
	fetch_answer_free(&plan);
	fetch_answer_free(&plan);
	evbuffer_free(out);
	teardown();
}

#define TEST_BODY_ITEM "(\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0)"

/* An answer of more messages than one lookup takes, with an item no
   table of keys proves (BODY), is written from what the plan read: the
   store is read once (gone from it between plan and write, every line is
   still written), and HEADER.FIELDS is built once, by the plan (a second
   HEADER.FIELDS item of the answer by the writer). */
static void test_writer_reads_once(void)
{
	enum { COUNT = FETCH_LOOKUP_CHUNK + 5 };
	uint32_t *uids = calloc(COUNT, sizeof(*uids));
	struct evbuffer *out = evbuffer_new();
	struct fetch_answer *plan;
	const char *why, *text, *last;
	char header[64], expected[256];
	size_t lines = 0;

	setup();
	CU_ASSERT_PTR_NOT_NULL_FATAL(uids);
	for (uint32_t i = 0; i < COUNT; i++) {
		uids[i] = 100 + i;
		snprintf(header, sizeof(header), "Subject: %u\r\nX: y\r\n\r\n", (unsigned int)i);
		CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uids[i], CACHE_ITEM_HEADER, header, strlen(header)), 0);
		CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uids[i], CACHE_ITEM_BODY, TEST_BODY_ITEM,
						 strlen(TEST_BODY_ITEM)), 0);
	}
	CU_ASSERT_EQUAL(mailbox_view_load(view, uids, COUNT), 0);
	parse_only("FETCH 1:* (BODY BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)])");
	CU_ASSERT_EQUAL_FATAL(fetch_plan(&command, &facts, &plan, &why), FETCH_ROUTE_LOCAL);
	CU_ASSERT_EQUAL(cache_mailbox_remove_uids(cache, mailbox_id, uids, COUNT), 0);
	CU_ASSERT_EQUAL(fetch_answer_write(plan, out, 0), FETCH_WRITE_DONE);
	CU_ASSERT_EQUAL(evbuffer_add(out, "", 1), 0);
	text = (const char *)evbuffer_pullup(out, -1);
	for (const char *p = text; (p = strstr(p, " FETCH (")) != NULL; p++)
		lines++;
	CU_ASSERT_EQUAL(lines, COUNT);
	snprintf(expected, sizeof(expected),
		 "* %u FETCH (BODY " TEST_BODY_ITEM " BODY[HEADER.FIELDS (SUBJECT)] {17}\r\nSubject: %u\r\n\r\n "
		 "BODY[HEADER.FIELDS.NOT (SUBJECT)] {8}\r\nX: y\r\n\r\n)\r\n",
		 (unsigned int)COUNT, (unsigned int)COUNT - 1);
	last = strstr(text, expected);
	CU_ASSERT_PTR_NOT_NULL(last);
	if (last != NULL)
		CU_ASSERT_STRING_EQUAL(last, expected);
	fetch_answer_free(&plan);
	evbuffer_free(out);
	free(uids);
	teardown();
}

/* How many " FETCH (" lines text holds. */
static size_t count_lines(const char *text)
{
	size_t lines = 0;

	for (const char *p = text; (p = strstr(p, " FETCH (")) != NULL; p++)
		lines++;
	return lines;
}

/* Messages 10, 11, ... (count of them, their UIDs into uids) with a
   plain header block "Subject: N" and "X: y" stored, and in the view. */
static void view_of_plain_headers(uint32_t *uids, uint32_t count)
{
	char header[64];

	for (uint32_t i = 0; i < count; i++) {
		uids[i] = 10 + i;
		snprintf(header, sizeof(header), "Subject: %u\r\nX: y\r\n\r\n", (unsigned int)i);
		CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uids[i], CACHE_ITEM_HEADER, header, strlen(header)), 0);
	}
	CU_ASSERT_EQUAL(mailbox_view_load(view, uids, count), 0);
}

/* HEADER.FIELDS and BODY[HEADER] of many messages: the first
   FETCH_CHECKED_FIRST are checked value by value, the rest proven by
   messages_plain_header and read as they are written (gone from the
   store between plan and write: the writer loses the answer there). A
   block that is not plain among the rest is not proven: the plan checks
   every message and sends the FETCH upstream. */
static void test_headers_proven_by_keys(void)
{
	enum { COUNT = FETCH_CHECKED_FIRST + 60, ODD = FETCH_CHECKED_FIRST + 30 };
	uint32_t uids[COUNT];
	struct evbuffer *out = evbuffer_new();
	struct fetch_answer *plan;
	const char *why;
	char header[64];

	setup();
	view_of_plain_headers(uids, COUNT);
	parse_only("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[HEADER])");
	CU_ASSERT_EQUAL_FATAL(fetch_plan(&command, &facts, &plan, &why), FETCH_ROUTE_LOCAL);
	CU_ASSERT_EQUAL(fetch_answer_write(plan, out, 0), FETCH_WRITE_DONE);
	CU_ASSERT_EQUAL(evbuffer_add(out, "", 1), 0);
	CU_ASSERT_EQUAL(count_lines((const char *)evbuffer_pullup(out, -1)), COUNT);
	CU_ASSERT_PTR_NOT_NULL(strstr((const char *)evbuffer_pullup(out, -1),
				      "* 160 FETCH (UID 169 BODY[HEADER.FIELDS (SUBJECT)] {16}\r\nSubject: 159\r\n\r\n "
				      "BODY[HEADER] {22}\r\nSubject: 159\r\nX: y\r\n\r\n)\r\n"));
	fetch_answer_free(&plan);

	/* read as written: an expunge learned after the plan waits for the
	   answer's end (its pin); a row gone all the same ends the answer
	   past the checked ones */
	evbuffer_drain(out, evbuffer_get_length(out));
	CU_ASSERT_EQUAL_FATAL(fetch_plan(&command, &facts, &plan, &why), FETCH_ROUTE_LOCAL);
	CU_ASSERT_EQUAL(cache_mailbox_remove_uids(cache, mailbox_id, uids + COUNT - 1, 1), 0);
	CU_ASSERT_EQUAL(fetch_answer_write(plan, out, 0), FETCH_WRITE_DONE);
	fetch_answer_free(&plan);
	CU_ASSERT_EQUAL(evbuffer_add(out, "", 1), 0);
	CU_ASSERT_EQUAL(count_lines((const char *)evbuffer_pullup(out, -1)), COUNT);
	CU_ASSERT_EQUAL(mailbox_view_load(view, uids, COUNT - 1), 0);
	evbuffer_drain(out, evbuffer_get_length(out));
	CU_ASSERT_EQUAL_FATAL(fetch_plan(&command, &facts, &plan, &why), FETCH_ROUTE_LOCAL);
	delete_behind(uids[FETCH_CHECKED_FIRST]);
	CU_ASSERT_EQUAL(fetch_answer_write(plan, out, 0), FETCH_WRITE_LOST);
	CU_ASSERT_EQUAL(evbuffer_add(out, "", 1), 0);
	CU_ASSERT_EQUAL(count_lines((const char *)evbuffer_pullup(out, -1)), FETCH_CHECKED_FIRST);
	fetch_answer_free(&plan);

	/* a block not plain past the first ones: not proven, and not local */
	snprintf(header, sizeof(header), "Subject: %u\nX: y\r\n\r\n", (unsigned int)ODD);
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uids[FETCH_CHECKED_FIRST], CACHE_ITEM_HEADER, "X: y\r\n\r\n",
					 7), 0);
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, uids[ODD], CACHE_ITEM_HEADER, header, strlen(header)), 0);
	CU_ASSERT_EQUAL(fetch_plan(&command, &facts, &plan, &why), FETCH_ROUTE_UPSTREAM);
	CU_ASSERT_STRING_EQUAL(why, "a body item of a message not stored whole"); /* item_why's words for it */
	fetch_answer_free(&plan);
	evbuffer_free(out);
	teardown();
}

/* With writes off (a full disk), a damaged value found could not be
   dropped with its key, and would end every answer that reaches it: the
   tables vouch for nothing then, and the plan checks and keeps every
   message, so that a row gone after it ends nothing. */
static void test_no_keys_with_writes_off(void)
{
	enum { COUNT = FETCH_CHECKED_FIRST + 60 };
	uint32_t uids[COUNT];
	struct evbuffer *out = evbuffer_new();
	struct fetch_answer *plan;
	const char *why;

	setup();
	view_of_plain_headers(uids, COUNT);
	parse_only("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
	cache_fail(cache, SQLITE_FULL, "a test's write");
	CU_ASSERT_TRUE_FATAL(cache_writes_off(cache));
	CU_ASSERT_EQUAL_FATAL(fetch_plan(&command, &facts, &plan, &why), FETCH_ROUTE_LOCAL);
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache), "DELETE FROM messages WHERE uid = 150", NULL, NULL, NULL),
			SQLITE_OK);
	CU_ASSERT_EQUAL(fetch_answer_write(plan, out, 0), FETCH_WRITE_DONE);
	CU_ASSERT_EQUAL(evbuffer_add(out, "", 1), 0);
	CU_ASSERT_EQUAL(count_lines((const char *)evbuffer_pullup(out, -1)), COUNT);
	fetch_answer_free(&plan);
	evbuffer_free(out);
	teardown();
}

/* Past CACHE_VERIFY_BODIES_MAX messages the plan checks no body: the
   writer reads each. An expunge between plan and write waits for the
   answer (its pin); a body gone all the same is LOST. */
static void test_writer_lost_body(void)
{
	uint32_t uids[CACHE_VERIFY_BODIES_MAX + 4] = { 1, 2, 5 };
	const uint32_t gone[] = { 2 };
	struct evbuffer *out = evbuffer_new();
	struct fetch_answer *plan;
	const char *why;

	setup();
	for (uint32_t i = 3; i < CACHE_VERIFY_BODIES_MAX + 4; i++) {
		uids[i] = 7 + i;
		store_message(uids[i], text1, header1, true);
	}
	CU_ASSERT_EQUAL(mailbox_view_load(view, uids, CACHE_VERIFY_BODIES_MAX + 4), 0);
	parse_only("UID FETCH 1:2,10:* (BODY.PEEK[]<0.4>)");
	CU_ASSERT_EQUAL_FATAL(fetch_plan(&command, &facts, &plan, &why), FETCH_ROUTE_LOCAL);
	CU_ASSERT_EQUAL(cache_mailbox_remove_uids(cache, mailbox_id, gone, 1), 0);
	CU_ASSERT_EQUAL(fetch_answer_write(plan, out, 0), FETCH_WRITE_DONE);
	CU_ASSERT_EQUAL(evbuffer_add(out, "", 1), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr((const char *)evbuffer_pullup(out, -1), "* 2 FETCH (UID 2 BODY[]<0> {4}\r\n"));
	fetch_answer_free(&plan);
	CU_ASSERT_EQUAL(cache_body_size(cache, mailbox_id, 2, &(uint64_t){ 0 }), 0); /* gone with the answer */
	evbuffer_drain(out, evbuffer_get_length(out));
	parse_only("UID FETCH 1,10:* (BODY.PEEK[]<0.4>)");
	CU_ASSERT_EQUAL_FATAL(fetch_plan(&command, &facts, &plan, &why), FETCH_ROUTE_LOCAL);
	delete_behind(uids[4]);
	CU_ASSERT_EQUAL(fetch_answer_write(plan, out, 0), FETCH_WRITE_LOST);
	CU_ASSERT_EQUAL(evbuffer_get_length(out), strlen("* 1 FETCH (UID 1 BODY[]<0> {4}\r\nSubj)\r\n"
							 "* 4 FETCH (UID 10 BODY[]<0> {4}\r\nSubj)\r\n")); /* whole lines only */
	fetch_answer_free(&plan);
	evbuffer_free(out);
	teardown();
}

/* An answer of fixed items past FETCH_CHECKED_FIRST messages: the rest
   are vouched for by cache_lookup_fixed and read as they are written, so
   a row gone between plan and write is LOST there; a message of the rest
   that lacks an item is found by the plan all the same. */
static void test_fixed_checked_as_written(void)
{
	enum { COUNT = FETCH_CHECKED_FIRST + 50 };
	uint32_t uids[COUNT];
	const uint32_t late[] = { 100 + FETCH_CHECKED_FIRST + 10 };
	struct evbuffer *out = evbuffer_new();
	struct fetch_answer *plan;
	const char *why, *text;
	char expected[160];
	size_t lines = 0;

	setup();
	for (uint32_t i = 0; i < COUNT; i++) {
		uids[i] = 100 + i;
		store_message(uids[i], NULL, NULL, false);
	}
	CU_ASSERT_EQUAL(mailbox_view_load(view, uids, COUNT), 0);
	for (uint32_t seq = 1; seq <= COUNT; seq++)
		CU_ASSERT_EQUAL(mailbox_view_set_flags(view, seq, "\\Seen", 5), 0);
	parse_only("FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)");
	CU_ASSERT_EQUAL_FATAL(fetch_plan(&command, &facts, &plan, &why), FETCH_ROUTE_LOCAL);
	CU_ASSERT_EQUAL(fetch_answer_write(plan, out, 0), FETCH_WRITE_DONE);
	CU_ASSERT_EQUAL(evbuffer_add(out, "", 1), 0);
	text = (const char *)evbuffer_pullup(out, -1);
	for (const char *p = text; (p = strstr(p, " FETCH (")) != NULL; p++)
		lines++;
	CU_ASSERT_EQUAL(lines, COUNT);
	snprintf(expected, sizeof(expected), "* %u FETCH (UID %u FLAGS (\\Seen) RFC822.SIZE 1234 ENVELOPE " ENVELOPE ")\r\n",
		 (unsigned int)COUNT, (unsigned int)(100 + COUNT - 1));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, expected));
	fetch_answer_free(&plan);
	/* a row gone between plan and write, past the first ones (under the
	   store: an expunge would wait for the answer's pin): LOST there */
	evbuffer_drain(out, evbuffer_get_length(out));
	CU_ASSERT_EQUAL_FATAL(fetch_plan(&command, &facts, &plan, &why), FETCH_ROUTE_LOCAL);
	delete_behind(late[0]);
	CU_ASSERT_EQUAL(fetch_answer_write(plan, out, 0), FETCH_WRITE_LOST);
	fetch_answer_free(&plan);
	/* a message of the rest without its ENVELOPE: the plan finds it */
	store_message(late[0], NULL, NULL, false);
	CU_ASSERT_EQUAL(cache_store_item(cache, mailbox_id, late[0], CACHE_ITEM_ENVELOPE, NULL, 0), 0);
	facts.fill_missing = true;
	snprintf(expected, sizeof(expected), "MISSING: %u/%u (UID ENVELOPE)", (unsigned int)FETCH_CHECKED_FIRST + 11,
		 (unsigned int)late[0]);
	expect(answer("FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)"), expected);
	evbuffer_free(out);
	teardown();
}

/* No store, no view, another command. */
/* Feeds text to splice in parts of at most step bytes. */
static void splice_feed(struct fetch_splice *splice, const char *text, size_t step)
{
	size_t len = strlen(text);

	for (size_t at = 0; at < len; at += step)
		fetch_splice_feed(splice, (const unsigned char *)text + at, len - at < step ? len - at : step,
				  at + step >= len);
}

/* The plan marks the (message, item) pairs the store can't vouch for, and
   groups them by identical item lists, in PEEK forms, UID first. */
static void test_splice_plan(void)
{
	setup();
	CU_ASSERT_EQUAL(cache_set_structure_agrees(cache, mailbox_id, 2, false), 0);
	/* without the step allowed: upstream, as before */
	CU_ASSERT(upstream(answer("FETCH 1:2 (UID BODY.PEEK[1] RFC822.SIZE)")));
	CU_ASSERT(upstream(answer("FETCH 1 (BINARY.SIZE[1])")));
	CU_ASSERT(upstream(answer("FETCH 1 (PREVIEW)")));
	facts.splice_allowed = true;
	expect(answer("FETCH 1:2 (UID BODY.PEEK[1] RFC822.SIZE)"), "SPLICE: 2/2 (UID BODY.PEEK[1])");
	expect(answer("FETCH 1:2 (BINARY.SIZE[1] BODY[1]<0.10> FLAGS)"),
	       "SPLICE: 1/1 (UID BINARY.SIZE[1]); 2/2 (UID BINARY.SIZE[1] BODY.PEEK[1]<0.10>)");
	expect(answer("FETCH 1:2 (PREVIEW ENVELOPE)"), "SPLICE: 1/1 2/2 (UID PREVIEW)");
	expect(answer("FETCH 2 (BODY.PEEK[HEADER.FIELDS (\"subject\")] RFC822.TEXT)"),
	       "SPLICE: 2/2 (UID BODY.PEEK[HEADER.FIELDS (\"SUBJECT\")] BODY.PEEK[TEXT])");
	/* BINARY[] after a BINARY.SIZE in the same FETCH: Dovecot may write "~{n}" */
	expect(answer("FETCH 1 (BINARY.SIZE[] BINARY.PEEK[])"), "SPLICE: 1/1 (UID BINARY.SIZE[] BINARY.PEEK[])");
	facts.binary_marked_uid = 1;
	expect(answer("FETCH 1 (BINARY.PEEK[])"), "SPLICE: 1/1 (UID BINARY.PEEK[])");
	/* another BINARY read before it lets the stream go */
	CU_ASSERT_EQUAL(strncmp(answer("FETCH 1 (BINARY.PEEK[1] BINARY.PEEK[])"), "* 1 FETCH (BINARY[1] ", 21), 0);
	expect(answer("FETCH 1 (BINARY.PEEK[]<0.2> BINARY.PEEK[])"), "SPLICE: 1/1 (UID BINARY.PEEK[]<0.2> BINARY.PEEK[])");
	facts.binary_marked_uid = 2; /* Dovecot keeps one message's stream */
	CU_ASSERT_FALSE(upstream(answer("FETCH 1 (BINARY.PEEK[])")));
	CU_ASSERT_STRING_NOT_EQUAL(answer("FETCH 1 (BINARY.PEEK[])"), "SPLICE: 1/1 (UID BINARY.PEEK[])");
	facts.binary_marked_uid = 0;
	/* two items answered under one name: which value is whose? upstream */
	CU_ASSERT(upstream(answer("FETCH 2 (BODY.PEEK[1]<0.10> BODY.PEEK[1]<0.20>)")));
	/* unless they ask for one value: asked once, written twice */
	expect(answer("FETCH 2 (RFC822 BODY.PEEK[1] BODY[])"), "SPLICE: 2/2 (UID BODY.PEEK[1])");
	expect(answer("FETCH 2 (RFC822.TEXT BODY.PEEK[1] BODY[TEXT])"), "SPLICE: 2/2 (UID BODY.PEEK[TEXT] BODY.PEEK[1])");
	expect(answer("FETCH 2 (BODY.PEEK[1] BODY[1] BODY.PEEK[2])"), "SPLICE: 2/2 (UID BODY.PEEK[1] BODY.PEEK[2])");
	expect(answer("FETCH 1:2 (BODY.PEEK[] BODY[] BODY.PEEK[1])"), "SPLICE: 2/2 (UID BODY.PEEK[1])");
	/* BINARY of a message our library reads otherwise: Dovecot decodes it
	   by its own reading, fetched alone (a BYE there cuts the answer) */
	expect(answer("FETCH 2 (BINARY.PEEK[1])"), "SPLICE: 2/2 (UID BINARY.PEEK[1])");
	expect(answer("FETCH 1:2 (BINARY.PEEK[] UID)"), "SPLICE: 2/2 (UID BINARY.PEEK[])");
	/* what the store lacks is not spliced: the upstream's answer fills it */
	CU_ASSERT(upstream(answer("FETCH 3 (BODY.PEEK[] UID)")));
	/* with the missing step: the header block of a message our library
	   reads otherwise is fetched and stored, not its text spliced */
	facts.fill_missing = true;
	facts.body_max_size = 1 << 20;
	expect(answer("FETCH 1:2 (RFC822.TEXT)"), "MISSING: 2/2 (UID BODY.PEEK[HEADER])");
	/* a part our library reads as Dovecot does but does not decode may be
	   one Dovecot fails on: upstream whole, not alone */
	replace_part("Content-Transfer-Encoding: base64", "AGF");
	CU_ASSERT(upstream(answer("FETCH 2 (BINARY.PEEK[2])")));
	CU_ASSERT(upstream(answer("FETCH 1:2 (BINARY.PEEK[2] BODY.PEEK[1])")));
	/* so is one whose reading was never compared with the upstream's */
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache), "UPDATE messages SET structure_agrees = NULL WHERE uid = 2",
				     NULL, NULL, NULL), SQLITE_OK);
	CU_ASSERT(upstream(answer("FETCH 2 (BINARY.PEEK[2])")));
	teardown();
}

/* A PREVIEW the store kept from the upstream is written as it came; a
   message without one has it fetched alone. */
static void test_preview_stored(void)
{
	setup();
	facts.splice_allowed = true;
	CU_ASSERT_EQUAL(cache_store_preview(cache, mailbox_id, 1, "\"hel\\\"lo\"", 9), 0);
	expect(answer("FETCH 1:2 (PREVIEW ENVELOPE)"), "SPLICE: 2/2 (UID PREVIEW)");
	CU_ASSERT_EQUAL(cache_store_preview(cache, mailbox_id, 2, "{4}\r\nab\xc3\xa9", 9), 0);
	expect(answer("FETCH 1:2 (PREVIEW UID)"),
	       "* 1 FETCH (PREVIEW \"hel\\\"lo\" UID 1)\r\n* 2 FETCH (PREVIEW {4}\r\nab\xc3\xa9 UID 2)\r\n" OK);
	/* damaged: fetched alone again */
	CU_ASSERT_EQUAL(sqlite3_exec(cache_sqlite_handle(cache), "UPDATE previews SET sum = sum + 1 WHERE uid = 2", NULL,
				     NULL, NULL), SQLITE_OK);
	expect(answer("FETCH 1:2 (PREVIEW UID)"), "SPLICE: 2/2 (UID PREVIEW)");
	teardown();
}

/* Captured values are written in place, as the upstream wrote them. */
static void test_splice_values(void)
{
	struct fetch_splice *splice;
	const unsigned char *value;
	size_t len;

	setup();
	CU_ASSERT_EQUAL(cache_set_structure_agrees(cache, mailbox_id, 2, false), 0);
	splice = fetch_splice_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(splice);
	splice_feed(splice, "* 1 FETCH (UID 1 BINARY.SIZE[1] 6 PREVIEW \"hel\\\"lo\" BINARY[] ~{3}\r\nab\x80)\r\n", 1000);
	splice_feed(splice, "* 2 FETCH (UID 2 BINARY.SIZE[1] 42 PREVIEW NIL BODY[1] {8}\r\npart one)\r\n", 7);
	splice_feed(splice, "* 2 FETCH (UID 2 BODY[TEXT] {4}\r\ntext)\r\n", 1000);
	/* a line that does not parse, and one not naming its UID first: nothing kept */
	splice_feed(splice, "* 1 FETCH (UID 1 BODY[2] {9}\r\nshort)\r\n", 1000);
	splice_feed(splice, "* 1 FETCH (BODY[3] {1}\r\nx UID 1)\r\n", 1000);
	CU_ASSERT_EQUAL(fetch_splice_count(splice), 7);
	CU_ASSERT_FALSE(fetch_splice_lookup(splice, 1, "BODY[2]", &value, &len));
	CU_ASSERT_FALSE(fetch_splice_lookup(splice, 1, "BODY[3]", &value, &len));
	CU_ASSERT_TRUE_FATAL(fetch_splice_lookup(splice, 2, "BODY[1]", &value, &len));
	CU_ASSERT_EQUAL(len, 13);
	CU_ASSERT_EQUAL(memcmp(value, "{8}\r\npart one", 13), 0);
	facts.splice = splice;
	expect(answer("FETCH 1:2 (BINARY.SIZE[1] UID PREVIEW BODY[1])"),
	       "* 1 FETCH (UID 1 PREVIEW \"hel\\\"lo\" BINARY.SIZE[1] 6 BODY[1] {7}\r\nhello\r\n)\r\n"
	       "* 2 FETCH (UID 2 PREVIEW NIL BINARY.SIZE[1] 42 BODY[1] {8}\r\npart one)\r\n" OK);
	/* one value under two names: RFC822.TEXT is BODY[TEXT] */
	expect(answer("FETCH 2 (RFC822.TEXT BODY.PEEK[TEXT])"),
	       "* 2 FETCH (RFC822.TEXT {4}\r\ntext BODY[TEXT] {4}\r\ntext)\r\n" OK);
	/* the client's name for the item, the upstream's value, as literal8 */
	facts.binary_marked_uid = 1;
	expect(answer("FETCH 1 (BINARY[])"), "* 1 FETCH (BINARY[] ~{3}\r\nab\x80)\r\n" OK);
	facts.binary_marked_uid = 0;
	/* a value not captured: upstream as a whole (the step was taken) */
	CU_ASSERT(upstream(answer("FETCH 2 (BODY.PEEK[2])")));
	facts.splice = NULL;
	fetch_splice_free(&splice);
	CU_ASSERT_PTR_NULL(splice);
	teardown();
}

/* The upstream ended the splice step with BYE (facts.splice_cut): the
   answer ends at the first message lacking a captured value, its line
   cut before that item; "UID n" when nothing comes before it. */
static void test_splice_cut(void)
{
	struct fetch_splice *splice = fetch_splice_new();

	setup();
	CU_ASSERT_PTR_NOT_NULL_FATAL(splice);
	splice_feed(splice, "* 1 FETCH (UID 1 BINARY.SIZE[1] 6)\r\n", 1000);
	splice_feed(splice, "* 2 FETCH (UID 2)\r\n", 1000); /* Dovecot's line for the one it failed on */
	facts.splice = splice;
	facts.splice_cut = true;
	expect(answer("FETCH 1:3 (BINARY.SIZE[1] RFC822.SIZE UID)"),
	       "* 1 FETCH (RFC822.SIZE 1234 UID 1 BINARY.SIZE[1] 6)\r\n* 2 FETCH (RFC822.SIZE 1234 UID 2)\r\n" OK);
	expect(answer("FETCH 2:3 (BINARY.SIZE[1] BODYSTRUCTURE)"), "* 2 FETCH (UID 2)\r\n" OK);
	expect(answer("FETCH 1 (BINARY.SIZE[1])"), "* 1 FETCH (BINARY.SIZE[1] 6)\r\n" OK);
	/* not a splice step: what is not stored still sends it upstream */
	CU_ASSERT(upstream(answer("FETCH 3 (BODY.PEEK[] BINARY.SIZE[1])")));
	facts.splice_cut = false;
	CU_ASSERT(upstream(answer("FETCH 1:3 (BINARY.SIZE[1] RFC822.SIZE UID)")));
	facts.splice = NULL;
	fetch_splice_free(&splice);
	teardown();
}

/* Past FETCH_SPLICE_BYTES_MAX nothing is kept. */
static void test_splice_limit(void)
{
	struct fetch_splice *splice = fetch_splice_new();
	size_t size = FETCH_SPLICE_BYTES_MAX / 2 + 1;
	char *big = malloc(size + 64);
	const unsigned char *value;
	size_t len;
	int at;

	CU_ASSERT_PTR_NOT_NULL_FATAL(splice);
	CU_ASSERT_PTR_NOT_NULL_FATAL(big);
	splice_feed(splice, "* 1 FETCH (UID 1 PREVIEW NIL)\r\n", 1000);
	CU_ASSERT_TRUE(fetch_splice_lookup(splice, 1, "PREVIEW", &value, &len));
	for (uint32_t uid = 2; uid <= 3; uid++) {
		at = snprintf(big, 64, "* %u FETCH (UID %u BODY[] {%zu}\r\n", uid, uid, size);
		memset(big + at, 'x', size);
		memcpy(big + at + size, ")\r\n", 4);
		splice_feed(splice, big, 70000);
	}
	CU_ASSERT_FALSE(fetch_splice_lookup(splice, 2, "BODY[]", &value, &len));
	CU_ASSERT_FALSE(fetch_splice_lookup(splice, 1, "PREVIEW", &value, &len));
	free(big);
	fetch_splice_free(&splice);
}

static void test_no_store(void)
{
	const char *why;
	struct fetch_answer *plan = (struct fetch_answer *)&why;

	setup();
	parse_only("FETCH 1 (UID)");
	facts.cache = NULL;
	CU_ASSERT_EQUAL(fetch_plan(&command, &facts, &plan, &why), FETCH_ROUTE_UPSTREAM);
	CU_ASSERT_PTR_NULL(plan);
	facts.cache = cache;
	facts.view = NULL;
	CU_ASSERT_EQUAL(fetch_plan(&command, &facts, &plan, &why), FETCH_ROUTE_UPSTREAM);
	facts.view = view;
	parse_only("NOOP");
	CU_ASSERT_EQUAL(fetch_plan(&command, &facts, &plan, &why), FETCH_ROUTE_UPSTREAM);
	teardown();
}

/* HEADER.FIELDS of a header block, derived in one pass: for a plain block
   the bytes of mime_imap_fetch_header_fields, for any other -1 with the
   buffer as it was. */
static void test_derive_fields(void)
{
	static const char *const blocks[] = {
		"Subject: a\r\nFrom: b\r\n\r\n",
		"subject: a\r\n\tmore\r\n to: x\r\nX-Other: y\r\n  cont\r\nTO: c\r\n\r\n",
		"From:\r\nSubject:no space\r\nReferences: <a>\r\n <b>\r\n\r\n",
		"X: 1\r\n\r\n",
		"\r\n",
		"",
		"Subject: a\r\n",                  /* no blank line */
		"Subject: a\r\n\r\nbody\r\n",     /* bytes after it */
		"Subject: a\nFrom: b\r\n\r\n",     /* a bare LF */
		" cont: first\r\n\r\n",            /* a continuation first */
		"No colon\r\n\r\n",
		": empty name\r\n\r\n",
		"Sub ject: a\r\n\r\n",
		"Subject: a\rb\r\n\r\n",
		"Subject: a\r\n\r",
	};
	static const char *const sections[] = {
		"HEADER.FIELDS (SUBJECT TO)",
		"HEADER.FIELDS.NOT (SUBJECT TO)",
		"HEADER.FIELDS (\"From\" references x)",
		"HEADER.FIELDS (X-OTHER)",
		"HEADER.FIELDS ()",
		"HEADER.FIELDS (SUBJECT",
	};

	for (size_t s = 0; s < sizeof(sections) / sizeof(sections[0]); s++) {
		for (size_t b = 0; b < sizeof(blocks) / sizeof(blocks[0]); b++) {
			const unsigned char *block = (const unsigned char *)blocks[b];
			size_t len = strlen(blocks[b]);
			struct mime_buffer derived = { 0 }, expected = { 0 };
			const char *error;
			int ret;

			mime_buffer_append(&derived, "kept", 4);
			ret = fetch_derive_fields(block, len, sections[s], &derived);
			if (mime_imap_header_is_plain(block, len) &&
			    mime_imap_fetch_header_fields(block, len, sections[s], &expected, &error) ==
				    MIME_IMAP_SECTION_OK) {
				CU_ASSERT_EQUAL(ret, 0);
				CU_ASSERT_EQUAL(derived.len, 4 + expected.len);
				CU_ASSERT(derived.len == 4 + expected.len &&
					  memcmp(derived.data + 4, expected.data, expected.len) == 0);
			} else {
				CU_ASSERT_EQUAL(ret, -1);
				CU_ASSERT_EQUAL(derived.len, 4);
			}
			mime_buffer_free(&derived);
			mime_buffer_free(&expected);
		}
	}
}

const char unit_suite_name[] = "fetch";
const struct unit_test unit_tests[] = {
	{ "item order as Dovecot's handlers", test_item_order },
	{ "sections, partials, empty parts", test_sections },
	{ "BINARY literals and what goes upstream", test_binary },
	{ "BINARY of parts Dovecot decodes otherwise", test_binary_upstream },
	{ "sequence and UID sets", test_sets },
	{ "what goes upstream by rule", test_upstream_rules },
	{ "non-PEEK fetches and \\Seen", test_seen },
	{ "MODSEQ and CHANGEDSINCE", test_condstore },
	{ "the VANISHED modifier: after its step, its line first, the same messages only", test_vanished },
	{ "MODSEQ the view lacks: one CHANGEDSINCE step", test_modseq_step },
	{ "partly stored: what lacks is fetched first", test_missing },
	{ "mostly missing: upstream from one read of what is stored", test_mostly_missing_at_once },
	{ "FLAGS and \\Recent", test_flags },
	{ "the writer's limit and a lost value", test_writer },
	{ "a body not checked by the plan and gone before the write is lost", test_writer_lost_body },
	{ "an answer of many lookups is written from what the plan read", test_writer_reads_once },
	{ "HEADER.FIELDS of many messages proven by messages_plain_header", test_headers_proven_by_keys },
	{ "with writes off, no table of keys vouches: every message is checked first", test_no_keys_with_writes_off },
	{ "no store, no view, not a FETCH", test_no_store },
	{ "HEADER.FIELDS derived in one pass as from the parsed block", test_derive_fields },
	{ "a PREVIEW kept in the store", test_preview_stored },
	{ "splice: the pairs the store can't vouch for, alone", test_splice_plan },
	{ "splice: captured values written in place", test_splice_values },
	{ "splice: the upstream's BYE cuts the answer", test_splice_cut },
	{ "splice: a bounded capture", test_splice_limit },
	{ "an answer of fixed items is checked as it is written past its first messages", test_fixed_checked_as_written },
	{ NULL, NULL },
};
