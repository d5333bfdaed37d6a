/* SPDX-License-Identifier: MIT */
/* search-string: SEARCH's header string keys matched in a stored header block as Dovecot 2.3 matches them. */
#include "config.h"
#include "search-string.h"

#include "casemap.h"
#include "mime-charset.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

/* A header line's bytes, its line break left out. */
static bool search_string_is_lwsp(unsigned char c)
{
	return c == ' ' || c == '\t';
}

/* RFC 5322 atext, and every 8-bit byte, as Dovecot's rfc822-parser has it. */
static bool search_string_is_atext(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80 ||
	       (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* ---- RFC 2047, as Dovecot's message_header_decode ---- */

static int search_string_hex(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes Q text ('_' a space, "=XX" a byte). Returns -1 on a stray '='. */
static int search_string_decode_q(const unsigned char *text, size_t len, struct mime_buffer *out)
{
	for (size_t i = 0; i < len; i++) {
		if (text[i] == '_') {
			mime_buffer_append_byte(out, ' ');
		} else if (text[i] != '=') {
			mime_buffer_append_byte(out, text[i]);
		} else {
			if (i + 2 >= len || search_string_hex(text[i + 1]) < 0 || search_string_hex(text[i + 2]) < 0)
				return -1;
			mime_buffer_append_byte(out, (unsigned char)(search_string_hex(text[i + 1]) * 16 +
								     search_string_hex(text[i + 2])));
			i += 2;
		}
	}
	return 0;
}

static int search_string_base64_value(unsigned char c)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const char *found = c == '\0' ? NULL : strchr(alphabet, c);

	return found == NULL ? -1 : (int)(found - alphabet);
}

/* Decodes clean base64 (whole quads, '=' only as padding). Returns -1
   otherwise: Dovecot then shows what it got so far, which is its own. */
static int search_string_decode_b(const unsigned char *text, size_t len, struct mime_buffer *out)
{
	if (len % 4 != 0)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		int v[4];
		size_t pad = 0;

		for (size_t j = 0; j < 4; j++) {
			if (text[i + j] == '=' && i + 4 == len && j >= 2) {
				v[j] = 0;
				pad++;
			} else if (pad > 0 || (v[j] = search_string_base64_value(text[i + j])) < 0) {
				return -1;
			}
		}
		uint32_t bits = (uint32_t)(v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3]);
		mime_buffer_append_byte(out, (unsigned char)(bits >> 16));
		if (pad < 2)
			mime_buffer_append_byte(out, (unsigned char)(bits >> 8));
		if (pad < 1)
			mime_buffer_append_byte(out, (unsigned char)bits);
	}
	return 0;
}

/* Whether Dovecot passes a charset's bytes to its normalizer as UTF-8
   (charset_is_utf8). */
static bool search_string_charset_is_utf8(const char *charset, size_t len)
{
	static const char *const names[] = { "UTF-8", "UTF8", "US-ASCII", "ASCII" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strlen(names[i]) == len && strncasecmp(charset, names[i], len) == 0)
			return true;
	}
	return false;
}

/* Decodes the encoded word whose "=?" is at text; *end_r is past its
   "?=". Appends its casemap form. Returns -1 for anything but a
   well-formed word with clean text in UTF-8, US-ASCII or ISO-8859-1. */
static int search_string_decode_word(const unsigned char *text, size_t len, size_t *end_r, struct mime_buffer *out)
{
	size_t marks[3], found = 0, i;
	struct mime_buffer raw = { 0 }, latin1 = { 0 };
	int result = -1;

	for (i = 2; i < len && found < 3; i++) {
		if (text[i] == '?')
			marks[found++] = i;
	}
	if (found < 3 || i >= len || text[i] != '=' || marks[1] != marks[0] + 2)
		return -1;
	const char *charset = (const char *)text + 2;
	size_t charset_len = marks[0] - 2;
	unsigned char encoding = text[marks[0] + 1];
	const unsigned char *data = text + marks[1] + 1;
	size_t data_len = marks[2] - marks[1] - 1;

	if ((encoding == 'Q' || encoding == 'q' ? search_string_decode_q(data, data_len, &raw) :
	     encoding == 'B' || encoding == 'b' ? search_string_decode_b(data, data_len, &raw) : -1) < 0)
		goto out;
	if (search_string_charset_is_utf8(charset, charset_len)) {
		result = casemap_append(raw.data, raw.len, out);
	} else if (charset_len == 10 && strncasecmp(charset, "ISO-8859-1", 10) == 0) {
		mime_charset_latin1_to_utf8(raw.data, raw.len, &latin1);
		result = casemap_append(latin1.data, latin1.len, out);
	}
	*end_r = i + 1;
out:
	mime_buffer_free(&raw);
	mime_buffer_free(&latin1);
	return result;
}

