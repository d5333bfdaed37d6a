/* SPDX-License-Identifier: MIT */
/* Unit tests for common/imap-util: each result compared with what python3's imaplib gives. */
#include "config.h"
#include "unit.h"
#include "imap-util.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TABLE_LINE_MAX 4096 /* the table's longest line is far shorter */

/* Decodes hex ("-" is empty) into out; returns the length. */
static size_t unhex(const char *hex, char *out, size_t out_size)
{
	size_t len = 0;

	out[0] = '\0';
	if (strcmp(hex, "-") == 0)
		return 0;
	for (; hex[0] != '\0' && hex[1] != '\0' && len + 1 < out_size; hex += 2) {
		unsigned int byte;
		sscanf(hex, "%2x", &byte);
		out[len++] = (char)byte;
	}
	out[len] = '\0';
	return len;
}

static void report(const char *kind, const char *input, const char *expected, const char *got)
{
	fprintf(stderr, "\n%s(%s): imaplib gives %s, we give %s\n", kind, input, expected, got);
	CU_FAIL(kind);
}

static void check_line(char *line, unsigned int *cases)
{
	char *fields[5] = { NULL };
	char a[TABLE_LINE_MAX], b[TABLE_LINE_MAX], got[TABLE_LINE_MAX];
	unsigned int n = 0;

	line[strcspn(line, "\n")] = '\0';
	for (char *save = NULL, *field = strtok_r(line, "\t", &save); field != NULL && n < 5;
	     field = strtok_r(NULL, "\t", &save))
		fields[n++] = field;
	CU_ASSERT_FATAL(n >= 3);
	(*cases)++;

	if (strcmp(fields[0], "int2ap") == 0) {
		char ap[IMAP_UTIL_INT2AP_SIZE];
		unhex(fields[2], a, sizeof(a));
		size_t len = imap_util_int2ap(strtoll(fields[1], NULL, 10), ap);
		if (strcmp(ap, a) != 0 || len != strlen(a))
			report("Int2AP", fields[1], a, ap);
	} else if (strcmp(fields[0], "flags") == 0) {
		struct imap_util_span flags[16];
		size_t len = unhex(fields[1], a, sizeof(a));
		unhex(fields[3], b, sizeof(b));
		unsigned int count = imap_util_parse_flags(a, len, flags, 16);
		got[0] = '\0';
		for (unsigned int i = 0; i < count && i < 16; i++) {
			if (i > 0)
				strcat(got, " ");
			strncat(got, flags[i].data, flags[i].len);
		}
		if (count != strtoul(fields[2], NULL, 10) || strcmp(got, b) != 0)
			report("ParseFlags", a, b, got);
	} else if (strcmp(fields[0], "internaldate") == 0) {
		/* imaplib gives local time: compare its fields and the moment. */
		size_t len = unhex(fields[1], a, sizeof(a));
		time_t utc;
		struct tm local;
		bool ok = imap_util_internaldate_parse(a, len, &utc, NULL) &&
			  imap_util_internaldate2tuple(a, len, &local);
		if (ok)
			snprintf(got, sizeof(got), "%lld %04d-%02d-%02d %02d:%02d:%02d dst=%d", (long long)utc,
				 local.tm_year + 1900, local.tm_mon + 1, local.tm_mday, local.tm_hour,
				 local.tm_min, local.tm_sec, local.tm_isdst);
		else
			strcpy(got, "None");
		const char *expected = fields[2];
		if (strcmp(expected, "error") == 0)
			expected = "None"; /* imaplib raises KeyError on an unknown month */
		if (strcmp(got, expected) != 0)
			report("Internaldate2tuple", a, expected, got);
	} else if (strcmp(fields[0], "time2internaldate") == 0) {
		char date[IMAP_UTIL_INTERNALDATE_SIZE];
		CU_ASSERT_FATAL(n == 4);
		unhex(fields[3], a, sizeof(a));
		imap_util_time2internaldate((time_t)strtoll(fields[1], NULL, 10),
					    (int)strtol(fields[2], NULL, 10), date);
		if (strcmp(date, a) != 0)
			report("Time2Internaldate", fields[1], a, date);
	} else if (strcmp(fields[0], "time2internaldate_local") == 0) {
		char date[IMAP_UTIL_INTERNALDATE_SIZE];
		unhex(fields[2], a, sizeof(a));
		imap_util_time2internaldate_local((time_t)strtoll(fields[1], NULL, 10), date);
		if (strcmp(date, a) != 0)
			report("Time2Internaldate(number)", fields[1], a, date);
	} else if (strcmp(fields[0], "quote") == 0) {
		size_t len = unhex(fields[1], a, sizeof(a));
		unhex(fields[2], b, sizeof(b));
		struct evbuffer *out = evbuffer_new();
		CU_ASSERT_EQUAL(imap_util_append_quoted(out, a, len), 0);
		size_t out_len = evbuffer_get_length(out);
		evbuffer_remove(out, got, out_len);
		got[out_len] = '\0';
		if (strcmp(got, b) != 0)
			report("_quote", a, b, got);
		evbuffer_free(out);
	} else {
		CU_FAIL("unknown kind of case in the imaplib table");
	}
}

