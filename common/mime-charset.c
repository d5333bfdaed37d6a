/* SPDX-License-Identifier: MIT */
/* mime-charset: charset conversion with iconv, and email.charset's Charset. */
#include "config.h"
#include "mime-charset.h"

#include <ctype.h>
#include <errno.h>
#include <iconv.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

void mime_charset_latin1_to_utf8(const void *input, size_t len, struct mime_buffer *out)
{
	const unsigned char *in = input;

	for (size_t i = 0; i < len; i++) {
		if (in[i] < 0x80) {
			mime_buffer_append_byte(out, in[i]);
		} else {
			mime_buffer_append_byte(out, (unsigned char)(0xc0 | (in[i] >> 6)));
			mime_buffer_append_byte(out, (unsigned char)(0x80 | (in[i] & 0x3f)));
		}
	}
	if (out->data == NULL)
		mime_buffer_append(out, "", 0);
}

/* Python spells some charsets iconv does not know. */
static const char *mime_charset_iconv_name(const char *charset)
{
	if (strcasecmp(charset, "latin_1") == 0 || strcasecmp(charset, "latin-1") == 0)
		return "ISO-8859-1";
	if (strcasecmp(charset, "utf8") == 0 || strcasecmp(charset, "utf_8") == 0)
		return "UTF-8";
	if (strcasecmp(charset, "ascii") == 0 || strcasecmp(charset, "us_ascii") == 0)
		return "US-ASCII";
	return charset;
}

static int mime_charset_is_utf8(const char *charset)
{
	return strcasecmp(charset, "utf-8") == 0 || strcasecmp(charset, "utf8") == 0;
}

size_t mime_charset_utf8_sequence(const unsigned char *in, size_t len, size_t *bad_r)
{
	unsigned char ch = in[0];
	size_t need = ch < 0x80 ? 0 : ch >= 0xc2 && ch <= 0xdf ? 1 :
		ch >= 0xe0 && ch <= 0xef ? 2 : ch >= 0xf0 && ch <= 0xf4 ? 3 : SIZE_MAX;
	size_t k = 1;

	if (need == SIZE_MAX || need >= len) {
		*bad_r = 1;
		return 0;
	}
	for (; k <= need; k++) {
		unsigned char lo = 0x80, hi = 0xbf;

		if (k == 1 && ch == 0xe0)
			lo = 0xa0;
		if (k == 1 && ch == 0xed)
			hi = 0x9f;
		if (k == 1 && ch == 0xf0)
			lo = 0x90;
		if (k == 1 && ch == 0xf4)
			hi = 0x8f;
		if (in[k] < lo || in[k] > hi) {
			*bad_r = k;
			return 0;
		}
	}
	return need + 1;
}

/* Appends valid UTF-8 as is and each ill-formed start as one U+FFFD. */
static enum mime_charset_result mime_charset_clean_utf8(const unsigned char *in, size_t len,
							struct mime_buffer *out)
{
	enum mime_charset_result result = MIME_CHARSET_CONVERTED;
	size_t i = 0;

	while (i < len) {
		size_t bad = 0;
		size_t valid = mime_charset_utf8_sequence(in + i, len - i, &bad);

		if (valid > 0) {
			mime_buffer_append(out, in + i, valid);
			i += valid;
		} else {
			mime_buffer_append_str(out, "\xef\xbf\xbd");
			result = MIME_CHARSET_REPLACED;
			i += bad;
		}
	}
	if (out->data == NULL)
		mime_buffer_append(out, "", 0);
	return result;
}

