/* SPDX-License-Identifier: MIT */
/* fetch-items: a FETCH command's attributes as the items of a local answer, in Dovecot's handler order, with sections echoed as Dovecot echoes them. */
#include "config.h"
#include "fetch-private.h"

#include "cache.h"
#include "imap-command.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SECTION_TEXT_MAX (IMAP_SECTION_MAX_PARTS * 11 + 32) /* "4294967295." per part and "HEADER" or "MIME" */
#define IMAP_SECTION_ECHO_NAMES_MAX 64 /* header names in one list answered here: more go upstream, the stack stays small */

static bool kind_is_buffered(enum fetch_kind kind)
{
	return kind <= FETCH_KIND_PREVIEW;
}

/* Whether Dovecot keeps one handler of kind however often it is asked
   (its handlers without a context); sections repeat. */
static bool kind_is_single(enum fetch_kind kind)
{
	return kind != FETCH_KIND_SECTION && kind != FETCH_KIND_BINARY && kind != FETCH_KIND_BINARY_SIZE;
}

void fetch_item_free(struct fetch_item *item)
{
	free(item->name);
	free(item->section);
}

/* Adds item where Dovecot's imap_fetch_add_handler puts it. Takes
   ownership of its strings. Returns -1 when memory runs out. */
static int answer_add_item(struct fetch_answer *answer, struct fetch_item *item)
{
	struct fetch_item *grown;
	unsigned int at;

	if (kind_is_single(item->kind)) {
		for (unsigned int i = 0; i < answer->item_count; i++) {
			if (answer->items[i].kind == item->kind) {
				fetch_item_free(item);
				return 0;
			}
		}
	}
	grown = realloc(answer->items, (answer->item_count + 1) * sizeof(*grown));
	if (grown == NULL) {
		fetch_item_free(item);
		return -1;
	}
	answer->items = grown;
	at = kind_is_buffered(item->kind) ? answer->buffered_count++ : answer->item_count;
	memmove(&grown[at + 1], &grown[at], (answer->item_count - at) * sizeof(*grown));
	grown[at] = *item;
	answer->item_count++;
	return 0;
}

static int answer_add_simple(struct fetch_answer *answer, enum fetch_kind kind, const char *name,
			     enum fetch_source_kind source, bool sets_seen)
{
	struct fetch_item item = { .kind = kind, .source = source, .sets_seen = sets_seen };

	item.name = strdup(name);
	if (item.name == NULL)
		return -1;
	return answer_add_item(answer, &item);
}

static void upper(char *text)
{
	for (; *text != '\0'; text++)
		*text = (char)toupper((unsigned char)*text);
}

/* The section as Dovecot echoes it ("1.2.MIME", "HEADER.FIELDS (A "B")"),
   into buf (size SECTION_TEXT_MAX or more for the names, 3 more each):
   upper case, a header name quoted where quoted_names says so (NULL:
   where the client's section text, as our parser rewrites it, has it
   quoted). Returns -1 when
   it does not fit, or a name has a '"' or '\\' (the MIME library's field
   list reads no escapes). */
static int section_render(const struct imap_section *section, char *buf, size_t size, const char *client,
			  size_t client_len, const bool *quoted_names)
{
	static const char *const texts[] = {
		[IMAP_SECTION_TEXT_NONE] = "",
		[IMAP_SECTION_TEXT_HEADER] = "HEADER",
		[IMAP_SECTION_TEXT_HEADER_FIELDS] = "HEADER.FIELDS (",
		[IMAP_SECTION_TEXT_HEADER_FIELDS_NOT] = "HEADER.FIELDS.NOT (",
		[IMAP_SECTION_TEXT_TEXT] = "TEXT",
		[IMAP_SECTION_TEXT_MIME] = "MIME",
	};
	size_t len = 0;
	int n;

	buf[0] = '\0';
	for (unsigned int i = 0; i < section->part_count; i++) {
		n = snprintf(buf + len, size - len, "%s%" PRIu32, i > 0 ? "." : "", section->parts[i]);
		if (n < 0 || (size_t)n >= size - len)
			return -1;
		len += (size_t)n;
	}
	n = snprintf(buf + len, size - len, "%s%s", section->part_count > 0 && section->text != IMAP_SECTION_TEXT_NONE ?
		     "." : "", texts[section->text]);
	if (n < 0 || (size_t)n >= size - len)
		return -1;
	len += (size_t)n;
	for (unsigned int i = 0; i < section->field_count; i++) {
		const struct imap_section_field *field = &section->fields[i];
		bool quoted;

		if (field->len + 4 > size - len || memchr(field->name, '"', field->len) != NULL ||
		    memchr(field->name, '\\', field->len) != NULL)
			return -1;
		if (i > 0)
			buf[len++] = ' ';
		quoted = quoted_names != NULL ? quoted_names[i] : len < client_len && client[len] == '"';
		if (quoted)
			buf[len++] = '"';
		memcpy(buf + len, field->name, field->len);
		len += field->len;
		if (quoted)
			buf[len++] = '"';
	}
	if (section->field_count > 0) {
		if (len + 2 > size)
			return -1;
		buf[len++] = ')';
	}
	buf[len] = '\0';
	upper(buf);
	return 0;
}

