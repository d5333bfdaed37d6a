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
