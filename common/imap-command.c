/* SPDX-License-Identifier: MIT */
/* imap-command: client commands (tag, name, typed arguments) from a line parsed by imap-parser. */
#include "config.h"
#include "imap-command.h"
#include "imap-response.h"
#include "imap-util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define POOL_CHUNK_SIZE (8 * 1024) /* a FETCH or SEARCH of ordinary size fits in one */
#define APPEND_DATE_TIME_LEN 26 /* RFC 3501 date-time: "DD-Mon-YYYY HH:MM:SS +HHMM" */

struct pool_chunk {
	struct pool_chunk *next;
	size_t size;
	size_t used;
	max_align_t data[];
};

struct imap_command_parser {
	struct pool_chunk *pool;
	struct imap_seqset **sets;
	unsigned int set_count;
	unsigned int set_capacity;
	char message[200];
};

struct imap_command_parser *imap_command_parser_new(void)
{
	return calloc(1, sizeof(struct imap_command_parser));
}

void imap_command_parser_free(struct imap_command_parser **parser_p)
{
	struct imap_command_parser *parser;

	if (parser_p == NULL || *parser_p == NULL)
		return;
	parser = *parser_p;
	while (parser->pool != NULL) {
		struct pool_chunk *next = parser->pool->next;
		free(parser->pool);
		parser->pool = next;
	}
	for (unsigned int i = 0; i < parser->set_capacity; i++) {
		if (parser->sets[i] != NULL) {
			imap_seqset_free(parser->sets[i]);
			free(parser->sets[i]);
		}
	}
	free(parser->sets);
	free(parser);
	*parser_p = NULL;
}

const char *imap_command_error_name(enum imap_command_error error)
{
	switch (error) {
	case IMAP_COMMAND_ERROR_NONE: return "NONE";
	case IMAP_COMMAND_ERROR_EMPTY: return "EMPTY";
	case IMAP_COMMAND_ERROR_BAD_TAG: return "BAD_TAG";
	case IMAP_COMMAND_ERROR_MISSING_COMMAND: return "MISSING_COMMAND";
	case IMAP_COMMAND_ERROR_UNKNOWN_COMMAND: return "UNKNOWN_COMMAND";
	case IMAP_COMMAND_ERROR_MISSING_ARGUMENT: return "MISSING_ARGUMENT";
	case IMAP_COMMAND_ERROR_EXTRA_ARGUMENT: return "EXTRA_ARGUMENT";
	case IMAP_COMMAND_ERROR_BAD_ARGUMENT: return "BAD_ARGUMENT";
	case IMAP_COMMAND_ERROR_BAD_SEQUENCE_SET: return "BAD_SEQUENCE_SET";
	case IMAP_COMMAND_ERROR_BAD_FETCH_ATTRIBUTE: return "BAD_FETCH_ATTRIBUTE";
	case IMAP_COMMAND_ERROR_BAD_SECTION: return "BAD_SECTION";
	case IMAP_COMMAND_ERROR_BAD_STORE: return "BAD_STORE";
	case IMAP_COMMAND_ERROR_BAD_FLAG: return "BAD_FLAG";
	case IMAP_COMMAND_ERROR_BAD_DATE: return "BAD_DATE";
	case IMAP_COMMAND_ERROR_BAD_SEARCH_KEY: return "BAD_SEARCH_KEY";
	case IMAP_COMMAND_ERROR_OUT_OF_MEMORY: return "OUT_OF_MEMORY";
	}
	return "UNKNOWN";
}

static void pool_reset(struct imap_command_parser *parser)
{
	/* Keep the first chunk only: commands are small, a huge one is rare. */
	if (parser->pool != NULL) {
		struct pool_chunk *chunk = parser->pool->next;
		while (chunk != NULL) {
			struct pool_chunk *next = chunk->next;
			free(chunk);
			chunk = next;
		}
		parser->pool->next = NULL;
		parser->pool->used = 0;
	}
	parser->set_count = 0;
}

static void *pool_alloc(struct imap_command_parser *parser, size_t size)
{
	size_t need = (size + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
	struct pool_chunk *chunk = parser->pool;

	if (chunk == NULL || chunk->size - chunk->used < need) {
		size_t chunk_size = need > POOL_CHUNK_SIZE ? need : POOL_CHUNK_SIZE;
		chunk = malloc(sizeof(*chunk) + chunk_size);
		if (chunk == NULL)
			return NULL;
		chunk->size = chunk_size;
		chunk->used = 0;
		chunk->next = parser->pool;
		parser->pool = chunk;
	}
	void *ptr = (char *)chunk->data + chunk->used;
	chunk->used += need;
	memset(ptr, 0, size);
	return ptr;
}

static enum imap_command_error fail(struct imap_command_parser *parser, enum imap_command_error error,
				    const char *format, ...) __attribute__((format(printf, 3, 4)));

static enum imap_command_error fail(struct imap_command_parser *parser, enum imap_command_error error,
				    const char *format, ...)
{
	va_list args;

	va_start(args, format);
	vsnprintf(parser->message, sizeof(parser->message), format, args);
	va_end(args);
	/* The text may quote the client's bytes: keep it on one printable line. */
	for (char *p = parser->message; *p != '\0'; p++) {
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	}
	return error;
}

static enum imap_command_error out_of_memory(struct imap_command_parser *parser)
{
	return fail(parser, IMAP_COMMAND_ERROR_OUT_OF_MEMORY, "Out of memory");
}

/* A set from the pool, or NULL when memory runs out. */
static struct imap_seqset *new_set(struct imap_command_parser *parser)
{
	if (parser->set_count == parser->set_capacity) {
		unsigned int capacity = parser->set_capacity == 0 ? 4 : parser->set_capacity * 2;
		struct imap_seqset **sets = realloc(parser->sets, capacity * sizeof(*sets));
		if (sets == NULL)
			return NULL;
		memset(sets + parser->set_capacity, 0, (capacity - parser->set_capacity) * sizeof(*sets));
		parser->sets = sets;
		parser->set_capacity = capacity;
	}
	if (parser->sets[parser->set_count] == NULL) {
		parser->sets[parser->set_count] = calloc(1, sizeof(struct imap_seqset));
		if (parser->sets[parser->set_count] == NULL)
			return NULL;
	}
	return parser->sets[parser->set_count++];
}

static enum imap_command_error get_set(struct imap_command_parser *parser, const struct imap_arg *arg,
				       unsigned int allow, const struct imap_seqset **set_r)
{
	enum imap_seqset_error error;
	struct imap_seqset *set;

	if (arg->type != IMAP_ARG_ATOM)
		return fail(parser, IMAP_COMMAND_ERROR_BAD_SEQUENCE_SET, "Sequence set expected");
	if ((set = new_set(parser)) == NULL)
		return out_of_memory(parser);
	if (imap_seqset_parse(set, arg->str, (size_t)arg->len, allow, &error) < 0) {
		if (error == IMAP_SEQSET_ERROR_OUT_OF_MEMORY)
			return out_of_memory(parser);
		return fail(parser, IMAP_COMMAND_ERROR_BAD_SEQUENCE_SET, "%s: %.40s",
			    imap_seqset_error_message(error), arg->str);
	}
	*set_r = set;
	return IMAP_COMMAND_ERROR_NONE;
}

/* An astring that is also in memory (not streamed). */
static enum imap_command_error get_astring(struct imap_command_parser *parser, const struct imap_arg *arg,
					   const char *what, const char **str_r, size_t *len_r)
{
	if (!imap_arg_get_astring(arg, str_r, len_r))
		return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "Invalid %s", what);
	return IMAP_COMMAND_ERROR_NONE;
}

static bool is_strict_atom_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f && strchr("(){%*\"\\]", c) == NULL;
}

