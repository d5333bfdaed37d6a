/* SPDX-License-Identifier: MIT */
/* mime-imap: IMAP views of a parsed message: ENVELOPE, BODYSTRUCTURE, BODY[section], BINARY. */
#include "config.h"
#include "mime-imap.h"
#include "mime-arena.h"
#include "mime-codec.h"
#include "mime-scan.h"

#include <ctype.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* How a byte can go into an IMAP string: as it is, after a backslash in
   a quoted string, or only in a literal. */
enum string_byte {
	STRING_BYTE_PLAIN,
	STRING_BYTE_ESCAPED,
	STRING_BYTE_LITERAL,
};

#define LITERAL_8BIT_ROW(base) \
	[base + 0x0] = STRING_BYTE_LITERAL, [base + 0x1] = STRING_BYTE_LITERAL, \
	[base + 0x2] = STRING_BYTE_LITERAL, [base + 0x3] = STRING_BYTE_LITERAL, \
	[base + 0x4] = STRING_BYTE_LITERAL, [base + 0x5] = STRING_BYTE_LITERAL, \
	[base + 0x6] = STRING_BYTE_LITERAL, [base + 0x7] = STRING_BYTE_LITERAL, \
	[base + 0x8] = STRING_BYTE_LITERAL, [base + 0x9] = STRING_BYTE_LITERAL, \
	[base + 0xa] = STRING_BYTE_LITERAL, [base + 0xb] = STRING_BYTE_LITERAL, \
	[base + 0xc] = STRING_BYTE_LITERAL, [base + 0xd] = STRING_BYTE_LITERAL, \
	[base + 0xe] = STRING_BYTE_LITERAL, [base + 0xf] = STRING_BYTE_LITERAL

static const unsigned char string_byte_kinds[256] = {
	['\0'] = STRING_BYTE_LITERAL, ['\r'] = STRING_BYTE_LITERAL, ['\n'] = STRING_BYTE_LITERAL,
	['"'] = STRING_BYTE_ESCAPED, ['\\'] = STRING_BYTE_ESCAPED,
	LITERAL_8BIT_ROW(0x80), LITERAL_8BIT_ROW(0x90), LITERAL_8BIT_ROW(0xa0),
	LITERAL_8BIT_ROW(0xb0), LITERAL_8BIT_ROW(0xc0), LITERAL_8BIT_ROW(0xd0),
	LITERAL_8BIT_ROW(0xe0), LITERAL_8BIT_ROW(0xf0),
};

void mime_imap_append_string(struct mime_buffer *out, const char *text, size_t len)
{
	if (text == NULL) {
		mime_buffer_append_str(out, "NIL");
		return;
	}
	size_t escapes = 0;
	for (size_t i = 0; i < len; i++) {
		enum string_byte kind = string_byte_kinds[(unsigned char)text[i]];
		if (kind == STRING_BYTE_PLAIN)
			continue;
		if (kind == STRING_BYTE_LITERAL) {
			mime_buffer_append_byte(out, '{');
			mime_buffer_append_uint(out, len);
			mime_buffer_append(out, "}\r\n", 3);
			mime_buffer_append(out, text, len);
			return;
		}
		escapes++;
	}
	mime_buffer_append_byte(out, '"');
	if (escapes == 0) {
		mime_buffer_append(out, text, len);
	} else {
		size_t run = 0;
		for (size_t i = 0; i < len; i++) {
			if (text[i] == '"' || text[i] == '\\') {
				mime_buffer_append(out, text + run, i - run);
				mime_buffer_append_byte(out, '\\');
				run = i;
			}
		}
		mime_buffer_append(out, text + run, len - run);
	}
	mime_buffer_append_byte(out, '"');
}

static void append_cstring(struct mime_buffer *out, const char *text)
{
	mime_imap_append_string(out, text, text == NULL ? 0 : strlen(text));
}

/* A list written straight into out: "(" items ")", or NIL when no item
   came. list_open remembers where it began. */
static size_t list_open(struct mime_buffer *out)
{
	size_t mark = out->len;
	mime_buffer_append_byte(out, '(');
	return mark;
}

static void list_close(struct mime_buffer *out, size_t mark)
{
	if (out->len == mark + 1) {
		mime_buffer_truncate(out, mark);
		mime_buffer_append_str(out, "NIL");
	} else {
		mime_buffer_append_byte(out, ')');
	}
}

/* --- RFC 5322 addresses --- */

enum token_kind {
	TOKEN_ATOM,
	TOKEN_QUOTED,
	TOKEN_COMMENT,
	TOKEN_DOMAIN_LITERAL,
	TOKEN_SPECIAL,
};

struct token {
	enum token_kind kind;
	char *text;
	size_t text_offset;          /* in the list's text, while it grows */
	int space_before;
};

struct token_list {
	struct token *items;
	size_t count, alloc;
	struct mime_buffer text;     /* every token's text, each NUL-terminated */
};

/* What writing one view needs besides its output, made once and reused
   throughout it: an arena for the strings that live until the view is
   written, the address tokens, and buffers for values being built. */
struct view_scratch {
	struct mime_arena *arena;    /* made on first use */
	struct token_list tokens;
	struct mime_buffer value;    /* an address header or parameter value */
	struct mime_buffer join;     /* join_tokens' words */
};

static struct mime_arena *scratch_arena(struct view_scratch *scratch)
{
	if (scratch->arena == NULL)
		scratch->arena = mime_arena_new();
	return scratch->arena;
}

static void scratch_free(struct view_scratch *scratch)
{
	mime_arena_free(&scratch->arena);
	free(scratch->tokens.items);
	mime_buffer_free(&scratch->tokens.text);
	mime_buffer_free(&scratch->value);
	mime_buffer_free(&scratch->join);
}

