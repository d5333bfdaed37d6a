/* SPDX-License-Identifier: MIT */
/* Unit tests for common/mime-codec: base64, quoted-printable, uuencode. */
#include "config.h"
#include "unit.h"
#include "mime-codec.h"

#include <string.h>

static enum mime_base64_result b64(const char *in, struct mime_buffer *out)
{
	mime_buffer_reset(out);
	return mime_codec_base64_decode(in, strlen(in), out);
}

static void test_base64_decode(void)
{
	struct mime_buffer out = { 0 };

	CU_ASSERT_EQUAL(b64("YWJj\r\nZGVm", &out), MIME_BASE64_OK);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "abcdef");
	CU_ASSERT_EQUAL(b64("YWJjZA", &out), MIME_BASE64_BAD_PADDING);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "abcd");
	CU_ASSERT_EQUAL(b64("YW Jj", &out), MIME_BASE64_BAD_CHARACTERS);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "abc");
	CU_ASSERT_EQUAL(b64("YW!JjZA", &out), MIME_BASE64_BAD_CHARACTERS_AND_PADDING);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "abcd");
	CU_ASSERT_EQUAL(b64("YWJjZ", &out), MIME_BASE64_BAD_LENGTH);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "YWJjZ");
	CU_ASSERT_EQUAL(b64("YQ==YQ==", &out), MIME_BASE64_BAD_CHARACTERS);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "a");
	CU_ASSERT_EQUAL(b64("", &out), MIME_BASE64_OK);
	CU_ASSERT_EQUAL(out.len, 0);
	mime_buffer_free(&out);
}

static void test_base64_encode(void)
{
	struct mime_buffer out = { 0 }, back = { 0 };
	unsigned char all[256];

	for (int i = 0; i < 256; i++)
		all[i] = (unsigned char)i;
	mime_codec_base64_encode(all, sizeof(all), 76, "\n", &out);
	CU_ASSERT_EQUAL(out.data[76], '\n');
	CU_ASSERT_EQUAL(mime_codec_base64_decode(out.data, out.len, &back), MIME_BASE64_OK);
	CU_ASSERT_EQUAL(back.len, sizeof(all));
	CU_ASSERT_EQUAL(memcmp(back.data, all, sizeof(all)), 0);
	mime_buffer_reset(&out);
	mime_codec_base64_encode("ab", 2, 0, "", &out);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "YWI=");
	mime_buffer_free(&out);
	mime_buffer_free(&back);
}

static void test_quoted_printable(void)
{
	struct mime_buffer out = { 0 };
	const char *in = "a=3Db=3db =\r\nsoft =XY= end=";

	mime_codec_qp_decode(in, strlen(in), 0, &out);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "a=b=b soft =XY= end");
	mime_buffer_reset(&out);
	mime_codec_qp_decode("a_b=5F", 6, 1, &out);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "a b_");
	mime_buffer_reset(&out);
	const char *text = "caf\xc3\xa9 = trailing \n"
		"a long line that goes on and on and on and on and on and on and on and on and on";
	mime_codec_qp_encode(text, strlen(text), "\n", &out);
	CU_ASSERT_PTR_NOT_NULL(strstr((char *)out.data, "caf=C3=A9 =3D trailing=20\n"));
	for (char *line = (char *)out.data; line != NULL; line = strchr(line, '\n')) {
		line += *line == '\n';
		size_t len = strcspn(line, "\n");
		CU_ASSERT(len <= 76);
		if (line[len] == '\0')
			break;
	}
	struct mime_buffer back = { 0 };
	mime_codec_qp_decode(out.data, out.len, 0, &back);
	CU_ASSERT_STRING_EQUAL((char *)back.data, text);
	mime_buffer_free(&back);
	mime_buffer_reset(&out);
	mime_codec_q_encode("a b=?", 5, &out);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "a_b=3D=3F");
	mime_buffer_free(&out);
}

static void test_uudecode(void)
{
	struct mime_buffer out = { 0 };
	const char *good = "junk\nbegin 644 file.txt\n#86)C\n`\nend\n";
	const char *garbage = "begin 644 x\n#86)CXXXX\nend\n";

	CU_ASSERT_EQUAL(mime_codec_uu_decode(good, strlen(good), &out), 0);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "abc");
	mime_buffer_reset(&out);
	/* trailing garbage: decoded up to the line's length */
	CU_ASSERT_EQUAL(mime_codec_uu_decode(garbage, strlen(garbage), &out), 0);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "abc");
	mime_buffer_reset(&out);
	CU_ASSERT_EQUAL(mime_codec_uu_decode("no begin\n", 9, &out), -1);
	CU_ASSERT_EQUAL(mime_codec_uu_decode("begin 644 x\n\n", 13, &out), -1);
	CU_ASSERT_EQUAL(out.len, 0);
	/* no "end": what was decoded is kept (email.message since Python 3.12) */
	CU_ASSERT_EQUAL(mime_codec_uu_decode("begin 644 x\n#86)C\n", 17, &out), 0);
	CU_ASSERT_STRING_EQUAL((char *)out.data, "abc");
	mime_buffer_free(&out);
}

const char unit_suite_name[] = "mime-codec";
const struct unit_test unit_tests[] = {
	{ "base64 decoding with Python's fallbacks", test_base64_decode },
	{ "base64 encoding", test_base64_encode },
	{ "quoted-printable and Q", test_quoted_printable },
	{ "uudecode", test_uudecode },
	{ NULL, NULL },
};