/* flag = "\" atom (system flags and extensions, not \Recent) or a keyword atom. */
static bool is_valid_flag(const struct imap_arg *arg, bool allow_recent)
{
	const char *s = arg->str;
	size_t i = 0;

	if (arg->type != IMAP_ARG_ATOM || arg->len == 0)
		return false;
	if (s[0] == '\\') {
		if (arg->len == 1 || (!allow_recent && strcasecmp(s, "\\Recent") == 0))
			return false;
		i = 1;
	}
	for (; i < arg->len; i++) {
		if (!is_strict_atom_char((unsigned char)s[i]))
			return false;
	}
	return true;
}

static enum imap_command_error check_flag_list(struct imap_command_parser *parser, const struct imap_arg *flags,
					       unsigned int count)
{
	for (unsigned int i = 0; i < count; i++) {
		if (!is_valid_flag(&flags[i], false))
			return fail(parser, IMAP_COMMAND_ERROR_BAD_FLAG, "Invalid flag %.40s",
				    flags[i].type == IMAP_ARG_ATOM ? flags[i].str : "(not an atom)");
	}
	return IMAP_COMMAND_ERROR_NONE;
}

static bool parse_number(const char *s, size_t len, uint64_t max, uint64_t *number_r)
{
	uint64_t value = 0;

	if (len == 0 || len > 19)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		value = value * 10 + (uint64_t)(s[i] - '0');
	}
	if (value > max)
		return false;
	*number_r = value;
	return true;
}

/* RFC 5322 field name: printable US-ASCII except ':'. */
static bool is_header_name(const char *name, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c < 33 || c > 126 || c == ':')
			return false;
	}
	return true;
}

/* Reads the quoted header name at *p (before end) and moves *p past it. A
   name with escapes is copied unescaped to the pool. */
static enum imap_command_error section_quoted_name(struct imap_command_parser *parser, const char **p,
						   const char *end, const char **name_r, size_t *len_r)
{
	const char *start = *p + 1, *q = start;
	size_t escapes = 0;

	while (q < end && *q != '"') {
		if (*q == '\\') {
			if (q + 1 == end || (q[1] != '"' && q[1] != '\\'))
				break;
			escapes++;
			q++;
		}
		q++;
	}
	if (q == end || *q != '"')
		return fail(parser, IMAP_COMMAND_ERROR_BAD_SECTION, "Invalid quoted header name");
	*p = q + 1;
	if (escapes == 0) {
		*name_r = start;
		*len_r = (size_t)(q - start);
		return IMAP_COMMAND_ERROR_NONE;
	}
	char *name = pool_alloc(parser, (size_t)(q - start) - escapes + 1);
	if (name == NULL)
		return out_of_memory(parser);
	size_t len = 0;
	for (const char *c = start; c < q; c++) {
		if (*c == '\\')
			c++;
		name[len++] = *c;
	}
	name[len] = '\0';
	*name_r = name;
	*len_r = len;
	return IMAP_COMMAND_ERROR_NONE;
}

/* Parses the inside of [...] of a fetch attribute. */
static enum imap_command_error parse_section(struct imap_command_parser *parser, const char *s, size_t len,
					     bool binary, struct imap_section *section)
{
	size_t pos = 0;

	memset(section, 0, sizeof(*section));
	while (pos < len && s[pos] >= '0' && s[pos] <= '9') {
		size_t start = pos;
		uint64_t part;
		while (pos < len && s[pos] >= '0' && s[pos] <= '9')
			pos++;
		if (!parse_number(s + start, pos - start, UINT32_MAX, &part) || part == 0)
			return fail(parser, IMAP_COMMAND_ERROR_BAD_SECTION, "Invalid part number in section");
		if (section->part_count == IMAP_SECTION_MAX_PARTS)
			return fail(parser, IMAP_COMMAND_ERROR_BAD_SECTION, "Section nested too deeply");
		section->parts[section->part_count++] = (uint32_t)part;
		if (pos == len)
			return IMAP_COMMAND_ERROR_NONE;
		if (s[pos] != '.')
			return fail(parser, IMAP_COMMAND_ERROR_BAD_SECTION, "Invalid section");
		pos++;
		if (pos == len)
			return fail(parser, IMAP_COMMAND_ERROR_BAD_SECTION, "Section ends with '.'");
	}
	if (pos == len)
		return IMAP_COMMAND_ERROR_NONE;
	if (binary)
		return fail(parser, IMAP_COMMAND_ERROR_BAD_SECTION, "BINARY sections hold part numbers only");

	const char *text = s + pos;
	size_t text_len = len - pos;
#define TEXT_IS(word) (text_len == sizeof(word) - 1 && strncasecmp(text, word, text_len) == 0)
	if (TEXT_IS("HEADER")) {
		section->text = IMAP_SECTION_TEXT_HEADER;
		return IMAP_COMMAND_ERROR_NONE;
	}
	if (TEXT_IS("TEXT")) {
		section->text = IMAP_SECTION_TEXT_TEXT;
		return IMAP_COMMAND_ERROR_NONE;
	}
	if (TEXT_IS("MIME")) {
		if (section->part_count == 0)
			return fail(parser, IMAP_COMMAND_ERROR_BAD_SECTION, "MIME needs a part number");
		section->text = IMAP_SECTION_TEXT_MIME;
		return IMAP_COMMAND_ERROR_NONE;
	}
#undef TEXT_IS
	size_t fields_at;
	if (text_len > 19 && strncasecmp(text, "HEADER.FIELDS.NOT (", 19) == 0) {
		section->text = IMAP_SECTION_TEXT_HEADER_FIELDS_NOT;
		fields_at = 19;
	} else if (text_len > 15 && strncasecmp(text, "HEADER.FIELDS (", 15) == 0) {
		section->text = IMAP_SECTION_TEXT_HEADER_FIELDS;
		fields_at = 15;
	} else {
		return fail(parser, IMAP_COMMAND_ERROR_BAD_SECTION, "Unknown section text %.30s", text);
	}
	if (text[text_len - 1] != ')')
		return fail(parser, IMAP_COMMAND_ERROR_BAD_SECTION, "Header list must end with ')'");
	/* Field names as imap-parser writes them: atoms, or quoted strings
	   with escapes (quoted and literal names come this way), each
	   separated by one space. */
	const char *p = text + fields_at, *end = text + text_len - 1;
	unsigned int count = 0;
	for (const char *q = p; q < end; q++)
		count += *q == ' ';
	struct imap_section_field *fields = pool_alloc(parser, (count + 1) * sizeof(*fields));
	if (fields == NULL)
		return out_of_memory(parser);
	count = 0;
	while (p < end) {
		const char *name = p;
		size_t name_len = 0;
		if (*p == '"') {
			enum imap_command_error error = section_quoted_name(parser, &p, end, &name, &name_len);
			if (error != IMAP_COMMAND_ERROR_NONE)
				return error;
		} else {
			name = p;
			while (p < end && *p != ' ')
				p++;
			name_len = (size_t)(p - name);
			for (size_t i = 0; i < name_len; i++) {
				if (!is_strict_atom_char((unsigned char)name[i]) && name[i] != ']')
					return fail(parser, IMAP_COMMAND_ERROR_BAD_SECTION,
						    "Invalid header name %.*s", (int)(name_len < 40 ? name_len : 40), name);
			}
		}
		if (name_len == 0)
			return fail(parser, IMAP_COMMAND_ERROR_BAD_SECTION, "Empty header name");
		if (!is_header_name(name, name_len))
			return fail(parser, IMAP_COMMAND_ERROR_BAD_SECTION, "Invalid header name %.*s",
				    (int)(name_len < 40 ? name_len : 40), name);
		fields[count].name = name;
		fields[count].len = name_len;
		count++;
		if (p < end) {
			if (*p != ' ' || p + 1 == end)
				return fail(parser, IMAP_COMMAND_ERROR_BAD_SECTION, "Invalid header list");
			p++;
		}
	}
	if (count == 0)
		return fail(parser, IMAP_COMMAND_ERROR_BAD_SECTION, "Empty header list");
	section->fields = fields;
	section->field_count = count;
	return IMAP_COMMAND_ERROR_NONE;
}

