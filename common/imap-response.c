/* SPDX-License-Identifier: MIT */
/* imap-response: typed views over one server line parsed by imap-parser (status, codes, untagged data, FETCH). */
#include "config.h"
#include "imap-response.h"
#include "imap-util.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CODE_NAME_MAX 64 /* longer response code names are kept as OTHER, cut */

struct imap_response_parser {
	struct imap_parser *code_parser;
	struct imap_seqset set;
	struct imap_seqset set2;
	uint32_t *numbers;
	unsigned int numbers_capacity;
	struct imap_fetch_item *items;
	unsigned int items_capacity;
	char code_name[CODE_NAME_MAX];
	char message[160];
};

struct imap_response_parser *imap_response_parser_new(void)
{
	struct imap_response_parser *parser = calloc(1, sizeof(*parser));

	if (parser == NULL)
		return NULL;
	parser->code_parser = imap_parser_new();
	if (parser->code_parser == NULL) {
		free(parser);
		return NULL;
	}
	return parser;
}

void imap_response_parser_free(struct imap_response_parser **parser_p)
{
	struct imap_response_parser *parser;

	if (parser_p == NULL || *parser_p == NULL)
		return;
	parser = *parser_p;
	imap_parser_free(&parser->code_parser);
	imap_seqset_free(&parser->set);
	imap_seqset_free(&parser->set2);
	free(parser->numbers);
	free(parser->items);
	free(parser);
	*parser_p = NULL;
}

const char *imap_response_error_name(enum imap_response_error error)
{
	switch (error) {
	case IMAP_RESPONSE_ERROR_NONE: return "NONE";
	case IMAP_RESPONSE_ERROR_EMPTY: return "EMPTY";
	case IMAP_RESPONSE_ERROR_BAD_TAG: return "BAD_TAG";
	case IMAP_RESPONSE_ERROR_BAD_STATUS: return "BAD_STATUS";
	case IMAP_RESPONSE_ERROR_MISSING_ARGUMENT: return "MISSING_ARGUMENT";
	case IMAP_RESPONSE_ERROR_BAD_ARGUMENT: return "BAD_ARGUMENT";
	case IMAP_RESPONSE_ERROR_BAD_NUMBER: return "BAD_NUMBER";
	case IMAP_RESPONSE_ERROR_BAD_SEQUENCE_SET: return "BAD_SEQUENCE_SET";
	case IMAP_RESPONSE_ERROR_BAD_CODE: return "BAD_CODE";
	case IMAP_RESPONSE_ERROR_BAD_FETCH_ITEM: return "BAD_FETCH_ITEM";
	case IMAP_RESPONSE_ERROR_OUT_OF_MEMORY: return "OUT_OF_MEMORY";
	}
	return "UNKNOWN";
}

/* Records an error with a message naming what was wrong. */
static enum imap_response_error fail(struct imap_response_parser *parser, enum imap_response_error error,
				     const char *what, const char *where)
{
	snprintf(parser->message, sizeof(parser->message), "%s in %s", what, where);
	return error;
}

static enum imap_response_status status_of(const struct imap_arg *arg)
{
	if (imap_arg_atom_equals(arg, "OK"))
		return IMAP_RESPONSE_STATUS_OK;
	if (imap_arg_atom_equals(arg, "NO"))
		return IMAP_RESPONSE_STATUS_NO;
	if (imap_arg_atom_equals(arg, "BAD"))
		return IMAP_RESPONSE_STATUS_BAD;
	if (imap_arg_atom_equals(arg, "PREAUTH"))
		return IMAP_RESPONSE_STATUS_PREAUTH;
	if (imap_arg_atom_equals(arg, "BYE"))
		return IMAP_RESPONSE_STATUS_BYE;
	return IMAP_RESPONSE_STATUS_NONE;
}

static bool all_atoms(const struct imap_arg *args, unsigned int count)
{
	for (unsigned int i = 0; i < count; i++) {
		if (args[i].type != IMAP_ARG_ATOM)
			return false;
	}
	return true;
}

static bool get_set(const struct imap_arg *arg, struct imap_seqset *set)
{
	enum imap_seqset_error error;
	return arg->type == IMAP_ARG_ATOM &&
	       imap_seqset_parse(set, arg->str, (size_t)arg->len, 0, &error) == 0;
}

static const struct {
	const char *name;
	enum imap_response_code_type type;
} code_names[] = {
	{ "ALERT", IMAP_RESPONSE_CODE_ALERT },
	{ "BADCHARSET", IMAP_RESPONSE_CODE_BADCHARSET },
	{ "CAPABILITY", IMAP_RESPONSE_CODE_CAPABILITY },
	{ "PARSE", IMAP_RESPONSE_CODE_PARSE },
	{ "PERMANENTFLAGS", IMAP_RESPONSE_CODE_PERMANENTFLAGS },
	{ "READ-ONLY", IMAP_RESPONSE_CODE_READ_ONLY },
	{ "READ-WRITE", IMAP_RESPONSE_CODE_READ_WRITE },
	{ "TRYCREATE", IMAP_RESPONSE_CODE_TRYCREATE },
	{ "UIDNEXT", IMAP_RESPONSE_CODE_UIDNEXT },
	{ "UIDVALIDITY", IMAP_RESPONSE_CODE_UIDVALIDITY },
	{ "UNSEEN", IMAP_RESPONSE_CODE_UNSEEN },
	{ "HIGHESTMODSEQ", IMAP_RESPONSE_CODE_HIGHESTMODSEQ },
	{ "NOMODSEQ", IMAP_RESPONSE_CODE_NOMODSEQ },
	{ "MODIFIED", IMAP_RESPONSE_CODE_MODIFIED },
	{ "APPENDUID", IMAP_RESPONSE_CODE_APPENDUID },
	{ "COPYUID", IMAP_RESPONSE_CODE_COPYUID },
	{ "CLOSED", IMAP_RESPONSE_CODE_CLOSED },
};

