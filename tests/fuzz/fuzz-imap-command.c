/* SPDX-License-Identifier: MIT */
/* fuzz-imap-command: any client bytes give typed commands or typed errors, never a crash. */
#include "config.h"
#include "imap-command.h"
#include "imap-parser.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

static void walk_key(const struct imap_search_key *key, unsigned int depth)
{
	if (depth > IMAP_SEARCH_MAX_DEPTH + 1)
		abort();
	sink += key->type + key->len + key->number + (key->set != NULL ? key->set->count : 0);
	for (const struct imap_search_key *child = key->children; child != NULL; child = child->next)
		walk_key(child, depth + 1);
}

static void walk(const struct imap_command *command)
{
	sink += strlen(command->tag) + strlen(command->name_str);
	switch (command->name) {
	case IMAP_COMMAND_FETCH:
		for (unsigned int i = 0; i < command->u.fetch.attr_count; i++) {
			const struct imap_fetch_attr *attr = &command->u.fetch.attrs[i];
			sink += attr->section.part_count + attr->partial_length;
			for (unsigned int f = 0; f < attr->section.field_count; f++)
				sink += attr->section.fields[f].len + (unsigned char)attr->section.fields[f].name[0];
		}
		break;
	case IMAP_COMMAND_SEARCH:
		walk_key(command->u.search.program, 0);
		break;
	case IMAP_COMMAND_STORE:
		sink += command->u.store.flag_count + command->u.store.set->count;
		break;
	default:
		break;
	}
}

#define REPARSE_MAX 4096 /* canonical section atoms re-fed; far below the line limit */

/* A section atom is canonical: fed again it gives itself (header names in
   imap-parser's one form, whatever form they came in). */
static void check_canonical_sections(const struct imap_arg *args, unsigned int count)
{
	for (unsigned int i = 0; i < count; i++) {
		if (args[i].type == IMAP_ARG_LIST)
			check_canonical_sections(args[i].list, args[i].list_count);
		if (args[i].type != IMAP_ARG_ATOM || memchr(args[i].str, '[', (size_t)args[i].len) == NULL ||
		    args[i].len > REPARSE_MAX)
			continue;
		char line[REPARSE_MAX + 8];
		size_t len = (size_t)args[i].len;
		memcpy(line, "t ", 2);
		memcpy(line + 2, args[i].str, len);
		memcpy(line + 2 + len, "\r\n", 2);
		struct imap_parser *parser = imap_parser_new();
		size_t consumed;
		if (parser == NULL)
			abort();
		if (imap_parser_feed_bytes(parser, line, len + 4, &consumed) != IMAP_PARSER_LINE_COMPLETE)
			abort();
		const struct imap_arg *again = imap_parser_get_line(parser);
		if (again->list_count != 2 || again->list[1].type != IMAP_ARG_ATOM || again->list[1].len != len ||
		    memcmp(again->list[1].str, args[i].str, len) != 0)
			abort();
		imap_parser_free(&parser);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct imap_parser *parser = imap_parser_new();
	struct imap_command_parser *command_parser = imap_command_parser_new();
	size_t pos = 0;

	if (parser == NULL || command_parser == NULL)
		abort();
	while (pos < size) {
		size_t consumed;
		enum imap_parser_result result = imap_parser_feed_bytes(parser, data + pos, size - pos, &consumed);
		pos += consumed;
		if (result == IMAP_PARSER_LITERAL_ANNOUNCED)
			continue; /* as if the server sent "+" */
		if (result != IMAP_PARSER_LINE_COMPLETE)
			break;
		const struct imap_arg *line = imap_parser_get_line(parser);
		/* the first word is the tag, where "[" is a plain byte */
		if (line->list_count > 1)
			check_canonical_sections(line->list + 1, line->list_count - 1);
		struct imap_command command;
		const char *message;
		enum imap_command_error error =
			imap_command_parse(command_parser, imap_parser_get_line(parser), &command, &message);
		if (error == IMAP_COMMAND_ERROR_NONE)
			walk(&command);
		else if (message == NULL || message[0] == '\0' || strchr(message, '\n') != NULL ||
			 strchr(message, '\r') != NULL)
			abort();
	}
	imap_command_parser_free(&command_parser);
	imap_parser_free(&parser);
	return 0;
}