enum imap_command_error imap_command_parse_fetch_attr(struct imap_command_parser *parser, const char *atom,
						      size_t len, struct imap_fetch_attr *attr,
						      const char **message_r)
{
	static const struct {
		const char *name;
		enum imap_fetch_attr_type type;
	} simple[] = {
		{ "ENVELOPE", IMAP_FETCH_ATTR_ENVELOPE },
		{ "FLAGS", IMAP_FETCH_ATTR_FLAGS },
		{ "INTERNALDATE", IMAP_FETCH_ATTR_INTERNALDATE },
		{ "RFC822", IMAP_FETCH_ATTR_RFC822 },
		{ "RFC822.HEADER", IMAP_FETCH_ATTR_RFC822_HEADER },
		{ "RFC822.SIZE", IMAP_FETCH_ATTR_RFC822_SIZE },
		{ "RFC822.TEXT", IMAP_FETCH_ATTR_RFC822_TEXT },
		{ "BODY", IMAP_FETCH_ATTR_BODY },
		{ "BODYSTRUCTURE", IMAP_FETCH_ATTR_BODYSTRUCTURE },
		{ "UID", IMAP_FETCH_ATTR_UID },
		{ "MODSEQ", IMAP_FETCH_ATTR_MODSEQ },
		{ "PREVIEW", IMAP_FETCH_ATTR_PREVIEW },
	};
	static const struct {
		const char *name;
		enum imap_fetch_attr_type type;
		bool peek;
		bool binary;
	} sectioned[] = {
		{ "BODY", IMAP_FETCH_ATTR_BODY_SECTION, false, false },
		{ "BODY.PEEK", IMAP_FETCH_ATTR_BODY_SECTION, true, false },
		{ "BINARY", IMAP_FETCH_ATTR_BINARY_SECTION, false, true },
		{ "BINARY.PEEK", IMAP_FETCH_ATTR_BINARY_SECTION, true, true },
		{ "BINARY.SIZE", IMAP_FETCH_ATTR_BINARY_SIZE, false, true },
	};
	enum imap_command_error error = IMAP_COMMAND_ERROR_NONE;
	const char *bracket = memchr(atom, '[', len);

	memset(attr, 0, sizeof(*attr));
	parser->message[0] = '\0';
	if (bracket == NULL) {
		for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++) {
			if (strlen(simple[i].name) == len && strncasecmp(atom, simple[i].name, len) == 0) {
				attr->type = simple[i].type;
				goto out;
			}
		}
		error = fail(parser, IMAP_COMMAND_ERROR_BAD_FETCH_ATTRIBUTE, "Unknown FETCH attribute %.40s", atom);
		goto out;
	}
	size_t base_len = (size_t)(bracket - atom);
	size_t i;
	for (i = 0; i < sizeof(sectioned) / sizeof(sectioned[0]); i++) {
		if (strlen(sectioned[i].name) == base_len && strncasecmp(atom, sectioned[i].name, base_len) == 0)
			break;
	}
	if (i == sizeof(sectioned) / sizeof(sectioned[0])) {
		error = fail(parser, IMAP_COMMAND_ERROR_BAD_FETCH_ATTRIBUTE, "Unknown FETCH attribute %.40s", atom);
		goto out;
	}
	attr->type = sectioned[i].type;
	attr->peek = sectioned[i].peek;
	const char *close = NULL;
	for (const char *p = atom + len; p > bracket; p--) {
		if (p[-1] == ']') {
			close = p - 1;
			break;
		}
	}
	if (close == NULL) {
		error = fail(parser, IMAP_COMMAND_ERROR_BAD_SECTION, "Section without ']'");
		goto out;
	}
	error = parse_section(parser, bracket + 1, (size_t)(close - bracket - 1), sectioned[i].binary, &attr->section);
	if (error != IMAP_COMMAND_ERROR_NONE)
		goto out;
	const char *rest = close + 1, *end = atom + len;
	if (rest == end)
		goto out;
	const char *dot = memchr(rest, '.', (size_t)(end - rest));
	if (attr->type == IMAP_FETCH_ATTR_BINARY_SIZE || *rest != '<' || end[-1] != '>' || dot == NULL ||
	    !parse_number(rest + 1, (size_t)(dot - rest - 1), UINT32_MAX, &attr->partial_offset) ||
	    !parse_number(dot + 1, (size_t)(end - dot - 2), UINT32_MAX, &attr->partial_length) ||
	    attr->partial_length == 0) {
		error = fail(parser, IMAP_COMMAND_ERROR_BAD_FETCH_ATTRIBUTE, "Invalid partial in %.40s", atom);
		goto out;
	}
	attr->has_partial = true;
out:
	if (message_r != NULL)
		*message_r = parser->message;
	return error;
}