/* Tokenizes the inside of [...]; returns the arguments or NULL if it does not tokenize. */
static const struct imap_arg *tokenize_code(struct imap_response_parser *parser, const char *text,
					    size_t len, unsigned int *count_r)
{
	size_t consumed;

	imap_parser_reset(parser->code_parser);
	imap_parser_set_mode(parser->code_parser, IMAP_PARSER_MODE_COMMAND);
	if (imap_parser_feed_bytes(parser->code_parser, text, len, &consumed) != IMAP_PARSER_NEED_MORE ||
	    imap_parser_feed_bytes(parser->code_parser, "\r\n", 2, &consumed) != IMAP_PARSER_LINE_COMPLETE)
		return NULL;
	const struct imap_arg *line = imap_parser_get_line(parser->code_parser);
	*count_r = line->list_count;
	return line->list;
}

static enum imap_response_error parse_code(struct imap_response_parser *parser, const struct imap_arg *arg,
					   struct imap_response_code *code)
{
	size_t name_len = strcspn(arg->str, " ");
	const struct imap_arg *args;
	unsigned int count = 0;

	code->text = arg->str;
	code->text_len = (size_t)arg->len;
	if (name_len >= sizeof(parser->code_name))
		name_len = sizeof(parser->code_name) - 1;
	memcpy(parser->code_name, arg->str, name_len);
	parser->code_name[name_len] = '\0';
	code->name = parser->code_name;
	code->type = IMAP_RESPONSE_CODE_OTHER;
	for (size_t i = 0; i < sizeof(code_names) / sizeof(code_names[0]); i++) {
		if (strcasecmp(parser->code_name, code_names[i].name) == 0)
			code->type = code_names[i].type;
	}
	args = tokenize_code(parser, arg->str, (size_t)arg->len, &count);
	if (args == NULL || count == 0) {
		if (code->type != IMAP_RESPONSE_CODE_OTHER)
			return fail(parser, IMAP_RESPONSE_ERROR_BAD_CODE, "Untokenizable arguments",
				    "a response code");
		return IMAP_RESPONSE_ERROR_NONE;
	}
	code->args = args + 1;
	code->arg_count = count - 1;
	args = code->args;
	count = code->arg_count;

	bool ok = true;
	uint32_t number32 = 0;
	switch (code->type) {
	case IMAP_RESPONSE_CODE_BADCHARSET:
		ok = count == 0 || (count == 1 && args[0].type == IMAP_ARG_LIST);
		break;
	case IMAP_RESPONSE_CODE_CAPABILITY:
		ok = count > 0 && all_atoms(args, count);
		break;
	case IMAP_RESPONSE_CODE_PERMANENTFLAGS:
		ok = count == 1 && args[0].type == IMAP_ARG_LIST &&
		     all_atoms(args[0].list, args[0].list_count);
		break;
	case IMAP_RESPONSE_CODE_UIDNEXT:
	case IMAP_RESPONSE_CODE_UIDVALIDITY:
	case IMAP_RESPONSE_CODE_UNSEEN:
		ok = count == 1 && imap_arg_get_number32(&args[0], &number32);
		code->number = number32;
		break;
	case IMAP_RESPONSE_CODE_HIGHESTMODSEQ:
		ok = count == 1 && imap_arg_get_number(&args[0], &code->number);
		break;
	case IMAP_RESPONSE_CODE_MODIFIED:
		ok = count == 1 && get_set(&args[0], &parser->set);
		code->set = &parser->set;
		break;
	case IMAP_RESPONSE_CODE_APPENDUID:
		ok = count == 2 && imap_arg_get_nz_number(&args[0], &number32) &&
		     get_set(&args[1], &parser->set);
		code->number = number32;
		code->set = &parser->set;
		break;
	case IMAP_RESPONSE_CODE_COPYUID:
		ok = count == 3 && imap_arg_get_nz_number(&args[0], &number32) &&
		     get_set(&args[1], &parser->set) && get_set(&args[2], &parser->set2);
		code->number = number32;
		code->set = &parser->set;
		code->set2 = &parser->set2;
		break;
	default:
		break;
	}
	if (!ok)
		return fail(parser, IMAP_RESPONSE_ERROR_BAD_CODE, "Bad arguments", parser->code_name);
	return IMAP_RESPONSE_ERROR_NONE;
}

