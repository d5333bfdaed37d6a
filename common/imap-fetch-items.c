/* SPDX-License-Identifier: MIT */
/* imap-fetch-items: splits one untagged FETCH response line, fed in parts, into its items' names and exact value bytes. */
#include "config.h"
#include "imap-fetch-items.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FETCH_WORD "FETCH"
#define SEQ_DIGITS_MAX 10 /* 4294967295 */
#define LITERAL_DIGITS_MAX 19 /* below 2^64 */

enum state {
	STATE_STAR,           /* "*" */
	STATE_SPACE,          /* " " before the number */
	STATE_SEQ_FIRST,      /* its first digit, 1-9 */
	STATE_SEQ,            /* more digits, or " " */
	STATE_WORD,           /* "FETCH" (any case), then " " */
	STATE_OPEN,           /* "(" */
	STATE_ITEM_FIRST,     /* after "(": a name or ")" */
	STATE_ITEM,           /* after a " " between items: a name */
	STATE_NAME,           /* the name's bytes */
	STATE_NAME_QUOTED,    /* a quoted string inside the name's brackets */
	STATE_NAME_ESCAPE,
	STATE_VALUE,          /* a value's first byte (top level or in a list) */
	STATE_TILDE,          /* "~" at a value's start: "{" makes it literal8 */
	STATE_ATOM,
	STATE_QUOTED,
	STATE_QUOTED_ESCAPE,
	STATE_LITERAL_SIZE,   /* digits after "{" */
	STATE_LITERAL_CR,     /* after "}" */
	STATE_LITERAL_LF,
	STATE_LITERAL_HELD,   /* a literal's bytes, held in value */
	STATE_LITERAL_STREAM, /* a top-level literal's bytes, passed on */
	STATE_LIST,           /* inside a list, after an element or "(" */
	STATE_AFTER_VALUE,    /* after an item's value: " " or ")" */
	STATE_END_CR,         /* after the closing ")" */
	STATE_END_LF,
	STATE_DONE,           /* the line's grammar is complete */
	STATE_FAILED,         /* result says why; the rest of the line is skipped */
};

struct byte_buffer {
	unsigned char *data;
	size_t len, alloc;
};

struct imap_fetch_items {
	imap_fetch_items_fn *callback;
	void *context;
	enum state state;
	enum imap_fetch_items_result result; /* with STATE_FAILED */
	uint32_t seq;
	unsigned int matched;                 /* digits or letters of the current word */
	struct byte_buffer name;              /* NUL-terminated */
	unsigned int name_brackets;           /* open "[" in the name */
	struct byte_buffer value;
	unsigned int depth;                   /* open lists in the value */
	enum imap_fetch_items_value_type value_type;
	size_t content_start;                 /* of a top-level literal's bytes in value */
	bool literal8;
	uint64_t literal_size;
	uint64_t literal_left;
};

static bool buffer_append(struct byte_buffer *buffer, const void *data, size_t len, size_t max)
{
	if (len > max - buffer->len)
		return false;
	if (buffer->len + len + 1 > buffer->alloc) {
		size_t alloc = buffer->alloc < 256 ? 256 : buffer->alloc;
		unsigned char *grown;

		while (alloc < buffer->len + len + 1)
			alloc *= 2;
		grown = realloc(buffer->data, alloc);
		if (grown == NULL)
			return false;
		buffer->data = grown;
		buffer->alloc = alloc;
	}
	memcpy(buffer->data + buffer->len, data, len);
	buffer->len += len;
	buffer->data[buffer->len] = '\0';
	return true;
}

struct imap_fetch_items *imap_fetch_items_new(imap_fetch_items_fn *callback, void *context)
{
	struct imap_fetch_items *items = calloc(1, sizeof(*items));

	if (items == NULL)
		return NULL;
	items->callback = callback;
	items->context = context;
	return items;
}

void imap_fetch_items_free(struct imap_fetch_items **items_p)
{
	struct imap_fetch_items *items = *items_p;

	if (items == NULL)
		return;
	*items_p = NULL;
	free(items->name.data);
	free(items->value.data);
	free(items);
}

void imap_fetch_items_reset(struct imap_fetch_items *items)
{
	items->state = STATE_STAR;
	items->result = IMAP_FETCH_ITEMS_NEED_MORE;
	items->seq = 0;
	items->matched = 0;
	items->name.len = 0;
	items->value.len = 0;
	items->depth = 0;
}