static const char *const month_names[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

/* An APPEND date-time. Its month is matched in any case (RFC 3501 strings
   are case-insensitive), while imap-util keeps imaplib's case-sensitive
   Internaldate2tuple: the month is written back as imap-util expects. */
static bool parse_append_date(const char *str, size_t len, time_t *utc_r, int *zone_minutes_r)
{
	char date[APPEND_DATE_TIME_LEN];

	if (len != sizeof(date))
		return false;
	memcpy(date, str, sizeof(date));
	for (size_t m = 0; m < sizeof(month_names) / sizeof(month_names[0]); m++) {
		if (strncasecmp(date + 3, month_names[m], 3) == 0)
			memcpy(date + 3, month_names[m], 3);
	}
	return imap_util_date_time_parse(date, sizeof(date), utc_r, zone_minutes_r);
}

/* ---- SEARCH ---- */

static bool parse_search_date(const struct imap_arg *arg, struct imap_search_key *key)
{
	const char *s;
	size_t len;

	if (arg->type != IMAP_ARG_ATOM && arg->type != IMAP_ARG_STRING)
		return false;
	s = arg->str;
	len = (size_t)arg->len;
	size_t day_len = len == 11 ? 2 : len == 10 ? 1 : 0;
	if (day_len == 0)
		return false;
	uint64_t day, year;
	if (!parse_number(s, day_len, 31, &day) || day == 0 || s[day_len] != '-' || s[day_len + 4] != '-' ||
	    !parse_number(s + day_len + 5, 4, 9999, &year))
		return false;
	for (int m = 0; m < 12; m++) {
		if (strncasecmp(s + day_len + 1, month_names[m], 3) == 0) {
			key->year = (int)year;
			key->month = m + 1;
			key->day = (int)day;
			return true;
		}
	}
	return false;
}

static bool looks_like_set(const struct imap_arg *arg)
{
	if (arg->type != IMAP_ARG_ATOM)
		return false;
	for (size_t i = 0; i < arg->len; i++) {
		if (strchr("0123456789:,*$", arg->str[i]) == NULL)
			return false;
	}
	return true;
}

static enum imap_command_error parse_search_key(struct imap_command_parser *parser, const struct imap_arg *args,
						unsigned int count, unsigned int *pos, unsigned int depth,
						struct imap_search_key **key_r);

/* Parses keys from args[*pos] to the end into an AND node's children. */
static enum imap_command_error parse_search_keys(struct imap_command_parser *parser, const struct imap_arg *args,
						 unsigned int count, unsigned int depth, struct imap_search_key *and)
{
	struct imap_search_key **link = (struct imap_search_key **)&and->children;
	unsigned int pos = 0;

	while (pos < count) {
		struct imap_search_key *child;
		enum imap_command_error error = parse_search_key(parser, args, count, &pos, depth, &child);
		if (error != IMAP_COMMAND_ERROR_NONE)
			return error;
		*link = child;
		link = (struct imap_search_key **)&child->next;
		and->child_count++;
	}
	if (and->child_count == 0)
		return fail(parser, IMAP_COMMAND_ERROR_BAD_SEARCH_KEY, "Empty search key list");
	return IMAP_COMMAND_ERROR_NONE;
}

static enum imap_command_error parse_search_key(struct imap_command_parser *parser, const struct imap_arg *args,
						unsigned int count, unsigned int *pos, unsigned int depth,
						struct imap_search_key **key_r)
{
	static const struct {
		const char *name;
		enum imap_search_key_type type;
		enum { NO_ARG, STRING_ARG, FLAG_ARG, DATE_ARG, NUMBER_ARG } arg;
	} keys[] = {
		{ "ALL", IMAP_SEARCH_ALL, NO_ARG }, { "ANSWERED", IMAP_SEARCH_ANSWERED, NO_ARG },
		{ "DELETED", IMAP_SEARCH_DELETED, NO_ARG }, { "DRAFT", IMAP_SEARCH_DRAFT, NO_ARG },
		{ "FLAGGED", IMAP_SEARCH_FLAGGED, NO_ARG }, { "NEW", IMAP_SEARCH_NEW, NO_ARG },
		{ "OLD", IMAP_SEARCH_OLD, NO_ARG }, { "RECENT", IMAP_SEARCH_RECENT, NO_ARG },
		{ "SEEN", IMAP_SEARCH_SEEN, NO_ARG }, { "UNANSWERED", IMAP_SEARCH_UNANSWERED, NO_ARG },
		{ "UNDELETED", IMAP_SEARCH_UNDELETED, NO_ARG }, { "UNDRAFT", IMAP_SEARCH_UNDRAFT, NO_ARG },
		{ "UNFLAGGED", IMAP_SEARCH_UNFLAGGED, NO_ARG }, { "UNSEEN", IMAP_SEARCH_UNSEEN, NO_ARG },
		{ "BCC", IMAP_SEARCH_BCC, STRING_ARG }, { "BODY", IMAP_SEARCH_BODY, STRING_ARG },
		{ "CC", IMAP_SEARCH_CC, STRING_ARG }, { "FROM", IMAP_SEARCH_FROM, STRING_ARG },
		{ "SUBJECT", IMAP_SEARCH_SUBJECT, STRING_ARG }, { "TEXT", IMAP_SEARCH_TEXT, STRING_ARG },
		{ "TO", IMAP_SEARCH_TO, STRING_ARG },
		{ "KEYWORD", IMAP_SEARCH_KEYWORD, FLAG_ARG }, { "UNKEYWORD", IMAP_SEARCH_UNKEYWORD, FLAG_ARG },
		{ "BEFORE", IMAP_SEARCH_BEFORE, DATE_ARG }, { "ON", IMAP_SEARCH_ON, DATE_ARG },
		{ "SINCE", IMAP_SEARCH_SINCE, DATE_ARG }, { "SENTBEFORE", IMAP_SEARCH_SENTBEFORE, DATE_ARG },
		{ "SENTON", IMAP_SEARCH_SENTON, DATE_ARG }, { "SENTSINCE", IMAP_SEARCH_SENTSINCE, DATE_ARG },
		{ "LARGER", IMAP_SEARCH_LARGER, NUMBER_ARG }, { "SMALLER", IMAP_SEARCH_SMALLER, NUMBER_ARG },
	};
	const struct imap_arg *arg = &args[*pos];
	struct imap_search_key *key;
	enum imap_command_error error;

	if (depth >= IMAP_SEARCH_MAX_DEPTH)
		return fail(parser, IMAP_COMMAND_ERROR_BAD_SEARCH_KEY, "Search keys nested too deeply");
	if ((key = pool_alloc(parser, sizeof(*key))) == NULL)
		return out_of_memory(parser);
	*key_r = key;
	(*pos)++;
	if (arg->type == IMAP_ARG_LIST) {
		key->type = IMAP_SEARCH_AND;
		return parse_search_keys(parser, arg->list, arg->list_count, depth + 1, key);
	}
	if (arg->type != IMAP_ARG_ATOM)
		return fail(parser, IMAP_COMMAND_ERROR_BAD_SEARCH_KEY, "Search key expected");
	if (looks_like_set(arg)) {
		key->type = IMAP_SEARCH_SEQUENCE_SET;
		error = get_set(parser, arg, IMAP_SEQSET_ALLOW_STAR | IMAP_SEQSET_ALLOW_SAVED, &key->set);
		return error;
	}
	const char *name = arg->str;
	if (strcasecmp(name, "NOT") == 0 || strcasecmp(name, "OR") == 0) {
		unsigned int needed = strcasecmp(name, "NOT") == 0 ? 1 : 2;
		struct imap_search_key **link = (struct imap_search_key **)&key->children;
		key->type = needed == 1 ? IMAP_SEARCH_NOT : IMAP_SEARCH_OR;
		for (unsigned int i = 0; i < needed; i++) {
			struct imap_search_key *child;
			if (*pos >= count)
				return fail(parser, IMAP_COMMAND_ERROR_BAD_SEARCH_KEY, "%s needs %u search key%s",
					    needed == 1 ? "NOT" : "OR", needed, needed == 1 ? "" : "s");
			if ((error = parse_search_key(parser, args, count, pos, depth + 1, &child)) != IMAP_COMMAND_ERROR_NONE)
				return error;
			*link = child;
			link = (struct imap_search_key **)&child->next;
			key->child_count++;
		}
		return IMAP_COMMAND_ERROR_NONE;
	}
	if (strcasecmp(name, "UID") == 0) {
		key->type = IMAP_SEARCH_UID;
		if (*pos >= count)
			return fail(parser, IMAP_COMMAND_ERROR_BAD_SEARCH_KEY, "UID needs a set");
		return get_set(parser, &args[(*pos)++], IMAP_SEQSET_ALLOW_STAR | IMAP_SEQSET_ALLOW_SAVED, &key->set);
	}
	if (strcasecmp(name, "HEADER") == 0) {
		key->type = IMAP_SEARCH_HEADER;
		if (*pos + 2 > count)
			return fail(parser, IMAP_COMMAND_ERROR_BAD_SEARCH_KEY, "HEADER needs a field name and a value");
		if (!imap_arg_get_astring(&args[*pos], &key->str, &key->len) ||
		    !imap_arg_get_astring(&args[*pos + 1], &key->str2, &key->len2))
			return fail(parser, IMAP_COMMAND_ERROR_BAD_SEARCH_KEY, "HEADER needs two strings");
		*pos += 2;
		return IMAP_COMMAND_ERROR_NONE;
	}
	if (strcasecmp(name, "MODSEQ") == 0) {
		key->type = IMAP_SEARCH_MODSEQ;
		/* MODSEQ ["/flags/\\Seen" priv|shared|all] n */
		if (*pos + 3 <= count && args[*pos].type == IMAP_ARG_STRING) {
			key->str = args[*pos].str;
			key->len = (size_t)args[*pos].len;
			if (!imap_arg_atom_equals(&args[*pos + 1], "priv") &&
			    !imap_arg_atom_equals(&args[*pos + 1], "shared") &&
			    !imap_arg_atom_equals(&args[*pos + 1], "all"))
				return fail(parser, IMAP_COMMAND_ERROR_BAD_SEARCH_KEY, "MODSEQ entry type must be priv, shared or all");
			*pos += 2;
		}
		if (*pos >= count || !imap_arg_get_number(&args[*pos], &key->number))
			return fail(parser, IMAP_COMMAND_ERROR_BAD_SEARCH_KEY, "MODSEQ needs a number");
		(*pos)++;
		return IMAP_COMMAND_ERROR_NONE;
	}
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (strcasecmp(name, keys[i].name) != 0)
			continue;
		key->type = keys[i].type;
		if (keys[i].arg == NO_ARG)
			return IMAP_COMMAND_ERROR_NONE;
		if (*pos >= count)
			return fail(parser, IMAP_COMMAND_ERROR_BAD_SEARCH_KEY, "%s needs an argument", keys[i].name);
		const struct imap_arg *value = &args[(*pos)++];
		bool ok = false;
		switch (keys[i].arg) {
		case STRING_ARG:
			ok = imap_arg_get_astring(value, &key->str, &key->len);
			break;
		case FLAG_ARG:
			ok = is_valid_flag(value, true) && value->str[0] != '\\';
			key->str = value->str;
			key->len = (size_t)value->len;
			break;
		case DATE_ARG:
			ok = parse_search_date(value, key);
			break;
		case NUMBER_ARG:
			ok = imap_arg_get_number(value, &key->number) && key->number <= UINT32_MAX;
			break;
		case NO_ARG:
			break;
		}
		if (!ok)
			return fail(parser, IMAP_COMMAND_ERROR_BAD_SEARCH_KEY, "Invalid argument for %s", keys[i].name);
		return IMAP_COMMAND_ERROR_NONE;
	}
	return fail(parser, IMAP_COMMAND_ERROR_BAD_SEARCH_KEY, "Unknown search key %.40s", name);
}

