/* SPDX-License-Identifier: MIT */
/* Unit tests for common/mime-header, mime-encoded-word and mime-charset. */
#include "config.h"
#include "unit.h"
#include "mime-charset.h"
#include "mime-encoded-word.h"
#include "mime-header.h"

#include <stdlib.h>
#include <string.h>

static void test_params_parse(void)
{
	struct mime_param_list list;

	mime_header_params_parse("text/plain; CharSet = \"us-ascii\" ; format=flowed;;"
				 " q=\"a;b\"; bare", &list);
	CU_ASSERT_EQUAL(list.count, 6);
	CU_ASSERT_STRING_EQUAL(list.items[0].name, "text/plain");
	CU_ASSERT_STRING_EQUAL(list.items[1].name, "charset");
	CU_ASSERT_STRING_EQUAL(list.items[1].value, "us-ascii");
	CU_ASSERT_STRING_EQUAL(list.items[2].value, "flowed");
	CU_ASSERT_STRING_EQUAL(list.items[3].name, "");
	CU_ASSERT_STRING_EQUAL(list.items[4].value, "a;b");
	CU_ASSERT_STRING_EQUAL(list.items[5].name, "bare");
	CU_ASSERT_STRING_EQUAL(list.items[5].value, "");
	CU_ASSERT_PTR_NOT_NULL(mime_header_params_find(&list, "CHARSET"));
	CU_ASSERT_PTR_NULL(mime_header_params_find(&list, "text/plain"));
	mime_header_params_free(&list);
	CU_ASSERT_PTR_NULL(list.items);
}

static void test_rfc2231(void)
{
	struct mime_param_list list;

	/* sections out of order, encoded and plain mixed */
	mime_header_params_parse("x; name*1=\"two\"; name*0*=utf-8''%C3%A9; other*=''x%20y;"
				 " plain*2=c; plain*0=a; plain*1=b", &list);
	CU_ASSERT_EQUAL(list.count, 4);
	const struct mime_param *name = mime_header_params_find(&list, "name");
	CU_ASSERT_TRUE(name->rfc2231);
	CU_ASSERT_STRING_EQUAL(name->charset, "utf-8");
	char *collapsed = mime_header_param_collapse(name);
	CU_ASSERT_STRING_EQUAL(collapsed, "\xc3\xa9two");
	free(collapsed);
	const struct mime_param *other = mime_header_params_find(&list, "other");
	CU_ASSERT_STRING_EQUAL(other->charset, "");
	collapsed = mime_header_param_collapse(other);
	CU_ASSERT_STRING_EQUAL(collapsed, "x y");   /* unknown charset: bytes as Latin-1 */
	free(collapsed);
	const struct mime_param *plain = mime_header_params_find(&list, "plain");
	CU_ASSERT_FALSE(plain->rfc2231);
	CU_ASSERT_STRING_EQUAL(plain->value, "abc");
	mime_header_params_free(&list);

	struct mime_buffer out = { 0 };
	mime_header_param_format(&out, "filename", "r\xc3\xa9sum\xc3\xa9.pdf", NULL, NULL, 1);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "filename*=utf-8''r%C3%A9sum%C3%A9.pdf");
	mime_buffer_reset(&out);
	mime_header_param_format(&out, "name", "a b", NULL, NULL, 0);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "name=\"a b\"");
	mime_buffer_reset(&out);
	mime_header_param_format(&out, "name", "ab", NULL, NULL, 0);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "name=ab");
	mime_buffer_free(&out);
}

static void test_quote_unquote(void)
{
	char *text = mime_header_unquote("\"a \\\"b\\\" \\\\c\"");
	CU_ASSERT_STRING_EQUAL(text, "a \"b\" \\c");
	free(text);
	text = mime_header_unquote("<id@host>");
	CU_ASSERT_STRING_EQUAL(text, "id@host");
	free(text);
	text = mime_header_unquote("\"");
	CU_ASSERT_STRING_EQUAL(text, "\"");
	free(text);
	struct mime_buffer out = { 0 };
	mime_header_quote("a\"b\\", &out);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "a\\\"b\\\\");
	mime_buffer_free(&out);
}

static void test_unfold_and_write(void)
{
	char *text = mime_header_unfold("a\r\n b\n\tc", 9);
	CU_ASSERT_STRING_EQUAL(text, "a b\tc");
	free(text);
	struct mime_buffer out = { 0 };
	mime_header_write(&out, "Subject", "kept\n fold", 10, "\r\n");
	CU_ASSERT_STRING_EQUAL((char *)out.data, "Subject: kept\r\n fold\r\n");
	mime_buffer_free(&out);
}

static void test_encoded_word_decode(void)
{
	struct mime_buffer out = { 0 };
	const char *value = "=?utf-8?B?Q2Fmw6k=?= =?iso-8859-1?Q?d=E9j=E0_vu?=\r\n and =?UTF-8?q?x?=";

	CU_ASSERT_EQUAL(mime_encoded_word_decode(value, strlen(value), &out), 3);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "Caf\xc3\xa9" "d\xc3\xa9j\xc3\xa0 vu and x");
	mime_buffer_reset(&out);
	value = "=?x-unknown?Q?=E9?= =?utf-8?B?@@@?= plain \xff";
	mime_encoded_word_decode(value, strlen(value), &out);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "\xc3\xa9 plain \xef\xbf\xbd");
	mime_buffer_reset(&out);
	value = "not =?encoded word?= =?utf-8?Z?x?=";
	CU_ASSERT_EQUAL(mime_encoded_word_decode(value, strlen(value), &out), 0);
	CU_ASSERT_STRING_EQUAL((char *)out.data, value);
	mime_buffer_free(&out);
}