/* The bytes between the first "[" and the last "]" of the client's
   attribute i, or NULL. */
static const char *attr_client_section(const struct imap_command *command, unsigned int i, size_t *len_r)
{
	const struct imap_arg *arg = &command->args[1];
	const char *open, *close;

	if (arg->type == IMAP_ARG_LIST) {
		if (i >= arg->list_count)
			return NULL;
		arg = &arg->list[i];
	} else if (i > 0) {
		return NULL;
	}
	if (arg->type != IMAP_ARG_ATOM || (open = memchr(arg->str, '[', arg->len)) == NULL)
		return NULL;
	for (close = arg->str + arg->len; close > open && close[-1] != ']'; close--)
		;
	if (close == open)
		return NULL;
	*len_r = (size_t)(close - 1 - open - 1);
	return open + 1;
}

/* Where a section's bytes come from; false with *why_r when only the
   upstream can answer it. */
static bool section_source(const struct imap_fetch_attr *attr, struct fetch_item *item, const char **why_r)
{
	const struct imap_section *section = &attr->section;

	item->sets_seen = !attr->peek;
	(void)why_r;
	if (attr->type == IMAP_FETCH_ATTR_BINARY_SIZE) {
		/* Dovecot 2.3 sums a part's size from part sizes, counting parts
		   after it too, and a message's first BINARY.SIZE leaves it a
		   stream that makes a later BINARY[] "~{n}" (fetch.h,
		   binary_marked): the upstream must see it, spliced */
		item->kind = FETCH_KIND_BINARY_SIZE;
		item->source = FETCH_SOURCE_NONE;
		item->sets_seen = false;
		return true;
	}
	if (attr->type == IMAP_FETCH_ATTR_BINARY_SECTION) {
		item->kind = FETCH_KIND_BINARY;
		item->source = FETCH_SOURCE_BINARY;
		return true;
	}
	item->kind = FETCH_KIND_SECTION;
	if (section->part_count > 0)
		item->source = FETCH_SOURCE_PART;
	else if (section->text == IMAP_SECTION_TEXT_NONE)
		item->source = FETCH_SOURCE_WHOLE;
	else if (section->text == IMAP_SECTION_TEXT_HEADER)
		item->source = FETCH_SOURCE_HEADER;
	else if (section->text == IMAP_SECTION_TEXT_TEXT)
		item->source = FETCH_SOURCE_TEXT;
	else
		item->source = FETCH_SOURCE_FIELDS;
	return true;
}

/* Whether each header name of the n-th header list in the client's line
   was written quoted (a quoted string; Dovecot echoes those quoted, and
   atoms as atoms). Returns -1 when the line does not tell: no line, a
   literal (the line ends at its "{n}"), or not count names there. */
static int line_quoted_names(const struct fetch_facts *facts, unsigned int n, bool *quoted, unsigned int count)
{
	const char *p = facts->line, *end = facts->line + facts->line_len;
	unsigned int found = 0;

	if (p == NULL)
		return -1;
	for (;; p++) {
		p = p < end ? memchr(p, '(', (size_t)(end - p)) : NULL;
		if (p == NULL)
			return -1;
		if ((p - facts->line >= 14 && strncasecmp(p - 14, "HEADER.FIELDS ", 14) == 0) ||
		    (p - facts->line >= 18 && strncasecmp(p - 18, "HEADER.FIELDS.NOT ", 18) == 0)) {
			if (found++ == n)
				break;
		}
	}
	p++;
	for (unsigned int i = 0; i < count; i++) {
		while (p < end && *p == ' ')
			p++;
		if (p >= end || *p == '{' || *p == ')')
			return -1;
		quoted[i] = *p == '"';
		if (quoted[i]) {
			for (p++; p < end && *p != '"'; p++)
				if (*p == '\\')
					p++;
			if (p >= end)
				return -1;
			p++;
		} else {
			while (p < end && *p != ' ' && *p != ')')
				p++;
		}
	}
	while (p < end && *p == ' ')
		p++;
	return p < end && *p == ')' ? 0 : -1;
}