/* The code and text after a status word (args are the TEXT arguments). */
static enum imap_response_error parse_status_text(struct imap_response_parser *parser,
						  const struct imap_arg *args, unsigned int count,
						  struct imap_response *response)
{
	unsigned int i = 0;

	response->text = "";
	if (i < count && args[i].type == IMAP_ARG_TEXT && (args[i].flags & IMAP_ARG_FLAG_RESPONSE_CODE) != 0) {
		enum imap_response_error error = parse_code(parser, &args[i], &response->code);
		if (error != IMAP_RESPONSE_ERROR_NONE)
			return error;
		i++;
	}
	if (i < count && args[i].type == IMAP_ARG_TEXT) {
		response->text = args[i].str;
		response->text_len = (size_t)args[i].len;
		i++;
	}
	if (i != count)
		return fail(parser, IMAP_RESPONSE_ERROR_BAD_ARGUMENT, "Unexpected arguments (not a RESPONSE-mode line?)",
			    "a status response");
	return IMAP_RESPONSE_ERROR_NONE;
}

static bool get_delimiter(const struct imap_arg *arg, char *delimiter_r)
{
	const char *str;
	size_t len;

	if (arg->type == IMAP_ARG_NIL) {
		*delimiter_r = '\0';
		return true;
	}
	if (!imap_arg_get_string(arg, &str, &len) || len != 1)
		return false;
	*delimiter_r = str[0];
	return true;
}

static enum imap_response_error parse_list(struct imap_response_parser *parser,
					   struct imap_response *response)
{
	const struct imap_arg *args = response->args;
	struct imap_response_list *list = &response->u.list;

	if (response->arg_count < 3)
		return fail(parser, IMAP_RESPONSE_ERROR_MISSING_ARGUMENT, "Missing arguments", response->name);
	if (!imap_arg_get_list(&args[0], &list->flags, &list->flag_count) ||
	    !all_atoms(list->flags, list->flag_count))
		return fail(parser, IMAP_RESPONSE_ERROR_BAD_ARGUMENT, "Bad mailbox attributes", response->name);
	if (!get_delimiter(&args[1], &list->delimiter))
		return fail(parser, IMAP_RESPONSE_ERROR_BAD_ARGUMENT, "Bad hierarchy delimiter", response->name);
	if (!imap_arg_get_astring(&args[2], &list->mailbox, &list->mailbox_len))
		return fail(parser, IMAP_RESPONSE_ERROR_BAD_ARGUMENT, "Bad mailbox name", response->name);
	if (response->arg_count > 3) {
		list->extended = &args[3];
		list->extended_count = response->arg_count - 3;
	}
	return IMAP_RESPONSE_ERROR_NONE;
}

static enum imap_response_error parse_status(struct imap_response_parser *parser,
					     struct imap_response *response)
{
	static const struct {
		const char *name;
		unsigned int bit;
		size_t offset;
	} items[] = {
		{ "MESSAGES", IMAP_STATUS_MESSAGES, offsetof(struct imap_response_status_data, messages) },
		{ "RECENT", IMAP_STATUS_RECENT, offsetof(struct imap_response_status_data, recent) },
		{ "UIDNEXT", IMAP_STATUS_UIDNEXT, offsetof(struct imap_response_status_data, uidnext) },
		{ "UIDVALIDITY", IMAP_STATUS_UIDVALIDITY, offsetof(struct imap_response_status_data, uidvalidity) },
		{ "UNSEEN", IMAP_STATUS_UNSEEN, offsetof(struct imap_response_status_data, unseen) },
		{ "HIGHESTMODSEQ", IMAP_STATUS_HIGHESTMODSEQ, offsetof(struct imap_response_status_data, highestmodseq) },
		{ "SIZE", IMAP_STATUS_SIZE, offsetof(struct imap_response_status_data, size) },
		{ "DELETED", IMAP_STATUS_DELETED, offsetof(struct imap_response_status_data, deleted) },
	};
	struct imap_response_status_data *status = &response->u.status;
	const struct imap_arg *list;
	unsigned int count;

	if (response->arg_count != 2)
		return fail(parser, IMAP_RESPONSE_ERROR_MISSING_ARGUMENT, "Expected mailbox and list", "STATUS");
	if (!imap_arg_get_astring(&response->args[0], &status->mailbox, &status->mailbox_len))
		return fail(parser, IMAP_RESPONSE_ERROR_BAD_ARGUMENT, "Bad mailbox name", "STATUS");
	if (!imap_arg_get_list(&response->args[1], &list, &count) || count % 2 != 0)
		return fail(parser, IMAP_RESPONSE_ERROR_BAD_ARGUMENT, "Bad item list", "STATUS");
	for (unsigned int i = 0; i < count; i += 2) {
		uint64_t value;
		if (list[i].type != IMAP_ARG_ATOM)
			return fail(parser, IMAP_RESPONSE_ERROR_BAD_ARGUMENT, "Bad item name", "STATUS");
		if (!imap_arg_get_number(&list[i + 1], &value))
			return fail(parser, IMAP_RESPONSE_ERROR_BAD_NUMBER, "Bad item value", "STATUS");
		for (size_t j = 0; j < sizeof(items) / sizeof(items[0]); j++) {
			if (strcasecmp(list[i].str, items[j].name) == 0) {
				status->present |= items[j].bit;
				*(uint64_t *)((char *)status + items[j].offset) = value;
			}
		}
	}
	return IMAP_RESPONSE_ERROR_NONE;
}

