/* SPDX-License-Identifier: MIT */
/* imap-parser: incremental IMAP tokenizer that turns one line (with its literals) into a tree of arguments. */
#include "config.h"
#include "imap-parser.h"

#include <assert.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#define ARENA_CHUNK_SIZE (16 * 1024) /* one FETCH line of ENVELOPE+BODYSTRUCTURE fits */
#define ARENA_KEEP_BYTES (1024 * 1024) /* past this, a huge line's memory is given back */
#define EVBUFFER_PEEK_VECTORS 16 /* chains looked at per round; more rounds follow */
#define NUMBER64_MAX ((uint64_t)INT64_MAX) /* RFC 9051 number64 */
#define HEADER_NAME_ESCAPE_OVERHEAD 2 /* the two quotes around a header name that is no atom */

enum parser_state {
	STATE_ARG_START,
	STATE_AFTER_ARG,
	STATE_TAG,          /* a line's first argument, when it is a tag */
	STATE_ATOM,
	STATE_ATOM_BRACKET,
	STATE_SECTION_LIST,
	STATE_SECTION_ATOM,
	STATE_SECTION_QUOTED,
	STATE_SECTION_QUOTED_ESCAPE,
	STATE_SECTION_AFTER_NAME,
	STATE_QUOTED,
	STATE_QUOTED_ESCAPE,
	STATE_TILDE,
	STATE_LITERAL_OPEN,
	STATE_LITERAL_DIGITS,
	STATE_LITERAL_CLOSE,
	STATE_LITERAL_CR,
	STATE_LITERAL_LF,
	STATE_LITERAL_DATA,
	STATE_CODE_START,
	STATE_CODE,
	STATE_AFTER_CODE,
	STATE_TEXT,
	STATE_CR,
	STATE_DONE,
	STATE_ERROR,
};

struct arena_chunk {
	struct arena_chunk *next;
	size_t size;
	size_t used;
	max_align_t data[];
};

/* The arguments completed so far in one open list (level 0: the line). */
struct open_level {
	struct imap_arg *args;
	unsigned int count;
	unsigned int capacity;
};

struct imap_parser {
	enum imap_parser_mode mode;
	struct imap_parser_limits limits;
	imap_parser_literal_fn *literal_callback;
	void *literal_context;

	enum parser_state state;
	size_t line_bytes;
	unsigned int arg_total;
	bool text_pending;

	struct open_level *levels;
	unsigned int level_capacity;
	unsigned int depth;

	char *token;
	size_t token_len;
	size_t token_capacity;
	unsigned int bracket_depth;
	size_t section_name_start;  /* in token: where the header name being read begins */
	bool section_literal;       /* the literal being read is a header name inside [...] */

	uint64_t literal_size;
	uint64_t literal_offset;
	uint64_t inline_total;
	unsigned int literal_flags;
	char *literal_inline;

	struct arena_chunk *arena_head;
	struct arena_chunk *arena_current;
	size_t arena_bytes;

	struct imap_arg line;
	enum imap_parser_error error;
	const char *error_message;
	struct imap_parser_stats stats;
};

/* Bytes that may continue an atom without special handling. */
static bool atom_char_table[256];
/* RFC 3501 ASTRING-CHAR: a header name inside [...] made of these stays an atom. */
static bool astring_char_table[256];
/* What Dovecot takes in an unquoted header name inside [...] and echoes
   back in its FETCH answer: ASTRING-CHAR and '%', '*', '\\' too. A name
   with those is written back quoted. */
static bool section_atom_char_table[256];
static bool tables_ready;

static void tables_init(void)
{
	if (tables_ready)
		return;
	for (unsigned int c = 0; c < 256; c++) {
		bool ok = c > 0x20 && c != 0x7f;
		if (c == '(' || c == ')' || c == '"' || c == '{' || c == '[')
			ok = false;
		atom_char_table[c] = ok;
		astring_char_table[c] = c > 0x20 && c < 0x7f && strchr("(){%*\"\\", (int)c) == NULL;
		section_atom_char_table[c] = c > 0x20 && c < 0x7f && strchr("(){\"", (int)c) == NULL;
	}
	tables_ready = true;
}

static void *parser_malloc(struct imap_parser *parser, size_t size)
{
	parser->stats.allocations++;
	return malloc(size);
}

static void *parser_realloc(struct imap_parser *parser, void *old, size_t size)
{
	parser->stats.allocations++;
	return realloc(old, size);
}

