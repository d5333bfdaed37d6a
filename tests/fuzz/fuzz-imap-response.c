/* SPDX-License-Identifier: MIT */
/* fuzz-imap-response: any server bytes give typed responses or typed errors, never a crash. */
#include "config.h"
#include "imap-parser.h"
#include "imap-response.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

/* Touches every view the response gives, so the sanitizers see bad pointers. */
static void walk(const struct imap_response *response)
{
	sink += response->text_len + strlen(response->tag) + strlen(response->name) + strlen(response->code.name);
	if (response->code.set != NULL)
		sink += response->code.set->count;
	switch (response->type) {
	case IMAP_RESPONSE_DATA_FETCH:
		for (unsigned int i = 0; i < response->u.fetch.count; i++) {
			const struct imap_fetch_item *item = &response->u.fetch.items[i];
			sink += item->number + item->section_len + strlen(item->name);
			struct imap_envelope envelope;
			if (item->type == IMAP_FETCH_ENVELOPE && imap_envelope_from_arg(item->value, &envelope))
				sink += envelope.subject_len + envelope.from_count;
		}
		break;
	case IMAP_RESPONSE_DATA_SEARCH:
		for (unsigned int i = 0; i < response->u.search.count; i++)
			sink += response->u.search.numbers[i];
		break;
	case IMAP_RESPONSE_DATA_LIST:
	case IMAP_RESPONSE_DATA_LSUB:
		sink += response->u.list.mailbox_len + (unsigned char)response->u.list.delimiter;
		break;
	default:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct imap_parser *parser = imap_parser_new();
	struct imap_response_parser *response_parser = imap_response_parser_new();
	struct imap_parser_limits limits;
	size_t pos = 0;

	if (parser == NULL || response_parser == NULL)
		abort();
	imap_parser_set_mode(parser, IMAP_PARSER_MODE_RESPONSE);
	imap_parser_get_limits(parser, &limits);
	limits.max_inline_literal = 64;
	imap_parser_set_limits(parser, &limits);
	while (pos < size) {
		size_t consumed;
		enum imap_parser_result result = imap_parser_feed_bytes(parser, data + pos, size - pos, &consumed);
		pos += consumed;
		if (result != IMAP_PARSER_LINE_COMPLETE)
			break;
		struct imap_response response;
		const char *message;
		enum imap_response_error error =
			imap_response_parse(response_parser, imap_parser_get_line(parser), &response, &message);
		if (error == IMAP_RESPONSE_ERROR_NONE)
			walk(&response);
		else if (message == NULL || message[0] == '\0' || imap_response_error_name(error)[0] == 'U')
			abort();
	}
	imap_response_parser_free(&response_parser);
	imap_parser_free(&parser);
	return 0;
}