/* The section of the client's attribute i as Dovecot echoes it (malloc'd),
   or NULL with *why_r when the client wrote it in another form. */
static char *section_echo(const struct imap_command *command, unsigned int i, const struct fetch_facts *facts,
			  const char **why_r)
{
	const struct imap_section *section = &command->u.fetch.attrs[i].section;
	size_t size = SECTION_TEXT_MAX, client_len = 0;
	const char *client = attr_client_section(command, i, &client_len);
	bool quoted[IMAP_SECTION_ECHO_NAMES_MAX];
	unsigned int lists = 0;
	char *rendered;

	for (unsigned int f = 0; f < section->field_count; f++)
		size += section->fields[f].len + 3;
	for (unsigned int j = 0; j < i; j++)
		lists += command->u.fetch.attrs[j].section.field_count > 0;
	rendered = malloc(size);
	*why_r = rendered == NULL ? "out of memory" : "a section written in a form Dovecot would echo otherwise";
	if (rendered != NULL &&
	    (client == NULL || section_render(section, rendered, size, client, client_len, NULL) < 0 ||
	     strlen(rendered) != client_len ||
	     strncasecmp(rendered, client, client_len) != 0)) {
		free(rendered);
		return NULL;
	}
	if (rendered != NULL && section->field_count > 0 &&
	    (section->field_count > IMAP_SECTION_ECHO_NAMES_MAX ||
	     line_quoted_names(facts, lists, quoted, section->field_count) < 0 ||
	     section_render(section, rendered, size, client, client_len, quoted) < 0)) {
		*why_r = "HEADER.FIELDS whose names' quoting the line does not tell";
		free(rendered);
		return NULL;
	}
	return rendered;
}

/* A BODY[...], BINARY[...] or BINARY.SIZE[...] attribute as an item.
   Returns 1 when added, 0 when it must go upstream (*why_r), -1 when
   memory runs out. */
static int answer_add_section(struct fetch_answer *answer, const struct imap_command *command, unsigned int i,
			      const struct fetch_facts *facts, const char **why_r)
{
	const struct imap_fetch_attr *attr = &command->u.fetch.attrs[i];
	struct fetch_item item = { .has_partial = attr->has_partial, .partial_offset = attr->partial_offset,
				   .partial_length = attr->partial_length };
	const char *prefix;
	int n;

	if (!section_source(attr, &item, why_r))
		return 0;
	item.section = section_echo(command, i, facts, why_r);
	if (item.section == NULL)
		return 0;
	prefix = item.kind == FETCH_KIND_BINARY ? "BINARY" : item.kind == FETCH_KIND_BINARY_SIZE ? "BINARY.SIZE" : "BODY";
	item.name = malloc(strlen(prefix) + strlen(item.section) + 32);
	if (item.name == NULL) {
		free(item.section);
		return -1;
	}
	n = sprintf(item.name, "%s[%s]", prefix, item.section);
	if (item.has_partial)
		sprintf(item.name + n, "<%" PRIu64 ">", item.partial_offset);
	return answer_add_item(answer, &item) < 0 ? -1 : 1;
}