enum mime_charset_result mime_charset_to_utf8(const char *charset, const void *input,
					      size_t len, struct mime_buffer *out)
{
	if (mime_charset_is_utf8(charset))
		return mime_charset_clean_utf8(input, len, out);
	iconv_t cd = iconv_open("UTF-8", mime_charset_iconv_name(charset));
	if (cd == (iconv_t)-1)
		return MIME_CHARSET_UNKNOWN;
	enum mime_charset_result result = MIME_CHARSET_CONVERTED;
	char *in = (char *)input;
	size_t in_left = len;
	char chunk[4096];

	while (in_left > 0) {
		char *dst = chunk;
		size_t dst_left = sizeof(chunk);
		size_t ret = iconv(cd, &in, &in_left, &dst, &dst_left);
		mime_buffer_append(out, chunk, sizeof(chunk) - dst_left);
		if (ret != (size_t)-1)
			continue;
		if (errno == E2BIG)
			continue;
		/* EILSEQ or EINVAL: one bad byte becomes U+FFFD. */
		mime_buffer_append_str(out, "\xef\xbf\xbd");
		result = MIME_CHARSET_REPLACED;
		in++;
		in_left--;
		iconv(cd, NULL, NULL, NULL, NULL);
	}
	char *dst = chunk;
	size_t dst_left = sizeof(chunk);
	iconv(cd, NULL, NULL, &dst, &dst_left);
	mime_buffer_append(out, chunk, sizeof(chunk) - dst_left);
	iconv_close(cd);
	return result;
}

int mime_charset_from_utf8(const char *charset, const void *input, size_t len,
			   struct mime_buffer *out)
{
	iconv_t cd = iconv_open(mime_charset_iconv_name(charset), "UTF-8");
	if (cd == (iconv_t)-1)
		return -1;
	size_t start = out->len;
	char *in = (char *)input;
	size_t in_left = len;
	char chunk[4096];
	int ret = 0;

	for (;;) {
		char *dst = chunk;
		size_t dst_left = sizeof(chunk);
		size_t status = in_left > 0 ? iconv(cd, &in, &in_left, &dst, &dst_left) :
			iconv(cd, NULL, NULL, &dst, &dst_left);
		mime_buffer_append(out, chunk, sizeof(chunk) - dst_left);
		if (status == (size_t)-1 && errno != E2BIG) {
			ret = -1;
			break;
		}
		if (in_left == 0 && status != (size_t)-1)
			break;
	}
	iconv_close(cd);
	if (ret < 0) {
		out->len = start;
		if (out->data != NULL)
			out->data[start] = '\0';
	}
	return ret;
}

struct mime_charset_entry {
	const char *name;
	enum mime_charset_encoding header_encoding;
	enum mime_charset_encoding body_encoding;
	const char *output_charset;
};

/* email.charset.CHARSETS */
static const struct mime_charset_entry mime_charset_table[] = {
	{ "iso-8859-1", MIME_CHARSET_ENCODING_QP, MIME_CHARSET_ENCODING_QP, NULL },
	{ "iso-8859-2", MIME_CHARSET_ENCODING_QP, MIME_CHARSET_ENCODING_QP, NULL },
	{ "iso-8859-3", MIME_CHARSET_ENCODING_QP, MIME_CHARSET_ENCODING_QP, NULL },
	{ "iso-8859-4", MIME_CHARSET_ENCODING_QP, MIME_CHARSET_ENCODING_QP, NULL },
	{ "iso-8859-9", MIME_CHARSET_ENCODING_QP, MIME_CHARSET_ENCODING_QP, NULL },
	{ "iso-8859-10", MIME_CHARSET_ENCODING_QP, MIME_CHARSET_ENCODING_QP, NULL },
	{ "iso-8859-13", MIME_CHARSET_ENCODING_QP, MIME_CHARSET_ENCODING_QP, NULL },
	{ "iso-8859-14", MIME_CHARSET_ENCODING_QP, MIME_CHARSET_ENCODING_QP, NULL },
	{ "iso-8859-15", MIME_CHARSET_ENCODING_QP, MIME_CHARSET_ENCODING_QP, NULL },
	{ "iso-8859-16", MIME_CHARSET_ENCODING_QP, MIME_CHARSET_ENCODING_QP, NULL },
	{ "windows-1252", MIME_CHARSET_ENCODING_QP, MIME_CHARSET_ENCODING_QP, NULL },
	{ "viscii", MIME_CHARSET_ENCODING_QP, MIME_CHARSET_ENCODING_QP, NULL },
	{ "us-ascii", MIME_CHARSET_ENCODING_NONE, MIME_CHARSET_ENCODING_NONE, NULL },
	{ "big5", MIME_CHARSET_ENCODING_BASE64, MIME_CHARSET_ENCODING_BASE64, NULL },
	{ "gb2312", MIME_CHARSET_ENCODING_BASE64, MIME_CHARSET_ENCODING_BASE64, NULL },
	{ "euc-jp", MIME_CHARSET_ENCODING_BASE64, MIME_CHARSET_ENCODING_NONE, "iso-2022-jp" },
	{ "shift_jis", MIME_CHARSET_ENCODING_BASE64, MIME_CHARSET_ENCODING_NONE, "iso-2022-jp" },
	{ "iso-2022-jp", MIME_CHARSET_ENCODING_BASE64, MIME_CHARSET_ENCODING_NONE, NULL },
	{ "koi8-r", MIME_CHARSET_ENCODING_BASE64, MIME_CHARSET_ENCODING_BASE64, NULL },
	{ "utf-8", MIME_CHARSET_ENCODING_SHORTEST, MIME_CHARSET_ENCODING_BASE64, "utf-8" },
};