static enum imap_command_error parse_search(struct imap_command_parser *parser, struct imap_command *command)
{
	const struct imap_arg *args = command->args;
	unsigned int count = command->arg_count, pos = 0;

	if (pos < count && imap_arg_atom_equals(&args[pos], "RETURN")) {
		static const struct {
			const char *name;
			unsigned int bit;
		} options[] = { { "MIN", IMAP_SEARCH_RETURN_MIN }, { "MAX", IMAP_SEARCH_RETURN_MAX },
				{ "ALL", IMAP_SEARCH_RETURN_ALL }, { "COUNT", IMAP_SEARCH_RETURN_COUNT },
				{ "SAVE", IMAP_SEARCH_RETURN_SAVE } };
		if (pos + 1 >= count || args[pos + 1].type != IMAP_ARG_LIST)
			return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "RETURN needs a list of options");
		const struct imap_arg *list = args[pos + 1].list;
		command->u.search.has_return = true;
		for (unsigned int i = 0; i < args[pos + 1].list_count; i++) {
			unsigned int bit = 0;
			for (size_t j = 0; j < sizeof(options) / sizeof(options[0]); j++) {
				if (imap_arg_atom_equals(&list[i], options[j].name))
					bit = options[j].bit;
			}
			if (bit == 0)
				return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "Unknown RETURN option");
			command->u.search.return_options |= bit;
		}
		if (args[pos + 1].list_count == 0)
			command->u.search.return_options = IMAP_SEARCH_RETURN_ALL;
		pos += 2;
	}
	if (pos < count && imap_arg_atom_equals(&args[pos], "CHARSET")) {
		size_t len;
		if (pos + 1 >= count || !imap_arg_get_astring(&args[pos + 1], &command->u.search.charset, &len))
			return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "CHARSET needs a name");
		pos += 2;
	}
	if (pos >= count)
		return fail(parser, IMAP_COMMAND_ERROR_MISSING_ARGUMENT, "SEARCH needs a search key");
	struct imap_search_key *program = pool_alloc(parser, sizeof(*program));
	if (program == NULL)
		return out_of_memory(parser);
	program->type = IMAP_SEARCH_AND;
	command->u.search.program = program;
	return parse_search_keys(parser, args + pos, count - pos, 0, program);
}

/* ---- FETCH, STORE, the rest ---- */

static enum imap_command_error add_fetch_attrs(struct imap_command_parser *parser, struct imap_command *command,
					       const struct imap_arg *atoms, unsigned int count)
{
	struct imap_fetch_attr *attrs = pool_alloc(parser, count * sizeof(*attrs));
	const char *message;

	if (attrs == NULL)
		return out_of_memory(parser);
	for (unsigned int i = 0; i < count; i++) {
		if (atoms[i].type != IMAP_ARG_ATOM)
			return fail(parser, IMAP_COMMAND_ERROR_BAD_FETCH_ATTRIBUTE, "FETCH attribute expected");
		enum imap_command_error error =
			imap_command_parse_fetch_attr(parser, atoms[i].str, (size_t)atoms[i].len, &attrs[i], &message);
		if (error != IMAP_COMMAND_ERROR_NONE)
			return error;
	}
	command->u.fetch.attrs = attrs;
	command->u.fetch.attr_count = count;
	return IMAP_COMMAND_ERROR_NONE;
}

static enum imap_command_error expand_macro(struct imap_command_parser *parser, struct imap_command *command,
					    const char *name)
{
	static const enum imap_fetch_attr_type full[] = { IMAP_FETCH_ATTR_FLAGS, IMAP_FETCH_ATTR_INTERNALDATE,
							  IMAP_FETCH_ATTR_RFC822_SIZE, IMAP_FETCH_ATTR_ENVELOPE,
							  IMAP_FETCH_ATTR_BODY };
	unsigned int count = strcasecmp(name, "FAST") == 0 ? 3 : strcasecmp(name, "ALL") == 0 ? 4 : 5;
	struct imap_fetch_attr *attrs = pool_alloc(parser, count * sizeof(*attrs));

	if (attrs == NULL)
		return out_of_memory(parser);
	for (unsigned int i = 0; i < count; i++)
		attrs[i].type = full[i];
	command->u.fetch.attrs = attrs;
	command->u.fetch.attr_count = count;
	return IMAP_COMMAND_ERROR_NONE;
}

static enum imap_command_error parse_fetch(struct imap_command_parser *parser, struct imap_command *command)
{
	const struct imap_arg *args = command->args;
	enum imap_command_error error;

	if (command->arg_count < 2)
		return fail(parser, IMAP_COMMAND_ERROR_MISSING_ARGUMENT, "FETCH needs a set and attributes");
	if (command->arg_count > 3)
		return fail(parser, IMAP_COMMAND_ERROR_EXTRA_ARGUMENT, "Too many arguments for FETCH");
	error = get_set(parser, &args[0], IMAP_SEQSET_ALLOW_STAR | IMAP_SEQSET_ALLOW_SAVED, &command->u.fetch.set);
	if (error != IMAP_COMMAND_ERROR_NONE)
		return error;
	if (args[1].type == IMAP_ARG_LIST) {
		if (args[1].list_count == 0)
			return fail(parser, IMAP_COMMAND_ERROR_BAD_FETCH_ATTRIBUTE, "Empty FETCH attribute list");
		error = add_fetch_attrs(parser, command, args[1].list, args[1].list_count);
	} else if (imap_arg_atom_equals(&args[1], "ALL") || imap_arg_atom_equals(&args[1], "FAST") ||
		   imap_arg_atom_equals(&args[1], "FULL")) {
		error = expand_macro(parser, command, args[1].str);
	} else {
		error = add_fetch_attrs(parser, command, &args[1], 1);
	}
	if (error != IMAP_COMMAND_ERROR_NONE || command->arg_count == 2)
		return error;
	/* RFC 7162 modifiers: (CHANGEDSINCE n [VANISHED]). */
	const struct imap_arg *modifiers;
	unsigned int count;
	if (!imap_arg_get_list(&args[2], &modifiers, &count) || count == 0)
		return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "FETCH modifiers must be a list");
	for (unsigned int i = 0; i < count; i++) {
		if (imap_arg_atom_equals(&modifiers[i], "CHANGEDSINCE") && i + 1 < count &&
		    imap_arg_get_number(&modifiers[i + 1], &command->u.fetch.changedsince)) {
			command->u.fetch.changedsince_given = true;
			i++;
		} else if (imap_arg_atom_equals(&modifiers[i], "VANISHED") && command->uid) {
			command->u.fetch.vanished = true;
		} else {
			return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "Invalid FETCH modifier");
		}
	}
	if (command->u.fetch.vanished && !command->u.fetch.changedsince_given)
		return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "VANISHED needs CHANGEDSINCE");
	return IMAP_COMMAND_ERROR_NONE;
}

static enum imap_command_error parse_store(struct imap_command_parser *parser, struct imap_command *command)
{
	const struct imap_arg *args = command->args;
	unsigned int count = command->arg_count, pos = 1;
	enum imap_command_error error;