static void test_encoded_word_encode(void)
{
	struct mime_buffer out = { 0 }, back = { 0 };
	const char *text = "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe4\xbb\xb6\xe5\x90\x8d"
		"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe4\xbb\xb6\xe5\x90\x8d";

	mime_encoded_word_encode(text, strlen(text), "utf-8", MIME_ENCODED_WORD_B, "\r\n", &out);
	for (char *word = (char *)out.data; word != NULL; word = strstr(word, "\r\n ")) {
		word += word[0] == '\r' ? 3 : 0;
		CU_ASSERT(strcspn(word, "\r") <= MIME_ENCODED_WORD_MAX);
	}
	mime_encoded_word_decode((char *)out.data, out.len, &back);
	CU_ASSERT_STRING_EQUAL((char *)back.data, text);
	mime_buffer_reset(&out);
	mime_buffer_reset(&back);
	mime_encoded_word_encode("caf\xc3\xa9 au lait", 13, "iso-8859-1", MIME_ENCODED_WORD_Q, "\n", &out);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "=?iso-8859-1?q?caf=E9_au_lait?=");
	mime_encoded_word_decode((char *)out.data, out.len, &back);
	CU_ASSERT_STRING_EQUAL((char *)back.data, "caf\xc3\xa9 au lait");
	mime_buffer_free(&out);
	mime_buffer_free(&back);
}

static void test_charset(void)
{
	struct mime_buffer out = { 0 };
	struct mime_charset charset;

	CU_ASSERT_EQUAL(mime_charset_to_utf8("ISO-8859-1", "\xe9", 1, &out), MIME_CHARSET_CONVERTED);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "\xc3\xa9");
	mime_buffer_reset(&out);
	CU_ASSERT_EQUAL(mime_charset_to_utf8("us-ascii", "a\xe9", 2, &out), MIME_CHARSET_REPLACED);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "a\xef\xbf\xbd");
	mime_buffer_reset(&out);
	CU_ASSERT_EQUAL(mime_charset_to_utf8("utf-8", "\xc3\x28", 2, &out), MIME_CHARSET_REPLACED);
	CU_ASSERT_EQUAL(mime_charset_to_utf8("no-such-charset", "x", 1, &out), MIME_CHARSET_UNKNOWN);
	mime_buffer_reset(&out);
	CU_ASSERT_EQUAL(mime_charset_from_utf8("iso-8859-1", "\xe6\x97\xa5", 3, &out), -1);
	CU_ASSERT_EQUAL(out.len, 0);
	mime_charset_init(&charset, "EUC-JP");
	CU_ASSERT_STRING_EQUAL(charset.input_charset, "euc-jp");
	CU_ASSERT_STRING_EQUAL(charset.output_charset, "iso-2022-jp");
	CU_ASSERT_EQUAL(charset.header_encoding, MIME_CHARSET_ENCODING_BASE64);
	mime_charset_init(&charset, "latin_1");
	CU_ASSERT_STRING_EQUAL(charset.input_charset, "iso-8859-1");
	CU_ASSERT_STRING_EQUAL(mime_charset_body_encoding_name(&charset), "quoted-printable");
	mime_charset_init(&charset, "us-ascii");
	CU_ASSERT_PTR_NULL(mime_charset_body_encoding_name(&charset));
	mime_buffer_free(&out);
}

static size_t utf8_sequence(const char *text, size_t len, size_t *bad_r)
{
	*bad_r = 0;
	return mime_charset_utf8_sequence((const unsigned char *)text, len, bad_r);
}

/* Well-formed sequences of each length; ill-formed starts spanning the
   lead byte and the continuation bytes that fit it; a truncated one. */
static void test_utf8_sequence(void)
{
	struct mime_buffer out = { 0 };
	size_t bad;

	CU_ASSERT_EQUAL(utf8_sequence("a", 1, &bad), 1);
	CU_ASSERT_EQUAL(utf8_sequence("\xc3\xa9", 2, &bad), 2);
	CU_ASSERT_EQUAL(utf8_sequence("\xe6\x97\xa5x", 4, &bad), 3);
	CU_ASSERT_EQUAL(utf8_sequence("\xf0\x9f\x98\x80", 4, &bad), 4);
	CU_ASSERT_EQUAL(utf8_sequence("\xc0\xaf", 2, &bad), 0);  /* overlong lead */
	CU_ASSERT_EQUAL(bad, 1);
	CU_ASSERT_EQUAL(utf8_sequence("\xed\xa0\x80", 3, &bad), 0);  /* a surrogate */
	CU_ASSERT_EQUAL(bad, 1);
	CU_ASSERT_EQUAL(utf8_sequence("\xf0\x9f\x28\x80", 4, &bad), 0);
	CU_ASSERT_EQUAL(bad, 2);
	CU_ASSERT_EQUAL(utf8_sequence("\xe6\x97", 2, &bad), 0);  /* cut short */
	CU_ASSERT_EQUAL(bad, 1);
	CU_ASSERT_EQUAL(mime_charset_to_utf8("utf-8", "\xf0\x9f\x28!", 4, &out), MIME_CHARSET_REPLACED);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "\xef\xbf\xbd(!");
	mime_buffer_free(&out);
}

const char unit_suite_name[] = "mime-header";
const struct unit_test unit_tests[] = {
	{ "parameters split as Python does", test_params_parse },
	{ "RFC 2231 sections, charsets and formatting", test_rfc2231 },
	{ "quote and unquote", test_quote_unquote },
	{ "unfolding and writing", test_unfold_and_write },
	{ "RFC 2047 decoding", test_encoded_word_decode },
	{ "RFC 2047 encoding", test_encoded_word_encode },
	{ "charset conversion and Charset", test_charset },
	{ "UTF-8 sequences, well-formed and not", test_utf8_sequence },
	{ NULL, NULL },
};