static void *arena_alloc(struct imap_parser *parser, size_t size)
{
	/* Round up so that every allocation stays aligned for struct imap_arg. */
	size_t need = (size + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
	struct arena_chunk *chunk = parser->arena_current;

	while (chunk != NULL) {
		if (chunk->size - chunk->used >= need) {
			void *ptr = (char *)chunk->data + chunk->used;
			chunk->used += need;
			parser->arena_current = chunk;
			return ptr;
		}
		chunk = chunk->next;
	}
	size_t chunk_size = need > ARENA_CHUNK_SIZE ? need : ARENA_CHUNK_SIZE;
	chunk = parser_malloc(parser, sizeof(*chunk) + chunk_size);
	if (chunk == NULL)
		return NULL;
	chunk->size = chunk_size;
	chunk->used = need;
	if (parser->arena_current == NULL) {
		chunk->next = parser->arena_head;
		parser->arena_head = chunk;
	} else {
		chunk->next = parser->arena_current->next;
		parser->arena_current->next = chunk;
	}
	parser->arena_current = chunk;
	parser->arena_bytes += chunk_size;
	return chunk->data;
}

static void arena_free_after(struct imap_parser *parser, struct arena_chunk *keep)
{
	struct arena_chunk *chunk = keep != NULL ? keep->next : parser->arena_head;

	while (chunk != NULL) {
		struct arena_chunk *next = chunk->next;
		parser->arena_bytes -= chunk->size;
		free(chunk);
		chunk = next;
	}
	if (keep != NULL)
		keep->next = NULL;
	else
		parser->arena_head = NULL;
}

/* Makes the arena empty again, keeping its chunks unless they grew too big. */
static void arena_reset(struct imap_parser *parser)
{
	if (parser->arena_bytes > ARENA_KEEP_BYTES)
		arena_free_after(parser, parser->arena_head);
	for (struct arena_chunk *chunk = parser->arena_head; chunk != NULL; chunk = chunk->next)
		chunk->used = 0;
	parser->arena_current = parser->arena_head;
}

static bool level_ensure(struct imap_parser *parser, unsigned int depth);

static enum parser_state line_start_state(const struct imap_parser *parser)
{
	return parser->mode == IMAP_PARSER_MODE_TEXT_LINE ? STATE_TEXT : STATE_ARG_START;
}

static void line_reset(struct imap_parser *parser)
{
	arena_reset(parser);
	for (unsigned int i = 0; i <= parser->depth && i < parser->level_capacity; i++)
		parser->levels[i].count = 0;
	parser->depth = 0;
	parser->line_bytes = 0;
	parser->arg_total = 0;
	parser->text_pending = false;
	parser->token_len = 0;
	parser->bracket_depth = 0;
	parser->section_name_start = 0;
	parser->section_literal = false;
	parser->literal_size = 0;
	parser->literal_offset = 0;
	parser->literal_flags = 0;
	parser->literal_inline = NULL;
	parser->inline_total = 0;
	parser->error = IMAP_PARSER_ERROR_NONE;
	parser->error_message = NULL;
	memset(&parser->line, 0, sizeof(parser->line));
	parser->state = line_start_state(parser);
}

struct imap_parser *imap_parser_new(void)
{
	struct imap_parser *parser = calloc(1, sizeof(*parser));

	if (parser == NULL)
		return NULL;
	tables_init();
	parser->stats.allocations = 1;
	imap_parser_get_default_limits(&parser->limits);
	parser->mode = IMAP_PARSER_MODE_COMMAND;
	if (!level_ensure(parser, 0)) {
		free(parser);
		return NULL;
	}
	line_reset(parser);
	return parser;
}

void imap_parser_free(struct imap_parser **parser_p)
{
	struct imap_parser *parser;

	if (parser_p == NULL || *parser_p == NULL)
		return;
	parser = *parser_p;
	arena_free_after(parser, NULL);
	for (unsigned int i = 0; i < parser->level_capacity; i++)
		free(parser->levels[i].args);
	free(parser->levels);
	free(parser->token);
	free(parser);
	*parser_p = NULL;
}

void imap_parser_get_default_limits(struct imap_parser_limits *limits_r)
{
	limits_r->max_line = IMAP_PARSER_DEFAULT_MAX_LINE;
	limits_r->max_literal = IMAP_PARSER_DEFAULT_MAX_LITERAL;
	limits_r->max_inline_literal = IMAP_PARSER_DEFAULT_MAX_INLINE_LITERAL;
	limits_r->max_depth = IMAP_PARSER_DEFAULT_MAX_DEPTH;
	limits_r->max_args = IMAP_PARSER_DEFAULT_MAX_ARGS;
}

void imap_parser_set_limits(struct imap_parser *parser, const struct imap_parser_limits *limits)
{
	parser->limits = *limits;
}

void imap_parser_get_limits(const struct imap_parser *parser, struct imap_parser_limits *limits_r)
{
	*limits_r = parser->limits;
}

void imap_parser_set_mode(struct imap_parser *parser, enum imap_parser_mode mode)
{
	parser->mode = mode;
	if (parser->state == STATE_ARG_START || parser->state == STATE_TEXT) {
		assert(parser->line_bytes == 0);
		parser->state = line_start_state(parser);
	}
}

enum imap_parser_mode imap_parser_get_mode(const struct imap_parser *parser)
{
	return parser->mode;
}

void imap_parser_set_literal_callback(struct imap_parser *parser, imap_parser_literal_fn *callback,
				      void *context)
{
	parser->literal_callback = callback;
	parser->literal_context = context;
}

void imap_parser_reset(struct imap_parser *parser)
{
	line_reset(parser);
}

void imap_parser_wipe(struct imap_parser *parser)
{
	for (struct arena_chunk *chunk = parser->arena_head; chunk != NULL; chunk = chunk->next)
		explicit_bzero(chunk->data, chunk->size);
	if (parser->token != NULL)
		explicit_bzero(parser->token, parser->token_capacity);
	imap_parser_reset(parser);
}

bool imap_parser_release_memory(struct imap_parser *parser)
{
	if (imap_parser_is_mid_line(parser) || parser->state == STATE_ERROR)
		return false;
	line_reset(parser);
	arena_free_after(parser, NULL);
	parser->arena_current = NULL;
	for (unsigned int i = 0; i < parser->level_capacity; i++) {
		free(parser->levels[i].args);
		parser->levels[i].args = NULL;
		parser->levels[i].capacity = 0;
	}
	free(parser->token);
	parser->token = NULL;
	parser->token_capacity = 0;
	return true;
}

static void fail(struct imap_parser *parser, enum imap_parser_error error, const char *message)
{
	parser->state = STATE_ERROR;
	parser->error = error;
	parser->error_message = message;
}

static bool token_append(struct imap_parser *parser, const void *data, size_t len)
{
	if (parser->token_len + len + 1 > parser->token_capacity) {
		size_t capacity = parser->token_capacity == 0 ? 256 : parser->token_capacity;
		while (capacity < parser->token_len + len + 1)
			capacity *= 2;
		char *token = parser_realloc(parser, parser->token, capacity);
		if (token == NULL) {
			fail(parser, IMAP_PARSER_ERROR_OUT_OF_MEMORY, "Out of memory");
			return false;
		}
		parser->token = token;
		parser->token_capacity = capacity;
	}
	memcpy(parser->token + parser->token_len, data, len);
	parser->token_len += len;
	return true;
}

static bool level_ensure(struct imap_parser *parser, unsigned int depth)
{
	if (depth < parser->level_capacity)
		return true;
	unsigned int capacity = parser->level_capacity == 0 ? 4 : parser->level_capacity * 2;
	while (capacity <= depth)
		capacity *= 2;
	struct open_level *levels = parser_realloc(parser, parser->levels, capacity * sizeof(*levels));
	if (levels == NULL) {
		fail(parser, IMAP_PARSER_ERROR_OUT_OF_MEMORY, "Out of memory");
		return false;
	}
	memset(levels + parser->level_capacity, 0,
	       (capacity - parser->level_capacity) * sizeof(*levels));
	parser->levels = levels;
	parser->level_capacity = capacity;
	return true;
}

static bool is_status_word(const char *word, size_t len)
{
	switch (len) {
	case 2:
		return strcasecmp(word, "OK") == 0 || strcasecmp(word, "NO") == 0;
	case 3:
		return strcasecmp(word, "BAD") == 0 || strcasecmp(word, "BYE") == 0;
	case 7:
		return strcasecmp(word, "PREAUTH") == 0;
	default:
		return false;
	}
}

/* Appends a finished argument to the innermost open list. */
static bool add_arg(struct imap_parser *parser, enum imap_arg_type type, unsigned int flags,
		    const char *str, uint64_t len, bool count_it)
{
	if (count_it) {
		if (parser->arg_total >= parser->limits.max_args) {
			fail(parser, IMAP_PARSER_ERROR_TOO_MANY_ARGS, "Too many arguments on one line");
			return false;
		}
		parser->arg_total++;
	}
	struct open_level *level = &parser->levels[parser->depth];
	if (level->count == level->capacity) {
		unsigned int capacity = level->capacity == 0 ? 32 : level->capacity * 2;
		struct imap_arg *args = parser_realloc(parser, level->args, capacity * sizeof(*args));
		if (args == NULL) {
			fail(parser, IMAP_PARSER_ERROR_OUT_OF_MEMORY, "Out of memory");
			return false;
		}
		level->args = args;
		level->capacity = capacity;
	}
	struct imap_arg *arg = &level->args[level->count++];
	arg->type = type;
	arg->flags = flags;
	arg->str = str;
	arg->len = len;
	arg->list = NULL;
	arg->list_count = 0;

	if (parser->mode == IMAP_PARSER_MODE_RESPONSE && parser->depth == 0 && type == IMAP_ARG_ATOM) {
		if (level->count == 1 && len == 1 && str[0] == '+')
			parser->text_pending = true;
		else if (level->count == 2 && level->args[0].type == IMAP_ARG_ATOM &&
			 is_status_word(str, len))
			parser->text_pending = true;
	}
	return true;
}

/* Copies the collected token into the arena and appends it as an argument. */
static bool add_token_arg(struct imap_parser *parser, enum imap_arg_type type, unsigned int flags)
{
	char *str = arena_alloc(parser, parser->token_len + 1);

	if (str == NULL) {
		fail(parser, IMAP_PARSER_ERROR_OUT_OF_MEMORY, "Out of memory");
		return false;
	}
	if (parser->token_len > 0)
		memcpy(str, parser->token, parser->token_len);
	str[parser->token_len] = '\0';
	size_t len = parser->token_len;
	parser->token_len = 0;
	return add_arg(parser, type, flags, str, len, true);
}

static bool finish_atom(struct imap_parser *parser)
{
	enum imap_arg_type type = IMAP_ARG_ATOM;

	if (parser->token_len == 3 && strncasecmp(parser->token, "NIL", 3) == 0)
		type = IMAP_ARG_NIL;
	return add_token_arg(parser, type, 0);
}

static bool open_list(struct imap_parser *parser)
{
	if (parser->depth >= parser->limits.max_depth) {
		fail(parser, IMAP_PARSER_ERROR_TOO_DEEP, "Lists nested too deeply");
		return false;
	}
	if (parser->arg_total >= parser->limits.max_args) {
		fail(parser, IMAP_PARSER_ERROR_TOO_MANY_ARGS, "Too many arguments on one line");
		return false;
	}
	parser->arg_total++;
	if (!level_ensure(parser, parser->depth + 1))
		return false;
	parser->depth++;
	parser->levels[parser->depth].count = 0;
	return true;
}

static bool close_list(struct imap_parser *parser)
{
	if (parser->depth == 0) {
		fail(parser, IMAP_PARSER_ERROR_UNEXPECTED_CHAR, "Unexpected ')' with no open list");
		return false;
	}
	struct open_level *level = &parser->levels[parser->depth];
	struct imap_arg *children = NULL;
	if (level->count > 0) {
		children = arena_alloc(parser, level->count * sizeof(*children));
		if (children == NULL) {
			fail(parser, IMAP_PARSER_ERROR_OUT_OF_MEMORY, "Out of memory");
			return false;
		}
		memcpy(children, level->args, level->count * sizeof(*children));
	}
	unsigned int count = level->count;
	level->count = 0;
	parser->depth--;
	if (!add_arg(parser, IMAP_ARG_LIST, 0, "", 0, false))
		return false;
	struct open_level *parent = &parser->levels[parser->depth];
	parent->args[parent->count - 1].list = children;
	parent->args[parent->count - 1].list_count = count;
	return true;
}

static bool end_line(struct imap_parser *parser)
{
	if (parser->depth > 0) {
		fail(parser, IMAP_PARSER_ERROR_UNCLOSED_LIST, "Line ended inside a list");
		return false;
	}
	if (parser->text_pending) {
		parser->text_pending = false;
		if (!add_arg(parser, IMAP_ARG_TEXT, 0, "", 0, true))
			return false;
	}
	struct open_level *level = &parser->levels[0];
	struct imap_arg *args = NULL;
	if (level->count > 0) {
		args = arena_alloc(parser, level->count * sizeof(*args));
		if (args == NULL) {
			fail(parser, IMAP_PARSER_ERROR_OUT_OF_MEMORY, "Out of memory");
			return false;
		}
		memcpy(args, level->args, level->count * sizeof(*args));
	}
	parser->line.type = IMAP_ARG_LIST;
	parser->line.flags = 0;
	parser->line.str = "";
	parser->line.len = 0;
	parser->line.list = args;
	parser->line.list_count = level->count;
	parser->state = STATE_DONE;
	parser->stats.lines++;
	return true;
}

/* Ends the header name at section_name_start in the token: it stays as it
   is when it is an atom, else it is written back as a quoted string. */
static bool section_name_finish(struct imap_parser *parser)
{
	size_t start = parser->section_name_start, len = parser->token_len - start, escapes = 0;
	bool atom = len > 0;

	for (size_t i = start; i < parser->token_len; i++) {
		unsigned char c = (unsigned char)parser->token[i];
		atom = atom && astring_char_table[c];
		escapes += c == '"' || c == '\\';
	}
	if (atom)
		return true;
	size_t grow = escapes + HEADER_NAME_ESCAPE_OVERHEAD;
	/* Room first (token_append may move the buffer), then fill from the end. */
	for (size_t i = 0; i < grow; i++) {
		if (!token_append(parser, "\"", 1))
			return false;
	}
	char *name = parser->token + start;
	size_t to = len + grow;
	name[--to] = '"';
	for (size_t from = len; from-- > 0;) {
		char c = name[from];
		name[--to] = c;
		if (c == '"' || c == '\\')
			name[--to] = '\\';
	}
	name[--to] = '"';
	assert(to == 0);
	return true;
}

/* After "{n}" and its line end: checks the size and prepares for the bytes. */
static bool literal_begin(struct imap_parser *parser)
{
	if (parser->literal_size > parser->limits.max_literal) {
		fail(parser, IMAP_PARSER_ERROR_LITERAL_TOO_BIG, "Literal too big");
		return false;
	}
	parser->literal_offset = 0;
	parser->literal_inline = NULL;
	if (parser->section_literal) {
		/* The name becomes part of the atom: it counts as line bytes. */
		if (parser->literal_size > IMAP_PARSER_MAX_HEADER_NAME) {
			fail(parser, IMAP_PARSER_ERROR_LITERAL_TOO_BIG, "Header name literal too big");
			return false;
		}
		if (parser->line_bytes + parser->literal_size > parser->limits.max_line) {
			fail(parser, IMAP_PARSER_ERROR_LINE_TOO_LONG, "Line too long");
			return false;
		}
		parser->line_bytes += (size_t)parser->literal_size;
		parser->section_name_start = parser->token_len;
		parser->state = STATE_LITERAL_DATA;
		return true;
	}
	uint64_t line_budget = parser->limits.max_inline_literal > UINT64_MAX / IMAP_PARSER_INLINE_LITERALS_PER_LINE
				       ? UINT64_MAX
				       : parser->limits.max_inline_literal * IMAP_PARSER_INLINE_LITERALS_PER_LINE;
	if (parser->literal_size <= parser->limits.max_inline_literal &&
	    parser->inline_total <= line_budget && parser->literal_size <= line_budget - parser->inline_total) {
		parser->inline_total += parser->literal_size;
		parser->literal_inline = arena_alloc(parser, (size_t)parser->literal_size + 1);
		if (parser->literal_inline == NULL) {
			fail(parser, IMAP_PARSER_ERROR_OUT_OF_MEMORY, "Out of memory");
			return false;
		}
	}
	parser->state = STATE_LITERAL_DATA;
	return true;
}

static bool literal_finish(struct imap_parser *parser)
{
	bool ok;

	if (parser->section_literal) {
		parser->section_literal = false;
		parser->state = STATE_SECTION_AFTER_NAME;
		return section_name_finish(parser);
	}
	if (parser->literal_inline != NULL) {
		parser->literal_inline[parser->literal_size] = '\0';
		ok = add_arg(parser, IMAP_ARG_LITERAL, parser->literal_flags, parser->literal_inline,
			     parser->literal_size, true);
	} else {
		ok = add_arg(parser, IMAP_ARG_LITERAL_STREAMED, parser->literal_flags, "",
			     parser->literal_size, true);
	}
	parser->literal_inline = NULL;
	parser->state = STATE_AFTER_ARG;
	return ok;
}

/* Takes literal bytes from data; returns how many, or -1 after an error. */
static ssize_t literal_take(struct imap_parser *parser, const unsigned char *data, size_t size)
{
	uint64_t remaining = parser->literal_size - parser->literal_offset;
	size_t take = remaining < size ? (size_t)remaining : size;

	if (parser->section_literal) {
		for (size_t i = 0; i < take; i++) {
			if (data[i] == '\r' || data[i] == '\n' || data[i] == '\0') {
				fail(parser, IMAP_PARSER_ERROR_UNEXPECTED_CHAR, "CR, LF or NUL in a header name literal");
				return -1;
			}
		}
		if (!token_append(parser, data, take))
			return -1;
	} else if (parser->literal_inline != NULL) {
		memcpy(parser->literal_inline + parser->literal_offset, data, take);
	} else if (parser->literal_callback != NULL) {
		struct imap_parser_literal_chunk chunk = {
			.offset = parser->literal_offset,
			.data = data,
			.len = take,
			.size = parser->literal_size,
			.last = take == remaining,
			.flags = parser->literal_flags,
		};
		if (parser->literal_callback(parser, &chunk, parser->literal_context) < 0) {
			fail(parser, IMAP_PARSER_ERROR_LITERAL_REJECTED, "Literal refused");
			return -1;
		}
	}
	parser->literal_offset += take;
	if (parser->literal_offset == parser->literal_size && !literal_finish(parser))
		return -1;
	return (ssize_t)take;
}

/* Length of the run at data that the current token state takes as is. */
static size_t plain_span(const struct imap_parser *parser, const unsigned char *data, size_t size)
{
	size_t i = 0;

	switch (parser->state) {
	case STATE_ATOM:
		while (i < size && atom_char_table[data[i]])
			i++;
		break;
	case STATE_ATOM_BRACKET:
		while (i < size && data[i] >= 0x20 && data[i] != 0x7f && data[i] != '[' && data[i] != ']' &&
		       data[i] != '(')
			i++;
		break;
	case STATE_SECTION_ATOM:
		while (i < size && section_atom_char_table[data[i]])
			i++;
		break;
	case STATE_QUOTED:
	case STATE_SECTION_QUOTED:
		while (i < size && data[i] != '"' && data[i] != '\\' && data[i] != '\r' &&
		       data[i] != '\n' && data[i] != '\0')
			i++;
		break;
	case STATE_CODE:
		while (i < size && data[i] != ']' && data[i] != '\r' && data[i] != '\n' && data[i] != '\0')
			i++;
		break;
	case STATE_TEXT:
		while (i < size && data[i] != '\r' && data[i] != '\n' && data[i] != '\0')
			i++;
		break;
	default:
		break;
	}
	return i;
}

/* A byte of a line's first word when it is a tag: what an atom takes,
   and "[" and "]" as plain bytes (RFC 3501 allows them in a tag; an atom
   elsewhere would take "[" for a section). imap-command judges the tag. */
static bool is_tag_char(unsigned char c)
{
	return atom_char_table[c] || c == '[' || c == ']';
}

/* Whether the next argument is the line's first, where a tag stands. */
static bool at_line_start(const struct imap_parser *parser)
{
	return parser->depth == 0 && (parser->level_capacity == 0 || parser->levels[0].count == 0);
}

static bool start_atom(struct imap_parser *parser, unsigned char c)
{
	parser->token_len = 0;
	parser->bracket_depth = 0;
	if (!token_append(parser, &c, 1))
		return false;
	if (c == '[') {
		parser->bracket_depth = 1;
		parser->state = STATE_ATOM_BRACKET;
	} else {
		parser->state = STATE_ATOM;
	}
	return true;
}

static bool last_arg_is_list(const struct imap_parser *parser)
{
	const struct open_level *level = &parser->levels[parser->depth];

	return level->count > 0 && level->args[level->count - 1].type == IMAP_ARG_LIST;
}

static bool line_end_char(struct imap_parser *parser, unsigned char c)
{
	if (c == '\r') {
		parser->state = STATE_CR;
		return true;
	}
	return end_line(parser);
}

/* Handles one byte in the current state. */
static bool step(struct imap_parser *parser, unsigned char c);

/* Handles a byte again after a state change: it may be plain in the new state. */
static bool step_again(struct imap_parser *parser, unsigned char c)
{
	if (plain_span(parser, &c, 1) == 1)
		return token_append(parser, &c, 1);
	return step(parser, c);
}

/* Handles one byte that is not plain in the current state. */
static bool step(struct imap_parser *parser, unsigned char c)
{
	switch (parser->state) {
	case STATE_ARG_START:
		switch (c) {
		case ' ':
			return true;
		case '(':
			return open_list(parser);
		case ')':
			if (!close_list(parser))
				return false;
			parser->state = STATE_AFTER_ARG;
			return true;
		case '"':
			parser->token_len = 0;
			parser->state = STATE_QUOTED;
			return true;
		case '{':
			parser->literal_flags = 0;
			parser->state = STATE_LITERAL_OPEN;
			return true;
		case '~':
			parser->state = STATE_TILDE;
			return true;
		case '\r':
		case '\n':
			return line_end_char(parser, c);
		default:
			if (at_line_start(parser) && c != '*' && c != '+' && is_tag_char(c)) {
				parser->token_len = 0;
				parser->state = STATE_TAG;
				return token_append(parser, &c, 1);
			}
			if (c == '[' || atom_char_table[c])
				return start_atom(parser, c);
			fail(parser, IMAP_PARSER_ERROR_UNEXPECTED_CHAR, "Unexpected character");
			return false;
		}
	case STATE_TAG:
		if (is_tag_char(c))
			return token_append(parser, &c, 1);
		if (c == ' ' || c == '\r' || c == '\n') {
			if (!add_token_arg(parser, IMAP_ARG_ATOM, 0))
				return false;
			parser->state = STATE_AFTER_ARG;
			return step_again(parser, c);
		}
		fail(parser, IMAP_PARSER_ERROR_UNEXPECTED_CHAR, "Unexpected character in a tag");
		return false;
	case STATE_AFTER_ARG:
		switch (c) {
		case ' ':
			if (parser->text_pending) {
				parser->text_pending = false;
				parser->token_len = 0;
				parser->state = STATE_CODE_START;
			} else {
				parser->state = STATE_ARG_START;
			}
			return true;
		case ')':
			return close_list(parser);
		case '(':
			/* body-type-mpart glues the parts: "(...)(...) \"mixed\"". */
			if (last_arg_is_list(parser)) {
				parser->state = STATE_ARG_START;
				return open_list(parser);
			}
			break;
		case '\r':
		case '\n':
			return line_end_char(parser, c);
		default:
			break;
		}
		fail(parser, IMAP_PARSER_ERROR_UNEXPECTED_CHAR,
		     "Expected a space, ')' or the line end after an argument");
		return false;
	case STATE_ATOM:
		switch (c) {
		case '[':
			parser->bracket_depth = 1;
			parser->state = STATE_ATOM_BRACKET;
			return token_append(parser, &c, 1);
		case ' ':
		case ')':
		case '\r':
		case '\n':
			if (!finish_atom(parser))
				return false;
			parser->state = STATE_AFTER_ARG;
			return step_again(parser, c);
		default:
			fail(parser, IMAP_PARSER_ERROR_UNEXPECTED_CHAR, "Unexpected character in an atom");
			return false;
		}
	case STATE_ATOM_BRACKET:
		if (c == '[') {
			parser->bracket_depth++;
		} else if (c == '(') {
			/* A header list (RFC 3501 section-text): astrings, literals included. */
			parser->state = STATE_SECTION_LIST;
		} else if (c == ']') {
			if (--parser->bracket_depth == 0)
				parser->state = STATE_ATOM;
		} else {
			fail(parser, IMAP_PARSER_ERROR_UNEXPECTED_CHAR,
			     c == '\r' || c == '\n' ? "Line ended inside '[' of an atom"
						    : "Unexpected character inside '[' of an atom");
			return false;
		}
		return token_append(parser, &c, 1);
	case STATE_SECTION_LIST:
		switch (c) {
		case ' ':
			return token_append(parser, &c, 1);
		case ')':
			parser->state = STATE_ATOM_BRACKET;
			return token_append(parser, &c, 1);
		case '"':
			parser->section_name_start = parser->token_len;
			parser->state = STATE_SECTION_QUOTED;
			return true;
		case '{':
			parser->literal_flags = 0;
			parser->section_literal = true;
			parser->state = STATE_LITERAL_OPEN;
			return true;
		case '\r':
		case '\n':
			fail(parser, IMAP_PARSER_ERROR_UNCLOSED_LIST, "Line ended inside a header list in '['");
			return false;
		default:
			if (section_atom_char_table[c]) {
				parser->section_name_start = parser->token_len;
				parser->state = STATE_SECTION_ATOM;
				return token_append(parser, &c, 1);
			}
			fail(parser, IMAP_PARSER_ERROR_UNEXPECTED_CHAR, "Unexpected character in a header list");
			return false;
		}
	case STATE_SECTION_ATOM:
		/* Any other byte ends the name; AFTER_NAME judges it. */
		if (!section_name_finish(parser))
			return false;
		parser->state = STATE_SECTION_AFTER_NAME;
		return step(parser, c);
	case STATE_SECTION_QUOTED:
		if (c == '"') {
			parser->state = STATE_SECTION_AFTER_NAME;
			return section_name_finish(parser);
		}
		if (c == '\\') {
			parser->state = STATE_SECTION_QUOTED_ESCAPE;
			return true;
		}
		fail(parser, IMAP_PARSER_ERROR_BAD_QUOTED, "CR, LF or NUL inside a quoted header name");
		return false;
	case STATE_SECTION_QUOTED_ESCAPE:
		if (c != '"' && c != '\\') {
			fail(parser, IMAP_PARSER_ERROR_BAD_QUOTED,
			     "Only '\"' and '\\' may be escaped in a quoted header name");
			return false;
		}
		parser->state = STATE_SECTION_QUOTED;
		return token_append(parser, &c, 1);
	case STATE_SECTION_AFTER_NAME:
		switch (c) {
		case ' ':
			parser->state = STATE_SECTION_LIST;
			return token_append(parser, &c, 1);
		case ')':
			parser->state = STATE_ATOM_BRACKET;
			return token_append(parser, &c, 1);
		case '\r':
		case '\n':
			fail(parser, IMAP_PARSER_ERROR_UNCLOSED_LIST, "Line ended inside a header list in '['");
			return false;
		default:
			fail(parser, IMAP_PARSER_ERROR_UNEXPECTED_CHAR, "Expected a space or ')' after a header name");
			return false;
		}
	case STATE_QUOTED:
		if (c == '"') {
			if (!add_token_arg(parser, IMAP_ARG_STRING, 0))
				return false;
			parser->state = STATE_AFTER_ARG;
			return true;
		}
		if (c == '\\') {
			parser->state = STATE_QUOTED_ESCAPE;
			return true;
		}
		fail(parser, IMAP_PARSER_ERROR_BAD_QUOTED, "CR, LF or NUL inside a quoted string");
		return false;
	case STATE_QUOTED_ESCAPE:
		if (c != '"' && c != '\\') {
			fail(parser, IMAP_PARSER_ERROR_BAD_QUOTED,
			     "Only '\"' and '\\' may be escaped in a quoted string");
			return false;
		}
		parser->state = STATE_QUOTED;
		return token_append(parser, &c, 1);
	case STATE_TILDE:
		if (c == '{') {
			parser->literal_flags = IMAP_ARG_FLAG_LITERAL8;
			parser->state = STATE_LITERAL_OPEN;
			return true;
		}
		if (!start_atom(parser, '~'))
			return false;
		return step_again(parser, c);
	case STATE_LITERAL_OPEN:
		if (c < '0' || c > '9') {
			fail(parser, IMAP_PARSER_ERROR_BAD_LITERAL, "Literal size must start with a digit");
			return false;
		}
		parser->literal_size = (uint64_t)(c - '0');
		parser->state = STATE_LITERAL_DIGITS;
		return true;
	case STATE_LITERAL_DIGITS:
		if (c >= '0' && c <= '9') {
			uint64_t digit = (uint64_t)(c - '0');
			if (parser->literal_size > (NUMBER64_MAX - digit) / 10) {
				fail(parser, IMAP_PARSER_ERROR_BAD_LITERAL, "Literal size overflows");
				return false;
			}
			parser->literal_size = parser->literal_size * 10 + digit;
			return true;
		}
		if (c == '+') {
			parser->literal_flags |= IMAP_ARG_FLAG_NONSYNC;
			parser->state = STATE_LITERAL_CLOSE;
			return true;
		}
		if (c == '}') {
			parser->state = STATE_LITERAL_CR;
			return true;
		}
		fail(parser, IMAP_PARSER_ERROR_BAD_LITERAL, "Bad character in a literal size");
		return false;
	case STATE_LITERAL_CLOSE:
		if (c != '}') {
			fail(parser, IMAP_PARSER_ERROR_BAD_LITERAL, "Expected '}' after '+' of a literal");
			return false;
		}
		parser->state = STATE_LITERAL_CR;
		return true;
	case STATE_LITERAL_CR:
		if (c == '\r') {
			parser->state = STATE_LITERAL_LF;
			return true;
		}
		/* A bare LF is accepted as the line end too. */
		__attribute__((fallthrough));
	case STATE_LITERAL_LF:
		if (c != '\n') {
			fail(parser, IMAP_PARSER_ERROR_BAD_LITERAL, "Expected CRLF after a literal size");
			return false;
		}
		return literal_begin(parser);
	case STATE_CODE_START:
		if (c == '[') {
			parser->token_len = 0;
			parser->state = STATE_CODE;
			return true;
		}
		parser->state = STATE_TEXT;
		return step_again(parser, c);
	case STATE_CODE:
		if (c == ']') {
			if (!add_token_arg(parser, IMAP_ARG_TEXT, IMAP_ARG_FLAG_RESPONSE_CODE))
				return false;
			parser->state = STATE_AFTER_CODE;
			return true;
		}
		if (c == '\r' || c == '\n') {
			/* "[" never closed: it was text after all. */
			if (!token_append(parser, "[", 1))
				return false;
			memmove(parser->token + 1, parser->token, parser->token_len - 1);
			parser->token[0] = '[';
			parser->state = STATE_TEXT;
			return step_again(parser, c);
		}
		fail(parser, IMAP_PARSER_ERROR_UNEXPECTED_CHAR, "NUL in a response code");
		return false;
	case STATE_AFTER_CODE:
		parser->state = STATE_TEXT;
		if (c == ' ')
			return true;
		return step_again(parser, c);
	case STATE_TEXT:
		if (c == '\r' || c == '\n') {
			if (!add_token_arg(parser, IMAP_ARG_TEXT, 0))
				return false;
			return line_end_char(parser, c);
		}
		fail(parser, IMAP_PARSER_ERROR_UNEXPECTED_CHAR, "NUL in text");
		return false;
	case STATE_CR:
		if (c != '\n') {
			fail(parser, IMAP_PARSER_ERROR_UNEXPECTED_CHAR, "CR not followed by LF");
			return false;
		}
		return end_line(parser);
	case STATE_LITERAL_DATA:
	case STATE_DONE:
	case STATE_ERROR:
		break;
	}
	assert(!"unreachable parser state");
	return false;
}

/* A whole atom or escape-free quoted string seen at once goes straight to the
   arena; returns the bytes taken, 0 to leave it to the byte-wise states, or
   -1 after an error. */
static ssize_t fast_token(struct imap_parser *parser, const unsigned char *p, size_t size)
{
	enum imap_arg_type type;
	const unsigned char *start;
	size_t i = 1, len, taken;

	if (at_line_start(parser) && p[0] != '*' && p[0] != '+' && is_tag_char(p[0]))
		return 0; /* a tag: step() reads it (STATE_TAG) */
	if (p[0] == '"') {
		while (i < size && p[i] != '"' && p[i] != '\\' && p[i] != '\r' && p[i] != '\n' && p[i] != '\0')
			i++;
		if (i == size || p[i] != '"')
			return 0;
		type = IMAP_ARG_STRING;
		start = p + 1;
		len = i - 1;
		taken = i + 1;
	} else if (atom_char_table[p[0]] && p[0] != '~') {
		while (i < size && atom_char_table[p[i]])
			i++;
		/* Only with the terminator in sight and valid, and counted, so that
		   errors come in the same order as byte by byte. */
		if (i == size || (p[i] != ' ' && p[i] != ')' && p[i] != '\r' && p[i] != '\n') ||
		    parser->line_bytes + i + 1 > parser->limits.max_line)
			return 0;
		type = i == 3 && (p[0] | 0x20) == 'n' && (p[1] | 0x20) == 'i' && (p[2] | 0x20) == 'l'
			       ? IMAP_ARG_NIL
			       : IMAP_ARG_ATOM;
		start = p;
		len = i;
		taken = i;
	} else {
		return 0;
	}
	if (parser->line_bytes + taken > parser->limits.max_line)
		return 0;
	char *str = arena_alloc(parser, len + 1);
	if (str == NULL) {
		fail(parser, IMAP_PARSER_ERROR_OUT_OF_MEMORY, "Out of memory");
		return -1;
	}
	memcpy(str, start, len);
	str[len] = '\0';
	if (!add_arg(parser, type, 0, str, len, true))
		return -1;
	parser->line_bytes += taken;
	parser->state = STATE_AFTER_ARG;
	return (ssize_t)taken;
}

enum imap_parser_result imap_parser_feed_bytes(struct imap_parser *parser, const void *data,
					       size_t size, size_t *consumed_r)
{
	const unsigned char *bytes = data;
	size_t pos = 0;

	*consumed_r = 0;
	if (parser->state == STATE_DONE)
		line_reset(parser);
	if (parser->state == STATE_ERROR)
		return IMAP_PARSER_ERROR;
	if (parser->state == STATE_LITERAL_DATA && parser->literal_offset == parser->literal_size &&
	    !literal_finish(parser))
		return IMAP_PARSER_ERROR;

	while (pos < size) {
		if (parser->state == STATE_LITERAL_DATA) {
			ssize_t taken = literal_take(parser, bytes + pos, size - pos);
			if (taken < 0) {
				*consumed_r = pos;
				return IMAP_PARSER_ERROR;
			}
			pos += (size_t)taken;
			continue;
		}
		if (parser->state == STATE_AFTER_ARG && bytes[pos] == ' ' && !parser->text_pending &&
		    parser->line_bytes < parser->limits.max_line) {
			/* The separator between arguments, by far the commonest byte step() would see. */
			parser->line_bytes++;
			parser->state = STATE_ARG_START;
			pos++;
			continue;
		}
		if (parser->state == STATE_ARG_START) {
			ssize_t taken = fast_token(parser, bytes + pos, size - pos);
			if (taken < 0) {
				*consumed_r = pos;
				return IMAP_PARSER_ERROR;
			}
			if (taken > 0) {
				pos += (size_t)taken;
				continue;
			}
		}
		size_t span = plain_span(parser, bytes + pos, size - pos);
		if (span > 0) {
			if (parser->line_bytes + span > parser->limits.max_line) {
				fail(parser, IMAP_PARSER_ERROR_LINE_TOO_LONG, "Line too long");
				*consumed_r = pos;
				return IMAP_PARSER_ERROR;
			}
			parser->line_bytes += span;
			if (!token_append(parser, bytes + pos, span)) {
				*consumed_r = pos;
				return IMAP_PARSER_ERROR;
			}
			pos += span;
			continue;
		}
		if (++parser->line_bytes > parser->limits.max_line) {
			fail(parser, IMAP_PARSER_ERROR_LINE_TOO_LONG, "Line too long");
			*consumed_r = pos;
			return IMAP_PARSER_ERROR;
		}
		bool was_literal_lf = parser->state == STATE_LITERAL_LF || parser->state == STATE_LITERAL_CR;
		bool ok = step(parser, bytes[pos++]);
		*consumed_r = pos;
		if (!ok)
			return IMAP_PARSER_ERROR;
		if (parser->state == STATE_DONE)
			return IMAP_PARSER_LINE_COMPLETE;
		if (was_literal_lf && parser->state == STATE_LITERAL_DATA &&
		    parser->mode == IMAP_PARSER_MODE_COMMAND &&
		    (parser->literal_flags & IMAP_ARG_FLAG_NONSYNC) == 0)
			return IMAP_PARSER_LITERAL_ANNOUNCED;
	}
	*consumed_r = pos;
	return IMAP_PARSER_NEED_MORE;
}

enum imap_parser_result imap_parser_feed(struct imap_parser *parser, struct evbuffer *input)
{
	struct evbuffer_iovec vectors[EVBUFFER_PEEK_VECTORS];
	enum imap_parser_result result;
	size_t consumed;

	for (;;) {
		int count = evbuffer_peek(input, -1, NULL, vectors, EVBUFFER_PEEK_VECTORS);
		if (count <= 0)
			return imap_parser_feed_bytes(parser, NULL, 0, &consumed);
		int used = count < EVBUFFER_PEEK_VECTORS ? count : EVBUFFER_PEEK_VECTORS;
		size_t total = 0;
		for (int i = 0; i < used; i++) {
			result = imap_parser_feed_bytes(parser, vectors[i].iov_base, vectors[i].iov_len,
							&consumed);
			total += consumed;
			if (result != IMAP_PARSER_NEED_MORE) {
				evbuffer_drain(input, total);
				return result;
			}
		}
		evbuffer_drain(input, total);
		/* evbuffer_peek() caps its count at the vectors given: look again. */
		if (evbuffer_get_length(input) == 0)
			return IMAP_PARSER_NEED_MORE;
	}
}

const struct imap_arg *imap_parser_get_line(const struct imap_parser *parser)
{
	return parser->state == STATE_DONE ? &parser->line : NULL;
}

enum imap_parser_error imap_parser_get_error(const struct imap_parser *parser, const char **message_r)
{
	if (message_r != NULL)
		*message_r = parser->error_message != NULL ? parser->error_message : "No error";
	return parser->error;
}

const char *imap_parser_error_name(enum imap_parser_error error)
{
	switch (error) {
	case IMAP_PARSER_ERROR_NONE: return "NONE";
	case IMAP_PARSER_ERROR_LINE_TOO_LONG: return "LINE_TOO_LONG";
	case IMAP_PARSER_ERROR_LITERAL_TOO_BIG: return "LITERAL_TOO_BIG";
	case IMAP_PARSER_ERROR_TOO_DEEP: return "TOO_DEEP";
	case IMAP_PARSER_ERROR_TOO_MANY_ARGS: return "TOO_MANY_ARGS";
	case IMAP_PARSER_ERROR_BAD_LITERAL: return "BAD_LITERAL";
	case IMAP_PARSER_ERROR_BAD_QUOTED: return "BAD_QUOTED";
	case IMAP_PARSER_ERROR_UNEXPECTED_CHAR: return "UNEXPECTED_CHAR";
	case IMAP_PARSER_ERROR_UNCLOSED_LIST: return "UNCLOSED_LIST";
	case IMAP_PARSER_ERROR_LITERAL_REJECTED: return "LITERAL_REJECTED";
	case IMAP_PARSER_ERROR_OUT_OF_MEMORY: return "OUT_OF_MEMORY";
	}
	return "UNKNOWN";
}

uint64_t imap_parser_get_literal_size(const struct imap_parser *parser)
{
	return parser->literal_size;
}

bool imap_parser_get_refused_literal(const struct imap_parser *parser, uint64_t *size_r, bool *nonsync_r)
{
	if (parser->state != STATE_ERROR || parser->error != IMAP_PARSER_ERROR_LITERAL_TOO_BIG)
		return false;
	*size_r = parser->literal_size;
	*nonsync_r = (parser->literal_flags & IMAP_ARG_FLAG_NONSYNC) != 0;
	return true;
}

uint64_t imap_parser_get_literal_remaining(const struct imap_parser *parser)
{
	return parser->state == STATE_LITERAL_DATA ? parser->literal_size - parser->literal_offset : 0;
}

bool imap_parser_is_mid_line(const struct imap_parser *parser)
{
	return parser->state != STATE_DONE && parser->state != STATE_ERROR && parser->line_bytes > 0;
}

unsigned int imap_parser_get_open_depth(const struct imap_parser *parser)
{
	return parser->state == STATE_DONE ? 0 : parser->depth;
}

void imap_parser_get_open_args(const struct imap_parser *parser, unsigned int depth,
			       const struct imap_arg **args_r, unsigned int *count_r)
{
	if (depth > parser->depth || depth >= parser->level_capacity) {
		*args_r = NULL;
		*count_r = 0;
		return;
	}
	*args_r = parser->levels[depth].args;
	*count_r = parser->levels[depth].count;
}

void imap_parser_get_stats(const struct imap_parser *parser, struct imap_parser_stats *stats_r)
{
	*stats_r = parser->stats;
	stats_r->arena_bytes = parser->arena_bytes;
}

bool imap_arg_is_nil(const struct imap_arg *arg)
{
	return arg->type == IMAP_ARG_NIL;
}

bool imap_arg_get_atom(const struct imap_arg *arg, const char **atom_r)
{
	if (arg->type != IMAP_ARG_ATOM)
		return false;
	*atom_r = arg->str;
	return true;
}

bool imap_arg_atom_equals(const struct imap_arg *arg, const char *word)
{
	return arg->type == IMAP_ARG_ATOM && strcasecmp(arg->str, word) == 0;
}

bool imap_arg_get_string(const struct imap_arg *arg, const char **str_r, size_t *len_r)
{
	if (arg->type != IMAP_ARG_STRING && arg->type != IMAP_ARG_LITERAL)
		return false;
	*str_r = arg->str;
	*len_r = (size_t)arg->len;
	return true;
}

bool imap_arg_get_astring(const struct imap_arg *arg, const char **str_r, size_t *len_r)
{
	if (arg->type != IMAP_ARG_ATOM && arg->type != IMAP_ARG_NIL &&
	    arg->type != IMAP_ARG_STRING && arg->type != IMAP_ARG_LITERAL)
		return false;
	*str_r = arg->str;
	*len_r = (size_t)arg->len;
	return true;
}

bool imap_arg_get_nstring(const struct imap_arg *arg, const char **str_r, size_t *len_r)
{
	if (arg->type == IMAP_ARG_NIL) {
		*str_r = NULL;
		*len_r = 0;
		return true;
	}
	return imap_arg_get_string(arg, str_r, len_r);
}

bool imap_arg_get_list(const struct imap_arg *arg, const struct imap_arg **args_r, unsigned int *count_r)
{
	if (arg->type != IMAP_ARG_LIST)
		return false;
	*args_r = arg->list;
	*count_r = arg->list_count;
	return true;
}

bool imap_arg_get_number(const struct imap_arg *arg, uint64_t *number_r)
{
	uint64_t value = 0;

	if (arg->type != IMAP_ARG_ATOM || arg->len == 0 || arg->len > 19)
		return false;
	for (size_t i = 0; i < arg->len; i++) {
		unsigned char c = (unsigned char)arg->str[i];
		if (c < '0' || c > '9')
			return false;
		value = value * 10 + (uint64_t)(c - '0');
	}
	if (value > NUMBER64_MAX)
		return false;
	*number_r = value;
	return true;
}

bool imap_arg_get_number32(const struct imap_arg *arg, uint32_t *number_r)
{
	uint64_t value;

	if (!imap_arg_get_number(arg, &value) || value > UINT32_MAX)
		return false;
	*number_r = (uint32_t)value;
	return true;
}

bool imap_arg_get_nz_number(const struct imap_arg *arg, uint32_t *number_r)
{
	uint32_t value;

	if (!imap_arg_get_number32(arg, &value) || value == 0)
		return false;
	*number_r = value;
	return true;
}