static bool search_string_only_lwsp(const unsigned char *text, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (!search_string_is_lwsp(text[i]) && text[i] != '\r' && text[i] != '\n')
			return false;
	}
	return true;
}

int search_string_decode(const unsigned char *text, size_t len, struct mime_buffer *out)
{
	size_t start = 0, pos = 0;

	while (pos + 1 < len) {
		size_t end;

		if (text[pos] != '=' || text[pos + 1] != '?') {
			pos++;
			continue;
		}
		if (pos != start && !search_string_only_lwsp(text + start, pos - start) &&
		    casemap_append(text + start, pos - start, out) < 0)
			return -1;
		if (search_string_decode_word(text + pos, len - pos, &end, out) < 0)
			return -1;
		pos += end;
		start = pos;
	}
	if (start != len && casemap_append(text + start, len - start, out) < 0)
		return -1;
	return 0;
}

/* ---- addresses, as Dovecot's message_address_parse and _write ---- */

struct search_string_reader {
	const unsigned char *p, *end;
};

static void search_string_skip_lwsp(struct search_string_reader *reader)
{
	while (reader->p < reader->end && search_string_is_lwsp(*reader->p))
		reader->p++;
}

/* Reads a dot-atom ("a.b", no empty part) into out. */
static int search_string_read_dot_atom(struct search_string_reader *reader, struct mime_buffer *out)
{
	const unsigned char *start = reader->p;

	for (;;) {
		const unsigned char *part = reader->p;

		while (reader->p < reader->end && search_string_is_atext(*reader->p))
			reader->p++;
		if (reader->p == part)
			return -1;
		if (reader->p == reader->end || *reader->p != '.')
			break;
		reader->p++;
	}
	mime_buffer_append(out, start, (size_t)(reader->p - start));
	return 0;
}

/* Reads a quoted string's content, unescaped, into out. */
static int search_string_read_quoted(struct search_string_reader *reader, struct mime_buffer *out)
{
	for (reader->p++; reader->p < reader->end; reader->p++) {
		unsigned char c = *reader->p;

		if (c == '"') {
			reader->p++;
			return 0;
		}
		if (c == '\r' || c == '\n')
			return -1;
		if (c == '\\') {
			if (++reader->p == reader->end)
				return -1;
			c = *reader->p;
		}
		mime_buffer_append_byte(out, c);
	}
	return -1;
}

/* Appends text as Dovecot's str_append_maybe_escape with escape_dot:
   quoted when it holds anything but atext, with \ before " \ and '. */
static void search_string_write_name(const char *text, size_t len, struct mime_buffer *out)
{
	bool plain = true;

	for (size_t i = 0; i < len; i++)
		plain = plain && search_string_is_atext((unsigned char)text[i]);
	if (plain || memmem(text, len, "=?", 2) != NULL) {
		mime_buffer_append(out, text, len);
		return;
	}
	mime_buffer_append_byte(out, '"');
	for (size_t i = 0; i < len; i++) {
		if (text[i] == '"' || text[i] == '\\' || text[i] == '\'')
			mime_buffer_append_byte(out, '\\');
		mime_buffer_append_byte(out, (unsigned char)text[i]);
	}
	mime_buffer_append_byte(out, '"');
}

/* Reads one `[phrase] <local@domain>` or `local@domain` and appends it
   as Dovecot writes it. Returns -1 for any other form. */