const char *imap_fetch_items_result_name(enum imap_fetch_items_result result)
{
	switch (result) {
	case IMAP_FETCH_ITEMS_NEED_MORE:
		return "NEED_MORE";
	case IMAP_FETCH_ITEMS_COMPLETE:
		return "COMPLETE";
	case IMAP_FETCH_ITEMS_NOT_FETCH:
		return "NOT_FETCH";
	case IMAP_FETCH_ITEMS_MALFORMED:
		return "MALFORMED";
	case IMAP_FETCH_ITEMS_TOO_BIG:
		return "TOO_BIG";
	}
	return "?";
}

/* Ends the line's splitting with result; returns -1 for step's caller. */
static int fail(struct imap_fetch_items *items, enum imap_fetch_items_result result)
{
	items->state = STATE_FAILED;
	items->result = result;
	return -1;
}

/* Reports an event of the current item. */
static void report(struct imap_fetch_items *items, enum imap_fetch_items_event_type type,
		   const unsigned char *value, size_t value_len, const unsigned char *content, size_t content_len)
{
	struct imap_fetch_items_event event = {
		.type = type,
		.seq = items->seq,
		.name = (const char *)items->name.data,
		.name_len = items->name.len,
		.value_type = items->value_type,
		.value = value,
		.value_len = value_len,
		.content = content,
		.content_len = content_len,
		.literal_size = items->literal_size,
	};

	items->callback(&event, items->context);
}

/* The held value of the current item is whole: reports it. */
static void report_item(struct imap_fetch_items *items)
{
	const unsigned char *value = items->value.data;
	size_t len = items->value.len;

	switch (items->value_type) {
	case IMAP_FETCH_VALUE_LITERAL:
	case IMAP_FETCH_VALUE_LITERAL8:
		report(items, IMAP_FETCH_ITEMS_EVENT_ITEM, value, len, value + items->content_start,
		       len - items->content_start);
		break;
	case IMAP_FETCH_VALUE_QUOTED:
		report(items, IMAP_FETCH_ITEMS_EVENT_ITEM, value, len, value + 1, len - 2);
		break;
	default:
		report(items, IMAP_FETCH_ITEMS_EVENT_ITEM, value, len, value, len);
		break;
	}
	items->state = STATE_AFTER_VALUE;
}

/* A token of the value ended: the item's value is whole at the top
   level, else the list goes on. */
static void value_token_end(struct imap_fetch_items *items)
{
	if (items->depth == 0)
		report_item(items);
	else
		items->state = STATE_LIST;
}

static int value_add(struct imap_fetch_items *items, unsigned char c)
{
	struct byte_buffer *value = &items->value;

	if (value->len + 2 <= value->alloc && value->len < IMAP_FETCH_ITEMS_VALUE_MAX) {
		/* the common case, without a call: room for the byte and the NUL */
		value->data[value->len++] = c;
		value->data[value->len] = '\0';
		return 1;
	}
	if (!buffer_append(value, &c, 1, IMAP_FETCH_ITEMS_VALUE_MAX))
		return fail(items, IMAP_FETCH_ITEMS_TOO_BIG);
	return 1;
}