	if (count < 3)
		return fail(parser, IMAP_COMMAND_ERROR_MISSING_ARGUMENT, "STORE needs a set, an item and flags");
	error = get_set(parser, &args[0], IMAP_SEQSET_ALLOW_STAR | IMAP_SEQSET_ALLOW_SAVED, &command->u.store.set);
	if (error != IMAP_COMMAND_ERROR_NONE)
		return error;
	if (args[pos].type == IMAP_ARG_LIST) {
		const struct imap_arg *modifiers = args[pos].list;
		if (args[pos].list_count != 2 || !imap_arg_atom_equals(&modifiers[0], "UNCHANGEDSINCE") ||
		    !imap_arg_get_number(&modifiers[1], &command->u.store.unchangedsince))
			return fail(parser, IMAP_COMMAND_ERROR_BAD_STORE, "Invalid STORE modifier");
		command->u.store.unchangedsince_given = true;
		pos++;
	}
	if (pos + 1 >= count || args[pos].type != IMAP_ARG_ATOM)
		return fail(parser, IMAP_COMMAND_ERROR_BAD_STORE, "STORE needs FLAGS, +FLAGS or -FLAGS and flags");
	const char *item = args[pos].str;
	command->u.store.mode = IMAP_STORE_REPLACE;
	if (item[0] == '+' || item[0] == '-') {
		command->u.store.mode = item[0] == '+' ? IMAP_STORE_ADD : IMAP_STORE_REMOVE;
		item++;
	}
	if (strcasecmp(item, "FLAGS.SILENT") == 0)
		command->u.store.silent = true;
	else if (strcasecmp(item, "FLAGS") != 0)
		return fail(parser, IMAP_COMMAND_ERROR_BAD_STORE, "Unknown STORE item %.40s", args[pos].str);
	pos++;
	if (args[pos].type == IMAP_ARG_LIST) {
		if (pos + 1 != count)
			return fail(parser, IMAP_COMMAND_ERROR_EXTRA_ARGUMENT, "Arguments after the flag list");
		command->u.store.flags = args[pos].list;
		command->u.store.flag_count = args[pos].list_count;
	} else {
		command->u.store.flags = &args[pos];
		command->u.store.flag_count = count - pos;
	}
	return check_flag_list(parser, command->u.store.flags, command->u.store.flag_count);
}

static enum imap_command_error parse_select(struct imap_command_parser *parser, struct imap_command *command)
{
	const struct imap_arg *args = command->args;
	enum imap_command_error error;

	if (command->arg_count < 1)
		return fail(parser, IMAP_COMMAND_ERROR_MISSING_ARGUMENT, "Mailbox name expected");
	if (command->arg_count > 2)
		return fail(parser, IMAP_COMMAND_ERROR_EXTRA_ARGUMENT, "Too many arguments");
	error = get_astring(parser, &args[0], "mailbox name", &command->u.select.mailbox, &command->u.select.mailbox_len);
	if (error != IMAP_COMMAND_ERROR_NONE || command->arg_count == 1)
		return error;
	const struct imap_arg *params;
	unsigned int count;
	if (!imap_arg_get_list(&args[1], &params, &count) || count == 0)
		return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "SELECT parameters must be a list");
	for (unsigned int i = 0; i < count; i++) {
		if (imap_arg_atom_equals(&params[i], "CONDSTORE")) {
			command->u.select.condstore = true;
			continue;
		}
		if (!imap_arg_atom_equals(&params[i], "QRESYNC") || i + 1 >= count || params[i + 1].type != IMAP_ARG_LIST)
			return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "Unknown SELECT parameter");
		const struct imap_arg *q = params[i + 1].list;
		unsigned int n = params[i + 1].list_count;
		if (n < 2 || n > 4 || !imap_arg_get_nz_number(&q[0], &command->u.select.uidvalidity) ||
		    !imap_arg_get_number(&q[1], &command->u.select.modseq) || command->u.select.modseq == 0)
			return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "QRESYNC needs UIDVALIDITY and MODSEQ");
		if (n >= 3 && (error = get_set(parser, &q[2], 0, &command->u.select.known_uids)) != IMAP_COMMAND_ERROR_NONE)
			return error;
		if (n == 4 && q[3].type != IMAP_ARG_LIST)
			return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "QRESYNC sequence match data must be a list");
		command->u.select.qresync = true;
		i++;
	}
	return IMAP_COMMAND_ERROR_NONE;
}

static enum imap_command_error parse_append(struct imap_command_parser *parser, struct imap_command *command)
{
	const struct imap_arg *args = command->args;
	unsigned int count = command->arg_count, pos = 1;
	enum imap_command_error error;

	if (count < 2)
		return fail(parser, IMAP_COMMAND_ERROR_MISSING_ARGUMENT, "APPEND needs a mailbox and a message");
	error = get_astring(parser, &args[0], "mailbox name", &command->u.append.mailbox, &command->u.append.mailbox_len);
	if (error != IMAP_COMMAND_ERROR_NONE)
		return error;
	if (pos < count - 1 && args[pos].type == IMAP_ARG_LIST) {
		command->u.append.has_flags = true;
		command->u.append.flags = args[pos].list;
		command->u.append.flag_count = args[pos].list_count;
		if ((error = check_flag_list(parser, args[pos].list, args[pos].list_count)) != IMAP_COMMAND_ERROR_NONE)
			return error;
		pos++;
	}
	if (pos < count - 1 && args[pos].type == IMAP_ARG_STRING) {
		if (!parse_append_date(args[pos].str, (size_t)args[pos].len, &command->u.append.date,
				       &command->u.append.zone_minutes))
			return fail(parser, IMAP_COMMAND_ERROR_BAD_DATE, "Invalid date-time %.40s", args[pos].str);
		command->u.append.has_date = true;
		pos++;
	}
	if (pos + 1 != count)
		return fail(parser, pos + 1 < count ? IMAP_COMMAND_ERROR_EXTRA_ARGUMENT : IMAP_COMMAND_ERROR_MISSING_ARGUMENT,
			    "APPEND takes mailbox, [flags], [date-time] and one literal");
	if (args[pos].type != IMAP_ARG_LITERAL && args[pos].type != IMAP_ARG_LITERAL_STREAMED)
		return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "The message must be a literal");
	command->u.append.message = &args[pos];
	return IMAP_COMMAND_ERROR_NONE;
}

static enum imap_command_error parse_list(struct imap_command_parser *parser, struct imap_command *command)
{
	const struct imap_arg *args = command->args;
	unsigned int count = command->arg_count, pos = 0;

	if (count > 0 && args[0].type == IMAP_ARG_LIST) {
		command->u.list.extended = true;
		pos++;
	}
	if (pos + 2 > count)
		return fail(parser, IMAP_COMMAND_ERROR_MISSING_ARGUMENT, "%s needs a reference and a pattern",
			    command->name_str);
	if (!imap_arg_get_astring(&args[pos], &command->u.list.reference, &command->u.list.reference_len))
		return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "Invalid reference name");
	const struct imap_arg *pattern = &args[pos + 1];
	if (pattern->type == IMAP_ARG_LIST && command->name == IMAP_COMMAND_LIST) {
		command->u.list.extended = true;
		if (pattern->list_count == 0)
			return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "Empty pattern list");
		pattern = &pattern->list[0];
	}
	if (!imap_arg_get_astring(pattern, &command->u.list.pattern, &command->u.list.pattern_len))
		return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "Invalid mailbox pattern");
	pos += 2;
	if (pos < count) {
		if (command->name != IMAP_COMMAND_LIST || pos + 2 != count || !imap_arg_atom_equals(&args[pos], "RETURN") ||
		    args[pos + 1].type != IMAP_ARG_LIST)
			return fail(parser, IMAP_COMMAND_ERROR_EXTRA_ARGUMENT, "Too many arguments for %s", command->name_str);
		command->u.list.extended = true;
	}
	return IMAP_COMMAND_ERROR_NONE;
}

