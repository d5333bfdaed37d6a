/* SPDX-License-Identifier: MIT */
/* mime-codec: base64, quoted-printable and uuencode, with Python's fallbacks. */
#include "config.h"
#include "mime-codec.h"

#include <string.h>

static const char base64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* 0..63 for alphabet bytes, 64 for everything else. */
static unsigned char base64_value(unsigned char ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return (unsigned char)(ch - 'A');
	if (ch >= 'a' && ch <= 'z')
		return (unsigned char)(ch - 'a' + 26);
	if (ch >= '0' && ch <= '9')
		return (unsigned char)(ch - '0' + 52);
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	return 64;
}

/* Lenient decoding (binascii.a2b_base64 without strict mode): skips bytes
   outside the alphabet, stops at a pad that completes a quantum. Returns 0,
   or -1 when the data ends inside a quantum. */
static int base64_decode_lenient(const unsigned char *in, size_t len,
				 const char *extra, struct mime_buffer *out)
{
	unsigned int quad_pos = 0, pads = 0, left = 0;
	size_t extra_len = extra == NULL ? 0 : strlen(extra);

	for (size_t i = 0; i < len + extra_len; i++) {
		unsigned char ch = i < len ? in[i] : (unsigned char)extra[i - len];
		if (ch == '=') {
			if (quad_pos >= 2 && quad_pos + ++pads >= 4)
				return 0;
			continue;
		}
		unsigned char value = base64_value(ch);
		if (value >= 64)
			continue;
		pads = 0;
		switch (quad_pos) {
		case 0:
			left = value;
			quad_pos = 1;
			break;
		case 1:
			mime_buffer_append_byte(out, (unsigned char)((left << 2) | (value >> 4)));
			left = value & 0x0f;
			quad_pos = 2;
			break;
		case 2:
			mime_buffer_append_byte(out, (unsigned char)((left << 4) | (value >> 2)));
			left = value & 0x03;
			quad_pos = 3;
			break;
		default:
			mime_buffer_append_byte(out, (unsigned char)((left << 6) | value));
			quad_pos = 0;
			break;
		}
	}
	return quad_pos == 0 ? 0 : -1;
}

enum mime_base64_result mime_codec_base64_decode(const void *input, size_t len,
						 struct mime_buffer *out)
{
	struct mime_buffer clean = { 0 };
	const unsigned char *in = input;
	size_t start = out->len;
	enum mime_base64_result result;

	for (size_t i = 0; i < len; i++) {
		if (in[i] != '\r' && in[i] != '\n')
			mime_buffer_append_byte(&clean, in[i]);
	}
	const unsigned char *data = clean.data;
	size_t data_len = clean.len;
	size_t pad_error = data_len % 4;
	const char *padding = pad_error == 0 ? "" : &"==="[pad_error - 1];

	/* Strict: the alphabet, then at most two '=' (counting added ones). */
	size_t alpha = 0;
	while (alpha < data_len && base64_value(data[alpha]) < 64)
		alpha++;
	size_t pads = strlen(padding);
	int clean_input = 1;
	for (size_t i = alpha; i < data_len; i++) {
		if (data[i] != '=')
			clean_input = 0;
		pads++;
	}
	if (clean_input && pads <= 2 &&
	    base64_decode_lenient(data, data_len, padding, out) == 0) {
		result = pad_error != 0 ? MIME_BASE64_BAD_PADDING : MIME_BASE64_OK;
		goto done;
	}
	out->len = start;
	if (base64_decode_lenient(data, data_len, NULL, out) == 0) {
		result = MIME_BASE64_BAD_CHARACTERS;
		goto done;
	}
	out->len = start;
	if (base64_decode_lenient(data, data_len, "==", out) == 0) {
		result = MIME_BASE64_BAD_CHARACTERS_AND_PADDING;
		goto done;
	}
	out->len = start;
	mime_buffer_append(out, input, len);
	result = MIME_BASE64_BAD_LENGTH;
done:
	if (out->data != NULL)
		out->data[out->len] = '\0';
	mime_buffer_free(&clean);
	return result;
}