/* An atom's byte: anything but the specials that end it. */
static bool is_atom_byte(unsigned char c)
{
	return c > ' ' && c < 0x7f && c != '(' && c != ')' && c != '{' && c != '"';
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* The type of a whole atom value: NIL, a number, or another atom. */
static enum imap_fetch_items_value_type atom_type(const unsigned char *data, size_t len)
{
	bool digits = len > 0;

	if (len == 3 && (data[0] | 0x20) == 'n' && (data[1] | 0x20) == 'i' && (data[2] | 0x20) == 'l')
		return IMAP_FETCH_VALUE_NIL;
	for (size_t i = 0; i < len; i++)
		digits = digits && is_digit(data[i]);
	return digits ? IMAP_FETCH_VALUE_NUMBER : IMAP_FETCH_VALUE_ATOM;
}

/* "* n FETCH (": each byte of the prefix. */
static int step_prefix(struct imap_fetch_items *items, unsigned char c)
{
	switch (items->state) {
	case STATE_STAR:
		if (c != '*')
			return fail(items, IMAP_FETCH_ITEMS_NOT_FETCH);
		items->state = STATE_SPACE;
		return 1;
	case STATE_SPACE:
		if (c != ' ')
			return fail(items, IMAP_FETCH_ITEMS_NOT_FETCH);
		items->state = STATE_SEQ_FIRST;
		return 1;
	case STATE_SEQ_FIRST:
		if (c < '1' || c > '9')
			return fail(items, IMAP_FETCH_ITEMS_NOT_FETCH);
		items->seq = (uint32_t)(c - '0');
		items->matched = 1;
		items->state = STATE_SEQ;
		return 1;
	case STATE_SEQ:
		if (c == ' ') {
			items->matched = 0;
			items->state = STATE_WORD;
			return 1;
		}
		if (!is_digit(c) || ++items->matched > SEQ_DIGITS_MAX ||
		    (uint64_t)items->seq * 10 + (uint64_t)(c - '0') > UINT32_MAX)
			return fail(items, IMAP_FETCH_ITEMS_NOT_FETCH);
		items->seq = items->seq * 10 + (uint32_t)(c - '0');
		return 1;
	case STATE_WORD:
		if (items->matched == strlen(FETCH_WORD)) {
			if (c != ' ')
				return fail(items, IMAP_FETCH_ITEMS_NOT_FETCH);
			items->state = STATE_OPEN;
			return 1;
		}
		if ((c & ~0x20) != (unsigned char)FETCH_WORD[items->matched])
			return fail(items, IMAP_FETCH_ITEMS_NOT_FETCH);
		items->matched++;
		return 1;
	case STATE_OPEN:
		if (c != '(')
			return fail(items, IMAP_FETCH_ITEMS_MALFORMED);
		items->state = STATE_ITEM_FIRST;
		return 1;
	default:
		return fail(items, IMAP_FETCH_ITEMS_MALFORMED);
	}
}

static int name_add(struct imap_fetch_items *items, unsigned char c)
{
	if (!buffer_append(&items->name, &c, 1, IMAP_FETCH_ITEMS_NAME_MAX))
		return fail(items, IMAP_FETCH_ITEMS_TOO_BIG);
	return 1;
}

/* An item's name: an atom, with "[...]" that may hold spaces, lists and
   quoted strings, and a "<n>" after it. */
static int step_name(struct imap_fetch_items *items, unsigned char c)
{
	switch (items->state) {
	case STATE_ITEM_FIRST:
	case STATE_ITEM:
		if (c == ')' && items->state == STATE_ITEM_FIRST) {
			items->state = STATE_END_CR;
			return 1;
		}
		if (!is_atom_byte(c) || c == '[' || c == ']')
			return fail(items, IMAP_FETCH_ITEMS_MALFORMED);
		items->name.len = 0;
		items->name_brackets = 0;
		items->state = STATE_NAME;
		return name_add(items, c);
	case STATE_NAME:
		if (c == ' ' && items->name_brackets == 0) {
			items->value.len = 0;
			items->depth = 0;
			items->state = STATE_VALUE;
			return 1;
		}
		if (c == '[') {
			items->name_brackets++;
		} else if (c == ']') {
			if (items->name_brackets == 0)
				return fail(items, IMAP_FETCH_ITEMS_MALFORMED);
			items->name_brackets--;
		} else if (c == '"' && items->name_brackets > 0) {
			items->state = STATE_NAME_QUOTED;
		} else if (items->name_brackets > 0 ? c < ' ' || c >= 0x7f : !is_atom_byte(c)) {
			return fail(items, IMAP_FETCH_ITEMS_MALFORMED);
		}
		return name_add(items, c);
	case STATE_NAME_QUOTED:
		if (c == '"')
			items->state = STATE_NAME;
		else if (c == '\\')
			items->state = STATE_NAME_ESCAPE;
		else if (c == '\r' || c == '\n' || c == '\0')
			return fail(items, IMAP_FETCH_ITEMS_MALFORMED);
		return name_add(items, c);
	case STATE_NAME_ESCAPE:
		if (c == '\r' || c == '\n' || c == '\0')
			return fail(items, IMAP_FETCH_ITEMS_MALFORMED);
		items->state = STATE_NAME_QUOTED;
		return name_add(items, c);
	default:
		return fail(items, IMAP_FETCH_ITEMS_MALFORMED);
	}
}

/* A value's first byte, at the top level or inside a list. */
static int step_value_start(struct imap_fetch_items *items, unsigned char c)
{
	bool top = items->depth == 0;

	switch (c) {
	case '(':
		if (items->depth == IMAP_FETCH_ITEMS_MAX_DEPTH)
			return fail(items, IMAP_FETCH_ITEMS_TOO_BIG);
		if (top)
			items->value_type = IMAP_FETCH_VALUE_LIST;
		items->depth++;
		items->state = STATE_LIST;
		return value_add(items, c);
	case '"':
		if (top)
			items->value_type = IMAP_FETCH_VALUE_QUOTED;
		items->state = STATE_QUOTED;
		return value_add(items, c);
	case '{':
		items->literal8 = false;
		items->literal_size = 0;
		items->matched = 0;
		items->state = STATE_LITERAL_SIZE;
		return value_add(items, c);
	case '~':
		items->state = STATE_TILDE;
		return value_add(items, c);
	default:
		if (!is_atom_byte(c))
			return fail(items, IMAP_FETCH_ITEMS_MALFORMED);
		items->state = STATE_ATOM;
		return value_add(items, c);
	}
}

/* "~" began the value: literal8 when "{" follows, else an atom. */
static int step_tilde(struct imap_fetch_items *items, unsigned char c)
{
	if (c == '{') {
		items->literal8 = true;
		items->literal_size = 0;
		items->matched = 0;
		items->state = STATE_LITERAL_SIZE;
		return value_add(items, c);
	}
	items->state = STATE_ATOM;
	return 0;
}

/* The byte after an atom's last one is looked at again by the state
   the atom ends in. */
static int step_atom(struct imap_fetch_items *items, unsigned char c)
{
	if (is_atom_byte(c))
		return value_add(items, c);
	if (items->depth == 0) {
		items->value_type = atom_type(items->value.data, items->value.len);
		report_item(items);
	} else {
		items->state = STATE_LIST;
	}
	return 0;
}

static int step_quoted(struct imap_fetch_items *items, unsigned char c)
{
	if (c == '\r' || c == '\n')
		return fail(items, IMAP_FETCH_ITEMS_MALFORMED);
	if (items->state == STATE_QUOTED_ESCAPE) {
		items->state = STATE_QUOTED;
		return value_add(items, c);
	}
	if (c == '\\')
		items->state = STATE_QUOTED_ESCAPE;
	if (value_add(items, c) < 0)
		return -1;
	if (c == '"')
		value_token_end(items);
	return 1;
}

/* "}" and its line end came: the literal's bytes follow, held or (a
   large one at the top level) streamed. */
static int literal_start(struct imap_fetch_items *items)
{
	bool top = items->depth == 0;

	if (top)
		items->value_type = items->literal8 ? IMAP_FETCH_VALUE_LITERAL8 : IMAP_FETCH_VALUE_LITERAL;
	items->literal_left = items->literal_size;
	if (top && items->literal_size > IMAP_FETCH_ITEMS_STREAM_THRESHOLD) {
		report(items, IMAP_FETCH_ITEMS_EVENT_LITERAL_BEGIN, NULL, 0, NULL, 0);
		items->state = STATE_LITERAL_STREAM;
		return 1;
	}
	if (items->literal_size > IMAP_FETCH_ITEMS_VALUE_MAX - items->value.len)
		return fail(items, IMAP_FETCH_ITEMS_TOO_BIG);
	if (top)
		items->content_start = items->value.len;
	if (items->literal_size == 0) {
		value_token_end(items);
		return 1;
	}
	items->state = STATE_LITERAL_HELD;
	return 1;
}

/* "{n}" and CRLF (or LF) before a literal's bytes. */
static int step_literal_head(struct imap_fetch_items *items, unsigned char c)
{
	switch (items->state) {
	case STATE_LITERAL_SIZE:
		if (c == '}' && items->matched > 0) {
			items->state = STATE_LITERAL_CR;
			return value_add(items, c);
		}
		if (!is_digit(c) || ++items->matched > LITERAL_DIGITS_MAX)
			return fail(items, IMAP_FETCH_ITEMS_MALFORMED);
		items->literal_size = items->literal_size * 10 + (uint64_t)(c - '0');
		return value_add(items, c);
	case STATE_LITERAL_CR:
		if (c == '\r') {
			items->state = STATE_LITERAL_LF;
			return value_add(items, c);
		}
		if (c != '\n')
			return fail(items, IMAP_FETCH_ITEMS_MALFORMED);
		/* fall through */
	case STATE_LITERAL_LF:
		if (c != '\n' || value_add(items, c) < 0)
			return items->state == STATE_FAILED ? -1 : fail(items, IMAP_FETCH_ITEMS_MALFORMED);
		return literal_start(items);
	default:
		return fail(items, IMAP_FETCH_ITEMS_MALFORMED);
	}
}

/* Between the elements of a list. */
static int step_list(struct imap_fetch_items *items, unsigned char c)
{
	if (c == ' ')
		return value_add(items, c);
	if (c == ')') {
		if (value_add(items, c) < 0)
			return -1;
		items->depth--;
		if (items->depth == 0)
			report_item(items);
		return 1;
	}
	if (c == '\r' || c == '\n')
		return fail(items, IMAP_FETCH_ITEMS_MALFORMED);
	items->state = STATE_VALUE;
	return 0;
}

/* After the list of items: ")" and CRLF. */
static int step_end(struct imap_fetch_items *items, unsigned char c)
{
	switch (items->state) {
	case STATE_AFTER_VALUE:
		if (c == ' ')
			items->state = STATE_ITEM;
		else if (c == ')')
			items->state = STATE_END_CR;
		else
			return fail(items, IMAP_FETCH_ITEMS_MALFORMED);
		return 1;
	case STATE_END_CR:
		if (c == '\r') {
			items->state = STATE_END_LF;
			return 1;
		}
		/* fall through */
	case STATE_END_LF:
		if (c != '\n')
			return fail(items, IMAP_FETCH_ITEMS_MALFORMED);
		items->state = STATE_DONE;
		return 1;
	default:
		return fail(items, IMAP_FETCH_ITEMS_MALFORMED);
	}
}

/* One byte. Returns 1 when it was used, 0 when the new state must see
   it again, -1 on failure (the state says why). */
static int step(struct imap_fetch_items *items, unsigned char c)
{
	switch (items->state) {
	case STATE_STAR:
	case STATE_SPACE:
	case STATE_SEQ_FIRST:
	case STATE_SEQ:
	case STATE_WORD:
	case STATE_OPEN:
		return step_prefix(items, c);
	case STATE_ITEM_FIRST:
	case STATE_ITEM:
	case STATE_NAME:
	case STATE_NAME_QUOTED:
	case STATE_NAME_ESCAPE:
		return step_name(items, c);
	case STATE_VALUE:
		return step_value_start(items, c);
	case STATE_TILDE:
		return step_tilde(items, c);
	case STATE_ATOM:
		return step_atom(items, c);
	case STATE_QUOTED:
	case STATE_QUOTED_ESCAPE:
		return step_quoted(items, c);
	case STATE_LITERAL_SIZE:
	case STATE_LITERAL_CR:
	case STATE_LITERAL_LF:
		return step_literal_head(items, c);
	case STATE_LIST:
		return step_list(items, c);
	case STATE_AFTER_VALUE:
	case STATE_END_CR:
	case STATE_END_LF:
		return step_end(items, c);
	case STATE_DONE:
	case STATE_LITERAL_HELD:
	case STATE_LITERAL_STREAM:
	case STATE_FAILED:
		break;
	}
	return fail(items, IMAP_FETCH_ITEMS_MALFORMED);
}

/* Takes up to len bytes of a literal's body; returns how many. */
static size_t feed_literal(struct imap_fetch_items *items, const unsigned char *data, size_t len)
{
	size_t take = items->literal_left < len ? (size_t)items->literal_left : len;

	items->literal_left -= take;
	if (items->state == STATE_LITERAL_STREAM) {
		report(items, IMAP_FETCH_ITEMS_EVENT_LITERAL_DATA, data, take, data, take);
		if (items->literal_left == 0) {
			report(items, IMAP_FETCH_ITEMS_EVENT_LITERAL_END, NULL, 0, NULL, 0);
			items->state = STATE_AFTER_VALUE;
		}
		return take;
	}
	if (!buffer_append(&items->value, data, take, IMAP_FETCH_ITEMS_VALUE_MAX)) {
		fail(items, IMAP_FETCH_ITEMS_TOO_BIG);
		return take;
	}
	if (items->literal_left == 0)
		value_token_end(items);
	return take;
}

/* The length of the run of a quoted string's plain bytes at data (none
   of '"', '\\', CR, LF): they are taken in one go. */
static size_t quoted_run(const unsigned char *data, size_t len)
{
	/* one load a byte: a quoted string's bytes are most of a FETCH line's */
	static const bool ends_run[256] = { ['"'] = true, ['\\'] = true, ['\r'] = true, ['\n'] = true };
	size_t run = 0;

	while (run < len && !ends_run[data[run]])
		run++;
	return run;
}

/* The length of the run of atom bytes at data: an atom value's (or,
   outside brackets, a name's) bytes, taken in one go. */
static size_t atom_run(const unsigned char *data, size_t len, bool name)
{
	size_t run = 0;

	while (run < len && is_atom_byte(data[run]) && !(name && (data[run] == '[' || data[run] == ']')))
		run++;
	return run;
}

/* The length of the run of a list's bytes at data that step() would add
   one by one and leave the list in its state: spaces, parentheses (the
   depth kept in *depth), atoms, and quoted strings with no escape, whole
   in data. A ")" that closes the value, a literal, a "~", an escape and
   anything odd are left to step(). */
static size_t list_run(const unsigned char *data, size_t len, unsigned int *depth)
{
	size_t run = 0;

	for (; run < len; run++) {
		unsigned char c = data[run];

		if (c == '(') {
			if (*depth == IMAP_FETCH_ITEMS_MAX_DEPTH)
				break;
			(*depth)++;
		} else if (c == ')') {
			if (*depth == 1)
				break;
			(*depth)--;
		} else if (c == '"') {
			size_t end = run + 1 + quoted_run(data + run + 1, len - run - 1);

			if (end == len || data[end] != '"')
				break;
			run = end;
		} else if (c != ' ' && (!is_atom_byte(c) || c == '~')) {
			break;
		}
	}
	return run;
}

/* Takes a run of bytes the current state would add one by one without
   leaving it (an atom's, a name's outside brackets, a quoted string's
   plain ones, a list's plain ones). Returns how many (0: none, step()
   takes the byte). */
static size_t feed_run(struct imap_fetch_items *items, const unsigned char *data, size_t len)
{
	struct byte_buffer *buffer = &items->value;
	size_t max = IMAP_FETCH_ITEMS_VALUE_MAX, run;

	switch (items->state) {
	case STATE_QUOTED:
		run = quoted_run(data, len);
		break;
	case STATE_ATOM:
		run = atom_run(data, len, false);
		break;
	case STATE_LIST:
		run = list_run(data, len, &items->depth);
		break;
	case STATE_NAME:
		run = items->name_brackets == 0 ? atom_run(data, len, true) : 0;
		buffer = &items->name;
		max = IMAP_FETCH_ITEMS_NAME_MAX;
		break;
	default:
		return 0;
	}
	if (run > 0 && !buffer_append(buffer, data, run, max))
		fail(items, IMAP_FETCH_ITEMS_TOO_BIG);
	return run;
}

/* The result when the line ends in the current state. */
static enum imap_fetch_items_result line_end_result(const struct imap_fetch_items *items)
{
	switch (items->state) {
	case STATE_DONE:
		return IMAP_FETCH_ITEMS_COMPLETE;
	case STATE_FAILED:
		return items->result;
	case STATE_STAR:
	case STATE_SPACE:
	case STATE_SEQ_FIRST:
	case STATE_SEQ:
	case STATE_WORD:
		return IMAP_FETCH_ITEMS_NOT_FETCH;
	default:
		return IMAP_FETCH_ITEMS_MALFORMED;
	}
}

enum imap_fetch_items_result imap_fetch_items_feed(struct imap_fetch_items *items, const unsigned char *data,
						   size_t len, bool line_end)
{
	enum imap_fetch_items_result result;
	size_t pos = 0;

	while (pos < len && items->state != STATE_FAILED) {
		size_t run;
		int used;

		if (items->state == STATE_LITERAL_HELD || items->state == STATE_LITERAL_STREAM) {
			pos += feed_literal(items, data + pos, len - pos);
			continue;
		}
		if (items->state == STATE_DONE) {
			fail(items, IMAP_FETCH_ITEMS_MALFORMED); /* bytes after the line's end */
			break;
		}
		run = feed_run(items, data + pos, len - pos);
		if (run > 0) {
			pos += run;
			continue;
		}
		while ((used = step(items, data[pos])) == 0)
			;
		pos++;
	}
	if (!line_end)
		return items->state == STATE_FAILED ? items->result : IMAP_FETCH_ITEMS_NEED_MORE;
	result = line_end_result(items);
	imap_fetch_items_reset(items);
	return result;
}

bool imap_fetch_items_name_is(const struct imap_fetch_items_event *event, const char *name)
{
	return event->name_len == strlen(name) && strncasecmp(event->name, name, event->name_len) == 0;
}

bool imap_fetch_items_parse_number(const unsigned char *data, size_t len, uint64_t *number_r)
{
	uint64_t number = 0;

	if (len == 0 || len > 19)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (data[i] < '0' || data[i] > '9')
			return false;
		number = number * 10 + (uint64_t)(data[i] - '0');
	}
	*number_r = number;
	return true;
}
