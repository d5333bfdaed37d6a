/* SPDX-License-Identifier: MIT */
/* fuzz-sync-line: the sync's byte reader of FETCH lines takes only lines that the IMAP parser reads the same way. */
#include "config.h"
#include "imap-parser.h"
#include "imap-response.h"
#include "sync.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The FLAGS list as the sync keeps it from a parsed response: atoms one
   space apart; NULL when it holds anything else. */
static char *flags_text(const struct imap_arg *value)
{
	const struct imap_arg *flags;
	unsigned int count;
	size_t size = 1, used = 0;
	char *text;

	if (!imap_arg_get_list(value, &flags, &count))
		return NULL;
	for (unsigned int i = 0; i < count; i++)
		size += flags[i].len + 1;
	if ((text = malloc(size)) == NULL)
		abort();
	for (unsigned int i = 0; i < count; i++) {
		const char *atom;

		if (!imap_arg_get_atom(&flags[i], &atom)) {
			free(text);
			return NULL;
		}
		if (i > 0)
			text[used++] = ' ';
		memcpy(text + used, atom, strlen(atom));
		used += strlen(atom);
	}
	text[used] = '\0';
	return text;
}

/* What the parser makes of the line must be what the byte reader read. */
static void check_same(const uint8_t *data, size_t size, const struct sync_fetch_line *line)
{
	struct imap_parser *parser = imap_parser_new();
	struct imap_response_parser *responses = imap_response_parser_new();
	struct imap_response response;
	const struct imap_fetch_item *item;
	size_t consumed;
	char *flags;

	if (parser == NULL || responses == NULL)
		abort();
	imap_parser_set_mode(parser, IMAP_PARSER_MODE_RESPONSE);
	if (imap_parser_feed_bytes(parser, data, size, &consumed) != IMAP_PARSER_LINE_COMPLETE || consumed != size ||
	    imap_response_parse(responses, imap_parser_get_line(parser), &response, NULL) != IMAP_RESPONSE_ERROR_NONE ||
	    response.type != IMAP_RESPONSE_DATA_FETCH || response.number != line->seq)
		abort();
	item = imap_response_fetch_find(&response, IMAP_FETCH_UID);
	if (item == NULL || item->number != line->uid)
		abort();
	item = imap_response_fetch_find(&response, IMAP_FETCH_MODSEQ);
	if (item == NULL ? line->modseq != 0 : item->number != line->modseq)
		abort();
	item = imap_response_fetch_find(&response, IMAP_FETCH_FLAGS);
	if (item == NULL || (flags = flags_text(item->value)) == NULL || strcmp(flags, line->flags) != 0)
		abort();
	free(flags);
	imap_response_parser_free(&responses);
	imap_parser_free(&parser);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sync_fetch_line line;

	if (!sync_fetch_line_read(data, size, &line))
		return 0;
	check_same(data, size, &line);
	free(line.flags);
	return 0;
}