static enum imap_response_error parse_search(struct imap_response_parser *parser,
					     struct imap_response *response)
{
	struct imap_response_search *search = &response->u.search;
	unsigned int count = response->arg_count;
	const struct imap_arg *args = response->args;

	if (count > 0 && args[count - 1].type == IMAP_ARG_LIST) {
		const struct imap_arg *modseq = args[count - 1].list;
		if (args[count - 1].list_count != 2 || !imap_arg_atom_equals(&modseq[0], "MODSEQ") ||
		    !imap_arg_get_number(&modseq[1], &search->modseq))
			return fail(parser, IMAP_RESPONSE_ERROR_BAD_ARGUMENT, "Bad (MODSEQ n)", "SEARCH");
		search->has_modseq = true;
		count--;
	}
	if (count > parser->numbers_capacity) {
		uint32_t *numbers = realloc(parser->numbers, count * sizeof(*numbers));
		if (numbers == NULL)
			return fail(parser, IMAP_RESPONSE_ERROR_OUT_OF_MEMORY, "Out of memory", "SEARCH");
		parser->numbers = numbers;
		parser->numbers_capacity = count;
	}
	for (unsigned int i = 0; i < count; i++) {
		if (!imap_arg_get_nz_number(&args[i], &parser->numbers[i]))
			return fail(parser, IMAP_RESPONSE_ERROR_BAD_NUMBER, "Bad number", "SEARCH");
	}
	search->numbers = parser->numbers;
	search->count = count;
	return IMAP_RESPONSE_ERROR_NONE;
}

static enum imap_response_error parse_esearch(struct imap_response_parser *parser,
					      struct imap_response *response)
{
	struct imap_response_esearch *esearch = &response->u.esearch;
	const struct imap_arg *args = response->args;
	unsigned int count = response->arg_count, i = 0;

	if (i < count && args[i].type == IMAP_ARG_LIST) {
		const struct imap_arg *correlator = args[i].list;
		if (args[i].list_count != 2 || !imap_arg_atom_equals(&correlator[0], "TAG") ||
		    !imap_arg_get_string(&correlator[1], &esearch->tag, &esearch->tag_len))
			return fail(parser, IMAP_RESPONSE_ERROR_BAD_ARGUMENT, "Bad (TAG \"x\")", "ESEARCH");
		i++;
	}
	if (i < count && imap_arg_atom_equals(&args[i], "UID")) {
		esearch->uid = true;
		i++;
	}
	for (; i < count; i += 2) {
		uint64_t number;
		if (args[i].type != IMAP_ARG_ATOM)
			return fail(parser, IMAP_RESPONSE_ERROR_BAD_ARGUMENT, "Bad result name", "ESEARCH");
		if (i + 1 >= count)
			return fail(parser, IMAP_RESPONSE_ERROR_MISSING_ARGUMENT, "Result without value", "ESEARCH");
		const struct imap_arg *value = &args[i + 1];
		if (imap_arg_atom_equals(&args[i], "ALL")) {
			if (!get_set(value, &parser->set))
				return fail(parser, IMAP_RESPONSE_ERROR_BAD_SEQUENCE_SET, "Bad ALL", "ESEARCH");
			esearch->all = &parser->set;
			esearch->present |= IMAP_ESEARCH_ALL;
			continue;
		}
		unsigned int bit = imap_arg_atom_equals(&args[i], "MIN") ? IMAP_ESEARCH_MIN
				   : imap_arg_atom_equals(&args[i], "MAX") ? IMAP_ESEARCH_MAX
				   : imap_arg_atom_equals(&args[i], "COUNT") ? IMAP_ESEARCH_COUNT
				   : imap_arg_atom_equals(&args[i], "MODSEQ") ? IMAP_ESEARCH_MODSEQ
				   : 0;
		if (bit == 0)
			continue; /* an extension's result: skipped with its value */
		if (!imap_arg_get_number(value, &number) || (bit != IMAP_ESEARCH_MODSEQ && number > UINT32_MAX))
			return fail(parser, IMAP_RESPONSE_ERROR_BAD_NUMBER, "Bad number", "ESEARCH");
		esearch->present |= bit;
		if (bit == IMAP_ESEARCH_MIN)
			esearch->min = (uint32_t)number;
		else if (bit == IMAP_ESEARCH_MAX)
			esearch->max = (uint32_t)number;
		else if (bit == IMAP_ESEARCH_COUNT)
			esearch->count = (uint32_t)number;
		else
			esearch->modseq = number;
	}
	return IMAP_RESPONSE_ERROR_NONE;
}

static enum imap_response_error parse_vanished(struct imap_response_parser *parser,
					       struct imap_response *response)
{
	const struct imap_arg *args = response->args;
	unsigned int i = 0;