void mime_codec_base64_encode(const void *input, size_t len, size_t line_len,
			      const char *linesep, struct mime_buffer *out)
{
	const unsigned char *in = input;
	size_t column = 0;

	for (size_t i = 0; i < len; i += 3) {
		unsigned int chunk = (unsigned int)in[i] << 16;
		size_t n = len - i < 3 ? len - i : 3;
		if (n > 1)
			chunk |= (unsigned int)in[i + 1] << 8;
		if (n > 2)
			chunk |= in[i + 2];
		char quad[4] = {
			base64_alphabet[(chunk >> 18) & 63], base64_alphabet[(chunk >> 12) & 63],
			n > 1 ? base64_alphabet[(chunk >> 6) & 63] : '=',
			n > 2 ? base64_alphabet[chunk & 63] : '=',
		};
		for (size_t q = 0; q < 4; q++) {
			if (line_len > 0 && column == line_len) {
				mime_buffer_append_str(out, linesep);
				column = 0;
			}
			mime_buffer_append_byte(out, (unsigned char)quad[q]);
			column++;
		}
	}
	if (line_len > 0 && len > 0)
		mime_buffer_append_str(out, linesep);
}

static int hex_value(unsigned char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

void mime_codec_qp_decode(const void *input, size_t len, int header,
			  struct mime_buffer *out)
{
	const unsigned char *in = input;
	size_t i = 0;

	while (i < len) {
		if (in[i] == '=') {
			i++;
			if (i >= len)
				break;
			if (in[i] == '\n' || in[i] == '\r') {
				while (in[i] != '\n' && i < len - 1)
					i++;
				i++;
			} else if (in[i] == '=') {
				mime_buffer_append_byte(out, '=');
				i++;
			} else if (i + 1 < len && hex_value(in[i]) >= 0 && hex_value(in[i + 1]) >= 0) {
				mime_buffer_append_byte(out, (unsigned char)(hex_value(in[i]) * 16 +
									  hex_value(in[i + 1])));
				i += 2;
			} else {
				mime_buffer_append_byte(out, '=');
			}
		} else if (header && in[i] == '_') {
			mime_buffer_append_byte(out, ' ');
			i++;
		} else {
			mime_buffer_append_byte(out, in[i]);
			i++;
		}
	}
	if (out->data == NULL)
		mime_buffer_append(out, "", 0);
}

#define MIME_QP_LINE_MAX 76 /* RFC 2045 6.7 rule 5 */

void mime_codec_qp_encode(const void *input, size_t len, const char *linesep,
			  struct mime_buffer *out)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *in = input;
	size_t column = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char ch = in[i];
		if (ch == '\n' || (ch == '\r' && i + 1 < len && in[i + 1] == '\n')) {
			if (ch == '\r')
				i++;
			mime_buffer_append_str(out, linesep);
			column = 0;
			continue;
		}
		int at_line_end = i + 1 == len || in[i + 1] == '\n' ||
			(in[i + 1] == '\r' && i + 2 < len && in[i + 2] == '\n');
		int literal = (ch >= 33 && ch <= 126 && ch != '=') ||
			((ch == ' ' || ch == '\t') && !at_line_end);
		size_t width = literal ? 1 : 3;
		/* Keep room for the soft break's '=' unless this ends the line. */
		if (column + width > MIME_QP_LINE_MAX - (at_line_end ? 0 : 1)) {
			mime_buffer_append_byte(out, '=');
			mime_buffer_append_str(out, linesep);
			column = 0;
		}
		if (literal) {
			mime_buffer_append_byte(out, ch);
		} else {
			mime_buffer_append_byte(out, '=');
			mime_buffer_append_byte(out, (unsigned char)hex[ch >> 4]);
			mime_buffer_append_byte(out, (unsigned char)hex[ch & 15]);
		}
		column += width;
	}
	if (out->data == NULL)
		mime_buffer_append(out, "", 0);
}