static int is_blank(int ch)
{
	return ch == ' ' || ch == '\t';
}

static int is_c_space(int ch)
{
	return isspace(ch);
}

/* value[0..len) unfolded (its CRs and LFs dropped, RFC 5322 2.2.3) with
   the bytes trim accepts cut from both ends; in the scratch arena. */
static char *unfold_trim(struct view_scratch *scratch, const char *value, size_t len,
			 int (*trim)(int))
{
	while (len > 0 && (value[len - 1] == '\r' || value[len - 1] == '\n' ||
			   trim((unsigned char)value[len - 1])))
		len--;
	while (len > 0 && (*value == '\r' || *value == '\n' || trim((unsigned char)*value))) {
		value++;
		len--;
	}
	char *text = mime_arena_alloc(scratch_arena(scratch), len + 1);
	size_t n = 0;
	for (size_t i = 0; i < len; i++)
		if (value[i] != '\r' && value[i] != '\n')
			text[n++] = value[i];
	text[n] = '\0';
	return text;
}

/* A header value unfolded and trimmed, or NULL when absent or empty. */
static char *value_text(const char *value, struct view_scratch *scratch)
{
	if (value == NULL)
		return NULL;
	char *text = unfold_trim(scratch, value, strlen(value), is_blank);
	return text[0] == '\0' ? NULL : text;
}

static char *header_text(struct mime_message *message, const char *name,
			 struct view_scratch *scratch)
{
	return value_text(mime_message_get(message, name, NULL), scratch);
}

/* Appends text[0..len) without its CRs and LFs. */
static void append_unfolded(struct mime_buffer *out, const char *text, size_t len)
{
	size_t run = 0;
	for (size_t i = 0; i < len; i++) {
		if (text[i] == '\r' || text[i] == '\n') {
			mime_buffer_append(out, text + run, i - run);
			run = i + 1;
		}
	}
	mime_buffer_append(out, text + run, len - run);
}

/* All fields of an address header joined as one list (Dovecot merges
   repeated To or Cc fields too); NULL when absent or empty. */
static const char *address_header_text(struct mime_message *message, const char *name,
				       struct view_scratch *scratch)
{
	struct mime_buffer *joined = &scratch->value;
	const char *value;

	mime_buffer_reset(joined);
	for (size_t i = 0; (value = mime_message_get_nth(message, name, i)) != NULL; i++) {
		size_t len = strlen(value), start = 0;
		while (start < len && (is_blank((unsigned char)value[start]) ||
				       value[start] == '\r' || value[start] == '\n'))
			start++;
		if (start == len)
			continue;
		if (joined->len > 0)
			mime_buffer_append_str(joined, ", ");
		append_unfolded(joined, value + start, len - start);
	}
	if (joined->len == 0)
		return NULL;
	return mime_arena_strndup(scratch_arena(scratch), (const char *)joined->data, joined->len);
}

/* Ends the token whose text began at start in list->text. */
static void token_add(struct token_list *list, enum token_kind kind, size_t start,
		      int space_before)
{
	if (list->count == list->alloc) {
		list->alloc = list->alloc == 0 ? 16 : list->alloc * 2;
		list->items = mime_xrealloc(list->items, list->alloc * sizeof(*list->items));
	}
	mime_buffer_append_byte(&list->text, '\0');
	list->items[list->count].kind = kind;
	list->items[list->count].text_offset = start;
	list->items[list->count].space_before = space_before;
	list->count++;
}

/* Bytes that end an atom: white space, specials and the openers. */
static int ends_atom(unsigned char ch)
{
	switch (ch) {
	case ' ': case '\t': case '\r': case '\n': case '"': case '(': case '<': case '>':
	case '@': case ',': case ';': case ':': case '.': case '[':
		return 1;
	default:
		return 0;
	}
}

/* Splits value into list (emptied first). */
static void tokenize(const char *value, struct token_list *list)
{
	size_t i = 0, len = strlen(value);
	int space = 0;
	struct mime_buffer *text = &list->text;

	list->count = 0;
	mime_buffer_reset(text);
	while (i < len) {
		unsigned char ch = (unsigned char)value[i];
		size_t start = text->len;
		if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n') {
			space = 1;
			i++;
			continue;
		}
		if (ch == '"') {
			for (i++; i < len && value[i] != '"'; i++) {
				if (value[i] == '\\' && i + 1 < len)
					i++;
				if (value[i] != '\r' && value[i] != '\n')
					mime_buffer_append_byte(text, (unsigned char)value[i]);
			}
			i++;
			token_add(list, TOKEN_QUOTED, start, space);
		} else if (ch == '(') {
			int depth = 0;
			for (; i < len; i++) {
				if (value[i] == '\\' && i + 1 < len) {
					mime_buffer_append_byte(text, (unsigned char)value[++i]);
					continue;
				}
				if (value[i] == '(' && depth++ == 0)
					continue;
				if (value[i] == ')' && --depth == 0)
					break;
				mime_buffer_append_byte(text, (unsigned char)value[i]);
			}
			i++;
			token_add(list, TOKEN_COMMENT, start, space);
		} else if (ch == '[') {
			size_t from = i;
			while (i < len && value[i] != ']')
				i++;
			mime_buffer_append(text, value + from, i - from);
			if (i < len)
				mime_buffer_append_byte(text, ']');
			i++;
			token_add(list, TOKEN_DOMAIN_LITERAL, start, space);
		} else if (ch != '(' && ch != '[' && ch != '"' && ends_atom(ch)) {
			mime_buffer_append_byte(text, ch);
			i++;
			token_add(list, TOKEN_SPECIAL, start, space);
		} else {
			size_t from = i;
			while (i < len && !ends_atom((unsigned char)value[i]))
				i++;
			mime_buffer_append(text, value + from, i - from);
			token_add(list, TOKEN_ATOM, start, space);
		}
		space = 0;
	}
	for (size_t k = 0; k < list->count; k++)
		list->items[k].text = (char *)text->data + list->items[k].text_offset;
}