static enum imap_command_error parse_status(struct imap_command_parser *parser, struct imap_command *command)
{
	static const struct {
		const char *name;
		unsigned int bit;
	} items[] = { { "MESSAGES", IMAP_STATUS_MESSAGES }, { "RECENT", IMAP_STATUS_RECENT },
		      { "UIDNEXT", IMAP_STATUS_UIDNEXT }, { "UIDVALIDITY", IMAP_STATUS_UIDVALIDITY },
		      { "UNSEEN", IMAP_STATUS_UNSEEN }, { "HIGHESTMODSEQ", IMAP_STATUS_HIGHESTMODSEQ },
		      { "SIZE", IMAP_STATUS_SIZE }, { "DELETED", IMAP_STATUS_DELETED } };
	const struct imap_arg *args = command->args, *list;
	unsigned int count;
	enum imap_command_error error;

	if (command->arg_count != 2)
		return fail(parser, command->arg_count < 2 ? IMAP_COMMAND_ERROR_MISSING_ARGUMENT : IMAP_COMMAND_ERROR_EXTRA_ARGUMENT,
			    "STATUS needs a mailbox and a list of items");
	error = get_astring(parser, &args[0], "mailbox name", &command->u.status.mailbox, &command->u.status.mailbox_len);
	if (error != IMAP_COMMAND_ERROR_NONE)
		return error;
	if (!imap_arg_get_list(&args[1], &list, &count) || count == 0)
		return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "STATUS items must be a non-empty list");
	for (unsigned int i = 0; i < count; i++) {
		unsigned int bit = 0;
		for (size_t j = 0; j < sizeof(items) / sizeof(items[0]); j++) {
			if (imap_arg_atom_equals(&list[i], items[j].name))
				bit = items[j].bit;
		}
		if (bit == 0)
			return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "Unknown STATUS item");
		command->u.status.items |= bit;
	}
	return IMAP_COMMAND_ERROR_NONE;
}

static enum imap_command_error parse_id(struct imap_command_parser *parser, struct imap_command *command)
{
	const struct imap_arg *params;
	unsigned int count;
	const char *str;
	size_t len;

	if (command->arg_count != 1)
		return fail(parser, IMAP_COMMAND_ERROR_MISSING_ARGUMENT, "ID needs NIL or a list");
	if (imap_arg_is_nil(&command->args[0]))
		return IMAP_COMMAND_ERROR_NONE;
	if (!imap_arg_get_list(&command->args[0], &params, &count) || count % 2 != 0)
		return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "ID needs field/value pairs");
	for (unsigned int i = 0; i < count; i++) {
		if (!(i % 2 == 0 ? imap_arg_get_string(&params[i], &str, &len) : imap_arg_get_nstring(&params[i], &str, &len)))
			return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "ID fields and values must be strings");
	}
	command->u.id.params = params;
	command->u.id.count = count;
	return IMAP_COMMAND_ERROR_NONE;
}

/* Commands that take a fixed number of astrings. */
static enum imap_command_error parse_astrings(struct imap_command_parser *parser, struct imap_command *command,
					      unsigned int needed, const char **a, size_t *a_len, const char **b,
					      size_t *b_len)
{
	enum imap_command_error error;

	if (command->arg_count != needed)
		return fail(parser, command->arg_count < needed ? IMAP_COMMAND_ERROR_MISSING_ARGUMENT
								: IMAP_COMMAND_ERROR_EXTRA_ARGUMENT,
			    "%s takes %u argument%s", command->name_str, needed, needed == 1 ? "" : "s");
	if ((error = get_astring(parser, &command->args[0], "argument", a, a_len)) != IMAP_COMMAND_ERROR_NONE)
		return error;
	if (needed == 2)
		return get_astring(parser, &command->args[1], "argument", b, b_len);
	return IMAP_COMMAND_ERROR_NONE;
}

static enum imap_command_error parse_arguments(struct imap_command_parser *parser, struct imap_command *command)
{
	const struct imap_arg *args = command->args;
	enum imap_command_error error;

	switch (command->name) {
	case IMAP_COMMAND_CAPABILITY:
	case IMAP_COMMAND_NOOP:
	case IMAP_COMMAND_LOGOUT:
	case IMAP_COMMAND_STARTTLS:
	case IMAP_COMMAND_NAMESPACE:
	case IMAP_COMMAND_IDLE:
	case IMAP_COMMAND_CHECK:
	case IMAP_COMMAND_CLOSE:
	case IMAP_COMMAND_UNSELECT:
		if (command->arg_count > 0)
			return fail(parser, IMAP_COMMAND_ERROR_EXTRA_ARGUMENT, "%s takes no arguments", command->name_str);
		return IMAP_COMMAND_ERROR_NONE;
	case IMAP_COMMAND_EXPUNGE:
		if (!command->uid)
			return command->arg_count > 0 ? fail(parser, IMAP_COMMAND_ERROR_EXTRA_ARGUMENT,
							     "EXPUNGE takes no arguments")
						      : IMAP_COMMAND_ERROR_NONE;
		if (command->arg_count != 1)
			return fail(parser, IMAP_COMMAND_ERROR_MISSING_ARGUMENT, "UID EXPUNGE needs a UID set");
		return get_set(parser, &args[0], IMAP_SEQSET_ALLOW_STAR | IMAP_SEQSET_ALLOW_SAVED, &command->u.expunge.set);
	case IMAP_COMMAND_AUTHENTICATE:
		if (command->arg_count < 1 || command->arg_count > 2)
			return fail(parser, command->arg_count < 1 ? IMAP_COMMAND_ERROR_MISSING_ARGUMENT
								   : IMAP_COMMAND_ERROR_EXTRA_ARGUMENT,
				    "AUTHENTICATE takes a mechanism and an optional initial response");
		if (!imap_arg_get_atom(&args[0], &command->u.authenticate.mechanism))
			return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "Mechanism must be an atom");
		if (command->arg_count == 2) {
			if (args[1].type != IMAP_ARG_ATOM)
				return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "Initial response must be base64 or =");
			command->u.authenticate.initial_response = args[1].str;
			command->u.authenticate.initial_response_len = (size_t)args[1].len;
		}
		return IMAP_COMMAND_ERROR_NONE;
	case IMAP_COMMAND_LOGIN:
		return parse_astrings(parser, command, 2, &command->u.login.user, &command->u.login.user_len,
				      &command->u.login.password, &command->u.login.password_len);
	case IMAP_COMMAND_ENABLE:
		if (command->arg_count == 0)
			return fail(parser, IMAP_COMMAND_ERROR_MISSING_ARGUMENT, "ENABLE needs capability names");
		for (unsigned int i = 0; i < command->arg_count; i++) {
			if (args[i].type != IMAP_ARG_ATOM)
				return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "Capability names must be atoms");
		}
		command->u.atoms.atoms = args;
		command->u.atoms.count = command->arg_count;
		return IMAP_COMMAND_ERROR_NONE;
	case IMAP_COMMAND_ID:
		return parse_id(parser, command);
	case IMAP_COMMAND_SELECT:
	case IMAP_COMMAND_EXAMINE:
		return parse_select(parser, command);
	case IMAP_COMMAND_CREATE:
	case IMAP_COMMAND_DELETE:
	case IMAP_COMMAND_SUBSCRIBE:
	case IMAP_COMMAND_UNSUBSCRIBE:
		return parse_astrings(parser, command, 1, &command->u.mailbox.mailbox, &command->u.mailbox.mailbox_len,
				      NULL, NULL);
	case IMAP_COMMAND_RENAME:
		return parse_astrings(parser, command, 2, &command->u.rename.from, &command->u.rename.from_len,
				      &command->u.rename.to, &command->u.rename.to_len);
	case IMAP_COMMAND_LIST:
	case IMAP_COMMAND_LSUB:
		return parse_list(parser, command);
	case IMAP_COMMAND_STATUS:
		return parse_status(parser, command);
	case IMAP_COMMAND_APPEND:
		return parse_append(parser, command);
	case IMAP_COMMAND_SEARCH:
		return parse_search(parser, command);
	case IMAP_COMMAND_FETCH:
		return parse_fetch(parser, command);
	case IMAP_COMMAND_STORE:
		return parse_store(parser, command);
	case IMAP_COMMAND_COPY:
	case IMAP_COMMAND_MOVE:
		if (command->arg_count != 2)
			return fail(parser, command->arg_count < 2 ? IMAP_COMMAND_ERROR_MISSING_ARGUMENT
								   : IMAP_COMMAND_ERROR_EXTRA_ARGUMENT,
				    "%s needs a set and a mailbox", command->name_str);
		error = get_set(parser, &args[0], IMAP_SEQSET_ALLOW_STAR | IMAP_SEQSET_ALLOW_SAVED, &command->u.copy.set);
		if (error != IMAP_COMMAND_ERROR_NONE)
			return error;
		return get_astring(parser, &args[1], "mailbox name", &command->u.copy.mailbox, &command->u.copy.mailbox_len);
	}
	return fail(parser, IMAP_COMMAND_ERROR_UNKNOWN_COMMAND, "Unknown command");
}

