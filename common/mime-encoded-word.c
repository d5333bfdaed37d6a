/* SPDX-License-Identifier: MIT */
/* mime-encoded-word: RFC 2047 encoded words in header values, decoded and encoded. */
#include "config.h"
#include "mime-encoded-word.h"
#include "mime-charset.h"
#include "mime-codec.h"

#include <stdlib.h>
#include <string.h>

/* Parses an encoded word at value[0..len). Returns its length, or 0. */
static size_t encoded_word_match(const char *value, size_t len, size_t *charset_len_r,
				 char *encoding_r, size_t *text_start_r, size_t *text_len_r)
{
	if (len < 8 || value[0] != '=' || value[1] != '?')
		return 0;
	size_t i = 2;
	while (i < len && value[i] != '?' && value[i] != ' ' && value[i] != '\t' &&
	       value[i] != '\r' && value[i] != '\n')
		i++;
	if (i == 2 || i + 2 >= len || value[i] != '?')
		return 0;
	*charset_len_r = i - 2;
	char encoding = value[i + 1];
	if (encoding != 'B' && encoding != 'b' && encoding != 'Q' && encoding != 'q')
		return 0;
	if (value[i + 2] != '?')
		return 0;
	*encoding_r = encoding;
	size_t text = i + 3;
	for (size_t j = text; j + 1 < len; j++) {
		if (value[j] == ' ' || value[j] == '\t' || value[j] == '\r' || value[j] == '\n')
			return 0;
		if (value[j] == '?' && value[j + 1] == '=') {
			*text_start_r = text;
			*text_len_r = j - text;
			return j + 2;
		}
	}
	return 0;
}

static void decode_word(const char *charset_text, size_t charset_len, char encoding,
			const char *text, size_t text_len, struct mime_buffer *out)
{
	char charset[64];
	struct mime_buffer bytes = { 0 };

	if (charset_len >= sizeof(charset))
		charset_len = sizeof(charset) - 1;
	memcpy(charset, charset_text, charset_len);
	charset[charset_len] = '\0';
	char *star = strchr(charset, '*');   /* RFC 2231 language suffix */
	if (star != NULL)
		*star = '\0';
	if (encoding == 'B' || encoding == 'b')
		mime_codec_base64_decode(text, text_len, &bytes);
	else
		mime_codec_qp_decode(text, text_len, 1, &bytes);
	if (mime_charset_to_utf8(charset, bytes.data, bytes.len, out) == MIME_CHARSET_UNKNOWN)
		mime_charset_latin1_to_utf8(bytes.data, bytes.len, out);
	mime_buffer_free(&bytes);
}

/* Appends plain text, replacing invalid UTF-8 with U+FFFD. */
static void append_plain(const char *text, size_t len, struct mime_buffer *out)
{
	if (len > 0)
		mime_charset_to_utf8("utf-8", text, len, out);
}

size_t mime_encoded_word_decode(const char *value, size_t len, struct mime_buffer *out)
{
	size_t words = 0, plain_start = 0, i = 0;
	int last_was_word = 0;

	while (i < len) {
		size_t charset_len, text_start, text_len;
		char encoding;
		size_t word_len = value[i] == '=' ?
			encoded_word_match(value + i, len - i, &charset_len, &encoding,
					   &text_start, &text_len) : 0;
		if (word_len == 0) {
			i++;
			continue;
		}
		/* Only white space since the last word: drop it (RFC 2047 6.2). */
		int only_space = 1;
		for (size_t k = plain_start; k < i; k++)
			if (value[k] != ' ' && value[k] != '\t' && value[k] != '\r' && value[k] != '\n')
				only_space = 0;
		if (!(last_was_word && only_space)) {
			char *unfolded = mime_xmalloc(i - plain_start + 1);
			size_t n = 0;
			for (size_t k = plain_start; k < i; k++)
				if (value[k] != '\r' && value[k] != '\n')
					unfolded[n++] = value[k];
			append_plain(unfolded, n, out);
			free(unfolded);
		}
		decode_word(value + i + 2, charset_len, encoding, value + i + text_start,
			    text_len, out);
		words++;
		last_was_word = 1;
		i += word_len;
		plain_start = i;
	}
	char *unfolded = mime_xmalloc(len - plain_start + 1);
	size_t n = 0;
	for (size_t k = plain_start; k < len; k++)
		if (value[k] != '\r' && value[k] != '\n')
			unfolded[n++] = value[k];
	append_plain(unfolded, n, out);
	free(unfolded);
	if (out->data == NULL)
		mime_buffer_append(out, "", 0);
	return words;
}

/* Length of the UTF-8 character starting with lead. */
static size_t utf8_char_len(unsigned char lead)
{
	return lead < 0xc0 ? 1 : lead < 0xe0 ? 2 : lead < 0xf0 ? 3 : 4;
}

void mime_encoded_word_encode(const char *text, size_t len, const char *charset,
			      enum mime_encoded_word_encoding encoding, const char *linesep,
			      struct mime_buffer *out)
{
	struct mime_buffer probe = { 0 };
	if (mime_charset_from_utf8(charset, text, len, &probe) < 0)
		charset = "utf-8";
	mime_buffer_free(&probe);
	size_t overhead = strlen(charset) + 7; /* =? ?X? ?= */
	size_t pos = 0;
	int first = 1;

	while (pos < len || first) {
		/* Take as many whole characters as fit in one word. */
		size_t end = pos, best = pos;
		struct mime_buffer chunk = { 0 }, encoded = { 0 };
		while (end < len) {
			size_t next = end + utf8_char_len((unsigned char)text[end]);
			if (next > len)
				next = len;
			mime_buffer_reset(&chunk);
			mime_buffer_reset(&encoded);
			if (mime_charset_from_utf8(charset, text + pos, next - pos, &chunk) < 0)
				mime_buffer_append(&chunk, text + pos, next - pos);
			if (encoding == MIME_ENCODED_WORD_B)
				mime_codec_base64_encode(chunk.data, chunk.len, 0, "", &encoded);
			else
				mime_codec_q_encode(chunk.data, chunk.len, &encoded);
			if (overhead + encoded.len > MIME_ENCODED_WORD_MAX && best > pos)
				break;
			best = next;
			end = next;
		}
		mime_buffer_reset(&chunk);
		mime_buffer_reset(&encoded);
		if (mime_charset_from_utf8(charset, text + pos, best - pos, &chunk) < 0)
			mime_buffer_append(&chunk, text + pos, best - pos);
		if (encoding == MIME_ENCODED_WORD_B)
			mime_codec_base64_encode(chunk.data, chunk.len, 0, "", &encoded);
		else
			mime_codec_q_encode(chunk.data, chunk.len, &encoded);
		if (!first) {
			mime_buffer_append_str(out, linesep);
			mime_buffer_append_byte(out, ' ');
		}
		mime_buffer_printf(out, "=?%s?%c?", charset, encoding == MIME_ENCODED_WORD_B ? 'b' : 'q');
		mime_buffer_append(out, encoded.data, encoded.len);
		mime_buffer_append_str(out, "?=");
		mime_buffer_free(&chunk);
		mime_buffer_free(&encoded);
		pos = best;
		first = 0;
	}
}