static int is_special(const struct token *token, char ch)
{
	return token->kind == TOKEN_SPECIAL && token->text[0] == ch;
}

/* Joins the words of tokens[from, to) (a phrase: words with single spaces,
   a local part or domain: dots without spaces); in the scratch arena. */
static char *join_tokens(struct view_scratch *scratch, size_t from, size_t to, int phrase)
{
	const struct token_list *list = &scratch->tokens;
	struct mime_buffer *out = &scratch->join;

	mime_buffer_reset(out);
	for (size_t i = from; i < to; i++) {
		const struct token *token = &list->items[i];
		if (token->kind == TOKEN_COMMENT)
			continue;
		if (phrase && out->len > 0 && (token->space_before || token->kind == TOKEN_QUOTED ||
					       (i > from && list->items[i - 1].kind == TOKEN_QUOTED)))
			mime_buffer_append_byte(out, ' ');
		mime_buffer_append_str(out, token->text);
	}
	return mime_arena_strndup(scratch_arena(scratch), out->len > 0 ? (const char *)out->data : "",
				  out->len);
}

static void append_address(struct mime_buffer *out, const char *name, const char *route,
			   const char *mailbox, const char *host)
{
	mime_buffer_append_byte(out, '(');
	append_cstring(out, name);
	mime_buffer_append_byte(out, ' ');
	append_cstring(out, route);
	mime_buffer_append_byte(out, ' ');
	append_cstring(out, mailbox);
	mime_buffer_append_byte(out, ' ');
	append_cstring(out, host);
	mime_buffer_append_byte(out, ')');
}

/* One mailbox in the scratch tokens [from, to). */
static void append_mailbox(struct mime_buffer *out, struct view_scratch *scratch, size_t from,
			   size_t to)
{
	const struct token_list *list = &scratch->tokens;
	size_t angle = to, close = to, at = to;
	bool angled;
	const char *name = NULL, *route = NULL, *mailbox, *host;

	for (size_t i = from; i < to; i++)
		if (is_special(&list->items[i], '<')) {
			angle = i;
			break;
		}
	angled = angle < to;
	if (angled) {
		for (close = angle + 1; close < to && !is_special(&list->items[close], '>'); close++)
			;
		if (angle > from)
			name = join_tokens(scratch, from, angle, 1);
		size_t spec = angle + 1;
		/* obs-route: @a,@b: */
		for (size_t i = angle + 1; i < close; i++)
			if (is_special(&list->items[i], ':')) {
				route = join_tokens(scratch, angle + 1, i, 0);
				spec = i + 1;
				break;
			}
		from = spec;
		to = close;
	} else {
		/* a bare addr-spec: a comment stands in for the name (the last wins) */
		for (size_t i = from; i < to; i++)
			if (list->items[i].kind == TOKEN_COMMENT)
				name = list->items[i].text;
	}
	at = to; /* within <...> when there is one, so '>' never joins the mailbox */
	for (size_t i = from; i < to; i++)
		if (is_special(&list->items[i], '@')) {
			at = i;
			break;
		}
	mailbox = join_tokens(scratch, from, at, 0);
	host = at < to ? join_tokens(scratch, at + 1, to, 0) : NULL;
	if (name != NULL && name[0] == '\0')
		name = NULL;
	/* nothing at all is no address; "<>" is one, with a missing mailbox */
	if (mailbox[0] == '\0' && host == NULL && name == NULL && !angled)
		return;
	/* RFC 3501 7.4.2 has no empty mailbox; Dovecot writes these names */
	append_address(out, name, route, mailbox[0] == '\0' ? "MISSING_MAILBOX" : mailbox,
		       host == NULL ? "MISSING_DOMAIN" : host);
}

/* An address-list field as a list of addresses, or NIL. */
static void append_address_list(struct mime_buffer *out, const char *value,
				struct view_scratch *scratch)
{
	const struct token_list *list = &scratch->tokens;

	if (value == NULL) {
		mime_buffer_append_str(out, "NIL");
		return;
	}
	tokenize(value, &scratch->tokens);
	size_t mark = list_open(out);
	size_t start = 0;
	int in_group = 0;
	for (size_t i = 0; i <= list->count; i++) {
		const struct token *token = i < list->count ? &list->items[i] : NULL;
		if (token != NULL && is_special(token, ':') && !in_group) {
			int angle = 0;
			for (size_t k = start; k < i; k++)
				if (is_special(&list->items[k], '<'))
					angle = 1;
			if (!angle) {
				append_address(out, NULL, NULL, join_tokens(scratch, start, i, 1), NULL);
				in_group = 1;
				start = i + 1;
				continue;
			}
		}
		if (token != NULL && is_special(token, '<')) {
			/* skip to the closing '>' so its contents can't split */
			while (i + 1 < list->count && !is_special(&list->items[i], '>'))
				i++;
			continue;
		}
		if (token == NULL || is_special(token, ',') || (is_special(token, ';') && in_group)) {
			if (i > start)
				append_mailbox(out, scratch, start, i);
			if (token != NULL && is_special(token, ';')) {
				append_address(out, NULL, NULL, NULL, NULL);
				in_group = 0;
			}
			start = i + 1;
		}
	}
	if (in_group)
		append_address(out, NULL, NULL, NULL, NULL);
	list_close(out, mark);
}

