/* SPDX-License-Identifier: MIT */
/* Unit tests for common/imap-parser: every case fed whole, byte by byte and split at every offset. */
#include "config.h"
#include "unit.h"
#include "unit-imap.h"
#include "imap-parser.h"

#include <event2/buffer.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Allocation failures are injected by interposing glibc's allocator; under
   AddressSanitizer its allocator must stay in charge and that test is a no-op. */
#if defined(__SANITIZE_ADDRESS__)
#define INJECT_ALLOCATION_FAILURES 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define INJECT_ALLOCATION_FAILURES 0
#endif
#endif
#ifndef INJECT_ALLOCATION_FAILURES
#define INJECT_ALLOCATION_FAILURES 1
#endif

static int allocations_left = -1; /* -1: never fail */

#if INJECT_ALLOCATION_FAILURES
void *__libc_malloc(size_t size);
void *__libc_calloc(size_t count, size_t size);
void *__libc_realloc(void *ptr, size_t size);

static bool allocation_allowed(void)
{
	if (allocations_left < 0)
		return true;
	if (allocations_left == 0)
		return false;
	allocations_left--;
	return true;
}

void *malloc(size_t size)
{
	return allocation_allowed() ? __libc_malloc(size) : NULL;
}

void *calloc(size_t count, size_t size)
{
	return allocation_allowed() ? __libc_calloc(count, size) : NULL;
}

void *realloc(void *ptr, size_t size)
{
	return allocation_allowed() ? __libc_realloc(ptr, size) : NULL;
}
#endif

#define CMD IMAP_PARSER_MODE_COMMAND
#define RESP IMAP_PARSER_MODE_RESPONSE

/* One tokenizer case: input (NUL-terminated) in mode, and the transcript
   it must give however it is fed (unit_imap_check). */
struct parser_case {
	const char *input;
	enum imap_parser_mode mode;
	const char *expected;
};

static void check_cases(const struct parser_case *cases, size_t count)
{
	for (size_t i = 0; i < count; i++)
		unit_imap_check_str(cases[i].input, cases[i].mode, cases[i].expected);
}