/* One attribute of the command as an item. Returns as answer_add_section. */
static int answer_add_attr(struct fetch_answer *answer, const struct imap_command *command, unsigned int i,
			   const struct fetch_facts *facts, const char **why_r)
{
	const struct imap_fetch_attr *attr = &command->u.fetch.attrs[i];
	int ret;

	switch (attr->type) {
	case IMAP_FETCH_ATTR_UID:
		ret = answer_add_simple(answer, FETCH_KIND_UID, "UID", FETCH_SOURCE_NONE, false);
		break;
	case IMAP_FETCH_ATTR_FLAGS:
		ret = answer_add_simple(answer, FETCH_KIND_FLAGS, "FLAGS", FETCH_SOURCE_NONE, false);
		break;
	case IMAP_FETCH_ATTR_INTERNALDATE:
		ret = answer_add_simple(answer, FETCH_KIND_INTERNALDATE, "INTERNALDATE", FETCH_SOURCE_NONE, false);
		break;
	case IMAP_FETCH_ATTR_RFC822_SIZE:
		ret = answer_add_simple(answer, FETCH_KIND_SIZE, "RFC822.SIZE", FETCH_SOURCE_NONE, false);
		break;
	case IMAP_FETCH_ATTR_MODSEQ:
		if (!facts->condstore) {
			*why_r = "MODSEQ before the client enabled CONDSTORE";
			return 0;
		}
		ret = answer_add_simple(answer, FETCH_KIND_MODSEQ, "MODSEQ", FETCH_SOURCE_NONE, false);
		break;
	case IMAP_FETCH_ATTR_PREVIEW:
		ret = answer_add_simple(answer, FETCH_KIND_PREVIEW, "PREVIEW", FETCH_SOURCE_NONE, false);
		break;
	case IMAP_FETCH_ATTR_ENVELOPE:
		ret = answer_add_simple(answer, FETCH_KIND_ENVELOPE, "ENVELOPE", FETCH_SOURCE_NONE, false);
		break;
	case IMAP_FETCH_ATTR_BODY:
		ret = answer_add_simple(answer, FETCH_KIND_BODY, "BODY", FETCH_SOURCE_NONE, false);
		break;
	case IMAP_FETCH_ATTR_BODYSTRUCTURE:
		ret = answer_add_simple(answer, FETCH_KIND_BODYSTRUCTURE, "BODYSTRUCTURE", FETCH_SOURCE_NONE, false);
		break;
	case IMAP_FETCH_ATTR_RFC822:
		ret = answer_add_simple(answer, FETCH_KIND_RFC822, "RFC822", FETCH_SOURCE_WHOLE, true);
		break;
	case IMAP_FETCH_ATTR_RFC822_HEADER:
		ret = answer_add_simple(answer, FETCH_KIND_RFC822_HEADER, "RFC822.HEADER", FETCH_SOURCE_HEADER, false);
		break;
	case IMAP_FETCH_ATTR_RFC822_TEXT:
		ret = answer_add_simple(answer, FETCH_KIND_RFC822_TEXT, "RFC822.TEXT", FETCH_SOURCE_TEXT, true);
		break;
	default:
		return answer_add_section(answer, command, i, facts, why_r);
	}
	return ret < 0 ? -1 : 1;
}

int fetch_items_add(struct fetch_answer *answer, const struct imap_command *command,
			    const struct fetch_facts *facts, const char **why_r)
{
	if (command->uid && answer_add_simple(answer, FETCH_KIND_UID, "UID", FETCH_SOURCE_NONE, false) < 0)
		return -1;
	for (unsigned int i = 0; i < command->u.fetch.attr_count; i++) {
		int ret = answer_add_attr(answer, command, i, facts, why_r);

		if (ret <= 0)
			return ret;
	}
	if (command->u.fetch.changedsince_given &&
	    answer_add_simple(answer, FETCH_KIND_MODSEQ, "MODSEQ", FETCH_SOURCE_NONE, false) < 0)
		return -1;
	for (unsigned int i = 0; i < answer->item_count; i++) {
		static const unsigned int wanted[] = {
			[FETCH_KIND_INTERNALDATE] = CACHE_HAS(CACHE_ITEM_INTERNALDATE),
			[FETCH_KIND_SIZE] = CACHE_HAS(CACHE_ITEM_SIZE),
			[FETCH_KIND_ENVELOPE] = CACHE_HAS(CACHE_ITEM_ENVELOPE),
			[FETCH_KIND_BODY] = CACHE_HAS(CACHE_ITEM_BODY),
			[FETCH_KIND_BODYSTRUCTURE] = CACHE_HAS(CACHE_ITEM_BODYSTRUCTURE),
		};
		enum fetch_source_kind source = answer->items[i].source;

		if (answer->items[i].kind < sizeof(wanted) / sizeof(wanted[0]))
			answer->wanted |= wanted[answer->items[i].kind];
		if (source == FETCH_SOURCE_HEADER || source == FETCH_SOURCE_TEXT || source == FETCH_SOURCE_FIELDS)
			answer->wanted |= CACHE_HAS(CACHE_ITEM_HEADER);
		/* the bytes a lookup checks are then kept, not read again */
		if (source == FETCH_SOURCE_WHOLE || source == FETCH_SOURCE_TEXT || source == FETCH_SOURCE_PART ||
		    source == FETCH_SOURCE_BINARY)
			answer->wanted |= CACHE_HAS(CACHE_ITEM_MESSAGE);
	}
	return 1;
}