static void append_envelope(struct mime_buffer *out, struct mime_message *message,
			    struct view_scratch *scratch)
{
	static const char *const strings_before[] = { "date", "subject" };
	static const char *const address_fields[] = { "sender", "reply-to", "to", "cc", "bcc" };
	static const char *const strings_after[] = { "in-reply-to", "message-id" };

	mime_buffer_append_byte(out, '(');
	for (size_t i = 0; i < 2; i++) {
		append_cstring(out, header_text(message, strings_before[i], scratch));
		mime_buffer_append_byte(out, ' ');
	}
	/* From, written once: sender and reply-to repeat it when absent. */
	size_t from_start = out->len;
	append_address_list(out, address_header_text(message, "from", scratch), scratch);
	const char *from = mime_arena_strndup(scratch_arena(scratch),
					      (const char *)out->data + from_start,
					      out->len - from_start);
	for (size_t i = 0; i < 5; i++) {
		const char *text = address_header_text(message, address_fields[i], scratch);
		mime_buffer_append_byte(out, ' ');
		if (text == NULL && i < 2)
			mime_buffer_append_str(out, from);
		else
			append_address_list(out, text, scratch);
	}
	for (size_t i = 0; i < 2; i++) {
		mime_buffer_append_byte(out, ' ');
		append_cstring(out, header_text(message, strings_after[i], scratch));
	}
	mime_buffer_append_byte(out, ')');
}

void mime_imap_envelope(struct mime_message *message, struct mime_buffer *out)
{
	struct view_scratch scratch = { 0 };

	append_envelope(out, message, &scratch);
	scratch_free(&scratch);
}

/* --- BODYSTRUCTURE --- */

struct raw_input {
	const unsigned char *data;
	size_t len;
};

/* Size and lines of raw[start, end) once bare LFs become CRLF. */
static void body_counts(const struct raw_input *raw, size_t start, size_t end,
			size_t *size_r, size_t *lines_r)
{
	size_t lines = 0, crlf = 0;

	if (end > raw->len)
		end = raw->len;
	if (end > start)
		mime_scan_count_lines(raw->data + start, end - start,
				      start > 0 && raw->data[start - 1] == '\r', &lines, &crlf);
	*size_r = end > start ? end - start + (lines - crlf) : 0;
	*lines_r = lines;
}

/* Parameters as a server lists them: in header order, names as written,
   values unquoted, RFC 2231 sections left as they are. */
static void append_params(struct mime_buffer *out, const char *value, int skip_first,
			  int add_charset, struct view_scratch *scratch)
{
	struct mime_buffer *param_value = &scratch->value;
	int have_charset = 0;
	size_t len = value == NULL ? 0 : strlen(value), i = 0;
	size_t mark = list_open(out);

	if (value == NULL)
		value = "";
	if (skip_first) {
		int quoted = 0;
		while (i < len && (quoted || value[i] != ';')) {
			if (value[i] == '"')
				quoted = !quoted;
			else if (value[i] == '\\' && quoted && i + 1 < len)
				i++;
			i++;
		}
	}
	while (i < len) {
		while (i < len && (value[i] == ';' || isspace((unsigned char)value[i])))
			i++;
		size_t name_start = i;
		while (i < len && value[i] != '=' && value[i] != ';' &&
		       !isspace((unsigned char)value[i]))
			i++;
		size_t name_end = i;
		while (i < len && isspace((unsigned char)value[i]))
			i++;
		if (i >= len || value[i] != '=') {
			while (i < len && value[i] != ';')
				i++;
			continue;
		}
		i++;
		while (i < len && isspace((unsigned char)value[i]))
			i++;
		mime_buffer_reset(param_value);
		mime_buffer_append(param_value, "", 0);
		if (i < len && value[i] == '"') {
			for (i++; i < len && value[i] != '"'; i++) {
				if (value[i] == '\\' && i + 1 < len)
					i++;
				if (value[i] != '\r' && value[i] != '\n')
					mime_buffer_append_byte(param_value, (unsigned char)value[i]);
			}
			i++;
		} else {
			size_t from = i;
			while (i < len && value[i] != ';' && !isspace((unsigned char)value[i]))
				i++;
			mime_buffer_append(param_value, value + from, i - from);
		}
		if (name_end > name_start) {
			if (name_end - name_start == 7 &&
			    strncasecmp(value + name_start, "charset", 7) == 0)
				have_charset = 1;
			if (out->len > mark + 1)
				mime_buffer_append_byte(out, ' ');
			mime_imap_append_string(out, value + name_start, name_end - name_start);
			mime_buffer_append_byte(out, ' ');
			mime_imap_append_string(out, (const char *)param_value->data, param_value->len);
		}
		while (i < len && value[i] != ';')
			i++;
	}
	/* a text part without a charset is us-ascii (RFC 2045 5.2) */
	if (add_charset && !have_charset) {
		if (out->len > mark + 1)
			mime_buffer_append_byte(out, ' ');
		mime_buffer_append_str(out, "\"charset\" \"us-ascii\"");
	}
	list_close(out, mark);
}

/* The first token (before ';') of a header value, trimmed. */
static char *first_token(const char *value, struct view_scratch *scratch)
{
	return unfold_trim(scratch, value, strcspn(value, ";"), is_c_space);
}

/* A Content-Language list of tags separated by commas and white space:
   a list of strings (one tag too, as Dovecot writes it), or NIL. */
static void append_language(struct mime_buffer *out, const char *language)
{
	static const char separators[] = ", \t";
	size_t count = 0;

	for (const char *p = language; p != NULL;) {
		p += strspn(p, separators);
		if (*p == '\0')
			break;
		count++;
		p += strcspn(p, separators);
	}
	if (count == 0) {
		mime_buffer_append_str(out, "NIL");
		return;
	}
	mime_buffer_append_byte(out, '(');
	size_t written = 0;
	for (const char *p = language; written < count; written++) {
		p += strspn(p, separators);
		size_t len = strcspn(p, separators);
		if (written > 0)
			mime_buffer_append_byte(out, ' ');
		mime_imap_append_string(out, p, len);
		p += len;
	}
	mime_buffer_append_byte(out, ')');
}