	if (response->arg_count > 0 && args[0].type == IMAP_ARG_LIST) {
		if (args[0].list_count != 1 || !imap_arg_atom_equals(&args[0].list[0], "EARLIER"))
			return fail(parser, IMAP_RESPONSE_ERROR_BAD_ARGUMENT, "Bad (EARLIER)", "VANISHED");
		response->u.vanished.earlier = true;
		i++;
	}
	if (i + 1 != response->arg_count)
		return fail(parser, IMAP_RESPONSE_ERROR_MISSING_ARGUMENT, "Expected one UID set", "VANISHED");
	if (!get_set(&args[i], &parser->set))
		return fail(parser, IMAP_RESPONSE_ERROR_BAD_SEQUENCE_SET, "Bad UID set", "VANISHED");
	response->u.vanished.uids = &parser->set;
	return IMAP_RESPONSE_ERROR_NONE;
}

static enum imap_response_error parse_id(struct imap_response_parser *parser, struct imap_response *response)
{
	const struct imap_arg *params;
	unsigned int count;
	const char *str;
	size_t len;

	if (response->arg_count != 1)
		return fail(parser, IMAP_RESPONSE_ERROR_MISSING_ARGUMENT, "Expected NIL or a list", "ID");
	if (imap_arg_is_nil(&response->args[0]))
		return IMAP_RESPONSE_ERROR_NONE;
	if (!imap_arg_get_list(&response->args[0], &params, &count) || count % 2 != 0)
		return fail(parser, IMAP_RESPONSE_ERROR_BAD_ARGUMENT, "Bad parameter list", "ID");
	for (unsigned int i = 0; i < count; i++) {
		if (!(i % 2 == 0 ? imap_arg_get_string(&params[i], &str, &len)
				 : imap_arg_get_nstring(&params[i], &str, &len)))
			return fail(parser, IMAP_RESPONSE_ERROR_BAD_ARGUMENT, "Bad parameter", "ID");
	}
	response->u.id.params = params;
	response->u.id.count = count;
	return IMAP_RESPONSE_ERROR_NONE;
}

/* One NAMESPACE element: NIL, or a list of (prefix delimiter extensions...). */
static bool get_namespace(const struct imap_arg *arg, const struct imap_arg **namespace_r)
{
	const char *str;
	size_t len;
	char delimiter;

	if (imap_arg_is_nil(arg)) {
		*namespace_r = NULL;
		return true;
	}
	if (arg->type != IMAP_ARG_LIST || arg->list_count == 0)
		return false;
	for (unsigned int i = 0; i < arg->list_count; i++) {
		const struct imap_arg *entry = &arg->list[i];
		if (entry->type != IMAP_ARG_LIST || entry->list_count < 2 ||
		    !imap_arg_get_string(&entry->list[0], &str, &len) ||
		    !get_delimiter(&entry->list[1], &delimiter))
			return false;
	}
	*namespace_r = arg;
	return true;
}

static enum imap_response_error parse_namespace(struct imap_response_parser *parser,
						struct imap_response *response)
{
	struct imap_response_namespace *namespace = &response->u.namespace;

	if (response->arg_count != 3)
		return fail(parser, IMAP_RESPONSE_ERROR_MISSING_ARGUMENT, "Expected three namespaces", "NAMESPACE");
	if (!get_namespace(&response->args[0], &namespace->personal) ||
	    !get_namespace(&response->args[1], &namespace->other) ||
	    !get_namespace(&response->args[2], &namespace->shared))
		return fail(parser, IMAP_RESPONSE_ERROR_BAD_ARGUMENT, "Bad namespace", "NAMESPACE");
	return IMAP_RESPONSE_ERROR_NONE;
}

static bool is_nstring_or_streamed(const struct imap_arg *arg)
{
	return arg->type == IMAP_ARG_NIL || arg->type == IMAP_ARG_STRING || arg->type == IMAP_ARG_LITERAL ||
	       arg->type == IMAP_ARG_LITERAL_STREAMED;
}

/* Any number that fits 64 bits. Dovecot 2.3 sends BINARY.SIZE as 2^64 - n
   for some parts (an underflow), so this one value is not held to number64:
   refusing it would abort the whole session over one size. */
static bool get_uint64(const struct imap_arg *arg, uint64_t *number_r)
{
	uint64_t value = 0;

	if (arg->type != IMAP_ARG_ATOM || arg->len == 0 || arg->len > 20)
		return false;
	for (size_t i = 0; i < arg->len; i++) {
		unsigned int digit = (unsigned int)(arg->str[i] - '0');
		if (digit > 9 || value > (UINT64_MAX - digit) / 10)
			return false;
		value = value * 10 + digit;
	}
	*number_r = value;
	return true;
}

/* Splits "NAME[section]<origin>" and checks the value for the item's type. */
static bool parse_fetch_item(const struct imap_arg *name_arg, const struct imap_arg *value,
			     struct imap_fetch_item *item)
{
	const char *name = name_arg->str, *bracket;
	size_t base_len;