static const struct {
	const char *name;
	enum imap_command_name command;
	bool uid_allowed;
} command_names[] = {
	{ "CAPABILITY", IMAP_COMMAND_CAPABILITY, false }, { "NOOP", IMAP_COMMAND_NOOP, false },
	{ "LOGOUT", IMAP_COMMAND_LOGOUT, false }, { "STARTTLS", IMAP_COMMAND_STARTTLS, false },
	{ "AUTHENTICATE", IMAP_COMMAND_AUTHENTICATE, false }, { "LOGIN", IMAP_COMMAND_LOGIN, false },
	{ "ENABLE", IMAP_COMMAND_ENABLE, false }, { "ID", IMAP_COMMAND_ID, false },
	{ "NAMESPACE", IMAP_COMMAND_NAMESPACE, false }, { "SELECT", IMAP_COMMAND_SELECT, false },
	{ "EXAMINE", IMAP_COMMAND_EXAMINE, false }, { "CREATE", IMAP_COMMAND_CREATE, false },
	{ "DELETE", IMAP_COMMAND_DELETE, false }, { "RENAME", IMAP_COMMAND_RENAME, false },
	{ "SUBSCRIBE", IMAP_COMMAND_SUBSCRIBE, false }, { "UNSUBSCRIBE", IMAP_COMMAND_UNSUBSCRIBE, false },
	{ "LIST", IMAP_COMMAND_LIST, false }, { "LSUB", IMAP_COMMAND_LSUB, false },
	{ "STATUS", IMAP_COMMAND_STATUS, false }, { "APPEND", IMAP_COMMAND_APPEND, false },
	{ "IDLE", IMAP_COMMAND_IDLE, false }, { "CHECK", IMAP_COMMAND_CHECK, false },
	{ "CLOSE", IMAP_COMMAND_CLOSE, false }, { "UNSELECT", IMAP_COMMAND_UNSELECT, false },
	{ "EXPUNGE", IMAP_COMMAND_EXPUNGE, true }, { "SEARCH", IMAP_COMMAND_SEARCH, true },
	{ "FETCH", IMAP_COMMAND_FETCH, true }, { "STORE", IMAP_COMMAND_STORE, true },
	{ "COPY", IMAP_COMMAND_COPY, true }, { "MOVE", IMAP_COMMAND_MOVE, true },
};

static bool is_valid_tag(const struct imap_arg *arg)
{
	if (arg->type != IMAP_ARG_ATOM || arg->len == 0)
		return false;
	for (size_t i = 0; i < arg->len; i++) {
		unsigned char c = (unsigned char)arg->str[i];
		if (c == '+' || (!is_strict_atom_char(c) && c != ']'))
			return false;
	}
	return true;
}

/* Whether some argument of args[0..count), at any depth, is a literal8. */
static bool args_have_literal8(const struct imap_arg *args, unsigned int count)
{
	for (unsigned int i = 0; i < count; i++) {
		if ((args[i].flags & IMAP_ARG_FLAG_LITERAL8) != 0 ||
		    (args[i].type == IMAP_ARG_LIST && args_have_literal8(args[i].list, args[i].list_count)))
			return true;
	}
	return false;
}

enum imap_command_error imap_command_parse(struct imap_command_parser *parser, const struct imap_arg *line,
					   struct imap_command *command, const char **message_r)
{
	const struct imap_arg *args = line->list;
	unsigned int count = line->list_count, name_at = 1;
	enum imap_command_error error = IMAP_COMMAND_ERROR_NONE;

	memset(command, 0, sizeof(*command));
	pool_reset(parser);
	parser->message[0] = '\0';
	if (message_r != NULL)
		*message_r = parser->message;
	if (count == 0)
		return fail(parser, IMAP_COMMAND_ERROR_EMPTY, "Empty command line");
	if (!is_valid_tag(&args[0]))
		return fail(parser, IMAP_COMMAND_ERROR_BAD_TAG, "Invalid tag");
	command->tag = args[0].str;
	if (count < 2)
		return fail(parser, IMAP_COMMAND_ERROR_MISSING_COMMAND, "Missing command");
	if (args[1].type != IMAP_ARG_ATOM)
		return fail(parser, IMAP_COMMAND_ERROR_UNKNOWN_COMMAND, "Command name must be an atom");
	if (imap_arg_atom_equals(&args[1], "UID")) {
		if (count < 3 || args[2].type != IMAP_ARG_ATOM)
			return fail(parser, IMAP_COMMAND_ERROR_MISSING_COMMAND, "UID needs a command");
		command->uid = true;
		name_at = 2;
	}
	command->name_str = args[name_at].str;
	size_t i;
	for (i = 0; i < sizeof(command_names) / sizeof(command_names[0]); i++) {
		if (imap_arg_atom_equals(&args[name_at], command_names[i].name))
			break;
	}
	if (i == sizeof(command_names) / sizeof(command_names[0]) || (command->uid && !command_names[i].uid_allowed))
		return fail(parser, IMAP_COMMAND_ERROR_UNKNOWN_COMMAND, "Unknown command %s%.40s",
			    command->uid ? "UID " : "", args[name_at].str);
	command->name = command_names[i].command;
	command->args = &args[name_at + 1];
	command->arg_count = count - name_at - 1;
	/* RFC 3516: a message (APPEND, its CATENATE parts) alone may be one */
	if (command->name != IMAP_COMMAND_APPEND && args_have_literal8(command->args, command->arg_count))
		return fail(parser, IMAP_COMMAND_ERROR_BAD_ARGUMENT, "literal8 not allowed here");
	error = parse_arguments(parser, command);
	return error;
}

/* Whether word (upper case) is in atom (len bytes), ASCII case-insensitive. */
static bool atom_holds_word(const char *atom, size_t len, const char *word)
{
	size_t word_len = strlen(word);

	for (size_t pos = 0; pos + word_len <= len; pos++) {
		if (strncasecmp(atom + pos, word, word_len) == 0)
			return true;
	}
	return false;
}

bool imap_command_args_enable_condstore(const struct imap_arg *args, unsigned int count)
{
	static const char *const words[] = { "CONDSTORE", "QRESYNC", "MODSEQ", "CHANGEDSINCE" };

	for (unsigned int i = 0; i < count; i++) {
		if (args[i].type == IMAP_ARG_LIST && imap_command_args_enable_condstore(args[i].list, args[i].list_count))
			return true;
		if (args[i].type != IMAP_ARG_ATOM)
			continue;
		for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
			if (atom_holds_word(args[i].str, (size_t)args[i].len, words[w]))
				return true;
		}
	}
	return false;
}