/* The Content-* fields BODYSTRUCTURE reads, each the first of its name,
   found in one pass over a part's headers. */
struct content_fields {
	const char *type, *id, *description, *encoding, *md5, *disposition, *language,
		*location;
};

static void content_fields_find(const struct mime_message *message,
				struct content_fields *fields_r)
{
	static const struct {
		const char *suffix;
		size_t offset;
	} names[] = {
		{ "type", offsetof(struct content_fields, type) },
		{ "id", offsetof(struct content_fields, id) },
		{ "description", offsetof(struct content_fields, description) },
		{ "transfer-encoding", offsetof(struct content_fields, encoding) },
		{ "md5", offsetof(struct content_fields, md5) },
		{ "disposition", offsetof(struct content_fields, disposition) },
		{ "language", offsetof(struct content_fields, language) },
		{ "location", offsetof(struct content_fields, location) },
	};

	memset(fields_r, 0, sizeof(*fields_r));
	for (size_t i = 0; i < message->header_count; i++) {
		const char *name = message->headers[i].name;
		if ((name[0] | 0x20) != 'c' || strncasecmp(name, "content-", 8) != 0)
			continue;
		for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
			const char **field = (const char **)((char *)fields_r + names[k].offset);
			if (*field == NULL && strcasecmp(name + 8, names[k].suffix) == 0) {
				*field = message->headers[i].value;
				break;
			}
		}
	}
}

/* Dsp, language and location: the extension data every part ends with. */
static void append_extension_tail(struct mime_buffer *out, const struct content_fields *fields,
				  struct view_scratch *scratch)
{
	const char *disposition = fields->disposition;
	mime_buffer_append_byte(out, ' ');
	if (disposition == NULL) {
		mime_buffer_append_str(out, "NIL");
	} else {
		mime_buffer_append_byte(out, '(');
		append_cstring(out, first_token(disposition, scratch));
		mime_buffer_append_byte(out, ' ');
		append_params(out, disposition, 1, 0, scratch);
		mime_buffer_append_byte(out, ')');
	}
	mime_buffer_append_byte(out, ' ');
	append_language(out, value_text(fields->language, scratch));
	mime_buffer_append_byte(out, ' ');
	append_cstring(out, value_text(fields->location, scratch));
}

struct body_writer {
	struct mime_buffer *out;
	struct raw_input raw;
	int extended;
	struct view_scratch scratch;
};

static void append_body(struct body_writer *writer, struct mime_message *message);

static int is_multipart_node(struct mime_message *message)
{
	return message->payload_kind == MIME_PAYLOAD_PARTS &&
		strncmp(mime_message_get_content_type(message), "multipart/", 10) == 0;
}

static void append_multipart_body(struct body_writer *writer, struct mime_message *message,
				  const struct content_fields *fields, const char *type)
{
	struct mime_buffer *out = writer->out;
	const char *content_type = fields->type;

	for (size_t i = 0; i < message->part_count; i++)
		append_body(writer, message->parts[i]);
	mime_buffer_append_byte(out, ' ');
	const char *written = content_type != NULL ? first_token(content_type, &writer->scratch)
						   : NULL;
	if (written != NULL && strcasecmp(written, type) == 0)
		append_cstring(out, strchr(written, '/') + 1);
	else
		append_cstring(out, strchr(type, '/') + 1);
	if (writer->extended) {
		mime_buffer_append_byte(out, ' ');
		append_params(out, content_type, 1, 0, &writer->scratch);
		append_extension_tail(out, fields, &writer->scratch);
	}
}

static void append_leaf_body(struct body_writer *writer, struct mime_message *message,
			     const struct content_fields *fields, const char *type)
{
	struct mime_buffer *out = writer->out;
	const char *content_type = fields->type;
	struct view_scratch *scratch = &writer->scratch;
	const char *slash = strchr(type, '/');
	int is_text = slash - type == 4 && memcmp(type, "text", 4) == 0;

	/* Type and subtype as the header spells them, when it is valid. */
	const char *written = content_type != NULL ? first_token(content_type, scratch) : NULL;
	if (written != NULL && strcasecmp(written, type) == 0) {
		const char *written_slash = strchr(written, '/');
		mime_imap_append_string(out, written, (size_t)(written_slash - written));
		mime_buffer_append_byte(out, ' ');
		append_cstring(out, written_slash + 1);
	} else {
		mime_imap_append_string(out, type, (size_t)(slash - type));
		mime_buffer_append_byte(out, ' ');
		append_cstring(out, slash + 1);
	}
	mime_buffer_append_byte(out, ' ');
	append_params(out, content_type, 1, is_text, scratch);
	mime_buffer_append_byte(out, ' ');
	append_cstring(out, value_text(fields->id, scratch));
	mime_buffer_append_byte(out, ' ');
	append_cstring(out, value_text(fields->description, scratch));
	mime_buffer_append_byte(out, ' ');
	const char *encoding = value_text(fields->encoding, scratch);
	append_cstring(out, encoding != NULL ? encoding : "7bit");
	size_t size, lines;
	if (message->line_counts_valid && message->body_end <= writer->raw.len) {
		lines = message->body_lf;
		size = message->body_end - message->body_start + (message->body_lf - message->body_crlf);
	} else {
		body_counts(&writer->raw, message->body_start, message->body_end, &size, &lines);
	}
	mime_buffer_append_byte(out, ' ');
	mime_buffer_append_uint(out, size);
	if (strcmp(type, "message/rfc822") == 0 && message->payload_kind == MIME_PAYLOAD_PARTS &&
	    message->part_count > 0) {
		mime_buffer_append_byte(out, ' ');
		append_envelope(out, message->parts[0], scratch);
		mime_buffer_append_byte(out, ' ');
		append_body(writer, message->parts[0]);
		mime_buffer_append_byte(out, ' ');
		mime_buffer_append_uint(out, lines);
	} else if (is_text) {
		mime_buffer_append_byte(out, ' ');
		mime_buffer_append_uint(out, lines);
	}
	if (writer->extended) {
		mime_buffer_append_byte(out, ' ');
		append_cstring(out, value_text(fields->md5, scratch));
		append_extension_tail(out, fields, scratch);
	}
}

