/* SPDX-License-Identifier: MIT */
/* Unit tests for common/casemap: the i;unicode-casemap form Dovecot 2.3 searches in. */
#include "config.h"
#include "unit.h"
#include "casemap.h"

#include <stdio.h>
#include <string.h>
#include <unicase.h>
#include <uninorm.h>

/* The casemap form of text (static; valid until the next call), and its
   result in *result_r. */
static const char *mapped(const char *text, int *result_r)
{
	static struct mime_buffer out;

	mime_buffer_reset(&out);
	*result_r = casemap_append(text, strlen(text), &out);
	return out.len == 0 ? "" : (const char *)out.data;
}

static void expect(const char *text, const char *expected)
{
	int result;
	const char *got = mapped(text, &result);

	if (strcmp(got, expected) != 0)
		fprintf(stderr, "\n%s: got %s, expected %s\n", text, got, expected);
	CU_ASSERT_STRING_EQUAL(got, expected);
	CU_ASSERT_EQUAL(result, 0);
}

static void test_titlecase(void)
{
	expect("", "");
	expect("Hello, World 42", "HELLO, WORLD 42");
	expect("caf\xc3\xa9", "CAFE\xcc\x81");                /* é -> É -> E + U+0301 */
	expect("stra\xc3\x9f" "e", "STRA\xc3\x9f" "E");        /* ß has no simple titlecase */
	expect("\xc2\xb5", "\xce\x9c");                        /* micro sign -> Greek capital mu */
	expect("\xc3\xbf", "Y\xcc\x88");                       /* ÿ -> Ÿ -> Y + U+0308 */
	expect("\xc7\x86", "\xc7\x85");                        /* ǆ -> ǅ, the titlecase digraph, kept */
	expect("\xc7\x84", "\xc7\x85");                        /* Ǆ -> ǅ too: its field 14 */
	expect("\xd0\xb6", "\xd0\x96");                        /* Cyrillic ж -> Ж */
}

/* Every ASCII character maps as libunistring's titlecase and
   decomposition say (the ASCII fast path skips both). */
static void test_ascii(void)
{
	char text[2] = { 0, 0 };
	char expected[2] = { 0, 0 };

	for (int c = 1; c < 0x80; c++) {
		ucs4_t parts[UC_DECOMPOSITION_MAX_LENGTH];
		int tag;

		text[0] = (char)c;
		expected[0] = (char)uc_totitle((ucs4_t)c);
		CU_ASSERT_TRUE(uc_decomposition(uc_totitle((ucs4_t)c), &tag, parts) <= 0);
		expect(text, expected);
	}
	expect("Re: caf\xc3\xa9 au lait", "RE: CAFE\xcc\x81 AU LAIT");
}

static void test_decomposition(void)
{
	/* canonical decompositions, one level: é and e + U+0301 alike, but
	   ǻ -> Ǻ -> Å + U+0301, the Å left whole */
	expect("e\xcc\x81", "E\xcc\x81");
	expect("\xc3\x89", "E\xcc\x81");
	expect("\xc7\xbb", "\xc3\x85\xcc\x81");
	expect("\xe2\x84\xab", "\xc3\x85");                        /* Angstrom sign -> Å, no further */
	/* compatibility ones too, one level */
	expect("\xef\xac\x81", "fi");                          /* ﬁ -> "fi": decomposed after titlecase, so lower */
	expect("a\xc2\xa0" "b", "A B");                        /* NBSP -> space */
	expect("\xc2\xbd", "1\xe2\x81\x84" "2");               /* ½ -> 1⁄2 */
	expect("\xe2\x91\xa0", "1");                           /* ① -> 1 */
	expect("\xef\xbc\xa1", "A");                           /* fullwidth Ａ -> A */
	expect("\xea\xb0\x81", "\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8"); /* 각 -> jamo */
	expect("\xea\xb0\x80", "\xe1\x84\x80\xe1\x85\xa1");    /* 가: no trailing jamo */
	expect("\xe6\x97\xa5\xe6\x9c\xac", "\xe6\x97\xa5\xe6\x9c\xac"); /* CJK: as is */
}

static void test_invalid(void)
{
	int result;

	/* one U+FFFD per run of invalid bytes, as Dovecot's output_add_replacement_char */
	CU_ASSERT_STRING_EQUAL(mapped("a\xff\xfe" "b", &result), "A\xef\xbf\xbd" "B");
	CU_ASSERT_EQUAL(result, -1);
	CU_ASSERT_STRING_EQUAL(mapped("\xc3", &result), "\xef\xbf\xbd");
	CU_ASSERT_EQUAL(result, -1);
	CU_ASSERT_STRING_EQUAL(mapped("\xed\xa0\x80", &result), "\xef\xbf\xbd"); /* a surrogate */
	CU_ASSERT_EQUAL(result, -1);
	CU_ASSERT_STRING_EQUAL(mapped("\xc0\xaf", &result), "\xef\xbf\xbd");     /* overlong */
	CU_ASSERT_EQUAL(result, -1);
}

const char unit_suite_name[] = "casemap";
const struct unit_test unit_tests[] = {
	{ "simple titlecase, character by character", test_titlecase },
	{ "ASCII as libunistring maps it", test_ascii },
	{ "one level of decomposition, canonical or compatibility", test_decomposition },
	{ "invalid UTF-8: one U+FFFD per run, and -1", test_invalid },
	{ NULL, NULL },
};
