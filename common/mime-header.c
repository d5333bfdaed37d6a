/* SPDX-License-Identifier: MIT */
/* mime-header: header values: unfolding, folding, quoting, parameters and RFC 2231. */
#include "config.h"
#include "mime-header.h"
#include "mime-charset.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int mime_header_is_space(unsigned char ch)
{
	return ch == ' ' || (ch >= '\t' && ch <= '\r') || (ch >= 0x1c && ch <= 0x1f);
}

/* A malloc'ed copy of text[0..len) without leading and trailing spaces. */
static char *strip_dup(const char *text, size_t len)
{
	while (len > 0 && mime_header_is_space((unsigned char)text[0])) {
		text++;
		len--;
	}
	while (len > 0 && mime_header_is_space((unsigned char)text[len - 1]))
		len--;
	return mime_xstrndup(text, len);
}

char *mime_header_unquote(const char *text)
{
	size_t len = strlen(text);

	if (len > 1 && text[0] == '"' && text[len - 1] == '"') {
		struct mime_buffer out = { 0 };
		mime_buffer_append(&out, "", 0);
		/* replace('\\\\', '\\') then replace('\\"', '"'), as two passes */
		struct mime_buffer first = { 0 };
		mime_buffer_append(&first, "", 0);
		for (size_t i = 1; i < len - 1; i++) {
			if (text[i] == '\\' && i + 1 < len - 1 && text[i + 1] == '\\')
				i++;
			mime_buffer_append_byte(&first, (unsigned char)text[i]);
		}
		for (size_t i = 0; i < first.len; i++) {
			if (first.data[i] == '\\' && i + 1 < first.len && first.data[i + 1] == '"')
				i++;
			mime_buffer_append_byte(&out, first.data[i]);
		}
		mime_buffer_free(&first);
		return mime_buffer_steal(&out, NULL);
	}
	if (len > 1 && text[0] == '<' && text[len - 1] == '>')
		return mime_xstrndup(text + 1, len - 2);
	return mime_xstrdup(text);
}

void mime_header_quote(const char *text, struct mime_buffer *out)
{
	for (; *text != '\0'; text++) {
		if (*text == '\\' || *text == '"')
			mime_buffer_append_byte(out, '\\');
		mime_buffer_append_byte(out, (unsigned char)*text);
	}
	if (out->data == NULL)
		mime_buffer_append(out, "", 0);
}

/* Counts non-overlapping occurrences of needle in text[0..len). */
static size_t count_in(const char *text, size_t len, const char *needle)
{
	size_t needle_len = strlen(needle), count = 0;

	for (size_t i = 0; i + needle_len <= len;) {
		if (memcmp(text + i, needle, needle_len) == 0) {
			count++;
			i += needle_len;
		} else {
			i++;
		}
	}
	return count;
}

struct rfc2231_section {
	char *name;
	long number;       /* -1 for name* without a number */
	char *value;
	size_t value_len;
	int encoded;
};

/* Matches ^(\w+)\*((\d+)\*?)?$ (ASCII). Returns the length of the base
   name, or 0 when name is not an RFC 2231 section. */
static size_t rfc2231_match(const char *name, long *number_r, int *encoded_r)
{
	size_t i = 0;

	while (isalnum((unsigned char)name[i]) || name[i] == '_')
		i++;
	if (i == 0 || name[i] != '*')
		return 0;
	size_t base = i++;
	*number_r = -1;
	*encoded_r = name[strlen(name) - 1] == '*';
	if (name[i] == '\0')
		return base;
	size_t digits = i;
	long number = 0;
	while (isdigit((unsigned char)name[i])) {
		if (number < 100000000)
			number = number * 10 + (name[i] - '0');
		i++;
	}
	if (i == digits)
		return 0;
	if (name[i] == '*')
		i++;
	if (name[i] != '\0')
		return 0;
	*number_r = number;
	return base;
}