static void append_body(struct body_writer *writer, struct mime_message *message)
{
	struct content_fields fields;
	const char *type = mime_message_get_content_type(message);

	content_fields_find(message, &fields);
	mime_buffer_append_byte(writer->out, '(');
	if (is_multipart_node(message))
		append_multipart_body(writer, message, &fields, type);
	else
		append_leaf_body(writer, message, &fields, type);
	mime_buffer_append_byte(writer->out, ')');
}

void mime_imap_bodystructure(struct mime_message *root, const void *raw, size_t raw_len,
			     int extended, struct mime_buffer *out)
{
	struct body_writer writer = { out, { raw, raw_len }, extended, { 0 } };

	append_body(&writer, root);
	scratch_free(&writer.scratch);
}

/* --- sections --- */

/* Appends the section of message to out; -1 when it has none. */
static int append_part_section(const struct mime_message *message, struct mime_buffer *out)
{
	const struct mime_message *parent = message->parent;

	if (parent == NULL)
		return 0;
	const char *type = mime_message_get_content_type((struct mime_message *)parent);
	if (is_multipart_node((struct mime_message *)parent)) {
		if (append_part_section(parent, out) < 0)
			return -1;
		if (out->len > 0)
			mime_buffer_append_byte(out, '.');
		mime_buffer_append_uint(out, message->parent_index + 1);
		return 0;
	}
	if (strcmp(type, "message/rfc822") == 0) {
		if (append_part_section(parent, out) < 0)
			return -1;
		if (out->len == 0)
			mime_buffer_append_byte(out, '1');
		return 0;
	}
	return -1;
}

char *mime_imap_part_section(const struct mime_message *part)
{
	struct mime_buffer text = { 0 };

	if (append_part_section(part, &text) < 0) {
		mime_buffer_free(&text);
		return NULL;
	}
	return mime_buffer_steal(&text, NULL);
}

/* Appends raw[start, end) with every bare LF written as CRLF. */
static void append_crlf(struct mime_buffer *out, const struct raw_input *raw, size_t start,
			size_t end)
{
	if (end > raw->len)
		end = raw->len;
	size_t run = start;
	for (size_t i = start; i < end; i++) {
		const unsigned char *lf = memchr(raw->data + i, '\n', end - i);

		if (lf == NULL)
			break;
		i = (size_t)(lf - raw->data);
		if (i == 0 || raw->data[i - 1] != '\r') {
			mime_buffer_append(out, raw->data + run, i - run);
			mime_buffer_append_str(out, "\r\n");
			run = i + 1;
		}
	}
	if (end > run)
		mime_buffer_append(out, raw->data + run, end - run);
	if (out->data == NULL)
		mime_buffer_append(out, "", 0);
}

#define FIELD_NAMES_STEP 16 /* names allocated at a time: a client's list rarely has more */

/* Field names of a HEADER.FIELDS list "(A B ...)" (malloc'd, pointing into
   text); returns the count or -1. */
static int parse_field_list(const char *text, struct mime_imap_field_name **names_r, size_t *count_r)
{
	size_t count = 0;
	struct mime_imap_field_name *names = NULL;

	while (*text == ' ')
		text++;
	if (*text++ != '(')
		return -1;
	for (;;) {
		while (*text == ' ')
			text++;
		if (*text == ')')
			break;
		size_t len = 0;
		const char *start = text;
		if (*text == '"') {
			start = ++text;
			while (text[len] != '\0' && text[len] != '"')
				len++;
			if (text[len] != '"')
				goto fail;
			text += len + 1;
		} else {
			while (text[len] > ' ' && text[len] < 0x7f && text[len] != '(' &&
			       text[len] != ')' && text[len] != ':')
				len++;
			if (len == 0)
				goto fail;
			text += len;
		}
		if (count % FIELD_NAMES_STEP == 0)
			names = mime_xrealloc(names, (count + FIELD_NAMES_STEP) * sizeof(*names));
		names[count++] = (struct mime_imap_field_name){ start, len };
	}
	if (count == 0 || text[1] != '\0')
		goto fail;
	*names_r = names;
	*count_r = count;
	return 0;
fail:
	free(names);
	return -1;
}

/* The fields of the raw header block [start, end) whose names are (or with
   exclude, are not) in names; then the blank line. */