/* Runs tests/unit/imap-util-table.py under the time zone tz and checks every line. */
static void check_against_imaplib(const char *tz)
{
	const char *python = getenv("PYTHON3");
	char command[2048], line[TABLE_LINE_MAX];
	unsigned int cases = 0;

	if (python == NULL || python[0] == '\0')
		python = "python3";
	setenv("TZ", tz, 1);
	tzset();
	snprintf(command, sizeof(command), "TZ='%s' '%s' '%s/tests/unit/imap-util-table.py'", tz, python,
		 TOP_SRCDIR);
	FILE *table = popen(command, "r");
	CU_ASSERT_PTR_NOT_NULL_FATAL(table);
	while (fgets(line, sizeof(line), table) != NULL)
		check_line(line, &cases);
	CU_ASSERT_EQUAL(pclose(table), 0);
	/* The script ran and gave its whole table. */
	CU_ASSERT(cases >= 140);
}

static void test_against_imaplib_utc(void)
{
	check_against_imaplib("UTC");
}

static void test_against_imaplib_eastern(void)
{
	/* A POSIX rule, so no tzdata is needed: -0500, and -0400 in summer. */
	check_against_imaplib("EST5EDT,M3.2.0,M11.1.0");
}

static void test_astring_forms(void)
{
	static const struct {
		const char *input;
		size_t len;
		enum imap_util_astring_form form;
		const char *sent;
	} cases[] = {
		{ "INBOX", 5, IMAP_UTIL_ASTRING_ATOM, "INBOX" },
		{ "a]b", 3, IMAP_UTIL_ASTRING_ATOM, "a]b" },
		{ "Sent Items", 10, IMAP_UTIL_ASTRING_QUOTED, "\"Sent Items\"" },
		{ "", 0, IMAP_UTIL_ASTRING_QUOTED, "\"\"" },
		{ "NIL", 3, IMAP_UTIL_ASTRING_QUOTED, "\"NIL\"" },
		{ "nil", 3, IMAP_UTIL_ASTRING_QUOTED, "\"nil\"" },
		{ "%", 1, IMAP_UTIL_ASTRING_QUOTED, "\"%\"" },
		{ "p\"w\\d", 5, IMAP_UTIL_ASTRING_QUOTED, "\"p\\\"w\\\\d\"" },
		{ "{5}", 3, IMAP_UTIL_ASTRING_QUOTED, "\"{5}\"" },
		{ "line\r\nbreak", 11, IMAP_UTIL_ASTRING_LITERAL, "" },
		{ "caf\xc3\xa9", 5, IMAP_UTIL_ASTRING_LITERAL, "" },
		{ "n\0l", 3, IMAP_UTIL_ASTRING_LITERAL, "" },
	};
	char got[64];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct evbuffer *out = evbuffer_new();
		int error;
		CU_ASSERT_EQUAL(imap_util_astring_form(cases[i].input, cases[i].len), cases[i].form);
		CU_ASSERT_EQUAL(imap_util_append_astring(out, cases[i].input, cases[i].len, &error),
				cases[i].form);
		CU_ASSERT_EQUAL(error, 0);
		size_t len = evbuffer_get_length(out);
		evbuffer_remove(out, got, len);
		got[len] = '\0';
		CU_ASSERT_STRING_EQUAL(got, cases[i].sent);
		evbuffer_free(out);
	}
	/* Long strings go as literals. */
	char *long_string = malloc(IMAP_UTIL_MAX_QUOTED + 1);
	memset(long_string, 'a', IMAP_UTIL_MAX_QUOTED + 1);
	CU_ASSERT_EQUAL(imap_util_astring_form(long_string, IMAP_UTIL_MAX_QUOTED),
			IMAP_UTIL_ASTRING_ATOM);
	CU_ASSERT_EQUAL(imap_util_astring_form(long_string, IMAP_UTIL_MAX_QUOTED + 1),
			IMAP_UTIL_ASTRING_LITERAL);
	free(long_string);
}

static void test_flags_beyond_max(void)
{
	struct imap_util_span flags[2];
	const char resp[] = "* 1 FETCH (FLAGS (\\Seen \\Answered $Junk))";

	CU_ASSERT_EQUAL(imap_util_parse_flags(resp, sizeof(resp) - 1, flags, 2), 3);
	CU_ASSERT_EQUAL(flags[1].len, 9);
	CU_ASSERT_EQUAL(memcmp(flags[1].data, "\\Answered", 9), 0);
}

const char unit_suite_name[] = "imap-util";
const struct unit_test unit_tests[] = {
	{ "same as imaplib, TZ=UTC", test_against_imaplib_utc },
	{ "same as imaplib, TZ=EST5EDT", test_against_imaplib_eastern },
	{ "astring forms", test_astring_forms },
	{ "flags beyond max", test_flags_beyond_max },
	{ NULL, NULL },
};