static int hex_digit(unsigned char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = (unsigned char)tolower(ch);
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

static void percent_decode(const char *text, struct mime_buffer *out)
{
	for (size_t i = 0; text[i] != '\0'; i++) {
		if (text[i] == '%' && hex_digit((unsigned char)text[i + 1]) >= 0 &&
		    hex_digit((unsigned char)text[i + 2]) >= 0) {
			mime_buffer_append_byte(out, (unsigned char)(hex_digit((unsigned char)text[i + 1]) * 16 +
								  hex_digit((unsigned char)text[i + 2])));
			i += 2;
		} else {
			mime_buffer_append_byte(out, (unsigned char)text[i]);
		}
	}
}

static int section_compare(const void *a, const void *b)
{
	const struct rfc2231_section *x = a, *y = b;

	if (x->number != y->number)
		return x->number < y->number ? -1 : 1;
	int cmp = strcmp(x->value, y->value);
	if (cmp != 0)
		return cmp;
	return x->encoded - y->encoded;
}

static void param_list_add(struct mime_param_list *list, size_t *alloc, struct mime_param param)
{
	if (list->count == *alloc) {
		*alloc = *alloc == 0 ? 8 : *alloc * 2;
		list->items = mime_xrealloc(list->items, *alloc * sizeof(*list->items));
	}
	list->items[list->count++] = param;
}

void mime_header_params_parse(const char *value, struct mime_param_list *list_r)
{
	struct rfc2231_section *sections = NULL;
	size_t section_count = 0, section_alloc = 0, alloc = 0;
	const char *s = value;
	size_t s_len = strlen(value);
	int first = 1;

	list_r->items = NULL;
	list_r->count = 0;
	/* _parseparam: s = ';' + value; each round drops the ';' it starts at. */
	for (;;) {
		size_t end = 0;
		const char *hit = memchr(s, ';', s_len);
		end = hit == NULL ? s_len : (size_t)(hit - s);
		while (hit != NULL && end > 0 &&
		       (count_in(s, end, "\"") - count_in(s, end, "\\\"")) % 2 != 0) {
			hit = end + 1 <= s_len ? memchr(s + end + 1, ';', s_len - end - 1) : NULL;
			end = hit == NULL ? s_len : (size_t)(hit - s);
		}
		const char *eq = memchr(s, '=', end);
		struct mime_param param = { 0 };
		if (eq != NULL) {
			param.name = strip_dup(s, (size_t)(eq - s));
			for (char *p = param.name; *p != '\0'; p++)
				*p = (char)tolower((unsigned char)*p);
			param.value = strip_dup(eq + 1, end - (size_t)(eq - s) - 1);
		} else {
			param.name = strip_dup(s, end);
			param.value = mime_xstrdup("");
		}
		if (first) {
			/* params[0] stays as it is (unquoted later by get_params). */
			char *unquoted = mime_header_unquote(param.value);
			free(param.value);
			param.value = unquoted;
			param_list_add(list_r, &alloc, param);
			first = 0;
		} else {
			long number;
			int encoded;
			char *unquoted = mime_header_unquote(param.value);
			size_t base = rfc2231_match(param.name, &number, &encoded);
			free(param.value);
			if (base > 0) {
				if (section_count == section_alloc) {
					section_alloc = section_alloc == 0 ? 4 : section_alloc * 2;
					sections = mime_xrealloc(sections, section_alloc * sizeof(*sections));
				}
				struct rfc2231_section *section = &sections[section_count++];
				param.name[base] = '\0';
				section->name = param.name;
				section->number = number;
				section->value = unquoted;
				section->encoded = encoded;
			} else {
				param.value = unquoted;
				param_list_add(list_r, &alloc, param);
			}
		}
		if (end >= s_len)
			break;
		s += end + 1;
		s_len -= end + 1;
	}

	/* Join the sections of each name, names in order of first appearance. */
	for (size_t i = 0; i < section_count; i++) {
		if (sections[i].name == NULL)
			continue;
		struct rfc2231_section *group = mime_xmalloc(section_count * sizeof(*group));
		size_t n = 0;
		for (size_t j = i; j < section_count; j++) {
			if (sections[j].name != NULL && strcmp(sections[j].name, sections[i].name) == 0)
				group[n++] = sections[j];
		}
		qsort(group, n, sizeof(*group), section_compare);
		struct mime_buffer joined = { 0 };
		int extended = 0;
		for (size_t k = 0; k < n; k++) {
			if (group[k].encoded) {
				percent_decode(group[k].value, &joined);
				extended = 1;
			} else {
				mime_buffer_append_str(&joined, group[k].value);
			}
		}
		mime_buffer_append(&joined, "", 0);
		struct mime_param param = { 0 };
		param.name = mime_xstrdup(sections[i].name);
		param.rfc2231 = extended;
		char *text = (char *)joined.data;
		char *tick1 = extended ? memchr(text, '\'', joined.len) : NULL;
		char *tick2 = tick1 == NULL ? NULL : memchr(tick1 + 1, '\'', joined.len - (size_t)(tick1 + 1 - text));
		if (tick2 != NULL) {
			param.charset = mime_xstrndup(text, (size_t)(tick1 - text));
			param.language = mime_xstrndup(tick1 + 1, (size_t)(tick2 - tick1 - 1));
			param.value = mime_xstrndup(tick2 + 1, joined.len - (size_t)(tick2 + 1 - text));
			mime_buffer_free(&joined);
		} else {
			param.value = mime_buffer_steal(&joined, NULL);
		}
		param_list_add(list_r, &alloc, param);
		char *name = sections[i].name;
		for (size_t j = i; j < section_count; j++) {
			if (sections[j].name != NULL && j != i && strcmp(sections[j].name, name) == 0) {
				free(sections[j].name);
				free(sections[j].value);
				sections[j].name = NULL;
			}
		}
		free(sections[i].name);
		free(sections[i].value);
		sections[i].name = NULL;
		free(group);
	}
	free(sections);
}

void mime_header_params_free(struct mime_param_list *list)
{
	for (size_t i = 0; i < list->count; i++) {
		free(list->items[i].name);
		free(list->items[i].value);
		free(list->items[i].charset);
		free(list->items[i].language);
	}
	free(list->items);
	list->items = NULL;
	list->count = 0;
}

const struct mime_param *mime_header_params_find(const struct mime_param_list *list,
						 const char *name)
{
	for (size_t i = 1; i < list->count; i++) {
		if (strcasecmp(list->items[i].name, name) == 0)
			return &list->items[i];
	}
	return NULL;
}

char *mime_header_param_collapse(const struct mime_param *param)
{
	if (!param->rfc2231)
		return mime_header_unquote(param->value);
	struct mime_buffer out = { 0 };
	const char *charset = param->charset == NULL ? "us-ascii" : param->charset;
	if (mime_charset_to_utf8(charset, param->value, strlen(param->value), &out) ==
	    MIME_CHARSET_UNKNOWN) {
		mime_buffer_reset(&out);
		char *unquoted = mime_header_unquote(param->value);
		mime_charset_latin1_to_utf8(unquoted, strlen(unquoted), &out);
		free(unquoted);
	}
	mime_buffer_append(&out, "", 0);
	return mime_buffer_steal(&out, NULL);
}

static int has_tspecial(const char *value)
{
	return strpbrk(value, " ()<>@,;:\\\"/[]?=") != NULL;
}

void mime_header_param_format(struct mime_buffer *out, const char *name, const char *value,
			      const char *charset, const char *language, int requote)
{
	mime_buffer_append_str(out, name);
	if (value == NULL || value[0] == '\0')
		return;
	int ascii = 1;
	for (const char *p = value; *p != '\0'; p++)
		if ((unsigned char)*p >= 0x80)
			ascii = 0;
	if (charset != NULL || !ascii) {
		static const char hex[] = "0123456789ABCDEF";
		struct mime_buffer encoded = { 0 };
		const char *use_charset = charset != NULL ? charset : "utf-8";
		if (mime_charset_from_utf8(use_charset, value, strlen(value), &encoded) < 0) {
			mime_buffer_reset(&encoded);
			mime_buffer_append_str(&encoded, value);
			use_charset = "utf-8";
		}
		mime_buffer_printf(out, "*=%s'%s'", use_charset, language != NULL ? language : "");
		for (size_t i = 0; i < encoded.len; i++) {
			unsigned char ch = encoded.data[i];
			if (isalnum(ch) || ch == '_' || ch == '.' || ch == '-' || ch == '~') {
				mime_buffer_append_byte(out, ch);
			} else {
				mime_buffer_append_byte(out, '%');
				mime_buffer_append_byte(out, (unsigned char)hex[ch >> 4]);
				mime_buffer_append_byte(out, (unsigned char)hex[ch & 15]);
			}
		}
		mime_buffer_free(&encoded);
		return;
	}
	if (requote || has_tspecial(value)) {
		mime_buffer_append_str(out, "=\"");
		mime_header_quote(value, out);
		mime_buffer_append_byte(out, '"');
	} else {
		mime_buffer_append_byte(out, '=');
		mime_buffer_append_str(out, value);
	}
}

char *mime_header_unfold(const char *value, size_t len)
{
	char *out = mime_xmalloc(len + 1);
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		if (value[i] == '\r' || value[i] == '\n')
			continue;
		out[n++] = value[i];
	}
	out[n] = '\0';
	return out;
}