static void append_header_fields(struct mime_buffer *out, const struct raw_input *raw,
				 size_t start, size_t end, const struct mime_imap_field_name *names, size_t count, int exclude)
{
	size_t pos = start;

	if (end > raw->len)
		end = raw->len;
	while (pos < end) {
		/* one field: its first line and continuation lines */
		size_t field_end = pos;
		do {
			const unsigned char *lf = memchr(raw->data + field_end, '\n', end - field_end);

			field_end = lf != NULL ? (size_t)(lf - raw->data) + 1 : end;
		} while (field_end < end && (raw->data[field_end] == ' ' || raw->data[field_end] == '\t'));
		const unsigned char *line = raw->data + pos;
		if (line[0] == '\r' || line[0] == '\n')
			break;
		const unsigned char *colon = memchr(line, ':', field_end - pos);
		if (colon != NULL) {
			size_t name_len = (size_t)(colon - line);
			while (name_len > 0 && (line[name_len - 1] == ' ' || line[name_len - 1] == '\t'))
				name_len--;
			int listed = 0;
			for (size_t i = 0; i < count && !listed; i++)
				if (names[i].len == name_len &&
				    strncasecmp(names[i].text, (const char *)line, name_len) == 0)
					listed = 1;
			if (listed != exclude)
				append_crlf(out, raw, pos, field_end);
		}
		pos = field_end;
	}
	mime_buffer_append_str(out, "\r\n");
}

/* Follows part numbers from root. On return *part_r is the node, and
   *message_r the message whose HEADER/TEXT the rest applies to (NULL when
   the part is not a message). text points after the numbers. */
static enum mime_imap_section_result resolve_part(struct mime_message *root, const char **text,
						  struct mime_message **part_r,
						  struct mime_message **message_r, int *numbered_r)
{
	struct mime_message *node = root;
	int node_is_message = 1;
	size_t depth = 0;
	const char *p = *text;

	*numbered_r = 0;
	while (isdigit((unsigned char)*p)) {
		if (*p == '0' || ++depth > MIME_IMAP_SECTION_MAX_DEPTH)
			return MIME_IMAP_SECTION_BAD_SYNTAX;
		unsigned long number = strtoul(p, (char **)&p, 10);
		if (*p == '.')
			p++;
		else if (*p != '\0')
			return MIME_IMAP_SECTION_BAD_SYNTAX;
		*numbered_r = 1;
		struct mime_message *container = node;
		if (!node_is_message && strcmp(mime_message_get_content_type(node), "message/rfc822") == 0 &&
		    node->payload_kind == MIME_PAYLOAD_PARTS && node->part_count > 0) {
			container = node->parts[0];
			node_is_message = 1;
		}
		if (is_multipart_node(container)) {
			if (number > container->part_count)
				return MIME_IMAP_SECTION_NO_SUCH_PART;
			node = container->parts[number - 1];
		} else if (node_is_message || container != node) {
			if (number != 1)
				return MIME_IMAP_SECTION_NO_SUCH_PART;
			node = container;
		} else {
			return MIME_IMAP_SECTION_NO_SUCH_PART;
		}
		node_is_message = 0;
	}
	*text = p;
	*part_r = node;
	*message_r = NULL;
	if (!*numbered_r)
		*message_r = root;
	else if (strcmp(mime_message_get_content_type(node), "message/rfc822") == 0 &&
		 node->payload_kind == MIME_PAYLOAD_PARTS && node->part_count > 0)
		*message_r = node->parts[0];
	return MIME_IMAP_SECTION_OK;
}

enum mime_imap_section_result mime_imap_fetch_section(struct mime_message *root, const void *raw,
						      size_t raw_len, const char *section,
						      struct mime_buffer *out, const char **error_r)
{
	struct raw_input input = { raw, raw_len };
	struct mime_message *part, *message;
	int numbered;
	const char *rest = section;

	enum mime_imap_section_result result = resolve_part(root, &rest, &part, &message, &numbered);
	if (result != MIME_IMAP_SECTION_OK) {
		*error_r = result == MIME_IMAP_SECTION_NO_SUCH_PART ? "no such part" :
			"invalid section part number";
		return result;
	}
	if (*rest == '\0') {
		if (!numbered)
			append_crlf(out, &input, 0, root->body_end); /* a "From " line first is the message's too */
		else
			append_crlf(out, &input, part->body_start, part->body_end);
		return MIME_IMAP_SECTION_OK;
	}
	if (strcasecmp(rest, "MIME") == 0) {
		if (!numbered) {
			*error_r = "MIME needs a part number";
			return MIME_IMAP_SECTION_BAD_SYNTAX;
		}
		append_crlf(out, &input, part->header_start, part->body_start);
		return MIME_IMAP_SECTION_OK;
	}
	int is_text = strcasecmp(rest, "TEXT") == 0, is_header = strcasecmp(rest, "HEADER") == 0;
	int is_fields = strncasecmp(rest, "HEADER.FIELDS ", 14) == 0;
	int is_not = strncasecmp(rest, "HEADER.FIELDS.NOT ", 18) == 0;
	if (!is_text && !is_header && !is_fields && !is_not) {
		*error_r = "unknown section text";
		return MIME_IMAP_SECTION_BAD_SYNTAX;
	}
	struct mime_imap_field_name *names = NULL;
	size_t count = 0;
	if ((is_fields || is_not) &&
	    parse_field_list(rest + (is_not ? 18 : 14), &names, &count) < 0) {
		*error_r = "invalid header field list";
		return MIME_IMAP_SECTION_BAD_SYNTAX;
	}
	if (message == NULL) {
		/* not a message/rfc822 part: servers answer an empty string */
		free(names);
		return MIME_IMAP_SECTION_OK;
	}
	if (is_text)
		append_crlf(out, &input, message->body_start, message->body_end);
	else if (is_header) /* of the root: from its first byte, a "From " line included, as Dovecot's */
		append_crlf(out, &input, message == root ? 0 : message->header_start, message->body_start);
	else
		append_header_fields(out, &input, message->header_start, message->body_start,
				     names, count, is_not);
	free(names);
	return MIME_IMAP_SECTION_OK;
}

