/* SPDX-License-Identifier: MIT */
/* Unit tests for common/imap-fetch-items: items and exact values of FETCH lines, fed whole, byte by byte and split anywhere. */
#include "config.h"
#include "unit.h"
#include "imap-fetch-items.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The events of a line as text, one per line:
     ITEM seq name type <value>|<content>
     BEGIN seq name type size / DATA <bytes> / END
   Consecutive DATA pieces are joined, so any split gives the same text. */
struct recorder {
	char *text;
	size_t len, alloc;
	bool in_data;
};

static void record(struct recorder *rec, const void *data, size_t len)
{
	if (rec->len + len + 1 > rec->alloc) {
		rec->alloc = (rec->len + len + 1) * 2;
		rec->text = realloc(rec->text, rec->alloc);
		CU_ASSERT_PTR_NOT_NULL_FATAL(rec->text);
	}
	memcpy(rec->text + rec->len, data, len);
	rec->len += len;
	rec->text[rec->len] = '\0';
}

/* Bytes with each NUL written as "\\0", so that the text is a C string. */
static void record_bytes(struct recorder *rec, const unsigned char *data, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (data[i] == '\0')
			record(rec, "\\0", 2);
		else
			record(rec, &data[i], 1);
	}
}

static void recordf(struct recorder *rec, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void recordf(struct recorder *rec, const char *format, ...)
{
	char buf[512];
	va_list args;
	int n;

	va_start(args, format);
	n = vsnprintf(buf, sizeof(buf), format, args);
	va_end(args);
	record(rec, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

static const char *const type_names[] = { "NIL", "NUMBER", "ATOM", "QUOTED", "LITERAL", "LITERAL8", "LIST" };

static void on_event(const struct imap_fetch_items_event *event, void *context)
{
	struct recorder *rec = context;

	if (event->type != IMAP_FETCH_ITEMS_EVENT_LITERAL_DATA && rec->in_data) {
		record(rec, ">\n", 2);
		rec->in_data = false;
	}
	switch (event->type) {
	case IMAP_FETCH_ITEMS_EVENT_ITEM:
		CU_ASSERT_EQUAL(strlen(event->name), event->name_len);
		recordf(rec, "ITEM %u %s %s <", event->seq, event->name, type_names[event->value_type]);
		record_bytes(rec, event->value, event->value_len);
		record(rec, ">|<", 3);
		record_bytes(rec, event->content, event->content_len);
		record(rec, ">\n", 2);
		break;
	case IMAP_FETCH_ITEMS_EVENT_LITERAL_BEGIN:
		recordf(rec, "BEGIN %u %s %s %llu\n", event->seq, event->name, type_names[event->value_type],
			(unsigned long long)event->literal_size);
		break;
	case IMAP_FETCH_ITEMS_EVENT_LITERAL_DATA:
		if (!rec->in_data)
			record(rec, "DATA <", 6);
		rec->in_data = true;
		record_bytes(rec, event->value, event->value_len);
		break;
	case IMAP_FETCH_ITEMS_EVENT_LITERAL_END:
		record(rec, "END\n", 4);
		break;
	}
}

/* Feeds line in parts of part bytes (0: whole), the last with line_end;
   returns the events followed by "= RESULT". */
static char *split(const unsigned char *line, size_t len, size_t part)
{
	struct recorder rec = { 0 };
	struct imap_fetch_items *items = imap_fetch_items_new(on_event, &rec);
	enum imap_fetch_items_result result = IMAP_FETCH_ITEMS_NEED_MORE;
	size_t pos = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(items);
	record(&rec, "", 0);
	if (part == 0)
		part = len;
	do {
		size_t n = len - pos < part ? len - pos : part;
		enum imap_fetch_items_result now = imap_fetch_items_feed(items, line + pos, n, pos + n == len);

		pos += n;
		/* an error stays the same for the rest of the line */
		if (result != IMAP_FETCH_ITEMS_NEED_MORE)
			CU_ASSERT_EQUAL(now, result);
		if (pos < len)
			CU_ASSERT_NOT_EQUAL(now, IMAP_FETCH_ITEMS_COMPLETE);
		result = now;
	} while (pos < len);
	if (rec.in_data)
		record(&rec, ">\n", 2);
	recordf(&rec, "= %s\n", imap_fetch_items_result_name(result));
	imap_fetch_items_free(&items);
	CU_ASSERT_PTR_NULL(items);
	return rec.text;
}

/* The events of line, checked to be the same for every way of splitting it. */
static char *split_all_ways(const char *line, size_t len)
{
	char *whole = split((const unsigned char *)line, len, 0);

	for (size_t part = 1; part < len && part <= 64; part++) {
		char *other = split((const unsigned char *)line, len, part);

		if (strcmp(whole, other) != 0) {
			fprintf(stderr, "\nsplit at %zu:\n%s\nwhole:\n%s\n", part, other, whole);
			CU_FAIL("a split gave other events");
		}
		free(other);
	}
	/* one cut at every offset: two parts */
	for (size_t cut = 1; cut < len; cut++) {
		struct recorder rec = { 0 };
		struct imap_fetch_items *items = imap_fetch_items_new(on_event, &rec);
		enum imap_fetch_items_result result;

		record(&rec, "", 0);
		result = imap_fetch_items_feed(items, (const unsigned char *)line, cut, false);
		result = imap_fetch_items_feed(items, (const unsigned char *)line + cut, len - cut, true);
		if (rec.in_data)
			record(&rec, ">\n", 2);
		recordf(&rec, "= %s\n", imap_fetch_items_result_name(result));
		if (strcmp(whole, rec.text) != 0) {
			fprintf(stderr, "\ncut at %zu:\n%s\nwhole:\n%s\n", cut, rec.text, whole);
			CU_FAIL("a cut gave other events");
		}
		free(rec.text);
		imap_fetch_items_free(&items);
	}
	return whole;
}

static void expect_bytes(const char *line, size_t len, const char *events)
{
	char *got = split_all_ways(line, len);

	if (strcmp(got, events) != 0)
		fprintf(stderr, "\nline: %s\ngot:\n%s\nexpected:\n%s\n", line, got, events);
	CU_ASSERT_STRING_EQUAL(got, events);
	free(got);
}

static void expect(const char *line, const char *events)
{
	expect_bytes(line, strlen(line), events);
}

static void test_simple_items(void)
{
	expect("* 1 FETCH (FLAGS () UID 1)\r\n",
	       "ITEM 1 FLAGS LIST <()>|<()>\n"
	       "ITEM 1 UID NUMBER <1>|<1>\n"
	       "= COMPLETE\n");
	expect("* 4294967295 fetch (UID 7 FLAGS (\\Seen $Junk \\Recent) MODSEQ (12345678901))\r\n",
	       "ITEM 4294967295 UID NUMBER <7>|<7>\n"
	       "ITEM 4294967295 FLAGS LIST <(\\Seen $Junk \\Recent)>|<(\\Seen $Junk \\Recent)>\n"
	       "ITEM 4294967295 MODSEQ LIST <(12345678901)>|<(12345678901)>\n"
	       "= COMPLETE\n");
	expect("* 3 FETCH (INTERNALDATE \"26-Jan-2019 13:47:01 +0000\" RFC822.SIZE 11489)\r\n",
	       "ITEM 3 INTERNALDATE QUOTED <\"26-Jan-2019 13:47:01 +0000\">|<26-Jan-2019 13:47:01 +0000>\n"
	       "ITEM 3 RFC822.SIZE NUMBER <11489>|<11489>\n"
	       "= COMPLETE\n");
	expect("* 2 FETCH (BODY[1] NIL X-GUID abc~d X-Q \"a\\\"b\\\\\")\r\n",
	       "ITEM 2 BODY[1] NIL <NIL>|<NIL>\n"
	       "ITEM 2 X-GUID ATOM <abc~d>|<abc~d>\n"
	       "ITEM 2 X-Q QUOTED <\"a\\\"b\\\\\">|<a\\\"b\\\\>\n"
	       "= COMPLETE\n");
	expect("* 9 FETCH ()\r\n", "= COMPLETE\n");
	expect("* 9 FETCH (UID 1)\n", "ITEM 9 UID NUMBER <1>|<1>\n= COMPLETE\n");
}

static void test_names(void)
{
	expect("* 1 FETCH (UID 1 BODY[HEADER.FIELDS (SUBJECT FROM)] {4}\r\nab\r\n)\r\n",
	       "ITEM 1 UID NUMBER <1>|<1>\n"
	       "ITEM 1 BODY[HEADER.FIELDS (SUBJECT FROM)] LITERAL <{4}\r\nab\r\n>|<ab\r\n>\n"
	       "= COMPLETE\n");
	expect("* 1 FETCH (BODY[HEADER.FIELDS (\"X ]\\\"\" FROM)]<0> {0}\r\n BODY[]<5> {1}\r\nx)\r\n",
	       "ITEM 1 BODY[HEADER.FIELDS (\"X ]\\\"\" FROM)]<0> LITERAL <{0}\r\n>|<>\n"
	       "ITEM 1 BODY[]<5> LITERAL <{1}\r\nx>|<x>\n"
	       "= COMPLETE\n");
	static const char binary[] = "* 1 FETCH (BINARY[1] ~{3}\r\na\0b BINARY.SIZE[1] 3)\r\n";

	expect_bytes(binary, sizeof(binary) - 1,
	       "ITEM 1 BINARY[1] LITERAL8 <~{3}\r\na\\0b>|<a\\0b>\n"
	       "ITEM 1 BINARY.SIZE[1] NUMBER <3>|<3>\n"
	       "= COMPLETE\n");
}

static void test_lists(void)
{
	expect("* 5 FETCH (ENVELOPE (\"d\" {3}\r\n(s) ((NIL NIL \"a\" \"b\")) NIL) BODYSTRUCTURE ((\"text\" \"plain\" NIL NIL NIL "
	       "\"7bit\" 0 0)(\"text\" \"html\" (\"a\" \"b\") NIL NIL \"7bit\" 1 1) \"mixed\"))\r\n",
	       "ITEM 5 ENVELOPE LIST <(\"d\" {3}\r\n(s) ((NIL NIL \"a\" \"b\")) NIL)>|<(\"d\" {3}\r\n(s) ((NIL NIL \"a\" \"b\")) NIL)>\n"
	       "ITEM 5 BODYSTRUCTURE LIST <((\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0)(\"text\" \"html\" (\"a\" \"b\") NIL NIL "
	       "\"7bit\" 1 1) \"mixed\")>|<((\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0)(\"text\" \"html\" (\"a\" \"b\") NIL NIL "
	       "\"7bit\" 1 1) \"mixed\")>\n"
	       "= COMPLETE\n");
	/* what a list's bytes hold besides atoms and plain strings: an
	   escape, an empty string, a literal8, lists side by side */
	expect("* 2 FETCH (X (\"a\\\"b\" \"\" (~{2}\r\nab) ((c)(d e)) f~g))\r\n",
	       "ITEM 2 X LIST <(\"a\\\"b\" \"\" (~{2}\r\nab) ((c)(d e)) f~g)>|<(\"a\\\"b\" \"\" (~{2}\r\nab) ((c)(d e)) f~g)>\n"
	       "= COMPLETE\n");
}

static void test_not_fetch(void)
{
	expect("* 3 EXISTS\r\n", "= NOT_FETCH\n");
	expect("* OK [UIDNEXT 5] x\r\n", "= NOT_FETCH\n");
	expect("* 0 FETCH (UID 1)\r\n", "= NOT_FETCH\n");
	expect("* 4294967296 FETCH (UID 1)\r\n", "= NOT_FETCH\n");
	expect("* 3 FETCHES (UID 1)\r\n", "= NOT_FETCH\n");
	expect("+ go on\r\n", "= NOT_FETCH\n");
	expect("* 3\r\n", "= NOT_FETCH\n");
	expect("", "= NOT_FETCH\n");
}

static void test_malformed(void)
{
	expect("* 3 FETCH UID 1\r\n", "= MALFORMED\n");
	expect("* 3 FETCH (UID 1\r\n", "ITEM 3 UID NUMBER <1>|<1>\n= MALFORMED\n");
	expect("* 3 FETCH (UID 1) \r\n", "ITEM 3 UID NUMBER <1>|<1>\n= MALFORMED\n");
	expect("* 3 FETCH (UID 1 )\r\n", "ITEM 3 UID NUMBER <1>|<1>\n= MALFORMED\n");
	expect("* 3 FETCH (UID)\r\n", "= MALFORMED\n");
	expect("* 3 FETCH (FLAGS (\\Seen)\r\n", "ITEM 3 FLAGS LIST <(\\Seen)>|<(\\Seen)>\n= MALFORMED\n");
	/* five bytes are "abc)\r": the line is left without its ")" */
	expect("* 3 FETCH (BODY[] {5}\r\nabc)\r\n", "ITEM 3 BODY[] LITERAL <{5}\r\nabc)\r>|<abc)\r>\n= MALFORMED\n");
	expect("* 3 FETCH (BODY[] {9}\r\nabc)\r\n", "= MALFORMED\n"); /* the line ends inside the literal */
	expect("* 3 FETCH (BODY[] {5+}\r\nabcde)\r\n", "= MALFORMED\n");
	expect("* 3 FETCH (BODY[] {}\r\n)\r\n", "= MALFORMED\n");
	expect("* 3 FETCH (X \"a\r\nb\")\r\n", "= MALFORMED\n");
	expect("* 3 FETCH (BODY[ NIL)\r\n", "= MALFORMED\n");
	expect("* 3 FETCH (BODY] NIL)\r\n", "= MALFORMED\n");
	expect("* 3 FETCH (UID 1)\r\nx", "ITEM 3 UID NUMBER <1>|<1>\n= MALFORMED\n");
	/* inside a list: a line break in a string, an 8-bit byte, a list left open */
	expect("* 3 FETCH (X (a \"b\r\nc\"))\r\n", "= MALFORMED\n");
	expect("* 3 FETCH (X (a b\x80))\r\n", "= MALFORMED\n");
	expect("* 3 FETCH (X (a (b)\r\n", "= MALFORMED\n");
}

static void test_too_big(void)
{
	size_t value = IMAP_FETCH_ITEMS_VALUE_MAX + 10;
	char *line = malloc(value + 64);
	int n = sprintf(line, "* 1 FETCH (X (");
	char *got;

	memset(line + n, 'a', value);
	strcpy(line + n + value, "))\r\n");
	got = split((const unsigned char *)line, strlen(line), 0);
	CU_ASSERT_STRING_EQUAL(got, "= TOO_BIG\n");
	free(got);
	got = split((const unsigned char *)line, strlen(line), 4096);
	CU_ASSERT_STRING_EQUAL(got, "= TOO_BIG\n");
	free(got);
	/* a long name */
	n = sprintf(line, "* 1 FETCH (");
	memset(line + n, 'N', IMAP_FETCH_ITEMS_NAME_MAX + 1);
	strcpy(line + n + IMAP_FETCH_ITEMS_NAME_MAX + 1, " 1)\r\n");
	got = split((const unsigned char *)line, strlen(line), 0);
	CU_ASSERT_STRING_EQUAL(got, "= TOO_BIG\n");
	free(got);
	/* lists nested past their limit */
	n = sprintf(line, "* 1 FETCH (X ");
	memset(line + n, '(', IMAP_FETCH_ITEMS_MAX_DEPTH + 1);
	memset(line + n + IMAP_FETCH_ITEMS_MAX_DEPTH + 1, ')', IMAP_FETCH_ITEMS_MAX_DEPTH + 1);
	strcpy(line + n + 2 * (IMAP_FETCH_ITEMS_MAX_DEPTH + 1), ")\r\n");
	got = split((const unsigned char *)line, strlen(line), 0);
	CU_ASSERT_STRING_EQUAL(got, "= TOO_BIG\n");
	free(got);
	/* a nested literal past the held limit is refused before its bytes */
	sprintf(line, "* 1 FETCH (X ({%d}\r\n", IMAP_FETCH_ITEMS_VALUE_MAX + 1);
	got = split((const unsigned char *)line, strlen(line), 0);
	CU_ASSERT_STRING_EQUAL(got, "= TOO_BIG\n");
	free(got);
	free(line);
}

/* A literal past the threshold streams; one at it is held whole. */
static void test_streamed_literal(void)
{
	size_t big = IMAP_FETCH_ITEMS_STREAM_THRESHOLD + 1;
	char *line = malloc(big * 2 + 256), *expected = malloc(big * 2 + 512);
	int n = sprintf(line, "* 7 FETCH (UID 3 BODY[] {%zu}\r\n", big);
	int e = sprintf(expected, "ITEM 7 UID NUMBER <3>|<3>\nBEGIN 7 BODY[] LITERAL %zu\nDATA <", big);

	for (size_t i = 0; i < big; i++)
		line[n + i] = expected[e + i] = (char)('a' + i % 26);
	n += (int)big;
	e += (int)big;
	n += sprintf(line + n, " RFC822.SIZE 9 BINARY[1] ~{%zu}\r\n", big);
	e += sprintf(expected + e, ">\nEND\nITEM 7 RFC822.SIZE NUMBER <9>|<9>\nBEGIN 7 BINARY[1] LITERAL8 %zu\nDATA <", big);
	memset(line + n, 'z', big);
	memset(expected + e, 'z', big);
	n += (int)big;
	e += (int)big;
	n += sprintf(line + n, ")\r\n");
	e += sprintf(expected + e, ">\nEND\n= COMPLETE\n");
	for (size_t part = 0; part <= 32 * 1024; part += 4093) {
		char *got = split((const unsigned char *)line, (size_t)n, part);

		CU_ASSERT_STRING_EQUAL(got, expected);
		free(got);
	}
	/* at the threshold: held, reported once */
	n = sprintf(line, "* 1 FETCH (BODY[] {%d}\r\n", IMAP_FETCH_ITEMS_STREAM_THRESHOLD);
	memset(line + n, 'x', IMAP_FETCH_ITEMS_STREAM_THRESHOLD);
	strcpy(line + n + IMAP_FETCH_ITEMS_STREAM_THRESHOLD, ")\r\n");
	char *got = split((const unsigned char *)line, strlen(line), 1000);
	CU_ASSERT_NSTRING_EQUAL(got, "ITEM 1 BODY[] LITERAL <{65536}\r\nxxx", strlen("ITEM 1 BODY[] LITERAL <{65536}\r\nxxx"));
	CU_ASSERT_PTR_NULL(strstr(got, "BEGIN"));
	free(got);
	free(line);
	free(expected);
}

/* After a line (well-formed or not) the next one starts afresh; reset forgets a line. */
static void test_lines_in_a_row(void)
{
	struct recorder rec = { 0 };
	struct imap_fetch_items *items = imap_fetch_items_new(on_event, &rec);
	static const unsigned char bad[] = "* 3 FETCH (UID x";
	static const unsigned char good[] = "* 4 FETCH (UID 4)\r\n";

	record(&rec, "", 0);
	CU_ASSERT_EQUAL(imap_fetch_items_feed(items, (const unsigned char *)"* 1 EXPUNGE\r\n", 13, true),
			IMAP_FETCH_ITEMS_NOT_FETCH);
	CU_ASSERT_EQUAL(imap_fetch_items_feed(items, bad, sizeof(bad) - 1, false), IMAP_FETCH_ITEMS_NEED_MORE);
	CU_ASSERT_EQUAL(imap_fetch_items_feed(items, (const unsigned char *)"(", 1, false), IMAP_FETCH_ITEMS_MALFORMED);
	CU_ASSERT_EQUAL(imap_fetch_items_feed(items, (const unsigned char *)"y)\r\n", 4, true),
			IMAP_FETCH_ITEMS_MALFORMED);
	CU_ASSERT_EQUAL(imap_fetch_items_feed(items, good, sizeof(good) - 1, true), IMAP_FETCH_ITEMS_COMPLETE);
	CU_ASSERT_EQUAL(imap_fetch_items_feed(items, bad, 10, false), IMAP_FETCH_ITEMS_NEED_MORE);
	imap_fetch_items_reset(items);
	CU_ASSERT_EQUAL(imap_fetch_items_feed(items, good, sizeof(good) - 1, true), IMAP_FETCH_ITEMS_COMPLETE);
	CU_ASSERT_STRING_EQUAL(rec.text, "ITEM 3 UID ATOM <x>|<x>\nITEM 4 UID NUMBER <4>|<4>\nITEM 4 UID NUMBER <4>|<4>\n");
	imap_fetch_items_free(&items);
	imap_fetch_items_free(&items);
	free(rec.text);
}

const char unit_suite_name[] = "imap-fetch-items";
const struct unit_test unit_tests[] = {
	{ "numbers, lists, quoted strings, NIL", test_simple_items },
	{ "item names with sections and partials", test_names },
	{ "nested lists and literals", test_lists },
	{ "lines that are no FETCH", test_not_fetch },
	{ "malformed FETCH lines", test_malformed },
	{ "names and values past their limits", test_too_big },
	{ "large literals stream, small ones are held", test_streamed_literal },
	{ "lines in a row, reset", test_lines_in_a_row },
	{ NULL, NULL },
};
