/* SPDX-License-Identifier: MIT */
/* search-text: a message's text as Dovecot 2.3's BODY and TEXT keys search it, decoded and in casemap form. */
#include "config.h"
#include "search-text.h"

#include "casemap.h"
#include "mime-charset.h"
#include "search-string.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

#define SEARCH_TEXT_BOUNDARY_MAX 70 /* RFC 2046's limit; a longer one is refused rather than guessed at */

/* A slice of the message. */
/* What a part's header says about its body. */
struct search_text_type {
	char type[32], subtype[64];       /* lower case; "" when there is no Content-Type */
	char boundary[SEARCH_TEXT_BOUNDARY_MAX + 1];
	char charset[64];                 /* "" when none */
	char encoding[32];                /* lower case; "" when none */
	unsigned int content_types, encodings;
};

/* The boundaries of the multiparts a part is inside, innermost last. */
struct search_text_nest {
	const char *boundaries[SEARCH_TEXT_DEPTH_MAX];
	unsigned int depth;
	unsigned int level;               /* parts above this one */
	bool digest;                      /* the parts being read are multipart/digest's: message/rfc822 by default */
};

static bool search_text_is_lwsp(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static bool search_text_is_token(unsigned char c)
{
	return c > 0x20 && c < 0x7f && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

/* ---- Content-Type and Content-Transfer-Encoding ---- */

/* Reads a token (lower-cased into out, at most size - 1 bytes). */
static int search_text_read_token(const unsigned char **p, const unsigned char *end, char *out, size_t size)
{
	size_t n = 0;

	while (*p < end && search_text_is_token(**p)) {
		if (n + 1 >= size)
			return -1;
		out[n++] = (char)(**p >= 'A' && **p <= 'Z' ? **p + 32 : **p);
		(*p)++;
	}
	out[n] = '\0';
	return n == 0 ? -1 : 0;
}

/* Reads a parameter value: a token or a quoted string without escapes,
   as it is, into out. */
static int search_text_read_value(const unsigned char **p, const unsigned char *end, char *out, size_t size)
{
	size_t n = 0;

	if (*p == end)
		return -1; /* "name=" at the value's end */
	if (**p != '"') {
		const unsigned char *start = *p;

		while (*p < end && search_text_is_token(**p))
			(*p)++;
		n = (size_t)(*p - start);
		if (n == 0 || n >= size)
			return -1;
		memcpy(out, start, n);
	} else {
		for ((*p)++; *p < end && **p != '"'; (*p)++) {
			if (**p == '\\' || **p < 0x20 || **p >= 0x7f || n + 1 >= size)
				return -1;
			out[n++] = (char)**p;
		}
		if (*p == end)
			return -1;
		(*p)++;
	}
	out[n] = '\0';
	return 0;
}

static void search_text_skip_lwsp(const unsigned char **p, const unsigned char *end)
{
	while (*p < end && search_text_is_lwsp(**p))
		(*p)++;
}

/* Reads "type/subtype *(; name=value)" with the boundary and charset. */
static int search_text_parse_content_type(struct search_string_span value, struct search_text_type *type)
{
	const unsigned char *p = value.data, *end = value.data + value.len;

	search_text_skip_lwsp(&p, end);
	if (search_text_read_token(&p, end, type->type, sizeof(type->type)) < 0 || p == end || *p++ != '/' ||
	    search_text_read_token(&p, end, type->subtype, sizeof(type->subtype)) < 0)
		return -1;
	for (;;) {
		char name[32], param[SEARCH_TEXT_BOUNDARY_MAX + 1];

		search_text_skip_lwsp(&p, end);
		if (p == end)
			return 0;
		if (*p++ != ';')
			return -1;
		search_text_skip_lwsp(&p, end);
		if (p == end)
			return 0;
		if (search_text_read_token(&p, end, name, sizeof(name)) < 0 || strchr(name, '*') != NULL ||
		    p == end || *p++ != '=' || search_text_read_value(&p, end, param, sizeof(param)) < 0)
			return -1;
		if (strcmp(name, "boundary") == 0)
			memcpy(type->boundary, param, sizeof(param));
		else if (strcmp(name, "charset") == 0 && strlen(param) < sizeof(type->charset))
			strcpy(type->charset, param);
		else if (strcmp(name, "charset") == 0)
			return -1;
	}
}

static int search_text_parse_encoding(struct search_string_span value, struct search_text_type *type)
{
	const unsigned char *p = value.data, *end = value.data + value.len;

	search_text_skip_lwsp(&p, end);
	if (search_text_read_token(&p, end, type->encoding, sizeof(type->encoding)) < 0)
		return -1;
	search_text_skip_lwsp(&p, end);
	return p == end ? 0 : -1;
}

/* ---- the header ---- */

/* Appends one header line (field: unfolded; its first line first_len
   bytes) as Dovecot's TEXT sees it, and takes what it says of the body. */
static int search_text_take_header(struct search_string_span field, size_t first_len, bool continued,
				   struct search_text_type *type, struct mime_buffer *head)
{
	const unsigned char *colon = memchr(field.data, ':', field.len);
	size_t name_len, middle_end;

	if (colon == NULL)
		return -1;
	name_len = (size_t)(colon - field.data);
	while (name_len > 0 && search_text_is_lwsp(field.data[name_len - 1]))
		name_len--;
	for (size_t i = 0; i < name_len; i++) {
		if (field.data[i] <= 0x20 || field.data[i] >= 0x7f)
			return -1;
	}
	middle_end = (size_t)(colon - field.data) + 1;
	while (middle_end < first_len && search_text_is_lwsp(field.data[middle_end]))
		middle_end++;
	if (name_len == 0 || (middle_end == first_len && continued))
		return -1; /* a first line only of white space, then more: Dovecot's own split */
	if (casemap_append(field.data, name_len, head) < 0)
		return -1;
	if (middle_end == first_len) {
		/* only white space: all of it is there as it is */
		if (name_len >= 8 && strncasecmp((const char *)field.data, "Content-", 8) == 0)
			return -1;
		mime_buffer_append(head, field.data + name_len, field.len - name_len);
		mime_buffer_append_byte(head, '\n');
		return 0;
	}
	mime_buffer_append(head, field.data + name_len, middle_end - name_len);
	struct search_string_span rest = { field.data + middle_end, field.len - middle_end };
	size_t value_start = head->len;
	if (search_string_decode(rest.data, rest.len, head) < 0)
		return -1;
	/* a NUL, raw or from an encoded word (=?iso-8859-1?b?AA==?=): given
	   up on, as in a body; the text index holds none */
	if (memchr(head->data + value_start, '\0', head->len - value_start) != NULL)
		return -1;
	mime_buffer_append_byte(head, '\n');
	if (name_len == 12 && strncasecmp((const char *)field.data, "Content-Type", 12) == 0)
		return type->content_types++ > 0 ? -1 : search_text_parse_content_type(rest, type);
	if (name_len == 25 && strncasecmp((const char *)field.data, "Content-Transfer-Encoding", 25) == 0)
		return type->encodings++ > 0 ? -1 : search_text_parse_encoding(rest, type);
	return 0;
}

/* Reads a part's header block up to its empty line, appending its lines
   to head; *body_r is what follows. */
static int search_text_read_header(struct search_string_span part, struct search_text_type *type,
				   struct mime_buffer *head, struct search_string_span *body_r)
{
	struct mime_buffer field = { 0 };
	struct search_string_span line;
	size_t pos = 0, first_len = 0;
	bool continued = false;
	int result = -1;

	for (;;) {
		bool more = search_string_next_line(part.data, part.len, &pos, &line);

		if (more && line.len > 0 && search_text_is_lwsp(line.data[0])) {
			if (field.len == 0)
				goto out;
			mime_buffer_append_byte(&field, line.data[0] == '\t' ? ' ' : line.data[0]);
			mime_buffer_append(&field, line.data + 1, line.len - 1);
			continued = true;
			continue;
		}
		if (field.len > 0) {
			struct search_string_span all = { field.data, field.len };

			if (search_text_take_header(all, first_len, continued, type, head) < 0)
				goto out;
			mime_buffer_reset(&field);
		}
		if (!more)
			goto out; /* no empty line: Dovecot's handling is its own */
		if (line.len == 0)
			break;
		mime_buffer_append(&field, line.data, line.len);
		first_len = line.len;
		continued = false;
	}
	body_r->data = part.data + pos;
	body_r->len = part.len - pos;
	result = 0;
out:
	mime_buffer_free(&field);
	return result;
}

/* ---- the body ---- */

static int search_text_hex(unsigned char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Decodes clean quoted-printable: "=XX" in upper case and soft breaks,
   no white space at a line's end. */
static int search_text_decode_qp(struct search_string_span in, struct mime_buffer *out)
{
	struct search_string_span line;
	size_t pos = 0;

	while (search_string_next_line(in.data, in.len, &pos, &line)) {
		bool soft = line.len > 0 && line.data[line.len - 1] == '=';
		size_t len = soft ? line.len - 1 : line.len;

		if (!soft && len > 0 && search_text_is_lwsp(line.data[len - 1]))
			return -1; /* Dovecot drops white space at a line's end */
		for (size_t i = 0; i < len; i++) {
			if (line.data[i] != '=') {
				mime_buffer_append_byte(out, line.data[i]);
				continue;
			}
			if (i + 2 >= len)
				return -1;
			int high = search_text_hex(line.data[i + 1]), low = search_text_hex(line.data[i + 2]);
			if (high < 0 || low < 0)
				return -1;
			mime_buffer_append_byte(out, (unsigned char)(high * 16 + low));
			i += 2;
		}
		if (!soft && line.data + line.len < in.data + in.len)
			mime_buffer_append(out, "\r\n", 2);
	}
	return 0;
}

static int search_text_base64_value(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 :
	       c >= '0' && c <= '9' ? c - '0' + 52 : c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Decodes clean base64: the alphabet and line breaks, '=' only at its end. */
static int search_text_decode_base64(struct search_string_span in, struct mime_buffer *out)
{
	uint32_t bits = 0;
	unsigned int count = 0, pad = 0;

	for (size_t i = 0; i < in.len; i++) {
		unsigned char c = in.data[i];
		int v = search_text_base64_value(c);

		if (c == '\r' || c == '\n')
			continue;
		if (c == '=' && count % 4 >= 2) {
			pad++;
			v = 0;
		} else if (v < 0 || pad > 0) {
			return -1;
		}
		bits = bits << 6 | (uint32_t)v;
		if (++count % 4 == 0) {
			mime_buffer_append_byte(out, (unsigned char)(bits >> 16));
			if (pad < 2)
				mime_buffer_append_byte(out, (unsigned char)(bits >> 8));
			if (pad < 1)
				mime_buffer_append_byte(out, (unsigned char)bits);
			bits = 0;
		}
	}
	return count % 4 == 0 ? 0 : -1;
}

static bool search_text_is_plain_ascii(const struct mime_buffer *text)
{
	for (size_t i = 0; i < text->len; i++) {
		if (text->data[i] >= 0x80 || text->data[i] == 0x1b)
			return false;
	}
	return true;
}

/* Whether plain ASCII in charset reads as the same ASCII, whether iconv
   knows the charset or not (Dovecot reads one it does not know as
   UTF-8): every name but those of the families that don't, which are
   looked for in the name loosely. */
static bool search_text_keeps_ascii(const char *charset)
{
	static const char *const others[] = { "16", "32", "ucs", "utf-7", "utf7", "unicode", "hz", "ibm", "ebcdic",
					      "cp0", "cp1", "cp5", "cp8", "cp9", "2022", "cs" };

	for (const char *p = charset; *p != '\0'; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      strchr("-_.:", *p) != NULL))
			return false;
	}
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		if (strcasestr(charset, others[i]) != NULL)
			return false;
	}
	return true;
}

/* Appends the casemap form of decoded bytes in charset. */
static int search_text_convert(const struct mime_buffer *raw, const char *charset, struct mime_buffer *body)
{
	static const char *const utf8[] = { "", "utf-8", "utf8", "us-ascii", "ascii" };
	struct mime_buffer latin1 = { 0 };
	int result;

	for (size_t i = 0; i < sizeof(utf8) / sizeof(utf8[0]); i++) {
		if (strcasecmp(charset, utf8[i]) == 0)
			return casemap_append(raw->data, raw->len, body);
	}
	if (strcasecmp(charset, "iso-8859-1") == 0) {
		mime_charset_latin1_to_utf8(raw->data, raw->len, &latin1);
		result = casemap_append(latin1.data, latin1.len, body);
		mime_buffer_free(&latin1);
		return result;
	}
	if (search_text_is_plain_ascii(raw) && search_text_keeps_ascii(charset))
		return casemap_append(raw->data, raw->len, body);
	return -1;
}

/* Appends a leaf's body text, decoded. */
static int search_text_take_body(struct search_string_span data, const struct search_text_type *type,
				 struct mime_buffer *body)
{
	struct mime_buffer raw = { 0 };
	int result = 0;

	if (type->encoding[0] == '\0' || strcmp(type->encoding, "7bit") == 0 || strcmp(type->encoding, "8bit") == 0 ||
	    strcmp(type->encoding, "binary") == 0)
		mime_buffer_append(&raw, data.data, data.len);
	else if (strcmp(type->encoding, "quoted-printable") == 0)
		result = search_text_decode_qp(data, &raw);
	else if (strcmp(type->encoding, "base64") == 0)
		result = search_text_decode_base64(data, &raw);
	else
		goto out; /* Dovecot skips a body it can't decode */
	if (result == 0 && memchr(raw.data, '\0', raw.len) != NULL)
		result = -1;
	if (result == 0)
		result = search_text_convert(&raw, type->charset, body);
	mime_buffer_append_byte(body, '\n');
out:
	mime_buffer_free(&raw);
	return result;
}

static int search_text_part(struct search_string_span part, struct search_text_nest *nest, struct mime_buffer *head,
			    struct mime_buffer *body);

/* Whether line starts with "--" and boundary. */
static bool search_text_starts_boundary(struct search_string_span line, const char *boundary)
{
	size_t len = strlen(boundary);

	return line.len >= len + 2 && line.data[0] == '-' && line.data[1] == '-' &&
	       memcmp(line.data + 2, boundary, len) == 0;
}

/* Splits a multipart's body at its boundary lines and reads each part. */
static int search_text_multipart(struct search_string_span data, const char *boundary, struct search_text_nest *nest,
				 struct mime_buffer *head, struct mime_buffer *body)
{
	struct search_string_span line;
	size_t pos = 0, part_start = 0, line_start = 0;
	bool in_part = false;

	for (unsigned int i = 0; i < nest->depth; i++) {
		if (strncmp(nest->boundaries[i], boundary, strlen(nest->boundaries[i])) == 0 ||
		    strncmp(nest->boundaries[i], boundary, strlen(boundary)) == 0)
			return -1;
	}
	if (nest->depth == SEARCH_TEXT_DEPTH_MAX)
		return -1;
	nest->boundaries[nest->depth++] = boundary;
	nest->level++;
	for (line_start = pos; search_string_next_line(data.data, data.len, &pos, &line); line_start = pos) {
		if (!search_text_starts_boundary(line, boundary))
			continue;
		size_t rest = line.len - 2 - strlen(boundary);
		bool close = rest == 2 && line.data[line.len - 1] == '-' && line.data[line.len - 2] == '-';

		if (rest != 0 && !close)
			return -1;
		if (in_part) {
			size_t end = line_start;

			if (end > part_start && data.data[end - 1] == '\n')
				end--;
			if (end > part_start && data.data[end - 1] == '\r')
				end--;
			struct search_string_span child = { data.data + part_start, end - part_start };
			if (search_text_part(child, nest, head, body) < 0)
				return -1;
		}
		if (close) {
			nest->depth--;
			nest->level--;
			return 0;
		}
		in_part = true;
		part_start = pos;
	}
	return -1; /* no closing line */
}

/* Reads a message/rfc822 part's body: a message, one level down. */
static int search_text_message(struct search_string_span data, struct search_text_nest *nest, struct mime_buffer *head,
			       struct mime_buffer *body)
{
	bool digest = nest->digest;
	int result;

	nest->level++;
	nest->digest = false;
	result = search_text_part(data, nest, head, body);
	nest->digest = digest;
	nest->level--;
	return result;
}

/* Reads one part (a message, or a MIME part) into head and body. */
static int search_text_part(struct search_string_span part, struct search_text_nest *nest, struct mime_buffer *head,
			    struct mime_buffer *body)
{
	struct search_text_type type = { 0 };
	struct search_string_span data;
	bool plain_encoding;

	if (nest->level >= SEARCH_TEXT_DEPTH_MAX || search_text_read_header(part, &type, head, &data) < 0)
		return -1;
	mime_buffer_append_byte(head, '\n');
	plain_encoding = type.encoding[0] == '\0' || strcmp(type.encoding, "7bit") == 0 ||
			 strcmp(type.encoding, "8bit") == 0 || strcmp(type.encoding, "binary") == 0;
	if (strcmp(type.type, "multipart") == 0) {
		bool digest = nest->digest;
		int result;

		if (type.boundary[0] == '\0' || !plain_encoding)
			return -1;
		nest->digest = strcmp(type.subtype, "digest") == 0;
		result = search_text_multipart(data, type.boundary, nest, head, body);
		nest->digest = digest;
		return result;
	}
	if ((strcmp(type.type, "message") == 0 && strcmp(type.subtype, "rfc822") == 0) ||
	    (type.type[0] == '\0' && nest->digest))
		return plain_encoding ? search_text_message(data, nest, head, body) : -1;
	if (type.type[0] == '\0' || strcmp(type.type, "text") == 0 || strcmp(type.type, "message") == 0)
		return search_text_take_body(data, &type, body);
	return 0;
}

int search_text_extract(const unsigned char *message, size_t size, struct mime_buffer *head,
			struct mime_buffer *body)
{
	struct search_text_nest nest = { .depth = 0 };
	struct search_string_span all = { message, size };

	if (memchr(message, '\0', size) != NULL)
		return -1;
	for (const unsigned char *cr = memchr(message, '\r', size); cr != NULL;
	     cr = memchr(cr + 1, '\r', size - (size_t)(cr + 1 - message))) {
		if (cr + 1 == message + size || cr[1] != '\n')
			return -1; /* a bare CR: Dovecot's line reading of it is its own */
	}
	return search_text_part(all, &nest, head, body);
}

bool search_text_contains(const unsigned char *text, size_t len, const struct mime_buffer *needle)
{
	return needle->len > 0 && len >= needle->len && memmem(text, len, needle->data, needle->len) != NULL;
}