/* email.charset.ALIASES, the common ones. */
static const char *const mime_charset_aliases[][2] = {
	{ "latin_1", "iso-8859-1" }, { "latin-1", "iso-8859-1" },
	{ "latin_2", "iso-8859-2" }, { "latin-2", "iso-8859-2" },
	{ "latin_9", "iso-8859-15" }, { "latin-9", "iso-8859-15" },
	{ "cp949", "ks_c_5601-1987" }, { "euc_jp", "euc-jp" },
	{ "euc_kr", "euc-kr" }, { "ascii", "us-ascii" }, { "utf8", "utf-8" },
	{ "cp1252", "windows-1252" },
};

void mime_charset_init(struct mime_charset *charset_r, const char *name)
{
	char lower[sizeof(charset_r->input_charset)];
	size_t i;

	for (i = 0; name[i] != '\0' && i + 1 < sizeof(lower); i++)
		lower[i] = (char)tolower((unsigned char)name[i]);
	lower[i] = '\0';
	const char *canonical = lower;
	for (i = 0; i < sizeof(mime_charset_aliases) / sizeof(mime_charset_aliases[0]); i++) {
		if (strcmp(lower, mime_charset_aliases[i][0]) == 0)
			canonical = mime_charset_aliases[i][1];
	}
	snprintf(charset_r->input_charset, sizeof(charset_r->input_charset), "%s", canonical);
	charset_r->header_encoding = MIME_CHARSET_ENCODING_BASE64;
	charset_r->body_encoding = MIME_CHARSET_ENCODING_BASE64;
	snprintf(charset_r->output_charset, sizeof(charset_r->output_charset), "%s", canonical);
	for (i = 0; i < sizeof(mime_charset_table) / sizeof(mime_charset_table[0]); i++) {
		const struct mime_charset_entry *entry = &mime_charset_table[i];
		if (strcmp(canonical, entry->name) != 0)
			continue;
		charset_r->header_encoding = entry->header_encoding;
		charset_r->body_encoding = entry->body_encoding;
		if (entry->output_charset != NULL)
			snprintf(charset_r->output_charset, sizeof(charset_r->output_charset),
				 "%s", entry->output_charset);
	}
}

const char *mime_charset_body_encoding_name(const struct mime_charset *charset)
{
	switch (charset->body_encoding) {
	case MIME_CHARSET_ENCODING_QP:
		return "quoted-printable";
	case MIME_CHARSET_ENCODING_BASE64:
	case MIME_CHARSET_ENCODING_SHORTEST:
		return "base64";
	case MIME_CHARSET_ENCODING_NONE:
		break;
	}
	return NULL;
}