int mime_imap_header_fields_names(const char *section, struct mime_imap_field_name **names_r, size_t *count_r,
				  int *exclude_r)
{
	int is_not = strncasecmp(section, "HEADER.FIELDS.NOT ", 18) == 0;

	if (!is_not && strncasecmp(section, "HEADER.FIELDS ", 14) != 0)
		return -1;
	*exclude_r = is_not;
	return parse_field_list(section + (is_not ? 18 : 14), names_r, count_r);
}

/* A byte of a field name as both readers take it: printable ASCII but ':'. */
static bool plain_name_byte(unsigned char c)
{
	return c > ' ' && c < 0x7f && c != ':';
}

bool mime_imap_header_line_is_plain(const void *text, size_t len, bool first, size_t *name_len_r)
{
	const unsigned char *line = text, *colon;

	if (memchr(line, '\r', len) != NULL || memchr(line, '\0', len) != NULL)
		return false;
	*name_len_r = 0;
	if (line[0] == ' ' || line[0] == '\t')
		return !first;
	colon = memchr(line, ':', len);
	if (colon == NULL || colon == line)
		return false;
	for (const unsigned char *c = line; c < colon; c++)
		if (!plain_name_byte(*c))
			return false;
	*name_len_r = (size_t)(colon - line);
	return true;
}

bool mime_imap_header_is_plain(const void *block, size_t len)
{
	const unsigned char *data = block;
	size_t pos = 0, name_len;

	while (pos < len) {
		const unsigned char *lf = memchr(data + pos, '\n', len - pos);
		size_t end;

		if (lf == NULL)
			return false;
		end = (size_t)(lf - data);
		if (end == pos || data[end - 1] != '\r')
			return false;
		if (end - 1 == pos)
			return end + 1 == len;
		if (!mime_imap_header_line_is_plain(data + pos, end - 1 - pos, pos == 0, &name_len))
			return false;
		pos = end + 1;
	}
	return false;
}

bool mime_imap_header_field_listed(const struct mime_imap_field_name *names, size_t count, const void *name,
				   size_t name_len)
{
	unsigned char first = *(const unsigned char *)name | 0x20; /* equal in case only if equal so */

	for (size_t i = 0; i < count; i++)
		if (names[i].len == name_len && ((unsigned char)names[i].text[0] | 0x20) == first &&
		    strncasecmp(names[i].text, name, name_len) == 0)
			return true;
	return false;
}

enum mime_imap_section_result mime_imap_fetch_header_fields(const void *raw, size_t raw_len, const char *section,
							    struct mime_buffer *out, const char **error_r)
{
	struct raw_input input = { raw, raw_len };
	int is_not = strncasecmp(section, "HEADER.FIELDS.NOT ", 18) == 0;
	struct mime_imap_field_name *names = NULL;
	size_t count = 0;

	if ((!is_not && strncasecmp(section, "HEADER.FIELDS ", 14) != 0) ||
	    parse_field_list(section + (is_not ? 18 : 14), &names, &count) < 0) {
		*error_r = "invalid header field list";
		return MIME_IMAP_SECTION_BAD_SYNTAX;
	}
	append_header_fields(out, &input, 0, raw_len, names, count, is_not);
	free(names);
	return MIME_IMAP_SECTION_OK;
}

enum mime_imap_section_result mime_imap_fetch_binary(struct mime_message *root, const void *raw,
						     size_t raw_len, const char *section,
						     struct mime_buffer *out, const char **error_r)
{
	struct mime_message *part, *message;
	int numbered;
	const char *rest = section;

	enum mime_imap_section_result result = resolve_part(root, &rest, &part, &message, &numbered);
	if (result == MIME_IMAP_SECTION_OK && *rest != '\0')
		result = MIME_IMAP_SECTION_BAD_SYNTAX;
	if (result != MIME_IMAP_SECTION_OK) {
		*error_r = result == MIME_IMAP_SECTION_NO_SUCH_PART ? "no such part" :
			"BINARY takes part numbers only";
		return result;
	}
	if (part->payload_kind != MIME_PAYLOAD_BYTES) {
		/* a multipart or message: its raw bytes, nothing to decode */
		struct raw_input input = { raw, raw_len };
		append_crlf(out, &input, numbered ? part->body_start : part->header_start,
			    part->body_end);
		return MIME_IMAP_SECTION_OK;
	}
	struct view_scratch scratch = { 0 };
	const char *cte = header_text(part, "content-transfer-encoding", &scratch);
	int base64 = cte != NULL && strcasecmp(cte, "base64") == 0;
	int qp = cte != NULL && strcasecmp(cte, "quoted-printable") == 0;
	int known = cte == NULL || base64 || qp || strcasecmp(cte, "7bit") == 0 ||
		strcasecmp(cte, "8bit") == 0 || strcasecmp(cte, "binary") == 0;
	scratch_free(&scratch);
	if (!known) {
		*error_r = "unknown Content-Transfer-Encoding";
		return MIME_IMAP_SECTION_UNKNOWN_CTE;
	}
	/* Decoded from the CRLF form, so QP's hard line breaks are CRLF. */
	struct raw_input input = { raw, raw_len };
	struct mime_buffer body = { 0 };
	append_crlf(&body, &input, part->body_start, part->body_end);
	if (base64)
		mime_codec_base64_decode(body.data, body.len, out);
	else if (qp)
		mime_codec_qp_decode(body.data, body.len, 0, out);
	else
		mime_buffer_append(out, body.data, body.len);
	mime_buffer_free(&body);
	return MIME_IMAP_SECTION_OK;
}

void mime_imap_partial(const void *data, size_t len, uint64_t offset, uint64_t length,
		       struct mime_buffer *out)
{
	if (offset >= len) {
		mime_buffer_append(out, "", 0);
		return;
	}
	uint64_t available = len - offset;
	if (length > available)
		length = available;
	mime_buffer_append(out, (const unsigned char *)data + offset, (size_t)length);
}