	memset(item, 0, sizeof(*item));
	item->name = name;
	item->value = value;
	item->type = IMAP_FETCH_OTHER;
	bracket = strchr(name, '[');
	base_len = bracket != NULL ? (size_t)(bracket - name) : (size_t)name_arg->len;
	if (bracket != NULL) {
		const char *close = strrchr(bracket, ']');
		if (close == NULL)
			return false;
		item->section = bracket + 1;
		item->section_len = (size_t)(close - bracket - 1);
		const char *rest = close + 1;
		if (*rest == '<') {
			char *end;
			if (rest[1] < '0' || rest[1] > '9')
				return false;
			item->origin = strtoull(rest + 1, &end, 10);
			if (*end != '>' || end[1] != '\0')
				return false;
			item->has_origin = true;
		} else if (*rest != '\0') {
			return false;
		}
	}
#define BASE_IS(word) (base_len == sizeof(word) - 1 && strncasecmp(name, word, base_len) == 0)
	uint32_t number32 = 0;
	if (bracket != NULL) {
		if (BASE_IS("BODY")) {
			item->type = IMAP_FETCH_BODY_SECTION;
			return is_nstring_or_streamed(value);
		}
		if (BASE_IS("BINARY")) {
			item->type = IMAP_FETCH_BINARY_SECTION;
			return is_nstring_or_streamed(value);
		}
		if (BASE_IS("BINARY.SIZE")) {
			item->type = IMAP_FETCH_BINARY_SIZE;
			return !item->has_origin && get_uint64(value, &item->number);
		}
		return true;
	}
	if (BASE_IS("UID")) {
		item->type = IMAP_FETCH_UID;
		bool ok = imap_arg_get_nz_number(value, &number32);
		item->number = number32;
		return ok;
	}
	if (BASE_IS("FLAGS")) {
		item->type = IMAP_FETCH_FLAGS;
		return value->type == IMAP_ARG_LIST && all_atoms(value->list, value->list_count);
	}
	if (BASE_IS("INTERNALDATE")) {
		time_t utc;
		item->type = IMAP_FETCH_INTERNALDATE;
		if (value->type != IMAP_ARG_STRING ||
		    !imap_util_date_time_parse(value->str, (size_t)value->len, &utc, NULL))
			return false;
		item->number = (uint64_t)(int64_t)utc;
		return true;
	}
	if (BASE_IS("RFC822.SIZE")) {
		item->type = IMAP_FETCH_RFC822_SIZE;
		return imap_arg_get_number(value, &item->number);
	}
	if (BASE_IS("ENVELOPE")) {
		struct imap_envelope envelope;
		item->type = IMAP_FETCH_ENVELOPE;
		return imap_envelope_from_arg(value, &envelope);
	}
	if (BASE_IS("BODYSTRUCTURE") || BASE_IS("BODY")) {
		item->type = BASE_IS("BODY") ? IMAP_FETCH_BODY : IMAP_FETCH_BODYSTRUCTURE;
		return value->type == IMAP_ARG_LIST && value->list_count > 0;
	}
	if (BASE_IS("RFC822") || BASE_IS("RFC822.HEADER") || BASE_IS("RFC822.TEXT")) {
		item->type = BASE_IS("RFC822") ? IMAP_FETCH_RFC822
			     : BASE_IS("RFC822.HEADER") ? IMAP_FETCH_RFC822_HEADER
							: IMAP_FETCH_RFC822_TEXT;
		return is_nstring_or_streamed(value);
	}
	if (BASE_IS("MODSEQ")) {
		item->type = IMAP_FETCH_MODSEQ;
		return value->type == IMAP_ARG_LIST && value->list_count == 1 &&
		       imap_arg_get_number(&value->list[0], &item->number);
	}
#undef BASE_IS
	return true;
}

static enum imap_response_error parse_fetch(struct imap_response_parser *parser,
					    struct imap_response *response)
{
	const struct imap_arg *list;
	unsigned int count;

	if (response->arg_count != 1 || !imap_arg_get_list(&response->args[0], &list, &count))
		return fail(parser, IMAP_RESPONSE_ERROR_BAD_ARGUMENT, "Expected one list", "FETCH");
	if (count == 0 || count % 2 != 0)
		return fail(parser, IMAP_RESPONSE_ERROR_BAD_FETCH_ITEM, "Item without value", "FETCH");
	if (count / 2 > parser->items_capacity) {
		struct imap_fetch_item *items = realloc(parser->items, count / 2 * sizeof(*items));
		if (items == NULL)
			return fail(parser, IMAP_RESPONSE_ERROR_OUT_OF_MEMORY, "Out of memory", "FETCH");
		parser->items = items;
		parser->items_capacity = count / 2;
	}
	for (unsigned int i = 0; i < count; i += 2) {
		if (list[i].type != IMAP_ARG_ATOM)
			return fail(parser, IMAP_RESPONSE_ERROR_BAD_FETCH_ITEM, "Item name is no atom", "FETCH");
		if (!parse_fetch_item(&list[i], &list[i + 1], &parser->items[i / 2])) {
			snprintf(parser->message, sizeof(parser->message), "Bad value for %.60s in FETCH",
				 list[i].str);
			return IMAP_RESPONSE_ERROR_BAD_FETCH_ITEM;
		}
	}
	response->u.fetch.items = parser->items;
	response->u.fetch.count = count / 2;
	return IMAP_RESPONSE_ERROR_NONE;
}