static void test_atoms_and_spaces(void)
{
	static const struct parser_case cases[] = {
		{ "a001 NOOP\r\n", CMD, "LINE a001 NOOP\n" },
		{ "a LIST \"\" *\r\n", CMD, "LINE a LIST \"\" *\n" },
		{ "a LIST % INBOX.%\r\n", CMD, "LINE a LIST % INBOX.%\n" },
		/* Bare LF ends a line too; extra spaces are tolerated. */
		{ "a  NOOP \n", CMD, "LINE a NOOP\n" },
		{ "\r\n", CMD, "LINE \n" },
		{ "* 8bit caf\xc3\xa9\r\n", RESP, "LINE * 8bit caf\\xc3\\xa9\n" },
		{ "a NOOP\r\nb LOGOUT\r\n", CMD, "LINE a NOOP\nLINE b LOGOUT\n" },
		/* A tag may hold "[" and "]" (RFC 3501): not a section there. */
		{ "q[3 SEARCH x[1]\r\n", CMD, "LINE q[3 SEARCH x[1]\n" },
		{ "x]1 NOOP\r\n", CMD, "LINE x]1 NOOP\n" },
		{ "q[3 OK [READ-ONLY] done\r\n", RESP, "LINE q[3 OK C\"READ-ONLY\" T\"done\"\n" },
		{ "]]] BAD no\r\n", RESP, "LINE ]]] BAD T\"no\"\n" },
		{ "a(1 NOOP\r\n", CMD, "ERROR UNEXPECTED_CHAR\n" },
		{ "a NOOP", CMD, "NEED_MORE\n" },
		/* Longer than the evbuffer's first 16 chains of 5 bytes. */
		{ "a1 UID FETCH 1:*,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31,33,35,37,39,41,43,45,"
		  "47,49,51,53,55,57,59,61,63,65,67,69,71,73,75,77,79 (FLAGS)\r\nb2 NOOP\r\n", CMD,
		  "LINE a1 UID FETCH 1:*,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31,33,35,37,39,41,43,45,"
		  "47,49,51,53,55,57,59,61,63,65,67,69,71,73,75,77,79 (FLAGS)\nLINE b2 NOOP\n" },
	};

	check_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_nil_and_flags(void)
{
	unit_imap_check_str("* FLAGS (\\Answered \\Seen $Junk \\*)\r\n", RESP,
			    "LINE * FLAGS (\\\\Answered \\\\Seen $Junk \\\\*)\n");
	unit_imap_check_str("* X NIL nil Nil NILS\r\n", RESP, "LINE * X NIL NIL NIL NILS\n");
}

static void test_quoted(void)
{
	static const struct parser_case cases[] = {
		{ "a LOGIN \"us er\" \"p\\\"w\\\\d\"\r\n", CMD, "LINE a LOGIN \"us er\" \"p\\\"w\\\\d\"\n" },
		{ "a X \"\"\r\n", CMD, "LINE a X \"\"\n" },
		{ "a X \"(not a list) {5}\"\r\n", CMD, "LINE a X \"(not a list) {5}\"\n" },
		{ "a X \"bad \\n escape\"\r\n", CMD, "ERROR BAD_QUOTED\n" },
		{ "a X \"line\r\nbreak\"\r\n", CMD, "ERROR BAD_QUOTED\n" },
		{ "a X \"unterminated", CMD, "NEED_MORE\n" },
		{ "a X \"a\"\"b\"\r\n", CMD, "ERROR UNEXPECTED_CHAR\n" },
	};

	check_cases(cases, sizeof(cases) / sizeof(cases[0]));
	unit_imap_check(("a X \"n\0l\"\r\n"), 11, &(struct unit_imap_options){ .mode = CMD },
			"ERROR BAD_QUOTED\n");
}

static void test_lists(void)
{
	static const struct parser_case cases[] = {
		{ "* LIST (\\Noselect) \"/\" foo\r\n", RESP, "LINE * LIST (\\\\Noselect) \"/\" foo\n" },
		{ "* X () (()) ((a) (b c)) (NIL \"q\")\r\n", RESP, "LINE * X () (()) ((a) (b c)) (NIL \"q\")\n" },
		{ "* X (a b\r\n", RESP, "ERROR UNCLOSED_LIST\n" },
		{ "* X a)\r\n", RESP, "ERROR UNEXPECTED_CHAR\n" },
		/* Multipart BODYSTRUCTURE glues its parts together. */
		{ "* X ((a)(b) \"mixed\")\r\n", RESP, "LINE * X ((a) (b) \"mixed\")\n" },
		{ "* X \"q\"(b)\r\n", RESP, "ERROR UNEXPECTED_CHAR\n" },
		{ "* X a(b)\r\n", RESP, "ERROR UNEXPECTED_CHAR\n" },
	};

	check_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_brackets_in_atoms(void)
{
	static const struct parser_case cases[] = {
		{ "a FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100> BODY[])\r\n", CMD,
		  "LINE a FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100> BODY[])\n" },
		{ "* 1 FETCH (BODY[1.2.MIME] \"x\" BINARY.SIZE[3] 12)\r\n", RESP,
		  "LINE * 1 FETCH (BODY[1.2.MIME] \"x\" BINARY.SIZE[3] 12)\n" },
		{ "a FETCH 1 BODY[HEADER\r\n", CMD, "ERROR UNEXPECTED_CHAR\n" },
		{ "a FETCH 1 BODY[[x]]\r\n", CMD, "LINE a FETCH 1 BODY[[x]]\n" },
	};

	check_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

/* Header names in a [...] header list are astrings: atoms, quoted strings
   with escapes and literals all give the same canonical atom. */
static void test_header_lists_in_sections(void)
{
	static const struct parser_case cases[] = {
		{ "a FETCH 1 (BODY.PEEK[HEADER.FIELDS (\"Subject\" {4}\r\nX-Up \"a b\" \"X-\\\"odd\\\"\" Date)]<0.10>)\r\n", CMD,
		  "ANNOUNCED 4\n"
		  "LINE a FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject X-Up \\\"a b\\\" \\\"X-\\\\\\\"odd\\\\\\\"\\\" Date)]<0.10>)\n" },
		/* The three forms of one name give the same atom. */
		{ "a FETCH 1 BODY[HEADER.FIELDS (Subject)]\r\n"
		  "b FETCH 1 BODY[HEADER.FIELDS (\"Subject\")]\r\n"
		  "c FETCH 1 BODY[HEADER.FIELDS ({7+}\r\nSubject)]\r\n", CMD,
		  "LINE a FETCH 1 BODY[HEADER.FIELDS (Subject)]\n"
		  "LINE b FETCH 1 BODY[HEADER.FIELDS (Subject)]\n"
		  "LINE c FETCH 1 BODY[HEADER.FIELDS (Subject)]\n" },
		{ "a FETCH 1 BODY[1.HEADER.FIELDS.NOT ({7}\r\nSubject {3}\r\na\"b {3}\r\nx\\y {0}\r\n)]\r\n", CMD,
		  "ANNOUNCED 7\nANNOUNCED 3\nANNOUNCED 3\nANNOUNCED 0\n"
		  "LINE a FETCH 1 BODY[1.HEADER.FIELDS.NOT (Subject \\\"a\\\\\\\"b\\\" \\\"x\\\\\\\\y\\\" \\\"\\\")]\n" },
		/* ']' is an ASTRING-CHAR; '(' ')' '%' and the like are quoted. */
		{ "a FETCH 1 BODY[HEADER.FIELDS (a] \"(x)\" \"%\" \"\" [b)]\r\n", CMD,
		  "LINE a FETCH 1 BODY[HEADER.FIELDS (a] \\\"(x)\\\" \\\"%\\\" \\\"\\\" [b)]\n" },
		/* '%', '*' and '\\' are no ASTRING-CHARs, but Dovecot takes them in a
		   name and echoes it back unquoted (A*B): read, and written back
		   quoted, in a command and in a response alike. */
		{ "a FETCH 1 BODY[HEADER.FIELDS (a% b*c d\\e)]\r\n", CMD,
		  "LINE a FETCH 1 BODY[HEADER.FIELDS (\\\"a%\\\" \\\"b*c\\\" \\\"d\\\\\\\\e\\\")]\n" },
		{ "* 1 FETCH (BODY[HEADER.FIELDS (A*B A%B A\\B A]B)] {2}\r\nhi)\r\n", RESP,
		  "LINE * 1 FETCH (BODY[HEADER.FIELDS (\\\"A*B\\\" \\\"A%B\\\" \\\"A\\\\\\\\B\\\" A]B)] {2}\"hi\")\n" },
		/* Servers echo the names the same way in FETCH responses. */
		{ "* 1 FETCH (BODY[HEADER.FIELDS (\"X Y\" {3}\r\nabc)] {2}\r\nhi)\r\n", RESP,
		  "LINE * 1 FETCH (BODY[HEADER.FIELDS (\\\"X Y\\\" abc)] {2}\"hi\")\n" },

		/* Malformed lists. */
		{ "a FETCH 1 BODY[HEADER.FIELDS (Subject\r\n", CMD, "ERROR UNCLOSED_LIST\n" },
		{ "a FETCH 1 BODY[HEADER.FIELDS (Subject]\r\n", CMD, "ERROR UNCLOSED_LIST\n" },
		{ "a FETCH 1 BODY[HEADER.FIELDS (Subject \r\n", CMD, "ERROR UNCLOSED_LIST\n" },
		{ "a FETCH 1 BODY[HEADER.FIELDS (Subject)\r\n", CMD, "ERROR UNEXPECTED_CHAR\n" },
		{ "a FETCH 1 BODY[HEADER.FIELDS (\"a\"b)]\r\n", CMD, "ERROR UNEXPECTED_CHAR\n" },
		{ "a FETCH 1 BODY[HEADER.FIELDS (a\"b\")]\r\n", CMD, "ERROR UNEXPECTED_CHAR\n" },
		{ "a FETCH 1 BODY[HEADER.FIELDS (a{1}\r\nb)]\r\n", CMD, "ERROR UNEXPECTED_CHAR\n" },
		{ "a FETCH 1 BODY[HEADER.FIELDS ((a))]\r\n", CMD, "ERROR UNEXPECTED_CHAR\n" },
		{ "a FETCH 1 BODY[HEADER.FIELDS (\"a\\x\")]\r\n", CMD, "ERROR BAD_QUOTED\n" },
		{ "a FETCH 1 BODY[HEADER.FIELDS (\"ab\r\n", CMD, "ERROR BAD_QUOTED\n" },
		{ "a FETCH 1 BODY[HEADER.FIELDS ({x}\r\na)]\r\n", CMD, "ERROR BAD_LITERAL\n" },
		{ "a FETCH 1 BODY[HEADER.FIELDS (~{1}\r\na)]\r\n", CMD, "ERROR UNEXPECTED_CHAR\n" },
		/* A name literal: CR, LF and NUL are refused, and its size is bounded. */
		{ "a FETCH 1 BODY[HEADER.FIELDS ({3}\r\na\rb)]\r\n", CMD, "ANNOUNCED 3\nERROR UNEXPECTED_CHAR\n" },
	};

	check_cases(cases, sizeof(cases) / sizeof(cases[0]));
	unit_imap_check("a FETCH 1 BODY[HEADER.FIELDS ({3+}\r\na\0b)]\r\n", 43, &(struct unit_imap_options){ .mode = CMD },
			"ERROR UNEXPECTED_CHAR\n");
	static const struct parser_case cases2[] = {
		{ "a FETCH 1 BODY[HEADER.FIELDS ({998+}\r\n", CMD, "NEED_MORE\n" },
		{ "a FETCH 1 BODY[HEADER.FIELDS ({999}\r\n", CMD, "ERROR LITERAL_TOO_BIG\n" },
		{ "* 1 FETCH (BODY[HEADER.FIELDS ({999}\r\n", RESP, "ERROR LITERAL_TOO_BIG\n" },
	};

	check_cases(cases2, sizeof(cases2) / sizeof(cases2[0]));

	/* A name literal's bytes count toward max_line. */
	struct imap_parser_limits limits;
	imap_parser_get_default_limits(&limits);
	limits.max_line = 48;
	struct unit_imap_options options = { .mode = CMD, .limits = &limits };
	const char *fits = "a FETCH 1 BODY[HEADER.FIELDS ({4+}\r\nabcd)]\r\n";
	unit_imap_check(fits, strlen(fits), &options, "LINE a FETCH 1 BODY[HEADER.FIELDS (abcd)]\n");
	const char *too_long = "a FETCH 1 BODY[HEADER.FIELDS ({20+}\r\nabcdefghijabcdefghij)]\r\n";
	unit_imap_check(too_long, strlen(too_long), &options, "ERROR LINE_TOO_LONG\n");
}

static void test_literals(void)
{
	static const struct parser_case cases[] = {
		{ "* 1 FETCH (BODY[] {5}\r\nhello)\r\n", RESP, "LINE * 1 FETCH (BODY[] {5}\"hello\")\n" },
		/* A literal's bytes are not syntax: CRLF, quotes and parens inside. */
		{ "* 1 FETCH (RFC822 {9}\r\n(\"\r\n)\"{1})\r\n", RESP,
		  "LINE * 1 FETCH (RFC822 {9}\"(\\\"\\x0d\\x0a)\\\"{1}\")\n" },
		{ "* X {0}\r\n\r\n", RESP, "LINE * X {0}\"\"\n" },
		/* Commands: a synchronizing literal stops the feed; {n+} does not. */
		{ "a LOGIN {4}\r\nuser {4+}\r\npass\r\n", CMD,
		  "ANNOUNCED 4\nLINE a LOGIN {4}\"user\" {4+}\"pass\"\n" },
		{ "a X {0}\r\n\r\n", CMD, "ANNOUNCED 0\nLINE a X {0}\"\"\n" },
	};

	check_cases(cases, sizeof(cases) / sizeof(cases[0]));
	/* literal8 keeps NUL. */
	unit_imap_check("* 1 FETCH (BINARY[] ~{3}\r\na\0b)\r\n", 32,
			&(struct unit_imap_options){ .mode = RESP },
			"LINE * 1 FETCH (BINARY[] ~{3}\"a\\x00b\")\n");
	static const struct parser_case cases2[] = {
		{ "a APPEND x ~{2+}\r\nhi\r\n", CMD, "LINE a APPEND x ~{2+}\"hi\"\n" },
		/* A tilde not before '{' is an atom character. */
		{ "a SELECT ~user\r\n", CMD, "LINE a SELECT ~user\n" },
		{ "* X {5}\r\nhel", RESP, "NEED_MORE\n" },
	};

	check_cases(cases2, sizeof(cases2) / sizeof(cases2[0]));
}

static void test_bad_literals(void)
{
	static const struct parser_case cases[] = {
		{ "a X {}\r\n", CMD, "ERROR BAD_LITERAL\n" },
		{ "a X {5\r\n", CMD, "ERROR BAD_LITERAL\n" },
		{ "a X {5+x}\r\n", CMD, "ERROR BAD_LITERAL\n" },
		{ "a X {5} \r\n", CMD, "ERROR BAD_LITERAL\n" },
		{ "a X {99999999999999999999}\r\n", CMD, "ERROR BAD_LITERAL\n" },
		{ "a X {-1}\r\n", CMD, "ERROR BAD_LITERAL\n" },
		{ "a X{5}\r\n", CMD, "ERROR UNEXPECTED_CHAR\n" },
		{ "* X {3}\r\nabc\"q\"\r\n", RESP, "ERROR UNEXPECTED_CHAR\n" },
	};

	check_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_response_text(void)
{
	static const struct parser_case cases[] = {
		{ "* OK [UIDNEXT 5] Predicted next UID\r\n", RESP,
		  "LINE * OK C\"UIDNEXT 5\" T\"Predicted next UID\"\n" },
		{ "a1 NO [TRYCREATE] no such {mailbox} (\"x\r\n", RESP,
		  "LINE a1 NO C\"TRYCREATE\" T\"no such {mailbox} (\\\"x\"\n" },
		{ "* BYE\r\n", RESP, "LINE * BYE T\"\"\n" },
		{ "* ok done\r\n", RESP, "LINE * ok T\"done\"\n" },
		{ "* PREAUTH [CAPABILITY IMAP4rev1] hi\r\n", RESP,
		  "LINE * PREAUTH C\"CAPABILITY IMAP4rev1\" T\"hi\"\n" },
		{ "* OK [PERMANENTFLAGS (\\Seen \\*)] Limited\r\n", RESP,
		  "LINE * OK C\"PERMANENTFLAGS (\\\\Seen \\\\*)\" T\"Limited\"\n" },
		{ "* OK [ALERT]\r\n", RESP, "LINE * OK C\"ALERT\" T\"\"\n" },
		{ "* OK [unclosed code\r\n", RESP, "LINE * OK T\"[unclosed code\"\n" },
		{ "+ idling\r\n", RESP, "LINE + T\"idling\"\n" },
		{ "+\r\n", RESP, "LINE + T\"\"\n" },
		{ "+ \r\n", RESP, "LINE + T\"\"\n" },
		{ "+ dGVzdA==\r\n", RESP, "LINE + T\"dGVzdA==\"\n" },
		/* Only the second position holds a status word. */
		{ "* 3 OK (x)\r\n", RESP, "LINE * 3 OK (x)\n" },
		/* In COMMAND mode the same bytes are tokenized. */
		{ "* OK (x)\r\n", CMD, "LINE * OK (x)\n" },
	};

	check_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_text_line_mode(void)
{
	struct unit_imap_options options = { .mode = IMAP_PARSER_MODE_TEXT_LINE };
	const char *input = "dGVzdA== {5} (\"\r\nDONE\r\n";

	unit_imap_check(input, strlen(input), &options, "LINE T\"dGVzdA== {5} (\\\"\"\nLINE T\"DONE\"\n");
	unit_imap_check("*\r\n", 3, &options, "LINE T\"*\"\n");
}

static void test_control_characters(void)
{
	static const struct parser_case cases[] = {
		{ "a NO\x01OP\r\n", CMD, "ERROR UNEXPECTED_CHAR\n" },
		{ "a \x7f\r\n", CMD, "ERROR UNEXPECTED_CHAR\n" },
		{ "a NOOP\rX\n", CMD, "ERROR UNEXPECTED_CHAR\n" },
		{ "* OK te\rxt\r\n", RESP, "ERROR UNEXPECTED_CHAR\n" },
	};

	check_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_limit_line_length(void)
{
	struct imap_parser_limits limits;
	imap_parser_get_default_limits(&limits);
	limits.max_line = 16;
	struct unit_imap_options options = { .mode = CMD, .limits = &limits };

	/* 16 bytes including CRLF fit; 17 do not. */
	unit_imap_check("a NOOP 12345678\r\n", 17, &options, "ERROR LINE_TOO_LONG\n");
	unit_imap_check("a NOOP 1234567\r\n", 16, &options, "LINE a NOOP 1234567\n");
	/* Literal bytes do not count. */
	const char *literal = "a X {30+}\r\n012345678901234567890123456789\r\n";
	unit_imap_check(literal, strlen(literal), &options,
			"LINE a X {30+}\"012345678901234567890123456789\"\n");
	/* A quoted string counts; the error comes as soon as the limit is passed. */
	unit_imap_check_str("a X \"0123456789012345678901234567890123456789", CMD, "NEED_MORE\n");
	unit_imap_check("a X \"0123456789012345678901234567890123456789", 44, &options,
			"ERROR LINE_TOO_LONG\n");
	/* Default: 64 KiB. */
	size_t big = IMAP_PARSER_DEFAULT_MAX_LINE + 10;
	char *line = malloc(big + 1);
	memset(line, 'x', big);
	memcpy(line, "a X ", 4);
	line[big] = '\0';
	struct imap_parser *parser = imap_parser_new();
	size_t consumed;
	CU_ASSERT_EQUAL(imap_parser_feed_bytes(parser, line, big, &consumed), IMAP_PARSER_ERROR);
	CU_ASSERT(consumed <= IMAP_PARSER_DEFAULT_MAX_LINE);
	CU_ASSERT_EQUAL(imap_parser_get_error(parser, NULL), IMAP_PARSER_ERROR_LINE_TOO_LONG);
	imap_parser_free(&parser);
	free(line);
}

static void test_limit_literal_size(void)
{
	struct imap_parser_limits limits;
	imap_parser_get_default_limits(&limits);
	limits.max_literal = 10;
	struct unit_imap_options options = { .mode = CMD, .limits = &limits };

	unit_imap_check_str("a X {10}\r\n0123456789\r\n", CMD,
			    "ANNOUNCED 10\nLINE a X {10}\"0123456789\"\n");
	unit_imap_check("a X {11}\r\n", 10, &options, "ERROR LITERAL_TOO_BIG\n");
	unit_imap_check("a X {11+}\r\n", 11, &options, "ERROR LITERAL_TOO_BIG\n");
	unit_imap_check("a X {10}\r\n0123456789\r\n", 22, &options,
			"ANNOUNCED 10\nLINE a X {10}\"0123456789\"\n");
	options.mode = RESP;
	unit_imap_check("* X {11}\r\n", 10, &options, "ERROR LITERAL_TOO_BIG\n");
}

/* Feeds input whole to a COMMAND parser with max_literal 10; checks the
   refused literal it then reports (wanted_size 0: none). */
static void check_refused_literal(const char *input, uint64_t wanted_size, bool wanted_nonsync)
{
	struct imap_parser_limits limits;
	struct imap_parser *parser = imap_parser_new();
	uint64_t size = 0;
	bool nonsync = false, refused;
	size_t consumed;

	imap_parser_get_default_limits(&limits);
	limits.max_literal = 10;
	imap_parser_set_limits(parser, &limits);
	for (size_t at = 0, len = strlen(input); at < len; at += consumed) {
		if (imap_parser_feed_bytes(parser, input + at, len - at, &consumed) == IMAP_PARSER_ERROR)
			break; /* after a {n} announced, fed on as if "+" was sent */
	}
	refused = imap_parser_get_refused_literal(parser, &size, &nonsync);
	CU_ASSERT_EQUAL(refused, wanted_size != 0);
	if (refused && wanted_size != 0) {
		CU_ASSERT_EQUAL(size, wanted_size);
		CU_ASSERT_EQUAL(nonsync, wanted_nonsync);
	}
	imap_parser_reset(parser);
	CU_ASSERT_FALSE(imap_parser_get_refused_literal(parser, &size, &nonsync));
	imap_parser_free(&parser);
}

/* A literal over the limit is reported with its size and form, so that a
   server can refuse a {n} and must close for a {n+} (RFC 7888); nothing
   else is reported as one. */
static void test_refused_literal(void)
{
	check_refused_literal("a APPEND INBOX {11}\r\n", 11, false);
	check_refused_literal("a APPEND INBOX {11+}\r\n", 11, true);
	check_refused_literal("a APPEND INBOX ~{12}\r\n", 12, false);
	check_refused_literal("a APPEND INBOX (\\Seen) {9223372036854775807}\r\n", INT64_MAX, false);
	check_refused_literal("a FETCH 1 BODY[HEADER.FIELDS ({999+}\r\n", 999, true);
	check_refused_literal("a X {5}\r\nabcde {20+}\r\n", 20, true);
	/* within the limit, malformed, or another error: no refused literal */
	check_refused_literal("a APPEND INBOX {10}\r\n", 0, false);
	check_refused_literal("a APPEND INBOX {10+}\r\n0123456789\r\n", 0, false);
	check_refused_literal("a APPEND INBOX {1x}\r\n", 0, false);
	check_refused_literal("a APPEND INBOX {99999999999999999999}\r\n", 0, false);
	check_refused_literal("a X )\r\n", 0, false);
}

static void test_limit_depth_and_args(void)
{
	struct imap_parser_limits limits;
	imap_parser_get_default_limits(&limits);
	limits.max_depth = 2;
	struct unit_imap_options options = { .mode = RESP, .limits = &limits };

	unit_imap_check("* X ((a))\r\n", 11, &options, "LINE * X ((a))\n");
	unit_imap_check("* X (((a)))\r\n", 13, &options, "ERROR TOO_DEEP\n");
	limits.max_depth = 0;
	unit_imap_check("* X (a)\r\n", 9, &options, "ERROR TOO_DEEP\n");

	imap_parser_get_default_limits(&limits);
	limits.max_args = 5;
	unit_imap_check("* X (a b)\r\n", 11, &options, "LINE * X (a b)\n");
	unit_imap_check("* X (a b c)\r\n", 13, &options, "ERROR TOO_MANY_ARGS\n");
	unit_imap_check("* X a b c\r\n", 11, &options, "LINE * X a b c\n");
	unit_imap_check("* X a b c d\r\n", 13, &options, "ERROR TOO_MANY_ARGS\n");
	/* The bad byte after an atom is found before the argument is counted,
	   however the input is split (the fuzzer found the whole-buffer path
	   once counted first). */
	limits.max_args = 2;
	unit_imap_check("* X ab\"c\r\n", 10, &options, "ERROR UNEXPECTED_CHAR\n");
	limits.max_args = 5;
	/* Deep nesting by default stops at 32, far from the stack's limit. */
	char deep[200];
	memset(deep, '(', sizeof(deep));
	struct imap_parser *parser = imap_parser_new();
	size_t consumed;
	CU_ASSERT_EQUAL(imap_parser_feed_bytes(parser, deep, sizeof(deep), &consumed), IMAP_PARSER_ERROR);
	CU_ASSERT_EQUAL(imap_parser_get_error(parser, NULL), IMAP_PARSER_ERROR_TOO_DEEP);
	CU_ASSERT_EQUAL(consumed, IMAP_PARSER_DEFAULT_MAX_DEPTH + 1);
	imap_parser_free(&parser);
}

static void test_streamed_literals(void)
{
	struct imap_parser_limits limits;
	imap_parser_get_default_limits(&limits);
	limits.max_inline_literal = 4;
	struct unit_imap_options options = { .mode = RESP, .limits = &limits, .stream_literals = 1 };
	const char *input = "* 3 FETCH (UID 7 BODY[1] {10}\r\n0123456789 BODY[2] {4}\r\nabcd)\r\n";

	unit_imap_check(input, strlen(input), &options,
			"LINE * 3 FETCH (UID 7 BODY[1] {10:streamed} BODY[2] {4}\"abcd\")\n"
			"STREAMED [depth=1 prev=BODY[1]]0123456789|\n");
	/* At the top level too, and two on one line. */
	input = "a APPEND box {5+}\r\nhello {6+}\r\nworld!\r\n";
	options.mode = CMD;
	unit_imap_check(input, strlen(input), &options,
			"LINE a APPEND box {5+:streamed} {6+:streamed}\n"
			"STREAMED [depth=0 prev=box]hello|[depth=0 prev={5+:streamed}]world!|\n");
	/* Without a callback the bytes are skipped and the size kept. */
	options.stream_literals = 0;
	options.mode = RESP;
	input = "* 1 FETCH (RFC822 {6}\r\n)))((()\r\n";
	unit_imap_check(input, strlen(input), &options, "LINE * 1 FETCH (RFC822 {6:streamed})\n");
}

static void test_inline_literals_per_line_are_bounded(void)
{
	/* 20 literals of 64 KiB (the default max_inline_literal) on one line:
	   the first 16 (1 MiB) inline, the rest streamed. */
	const size_t size = 64 * 1024, count = 20;
	char *input = malloc(count * (size + 16) + 16);
	size_t len = 0, consumed;
	struct imap_parser *parser = imap_parser_new();

	len += (size_t)sprintf(input, "* X");
	for (size_t i = 0; i < count; i++) {
		len += (size_t)sprintf(input + len, " {%zu}\r\n", size);
		memset(input + len, 'a' + (int)i, size);
		len += size;
	}
	memcpy(input + len, "\r\n", 2);
	len += 2;
	imap_parser_set_mode(parser, RESP);
	CU_ASSERT_EQUAL_FATAL(imap_parser_feed_bytes(parser, input, len, &consumed), IMAP_PARSER_LINE_COMPLETE);
	const struct imap_arg *line = imap_parser_get_line(parser);
	CU_ASSERT_EQUAL_FATAL(line->list_count, count + 2);
	for (size_t i = 0; i < count; i++) {
		const struct imap_arg *arg = &line->list[i + 2];
		CU_ASSERT_EQUAL(arg->len, size);
		if (i < IMAP_PARSER_INLINE_LITERALS_PER_LINE) {
			CU_ASSERT(arg->type == IMAP_ARG_LITERAL && arg->str[size - 1] == 'a' + (char)i);
		} else {
			CU_ASSERT_EQUAL(arg->type, IMAP_ARG_LITERAL_STREAMED);
		}
	}
	/* The budget is per line: the next line inlines again. */
	CU_ASSERT_EQUAL(imap_parser_feed_bytes(parser, "* X {3}\r\nabc\r\n", 14, &consumed), IMAP_PARSER_LINE_COMPLETE);
	CU_ASSERT_EQUAL(imap_parser_get_line(parser)->list[2].type, IMAP_ARG_LITERAL);
	imap_parser_free(&parser);
	free(input);
}

static void test_out_of_memory_is_a_typed_error(void)
{
	/* A line that needs the token buffer, list levels, arena chunks and an inline literal. */
	const char line[] = "* 1 FETCH (FLAGS (\\Seen) BODY[HEADER.FIELDS (TO)] {20}\r\n0123456789abcdefghij "
			    "ENVELOPE (\"a\\\"b\" NIL ((NIL NIL \"x\" \"y\"))))\r\n";
	unsigned int completed = 0, out_of_memory = 0, other = 0, no_parser = 0;

	if (!INJECT_ALLOCATION_FAILURES)
		return;
	for (int budget = 0; budget < 40; budget++) {
		allocations_left = budget;
		struct imap_parser *parser = imap_parser_new();
		if (parser == NULL) {
			allocations_left = -1;
			no_parser++;
			continue;
		}
		enum imap_parser_result result = IMAP_PARSER_NEED_MORE;
		size_t consumed;
		imap_parser_set_mode(parser, RESP);
		/* Byte by byte, so every growth step is reached. */
		for (size_t i = 0; i < sizeof(line) - 1 && result == IMAP_PARSER_NEED_MORE; i++)
			result = imap_parser_feed_bytes(parser, line + i, 1, &consumed);
		enum imap_parser_error error = imap_parser_get_error(parser, NULL);
		imap_parser_free(&parser);
		allocations_left = -1;
		if (result == IMAP_PARSER_LINE_COMPLETE)
			completed++;
		else if (result == IMAP_PARSER_ERROR && error == IMAP_PARSER_ERROR_OUT_OF_MEMORY)
			out_of_memory++;
		else
			other++;
	}
	allocations_left = -1;
	/* Every budget ends in a parser that could not be made, the typed
	   error, or (with enough memory) the whole line. */
	CU_ASSERT(no_parser > 0);
	CU_ASSERT(out_of_memory > 0);
	CU_ASSERT(completed > 0);
	CU_ASSERT_EQUAL(no_parser + out_of_memory + completed, 40);
	CU_ASSERT_EQUAL(other, 0);
}

static int refuse_literal(struct imap_parser *parser, const struct imap_parser_literal_chunk *chunk,
			  void *context)
{
	(void)parser;
	(void)chunk;
	(*(int *)context)++;
	return -1;
}

static void test_literal_refused_by_callback(void)
{
	struct imap_parser *parser = imap_parser_new();
	struct imap_parser_limits limits;
	const char input[] = "* 1 FETCH (RFC822 {100}\r\nabc";
	size_t consumed;
	int calls = 0;

	imap_parser_set_mode(parser, RESP);
	imap_parser_get_limits(parser, &limits);
	limits.max_inline_literal = 10;
	imap_parser_set_limits(parser, &limits);
	imap_parser_set_literal_callback(parser, refuse_literal, &calls);
	CU_ASSERT_EQUAL(imap_parser_feed_bytes(parser, input, sizeof(input) - 1, &consumed),
			IMAP_PARSER_ERROR);
	CU_ASSERT_EQUAL(calls, 1);
	CU_ASSERT_EQUAL(imap_parser_get_error(parser, NULL), IMAP_PARSER_ERROR_LITERAL_REJECTED);
	/* The error sticks until reset. */
	CU_ASSERT_EQUAL(imap_parser_feed_bytes(parser, "x\r\n", 3, &consumed), IMAP_PARSER_ERROR);
	CU_ASSERT_EQUAL(consumed, 0);
	imap_parser_reset(parser);
	CU_ASSERT_EQUAL(imap_parser_feed_bytes(parser, "* OK\r\n", 6, &consumed),
			IMAP_PARSER_LINE_COMPLETE);
	imap_parser_free(&parser);
}

static void test_refused_sync_literal_then_next_command(void)
{
	struct imap_parser *parser = imap_parser_new();
	const char *message;
	const struct imap_arg *args;
	unsigned int count;
	size_t consumed;

	CU_ASSERT_EQUAL(imap_parser_feed_bytes(parser, "t1 APPEND box {999}\r\n", 21, &consumed),
			IMAP_PARSER_LITERAL_ANNOUNCED);
	CU_ASSERT_EQUAL(consumed, 21);
	CU_ASSERT_EQUAL(imap_parser_get_literal_size(parser), 999);
	CU_ASSERT(imap_parser_is_mid_line(parser));
	/* The server looks at the tag to refuse the command. */
	imap_parser_get_open_args(parser, 0, &args, &count);
	CU_ASSERT_EQUAL(count, 3);
	CU_ASSERT(imap_arg_atom_equals(&args[0], "t1"));
	imap_parser_reset(parser);
	CU_ASSERT(!imap_parser_is_mid_line(parser));
	CU_ASSERT_EQUAL(imap_parser_feed_bytes(parser, "t2 NOOP\r\n", 9, &consumed),
			IMAP_PARSER_LINE_COMPLETE);
	CU_ASSERT_EQUAL(imap_parser_get_line(parser)->list_count, 2);
	CU_ASSERT_EQUAL(imap_parser_get_error(parser, &message), IMAP_PARSER_ERROR_NONE);
	imap_parser_free(&parser);
}

static void test_limits_change_between_lines(void)
{
	struct imap_parser *parser = imap_parser_new();
	struct imap_parser_limits limits;
	size_t consumed;

	imap_parser_get_limits(parser, &limits);
	limits.max_line = 10;
	imap_parser_set_limits(parser, &limits);
	CU_ASSERT_EQUAL(imap_parser_feed_bytes(parser, "a LOGIN xxxxxxxx\r\n", 18, &consumed),
			IMAP_PARSER_ERROR);
	imap_parser_reset(parser);
	limits.max_line = 100;
	imap_parser_set_limits(parser, &limits);
	CU_ASSERT_EQUAL(imap_parser_feed_bytes(parser, "a LOGIN xxxxxxxx\r\n", 18, &consumed),
			IMAP_PARSER_LINE_COMPLETE);
	imap_parser_free(&parser);
}

static void test_feed_leaves_next_line_in_evbuffer(void)
{
	struct imap_parser *parser = imap_parser_new();
	struct evbuffer *input = evbuffer_new();

	evbuffer_add_printf(input, "a NOOP\r\nb CHECK\r\nc");
	CU_ASSERT_EQUAL(imap_parser_feed(parser, input), IMAP_PARSER_LINE_COMPLETE);
	CU_ASSERT_EQUAL(evbuffer_get_length(input), 10);
	CU_ASSERT(imap_arg_atom_equals(&imap_parser_get_line(parser)->list[1], "noop"));
	CU_ASSERT_EQUAL(imap_parser_feed(parser, input), IMAP_PARSER_LINE_COMPLETE);
	CU_ASSERT(imap_arg_atom_equals(&imap_parser_get_line(parser)->list[1], "CHECK"));
	CU_ASSERT_EQUAL(imap_parser_feed(parser, input), IMAP_PARSER_NEED_MORE);
	CU_ASSERT_EQUAL(evbuffer_get_length(input), 0);
	CU_ASSERT_PTR_NULL(imap_parser_get_line(parser));
	evbuffer_free(input);
	imap_parser_free(&parser);
}

static void test_accessors(void)
{
	struct imap_parser *parser = imap_parser_new();
	const char input[] = "a X 0 4294967295 4294967296 9223372036854775807 9223372036854775808 "
			     "12a \"7\" NIL {3+}\r\nabc atom (l)\r\n";
	size_t consumed;
	uint64_t n64;
	uint32_t n32;
	const char *str;
	size_t len;
	const struct imap_arg *list;
	unsigned int count;

	CU_ASSERT_EQUAL_FATAL(imap_parser_feed_bytes(parser, input, sizeof(input) - 1, &consumed),
			      IMAP_PARSER_LINE_COMPLETE);
	const struct imap_arg *args = imap_parser_get_line(parser)->list;
	CU_ASSERT_EQUAL_FATAL(imap_parser_get_line(parser)->list_count, 13);
	CU_ASSERT(imap_arg_get_number32(&args[2], &n32) && n32 == 0);
	CU_ASSERT(!imap_arg_get_nz_number(&args[2], &n32));
	CU_ASSERT(imap_arg_get_nz_number(&args[3], &n32) && n32 == 4294967295u);
	CU_ASSERT(!imap_arg_get_number32(&args[4], &n32));
	CU_ASSERT(imap_arg_get_number(&args[4], &n64) && n64 == 4294967296ull);
	CU_ASSERT(imap_arg_get_number(&args[5], &n64) && n64 == 9223372036854775807ull);
	CU_ASSERT(!imap_arg_get_number(&args[6], &n64));
	CU_ASSERT(!imap_arg_get_number(&args[7], &n64));
	CU_ASSERT(!imap_arg_get_number(&args[8], &n64)); /* a quoted "7" is no number */
	CU_ASSERT(imap_arg_is_nil(&args[9]));
	CU_ASSERT(imap_arg_get_nstring(&args[9], &str, &len) && str == NULL && len == 0);
	CU_ASSERT(imap_arg_get_astring(&args[9], &str, &len) && strcmp(str, "NIL") == 0);
	CU_ASSERT(!imap_arg_get_string(&args[9], &str, &len));
	CU_ASSERT(imap_arg_get_string(&args[10], &str, &len) && len == 3 && strcmp(str, "abc") == 0);
	CU_ASSERT(imap_arg_get_nstring(&args[8], &str, &len) && strcmp(str, "7") == 0);
	CU_ASSERT(!imap_arg_get_string(&args[11], &str, &len));
	CU_ASSERT(imap_arg_get_astring(&args[11], &str, &len) && strcmp(str, "atom") == 0);
	CU_ASSERT(imap_arg_get_atom(&args[11], &str) && strcmp(str, "atom") == 0);
	CU_ASSERT(!imap_arg_get_atom(&args[10], &str));
	CU_ASSERT(imap_arg_get_list(&args[12], &list, &count) && count == 1 &&
		  imap_arg_atom_equals(&list[0], "L"));
	CU_ASSERT(!imap_arg_get_list(&args[11], &list, &count));
	CU_ASSERT(!imap_arg_atom_equals(&args[8], "7"));
	imap_parser_free(&parser);
}

static void test_error_names_and_messages(void)
{
	struct imap_parser *parser = imap_parser_new();
	const char *message;
	size_t consumed;

	CU_ASSERT_STRING_EQUAL(imap_parser_error_name(IMAP_PARSER_ERROR_TOO_DEEP), "TOO_DEEP");
	CU_ASSERT_EQUAL(imap_parser_feed_bytes(parser, "a )\r\n", 5, &consumed), IMAP_PARSER_ERROR);
	CU_ASSERT_EQUAL(consumed, 3);
	CU_ASSERT_EQUAL(imap_parser_get_error(parser, &message), IMAP_PARSER_ERROR_UNEXPECTED_CHAR);
	CU_ASSERT_PTR_NOT_NULL(strstr(message, "no open list"));
	CU_ASSERT_PTR_NULL(strchr(message, '\n'));
	imap_parser_free(&parser);
	imap_parser_free(&parser); /* a second free of NULL is harmless */
	imap_parser_free(NULL);
}

static void test_arena_is_reused(void)
{
	struct imap_parser *parser = imap_parser_new();
	struct imap_parser_stats before, after;
	const char line[] = "* 1 FETCH (UID 1 FLAGS (\\Seen) ENVELOPE (\"d\" \"s\" ((NIL NIL \"a\" \"b\")) NIL NIL NIL NIL NIL NIL NIL))\r\n";
	size_t consumed;

	imap_parser_set_mode(parser, RESP);
	CU_ASSERT_EQUAL(imap_parser_feed_bytes(parser, line, sizeof(line) - 1, &consumed),
			IMAP_PARSER_LINE_COMPLETE);
	imap_parser_get_stats(parser, &before);
	for (int i = 0; i < 100; i++)
		CU_ASSERT_EQUAL(imap_parser_feed_bytes(parser, line, sizeof(line) - 1, &consumed),
				IMAP_PARSER_LINE_COMPLETE);
	imap_parser_get_stats(parser, &after);
	CU_ASSERT_EQUAL(after.allocations, before.allocations);
	CU_ASSERT_EQUAL(after.lines, before.lines + 100);
	imap_parser_free(&parser);
}

/* Parses line split at offset, trying to release memory after the first
   part (refused mid-line) and after the line (allowed); returns the
   number of top-level arguments and the first one's text. */
static unsigned int parse_with_release(struct imap_parser *parser, const char *line, size_t len,
				       size_t offset, char *first_r, size_t first_size)
{
	struct imap_parser_stats stats;
	const struct imap_arg *args;
	size_t consumed;
	unsigned int count;

	if (offset > 0) {
		CU_ASSERT_EQUAL(imap_parser_feed_bytes(parser, line, offset, &consumed), IMAP_PARSER_NEED_MORE);
		CU_ASSERT_EQUAL(consumed, offset);
		imap_parser_get_stats(parser, &stats);
		uint64_t held = stats.arena_bytes;
		CU_ASSERT_FALSE(imap_parser_release_memory(parser)); /* mid-line: nothing changes */
		imap_parser_get_stats(parser, &stats);
		CU_ASSERT_EQUAL(stats.arena_bytes, held);
	}
	CU_ASSERT_EQUAL_FATAL(imap_parser_feed_bytes(parser, line + offset, len - offset, &consumed),
			      IMAP_PARSER_LINE_COMPLETE);
	CU_ASSERT_EQUAL(consumed, len - offset);
	args = imap_parser_get_line(parser)->list;
	count = imap_parser_get_line(parser)->list_count;
	snprintf(first_r, first_size, "%s", args[count - 1].type == IMAP_ARG_LIST ?
		 args[count - 1].list[0].str : args[count - 1].str);
	CU_ASSERT_TRUE(imap_parser_release_memory(parser));
	imap_parser_get_stats(parser, &stats);
	CU_ASSERT_EQUAL(stats.arena_bytes, 0);
	CU_ASSERT_PTR_NULL(imap_parser_get_line(parser)); /* the line is forgotten */
	return count;
}

static void test_release_memory_between_lines(void)
{
	const char line[] = "* 1 FETCH (UID 1 FLAGS (\\Seen) ENVELOPE (\"d\" \"s\" NIL))\r\n";
	struct imap_parser *parser = imap_parser_new();
	struct imap_parser_stats stats;
	char first[64];
	size_t consumed;

	imap_parser_set_mode(parser, RESP);
	CU_ASSERT_TRUE(imap_parser_release_memory(parser)); /* a new parser is between lines */
	for (size_t offset = 0; offset < sizeof(line) - 1; offset++) {
		CU_ASSERT_EQUAL(parse_with_release(parser, line, sizeof(line) - 1, offset, first, sizeof(first)), 4);
		CU_ASSERT_STRING_EQUAL(first, "UID");
	}
	CU_ASSERT_EQUAL(imap_parser_get_mode(parser), RESP); /* mode survives */
	/* after an error it changes nothing: the error stays to be read */
	CU_ASSERT_EQUAL(imap_parser_feed_bytes(parser, "* (\r\n", 5, &consumed), IMAP_PARSER_ERROR);
	CU_ASSERT_FALSE(imap_parser_release_memory(parser));
	CU_ASSERT_NOT_EQUAL(imap_parser_get_error(parser, NULL), IMAP_PARSER_ERROR_NONE);
	imap_parser_reset(parser);
	imap_parser_get_stats(parser, &stats);
	CU_ASSERT_NOT_EQUAL(stats.arena_bytes, 0);
	imap_parser_free(&parser);
}

/* The bytes of a wiped line are zeros; the parser is reset, not freed. */
static void test_wipe_clears_the_line(void)
{
	const char *lines[] = { "a LOGIN user \"s3cret-pw\"\r\n", "a LOGIN user {9}\r\ns3cret-pw\r\n" };

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		struct imap_parser *parser = imap_parser_new();
		const struct imap_arg *args;
		size_t consumed, pos = 0, len = strlen(lines[i]);
		enum imap_parser_result result;

		imap_parser_set_mode(parser, CMD);
		do {
			result = imap_parser_feed_bytes(parser, lines[i] + pos, len - pos, &consumed);
			pos += consumed;
		} while (result == IMAP_PARSER_LITERAL_ANNOUNCED);
		CU_ASSERT_EQUAL_FATAL(result, IMAP_PARSER_LINE_COMPLETE);
		args = imap_parser_get_line(parser);
		CU_ASSERT_EQUAL_FATAL(args->list_count, 4);
		const char *secret = args->list[3].str;
		CU_ASSERT_EQUAL_FATAL(args->list[3].len, 9);
		CU_ASSERT_EQUAL(memcmp(secret, "s3cret-pw", 9), 0);
		imap_parser_wipe(parser);
		for (size_t b = 0; b < 9; b++)
			CU_ASSERT_EQUAL(secret[b], 0);
		CU_ASSERT_FALSE(imap_parser_is_mid_line(parser));
		/* and it parses the next line as usual */
		CU_ASSERT_EQUAL(imap_parser_feed_bytes(parser, "b NOOP\r\n", 8, &consumed), IMAP_PARSER_LINE_COMPLETE);
		imap_parser_free(&parser);
	}
}

static void test_pseudo_random_chunks(void)
{
	const char *input = "* 12 FETCH (UID 99 FLAGS (\\Seen $X) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" "
			    "BODY[HEADER] {21}\r\nSubject: x\r\nTo: y\r\n\r\n RFC822.SIZE 4286)\r\n"
			    "* OK [UNSEEN 3] first unseen\r\n+ go ahead\r\na2 OK done\r\n";
	struct unit_imap_options options = { .mode = RESP };
	char *whole = malloc(UNIT_IMAP_DUMP_MAX), *pieces = malloc(UNIT_IMAP_DUMP_MAX);
	unsigned int seed = 12345;

	unit_imap_transcript(input, strlen(input), &options, 0, whole, UNIT_IMAP_DUMP_MAX);
	CU_ASSERT_PTR_NOT_NULL(strstr(whole, "{21}\"Subject: x\\x0d\\x0aTo: y\\x0d\\x0a\\x0d\\x0a\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(whole, "LINE a2 OK T\"done\""));
	/* Random chunk sizes: a fixed seed keeps the test repeatable. */
	for (int round = 0; round < 50; round++) {
		seed = seed * 1103515245u + 12345u;
		size_t chunk = 1 + (seed >> 16) % 40;
		unit_imap_transcript(input, strlen(input), &options, chunk, pieces, UNIT_IMAP_DUMP_MAX);
		CU_ASSERT_STRING_EQUAL(pieces, whole);
	}
	free(whole);
	free(pieces);
}

const char unit_suite_name[] = "imap-parser";
const struct unit_test unit_tests[] = {
	{ "atoms and spaces", test_atoms_and_spaces },
	{ "memory released between lines, never mid-line", test_release_memory_between_lines },
	{ "wipe clears the line's bytes", test_wipe_clears_the_line },
	{ "NIL and flags", test_nil_and_flags },
	{ "quoted strings", test_quoted },
	{ "lists", test_lists },
	{ "brackets in atoms", test_brackets_in_atoms },
	{ "header lists in sections", test_header_lists_in_sections },
	{ "literals", test_literals },
	{ "bad literals", test_bad_literals },
	{ "response text", test_response_text },
	{ "text line mode", test_text_line_mode },
	{ "control characters", test_control_characters },
	{ "limit: line length", test_limit_line_length },
	{ "limit: literal size", test_limit_literal_size },
	{ "a refused literal's size and form", test_refused_literal },
	{ "limit: depth and arguments", test_limit_depth_and_args },
	{ "streamed literals", test_streamed_literals },
	{ "inline literals per line are bounded", test_inline_literals_per_line_are_bounded },
	{ "literal refused by callback", test_literal_refused_by_callback },
	{ "out of memory is a typed error", test_out_of_memory_is_a_typed_error },
	{ "refused sync literal, then next command", test_refused_sync_literal_then_next_command },
	{ "limits change between lines", test_limits_change_between_lines },
	{ "feed leaves next line in evbuffer", test_feed_leaves_next_line_in_evbuffer },
	{ "accessors", test_accessors },
	{ "error names and messages", test_error_names_and_messages },
	{ "arena is reused", test_arena_is_reused },
	{ "pseudo-random chunks", test_pseudo_random_chunks },
	{ NULL, NULL },
};