static int search_string_read_address(struct search_string_reader *reader, struct mime_buffer *out)
{
	struct mime_buffer name = { 0 }, local = { 0 };
	int result = -1;

	while (reader->p < reader->end && *reader->p != '<') {
		const unsigned char *word = reader->p;

		if (name.len > 0)
			mime_buffer_append_byte(&name, ' ');
		if (*reader->p == '"' ? search_string_read_quoted(reader, &name) < 0 :
		    *reader->p == '.' || search_string_read_dot_atom(reader, &name) < 0)
			goto out;
		if (*word != '"' && name.len == (size_t)(reader->p - word) && reader->p < reader->end &&
		    *reader->p == '@') {
			/* an addr-spec: its local part was read as the first word */
			mime_buffer_append(&local, name.data, name.len);
			mime_buffer_reset(&name);
			reader->p++;
			mime_buffer_append_byte(out, '<');
			mime_buffer_append(out, local.data, local.len);
			mime_buffer_append_byte(out, '@');
			result = search_string_read_dot_atom(reader, out);
			mime_buffer_append_byte(out, '>');
			goto out;
		}
		search_string_skip_lwsp(reader);
	}
	if (reader->p == reader->end || name.len == 0)
		goto out; /* "<addr>" alone: Dovecot's handling is not checked */
	search_string_write_name((const char *)name.data, name.len, out);
	mime_buffer_append(out, " <", 2);
	reader->p++;
	if (search_string_read_dot_atom(reader, out) < 0 || reader->p == reader->end || *reader->p != '@')
		goto out;
	mime_buffer_append_byte(out, '@');
	reader->p++;
	if (search_string_read_dot_atom(reader, out) < 0 || reader->p == reader->end || *reader->p != '>')
		goto out;
	reader->p++;
	mime_buffer_append_byte(out, '>');
	result = 0;
out:
	mime_buffer_free(&name);
	mime_buffer_free(&local);
	return result;
}

/* Rewrites an address list as Dovecot does before it searches one.
   Returns -1 when unsure. */
static int search_string_rewrite_addresses(const unsigned char *text, size_t len, struct mime_buffer *out)
{
	struct search_string_reader reader = { text, text + len };

	search_string_skip_lwsp(&reader);
	while (reader.p < reader.end) {
		if (out->len > 0)
			mime_buffer_append(out, ", ", 2);
		if (search_string_read_address(&reader, out) < 0)
			return -1;
		search_string_skip_lwsp(&reader);
		if (reader.p == reader.end)
			break;
		if (*reader.p != ',')
			return -1;
		reader.p++;
		search_string_skip_lwsp(&reader);
		if (reader.p == reader.end)
			return -1; /* a trailing comma */
	}
	return 0;
}

/* ---- fields ---- */

/* Appends text with each run of spaces and tabs made one space, a
   leading run dropped (Dovecot's compress_lwsp). */
static void search_string_compress_lwsp(const unsigned char *text, size_t len, struct mime_buffer *out)
{
	bool previous_lwsp = true;

	for (size_t i = 0; i < len; i++) {
		if (search_string_is_lwsp(text[i])) {
			if (!previous_lwsp)
				mime_buffer_append_byte(out, ' ');
			previous_lwsp = true;
		} else {
			previous_lwsp = false;
			mime_buffer_append_byte(out, text[i]);
		}
	}
}

/* Whether one field's value (unfolded) matches needle. */
static enum search_string_result search_string_match_value(const unsigned char *value, size_t len,
							   enum search_string_kind kind,
							   const struct mime_buffer *needle)
{
	struct mime_buffer rewritten = { 0 }, text = { 0 };
	enum search_string_result result = SEARCH_STRING_UNSURE;

	if (kind == SEARCH_STRING_ADDRESS) {
		if (search_string_rewrite_addresses(value, len, &rewritten) < 0)
			goto out;
	} else if (kind == SEARCH_STRING_SUBJECT) {
		search_string_compress_lwsp(value, len, &rewritten);
	} else if (len > 0) {
		mime_buffer_append(&rewritten, value, len);
	}
	if (search_string_decode(rewritten.data, rewritten.len, &text) < 0)
		goto out;
	result = text.len >= needle->len && memmem(text.data, text.len, needle->data, needle->len) != NULL ?
			 SEARCH_STRING_YES : SEARCH_STRING_NO;
out:
	mime_buffer_free(&rewritten);
	mime_buffer_free(&text);
	return result;
}