static const struct {
	const char *name;
	enum imap_response_data_type type;
} data_names[] = {
	{ "CAPABILITY", IMAP_RESPONSE_DATA_CAPABILITY },
	{ "LIST", IMAP_RESPONSE_DATA_LIST },
	{ "LSUB", IMAP_RESPONSE_DATA_LSUB },
	{ "STATUS", IMAP_RESPONSE_DATA_STATUS },
	{ "SEARCH", IMAP_RESPONSE_DATA_SEARCH },
	{ "ESEARCH", IMAP_RESPONSE_DATA_ESEARCH },
	{ "FLAGS", IMAP_RESPONSE_DATA_FLAGS },
	{ "VANISHED", IMAP_RESPONSE_DATA_VANISHED },
	{ "ENABLED", IMAP_RESPONSE_DATA_ENABLED },
	{ "ID", IMAP_RESPONSE_DATA_ID },
	{ "NAMESPACE", IMAP_RESPONSE_DATA_NAMESPACE },
};

static enum imap_response_error parse_untagged_data(struct imap_response_parser *parser,
						    const struct imap_arg *args, unsigned int count,
						    struct imap_response *response)
{
	uint32_t number;

	if (count < 2)
		return fail(parser, IMAP_RESPONSE_ERROR_MISSING_ARGUMENT, "Nothing after '*'", "untagged data");
	if (imap_arg_get_number32(&args[1], &number)) {
		if (count < 3 || args[2].type != IMAP_ARG_ATOM)
			return fail(parser, IMAP_RESPONSE_ERROR_MISSING_ARGUMENT, "No keyword after number",
				    "untagged data");
		response->number = number;
		response->name = args[2].str;
		response->args = &args[3];
		response->arg_count = count - 3;
		if (imap_arg_atom_equals(&args[2], "EXISTS") || imap_arg_atom_equals(&args[2], "RECENT")) {
			response->type = imap_arg_atom_equals(&args[2], "EXISTS") ? IMAP_RESPONSE_DATA_EXISTS
										: IMAP_RESPONSE_DATA_RECENT;
			return IMAP_RESPONSE_ERROR_NONE;
		}
		if (imap_arg_atom_equals(&args[2], "EXPUNGE") || imap_arg_atom_equals(&args[2], "FETCH")) {
			if (number == 0)
				return fail(parser, IMAP_RESPONSE_ERROR_BAD_NUMBER, "Sequence number 0", args[2].str);
			if (imap_arg_atom_equals(&args[2], "EXPUNGE")) {
				response->type = IMAP_RESPONSE_DATA_EXPUNGE;
				return IMAP_RESPONSE_ERROR_NONE;
			}
			response->type = IMAP_RESPONSE_DATA_FETCH;
			return parse_fetch(parser, response);
		}
		response->type = IMAP_RESPONSE_DATA_OTHER;
		return IMAP_RESPONSE_ERROR_NONE;
	}
	if (args[1].type != IMAP_ARG_ATOM)
		return fail(parser, IMAP_RESPONSE_ERROR_BAD_ARGUMENT, "Keyword is no atom", "untagged data");
	response->name = args[1].str;
	response->args = &args[2];
	response->arg_count = count - 2;
	response->type = IMAP_RESPONSE_DATA_OTHER;
	for (size_t i = 0; i < sizeof(data_names) / sizeof(data_names[0]); i++) {
		if (imap_arg_atom_equals(&args[1], data_names[i].name))
			response->type = data_names[i].type;
	}
	switch (response->type) {
	case IMAP_RESPONSE_DATA_CAPABILITY:
	case IMAP_RESPONSE_DATA_ENABLED:
		if (!all_atoms(response->args, response->arg_count))
			return fail(parser, IMAP_RESPONSE_ERROR_BAD_ARGUMENT, "Expected atoms", response->name);
		return IMAP_RESPONSE_ERROR_NONE;
	case IMAP_RESPONSE_DATA_LIST:
	case IMAP_RESPONSE_DATA_LSUB:
		return parse_list(parser, response);
	case IMAP_RESPONSE_DATA_STATUS:
		return parse_status(parser, response);
	case IMAP_RESPONSE_DATA_SEARCH:
		return parse_search(parser, response);
	case IMAP_RESPONSE_DATA_ESEARCH:
		return parse_esearch(parser, response);
	case IMAP_RESPONSE_DATA_FLAGS:
		if (response->arg_count != 1 ||
		    !imap_arg_get_list(&response->args[0], &response->u.flags.flags, &response->u.flags.count) ||
		    !all_atoms(response->u.flags.flags, response->u.flags.count))
			return fail(parser, IMAP_RESPONSE_ERROR_BAD_ARGUMENT, "Expected a flag list", "FLAGS");
		return IMAP_RESPONSE_ERROR_NONE;
	case IMAP_RESPONSE_DATA_VANISHED:
		return parse_vanished(parser, response);
	case IMAP_RESPONSE_DATA_ID:
		return parse_id(parser, response);
	case IMAP_RESPONSE_DATA_NAMESPACE:
		return parse_namespace(parser, response);
	default:
		return IMAP_RESPONSE_ERROR_NONE;
	}
}