void mime_codec_q_encode(const void *input, size_t len, struct mime_buffer *out)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *in = input;

	for (size_t i = 0; i < len; i++) {
		unsigned char ch = in[i];
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || (ch != '\0' && strchr("!*+-/", ch) != NULL)) {
			mime_buffer_append_byte(out, ch);
		} else if (ch == ' ') {
			mime_buffer_append_byte(out, '_');
		} else {
			mime_buffer_append_byte(out, '=');
			mime_buffer_append_byte(out, (unsigned char)hex[ch >> 4]);
			mime_buffer_append_byte(out, (unsigned char)hex[ch & 15]);
		}
	}
	if (out->data == NULL)
		mime_buffer_append(out, "", 0);
}

/* One uuencoded line into out (binascii.a2b_uu). Returns 0, or -1 when
   bytes past the line's length are not blanks (Python's "Trailing garbage"). */
static int uu_decode_line(const unsigned char *line, size_t len, struct mime_buffer *out)
{
	if (len == 0)
		return 0;
	size_t want = (size_t)((line[0] - ' ') & 0x3f);
	size_t i = 1;
	unsigned int bits = 0, nbits = 0;

	while (want > 0) {
		unsigned char ch = i < len ? line[i] : ' ';
		if (i < len && (ch < ' ' || ch > ' ' + 64) && ch != '\n' && ch != '\r')
			return -1;
		i++;
		unsigned int value = ch == '\n' || ch == '\r' ? 0 : (unsigned int)(ch - ' ') & 0x3f;
		bits = (bits << 6) | value;
		nbits += 6;
		if (nbits >= 8) {
			nbits -= 8;
			mime_buffer_append_byte(out, (unsigned char)(bits >> nbits));
			bits &= (1u << nbits) - 1;
			want--;
		}
	}
	for (; i < len; i++) {
		if (line[i] != ' ' && line[i] != ' ' + 64 && line[i] != '\n' && line[i] != '\r')
			return -1;
	}
	return 0;
}

static int uu_is_blank(unsigned char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\f';
}

int mime_codec_uu_decode(const void *input, size_t len, struct mime_buffer *out)
{
	const unsigned char *in = input;
	size_t pos = 0, start = out->len;
	int begun = 0;

	while (pos < len) {
		size_t end = pos;
		while (end < len && in[end] != '\n' && in[end] != '\r')
			end++;
		const unsigned char *line = in + pos;
		size_t line_len = end - pos;
		/* Python's splitlines: CRLF, CR or LF. */
		pos = end < len && in[end] == '\r' && end + 1 < len && in[end + 1] == '\n' ?
			end + 2 : end + 1;
		if (!begun) {
			if (line_len > 6 && memcmp(line, "begin ", 6) == 0) {
				size_t m = 6;
				while (m < line_len && line[m] != ' ')
					m++;
				int octal = m > 6;
				for (size_t k = 6; k < m; k++)
					if (line[k] < '0' || line[k] > '7')
						octal = 0;
				begun = octal;
			}
			continue;
		}
		if (line_len == 0)
			goto fail;
		size_t a = 0, b = line_len;
		while (a < b && uu_is_blank(line[a]))
			a++;
		while (b > a && uu_is_blank(line[b - 1]))
			b--;
		if (b - a == 3 && memcmp(line + a, "end", 3) == 0)
			return 0;
		size_t mark = out->len;
		if (uu_decode_line(line, line_len, out) < 0) {
			out->len = mark;
			size_t nbytes = (size_t)((((line[0] - 32) & 63) * 4 + 5) / 3);
			if (uu_decode_line(line, nbytes < line_len ? nbytes : line_len, out) < 0)
				goto fail;
		}
	}
	if (begun)
		return 0;
fail:
	out->len = start;
	if (out->data != NULL)
		out->data[out->len] = '\0';
	return -1;
}