bool search_string_next_line(const unsigned char *block, size_t size, size_t *pos, struct search_string_span *line_r)
{
	const unsigned char *start = block + *pos, *newline;
	size_t left = size - *pos;

	if (left == 0)
		return false;
	newline = memchr(start, '\n', left);
	line_r->data = start;
	line_r->len = newline == NULL ? left : (size_t)(newline - start);
	*pos += line_r->len + (newline != NULL);
	if (line_r->len > 0 && start[line_r->len - 1] == '\r')
		line_r->len--;
	return true;
}

int search_string_prepare_key(const char *key, size_t len, struct mime_buffer *needle)
{
	mime_buffer_reset(needle);
	if (memchr(key, '\r', len) != NULL || memchr(key, '\n', len) != NULL)
		return -1;
	return casemap_append(key, len, needle);
}

/* Called with each occurrence's value (unfolded, as Dovecot reads it);
   returns YES to stop. */
typedef enum search_string_result search_string_value_fn(const unsigned char *value, size_t len, void *context);

/* Calls fn with the value of each occurrence of field in the header
   block, until one says YES. Returns YES when one did, else UNSURE when
   one did or the block is one this module can't read as Dovecot does,
   else NO. */
static enum search_string_result search_string_each_value(const unsigned char *block, size_t size, const char *field,
							  search_string_value_fn *fn, void *context)
{
	struct mime_buffer value = { 0 };
	struct search_string_span line;
	enum search_string_result result = SEARCH_STRING_NO, one;
	size_t pos = 0, field_len = strlen(field);
	bool in_field = false, any_field = false;

	if (memchr(block, '\0', size) != NULL)
		return SEARCH_STRING_UNSURE;
	for (;;) {
		bool more = search_string_next_line(block, size, &pos, &line);

		if (more && line.len > SEARCH_STRING_LINE_MAX) {
			result = SEARCH_STRING_UNSURE;
			break;
		}
		if (more && line.len > 0 && search_string_is_lwsp(line.data[0])) {
			if (!any_field) {
				result = SEARCH_STRING_UNSURE;
				break;
			}
			if (in_field) { /* a continuation: no line break, a tab as a space */
				mime_buffer_append_byte(&value, line.data[0] == '\t' ? ' ' : line.data[0]);
				mime_buffer_append(&value, line.data + 1, line.len - 1);
			}
			continue;
		}
		if (in_field) {
			one = fn(value.data, value.len, context);
			if (one == SEARCH_STRING_YES || (one == SEARCH_STRING_UNSURE && result == SEARCH_STRING_NO))
				result = one;
			if (one == SEARCH_STRING_YES)
				break;
			in_field = false;
		}
		if (!more || line.len == 0)
			break;
		const unsigned char *colon = memchr(line.data, ':', line.len);
		if (colon == NULL) {
			result = SEARCH_STRING_UNSURE;
			break;
		}
		size_t name_len = (size_t)(colon - line.data);
		while (name_len > 0 && search_string_is_lwsp(line.data[name_len - 1]))
			name_len--;
		any_field = true;
		if (name_len == field_len && strncasecmp((const char *)line.data, field, field_len) == 0) {
			const unsigned char *start = colon + 1, *end = line.data + line.len;

			if (start < end && search_string_is_lwsp(*start))
				start++;
			mime_buffer_reset(&value);
			if (end > start)
				mime_buffer_append(&value, start, (size_t)(end - start));
			in_field = true;
		}
	}
	mime_buffer_free(&value);
	return result;
}

struct search_string_match {
	enum search_string_kind kind;
	const struct mime_buffer *needle;
};

static enum search_string_result search_string_match_one(const unsigned char *value, size_t len, void *context)
{
	const struct search_string_match *match = context;