enum imap_response_error imap_response_parse(struct imap_response_parser *parser, const struct imap_arg *line,
					     struct imap_response *response, const char **message_r)
{
	const struct imap_arg *args = line->list;
	unsigned int count = line->list_count;
	enum imap_response_error error;

	memset(response, 0, sizeof(*response));
	response->text = "";
	response->name = "";
	response->code.name = "";
	parser->message[0] = '\0';
	if (count == 0) {
		error = fail(parser, IMAP_RESPONSE_ERROR_EMPTY, "Empty line", "a response");
		goto out;
	}
	if (args[0].type != IMAP_ARG_ATOM) {
		error = fail(parser, IMAP_RESPONSE_ERROR_BAD_TAG, "No tag", "a response");
		goto out;
	}
	response->tag = args[0].str;
	if (strcmp(args[0].str, "+") == 0) {
		response->kind = IMAP_RESPONSE_CONTINUATION;
		error = parse_status_text(parser, args + 1, count - 1, response);
		goto out;
	}
	response->kind = strcmp(args[0].str, "*") == 0 ? IMAP_RESPONSE_UNTAGGED : IMAP_RESPONSE_TAGGED;
	response->status = count > 1 ? status_of(&args[1]) : IMAP_RESPONSE_STATUS_NONE;
	if (response->kind == IMAP_RESPONSE_TAGGED &&
	    (response->status == IMAP_RESPONSE_STATUS_NONE || response->status == IMAP_RESPONSE_STATUS_PREAUTH ||
	     response->status == IMAP_RESPONSE_STATUS_BYE)) {
		error = fail(parser, IMAP_RESPONSE_ERROR_BAD_STATUS, "Expected OK, NO or BAD", "a tagged response");
		goto out;
	}
	if (response->status != IMAP_RESPONSE_STATUS_NONE)
		error = parse_status_text(parser, args + 2, count - 2, response);
	else
		error = parse_untagged_data(parser, args, count, response);
out:
	if (message_r != NULL)
		*message_r = parser->message;
	return error;
}

const struct imap_fetch_item *imap_response_fetch_find(const struct imap_response *response,
						       enum imap_fetch_item_type type)
{
	if (response->type != IMAP_RESPONSE_DATA_FETCH)
		return NULL;
	for (unsigned int i = 0; i < response->u.fetch.count; i++) {
		if (response->u.fetch.items[i].type == type)
			return &response->u.fetch.items[i];
	}
	return NULL;
}

static bool get_nstring(const struct imap_arg *arg, const char **str_r, size_t *len_r)
{
	return imap_arg_get_nstring(arg, str_r, len_r);
}

/* An address list: NIL or a list of addresses. */
static bool get_address_list(const struct imap_arg *arg, const struct imap_arg **list_r, unsigned int *count_r)
{
	struct imap_address address;

	if (imap_arg_is_nil(arg)) {
		*list_r = NULL;
		*count_r = 0;
		return true;
	}
	if (!imap_arg_get_list(arg, list_r, count_r))
		return false;
	for (unsigned int i = 0; i < *count_r; i++) {
		if (!imap_address_from_arg(&(*list_r)[i], &address))
			return false;
	}
	return true;
}

bool imap_envelope_from_arg(const struct imap_arg *value, struct imap_envelope *envelope)
{
	const struct imap_arg *list;
	unsigned int count;

	memset(envelope, 0, sizeof(*envelope));
	if (!imap_arg_get_list(value, &list, &count) || count != 10)
		return false;
	return get_nstring(&list[0], &envelope->date, &envelope->date_len) &&
	       get_nstring(&list[1], &envelope->subject, &envelope->subject_len) &&
	       get_address_list(&list[2], &envelope->from, &envelope->from_count) &&
	       get_address_list(&list[3], &envelope->sender, &envelope->sender_count) &&
	       get_address_list(&list[4], &envelope->reply_to, &envelope->reply_to_count) &&
	       get_address_list(&list[5], &envelope->to, &envelope->to_count) &&
	       get_address_list(&list[6], &envelope->cc, &envelope->cc_count) &&
	       get_address_list(&list[7], &envelope->bcc, &envelope->bcc_count) &&
	       get_nstring(&list[8], &envelope->in_reply_to, &envelope->in_reply_to_len) &&
	       get_nstring(&list[9], &envelope->message_id, &envelope->message_id_len);
}

bool imap_address_from_arg(const struct imap_arg *value, struct imap_address *address)
{
	const struct imap_arg *list;
	unsigned int count;

	memset(address, 0, sizeof(*address));
	if (!imap_arg_get_list(value, &list, &count) || count != 4)
		return false;
	return get_nstring(&list[0], &address->name, &address->name_len) &&
	       get_nstring(&list[1], &address->adl, &address->adl_len) &&
	       get_nstring(&list[2], &address->mailbox, &address->mailbox_len) &&
	       get_nstring(&list[3], &address->host, &address->host_len);
}