void mime_header_write(struct mime_buffer *out, const char *name, const char *value,
		       size_t max_line_len, const char *linesep)
{
	size_t value_len = strlen(value);
	int folded = strpbrk(value, "\r\n") != NULL;

	mime_buffer_append_str(out, name);
	mime_buffer_append_str(out, ": ");
	if (folded || max_line_len == 0 || strlen(name) + 2 + value_len <= max_line_len) {
		for (size_t i = 0; i < value_len; i++) {
			if (value[i] == '\r' && i + 1 < value_len && value[i + 1] == '\n')
				continue;
			if (value[i] == '\r' || value[i] == '\n')
				mime_buffer_append_str(out, linesep);
			else
				mime_buffer_append_byte(out, (unsigned char)value[i]);
		}
		mime_buffer_append_str(out, linesep);
		return;
	}
	/* Fold at white space: each line as long as fits, words never split. */
	size_t column = strlen(name) + 2, pos = 0;
	int line_start = 1;
	while (pos < value_len) {
		size_t word_end = pos;
		while (word_end < value_len && value[word_end] == ' ')
			word_end++;
		while (word_end < value_len && value[word_end] != ' ')
			word_end++;
		size_t word_len = word_end - pos;
		if (!line_start && column + word_len > max_line_len) {
			mime_buffer_append_str(out, linesep);
			while (pos < word_end && value[pos] == ' ')
				pos++;
			mime_buffer_append_byte(out, ' ');
			column = 1;
			word_len = word_end - pos;
		}
		mime_buffer_append(out, value + pos, word_len);
		column += word_len;
		pos = word_end;
		line_start = 0;
	}
	mime_buffer_append_str(out, linesep);
}