	if (match->needle->len == 0)
		return SEARCH_STRING_YES;
	return search_string_match_value(value, len, match->kind, match->needle);
}

enum search_string_result search_string_match_header(const unsigned char *block, size_t size, const char *field,
						     enum search_string_kind kind, const struct mime_buffer *needle)
{
	struct search_string_match match = { kind, needle };

	return search_string_each_value(block, size, field, search_string_match_one, &match);
}

/* ---- the Date field ---- */

struct search_string_date {
	unsigned int count;
	int year, month, day;
	bool parsed;
};

/* Reads n digits at *p. Returns -1 unless there are exactly n. */
static int search_string_digits(const unsigned char **p, const unsigned char *end, unsigned int n)
{
	int number = 0;

	for (unsigned int i = 0; i < n; i++, (*p)++) {
		if (*p >= end || **p < '0' || **p > '9')
			return -1;
		number = number * 10 + (**p - '0');
	}
	return *p < end && **p >= '0' && **p <= '9' ? -1 : number;
}

/* Skips one or more spaces. Returns false when there is none. */
static bool search_string_spaces(const unsigned char **p, const unsigned char *end)
{
	const unsigned char *start = *p;

	while (*p < end && **p == ' ')
		(*p)++;
	return *p > start;
}

/* The index of the three letters at p (as written: "Jan", not "JAN") in
   names, three letters each, or -1. */
static int search_string_name_index(const char *names, const unsigned char *p)
{
	for (int i = 0; names[i * 3] != '\0'; i++) {
		if (memcmp(names + i * 3, p, 3) == 0)
			return i;
	}
	return -1;
}

/* Parses "[Ddd, ]D Mmm YYYY HH:MM[:SS] +HHMM" (nothing else, no
   comment), the one form read here: Dovecot's message_date_parse takes
   more, and what it makes of the rest is its own. */
static bool search_string_parse_date(const unsigned char *p, const unsigned char *end,
				     struct search_string_date *date)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	static const char days[] = "MonTueWedThuFriSatSun";
	int hour, minute, second = 0, zone;

	if (end - p >= 5 && p[3] == ',' && search_string_name_index(days, p) >= 0) {
		p += 4;
		if (!search_string_spaces(&p, end))
			return false;
	}
	date->day = search_string_digits(&p, end, end - p > 1 && p[1] >= '0' && p[1] <= '9' ? 2 : 1);
	if (date->day < 1 || !search_string_spaces(&p, end) || end - p < 3)
		return false;
	date->month = search_string_name_index(months, p) + 1;
	if (date->month == 0)
		return false;
	p += 3;
	if (!search_string_spaces(&p, end) || (date->year = search_string_digits(&p, end, 4)) < 0 ||
	    !search_string_spaces(&p, end) || (hour = search_string_digits(&p, end, 2)) < 0 || p >= end ||
	    *p++ != ':' || (minute = search_string_digits(&p, end, 2)) < 0)
		return false;
	if (p < end && *p == ':' && (++p, second = search_string_digits(&p, end, 2)) < 0)
		return false;
	if (!search_string_spaces(&p, end) || p >= end || (*p != '+' && *p != '-'))
		return false;
	p++;
	zone = search_string_digits(&p, end, 4);
	while (p < end && *p == ' ')
		p++;
	return p == end && hour <= 23 && minute <= 59 && second <= 59 && zone >= 0 && zone % 100 <= 59 &&
	       zone / 100 <= 23;
}

static enum search_string_result search_string_take_date(const unsigned char *value, size_t len, void *context)
{
	struct search_string_date *date = context;

	if (date->count++ == 0)
		date->parsed = search_string_parse_date(value, value + len, date);
	return SEARCH_STRING_NO;
}

int search_string_sent_date(const unsigned char *block, size_t size, int *year_r, int *month_r, int *day_r)
{
	struct search_string_date date = { 0 };

	if (search_string_each_value(block, size, "Date", search_string_take_date, &date) != SEARCH_STRING_NO ||
	    date.count != 1 || !date.parsed)
		return -1;
	*year_r = date.year;
	*month_r = date.month;
	*day_r = date.day;
	return 0;
}
