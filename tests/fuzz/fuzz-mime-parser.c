/* SPDX-License-Identifier: MIT */
/* libFuzzer target for common/mime-parser: no crash, same tree for any split or when borrowing, and the round trip. */
#include "config.h"
#include "imap-parser.h"
#include "mime-generator.h"
#include "mime-imap.h"
#include "mime-parser.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The views as the FETCH items a server sends (BODYSTRUCTURE, BODY,
   ENVELOPE) read as one well-formed IMAP response line: the cache compares
   and serves them as such. Limits are lifted: only the grammar is checked. */
static void check_views_parse(struct mime_message *root, const uint8_t *data, size_t size)
{
	struct imap_parser_limits limits = { SIZE_MAX / 2, UINT64_MAX / 2, UINT64_MAX / 2, 1u << 20, 1u << 30 };
	struct imap_parser *parser = imap_parser_new();
	struct mime_buffer line = { 0 };
	size_t consumed;

	mime_buffer_append(&line, "* 1 FETCH (BODYSTRUCTURE ", 25);
	mime_imap_bodystructure(root, data, size, 1, &line);
	mime_buffer_append(&line, " BODY ", 6);
	mime_imap_bodystructure(root, data, size, 0, &line);
	mime_buffer_append(&line, " ENVELOPE ", 10);
	mime_imap_envelope(root, &line);
	mime_buffer_append(&line, ")\r\n", 3);
	imap_parser_set_limits(parser, &limits);
	imap_parser_set_mode(parser, IMAP_PARSER_MODE_RESPONSE);
	if (imap_parser_feed_bytes(parser, line.data, line.len, &consumed) != IMAP_PARSER_LINE_COMPLETE ||
	    consumed != line.len)
		abort();
	imap_parser_free(&parser);
	mime_buffer_free(&line);
	/* every part's section number, as imapcachectl inspect lists them */
	for (struct mime_message *p = root; p != NULL; p = mime_message_walk_next(root, p))
		free(mime_imap_part_section(p));
}

static char *describe(const struct mime_message *message, int offsets)
{
	struct mime_buffer out = { 0 };
	mime_message_describe(message, offsets, &out);
	mime_buffer_append(&out, "", 0);
	return mime_buffer_steal(&out, NULL);
}

/* The round trip holds for well-formed input: no defects, LF line ends,
   no envelope line inside (the generator, like Python's, writes only the
   outermost one) and no delivery-status blocks. */
static int round_trip_applies(struct mime_message *root, const uint8_t *data, size_t size)
{
	if (memchr(data, '\r', size) != NULL)
		return 0;
	for (struct mime_message *p = root; p != NULL; p = mime_message_walk_next(root, p)) {
		if (p->defect_count > 0 || (p != root && p->unixfrom != NULL) ||
		    strcmp(mime_message_get_content_type(p), "message/delivery-status") == 0)
			return 0;
	}
	return 1;
}

/* get_payload(decode=True) of every part agrees between the two trees. */
static void check_same_payloads(struct mime_message *copied, struct mime_message *borrowed)
{
	struct mime_message *b = borrowed;
	for (struct mime_message *c = copied; c != NULL && b != NULL;
	     c = mime_message_walk_next(copied, c), b = mime_message_walk_next(borrowed, b)) {
		struct mime_buffer from_copy = { 0 }, from_borrowed = { 0 };
		if (mime_message_get_payload(c, 1, &from_copy) !=
			    mime_message_get_payload(b, 1, &from_borrowed) ||
		    from_copy.len != from_borrowed.len ||
		    (from_copy.len > 0 && memcmp(from_copy.data, from_borrowed.data, from_copy.len) != 0))
			abort();
		mime_buffer_free(&from_copy);
		mime_buffer_free(&from_borrowed);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mime_message *whole = mime_parse(data, size);
	char *expected = describe(whole, 1);

	/* fed in two pieces at a split chosen by the input */
	size_t split = size == 0 ? 0 : data[0] % (size + 1);
	struct mime_parser *parser = mime_parser_new(0);
	struct mime_message *pieces = NULL;
	const char *error;
	mime_parser_feed(parser, data, split, &error);
	mime_parser_feed(parser, data + split, size - split, &error);
	mime_parser_finish(parser, &pieces, &error);
	mime_parser_free(&parser);
	char *got = describe(pieces, 1);
	if (strcmp(expected, got) != 0)
		abort();
	free(got);
	mime_message_free(&pieces);

	/* borrowing the input: the same tree, the same decoded payloads */
	struct mime_message *borrowed = mime_parse_borrowed(data, size);
	got = describe(borrowed, 1);
	if (strcmp(expected, got) != 0)
		abort();
	free(got);

	/* the IMAP views never fail on a parsed tree; data is exactly size
	   bytes, so reading past a borrowed payload is caught */
	struct mime_buffer out = { 0 };
	mime_imap_bodystructure(borrowed, data, size, 1, &out);
	mime_imap_envelope(borrowed, &out);
	mime_imap_fetch_section(borrowed, data, size, "1.MIME", &out, &error);
	mime_imap_fetch_section(borrowed, data, size, "HEADER.FIELDS (FROM TO)", &out, &error);
	mime_imap_fetch_binary(borrowed, data, size, "1", &out, &error);
	mime_buffer_free(&out);
	check_views_parse(borrowed, data, size);

	if (round_trip_applies(whole, data, size)) {
		struct mime_generator_options options = { .unixfrom = whole->unixfrom != NULL };
		struct mime_buffer generated = { 0 };
		mime_generator_write(whole, &options, &generated);
		struct mime_message *again = mime_parse(generated.data, generated.len);
		char *first = describe(whole, 0), *second = describe(again, 0);
		if (strcmp(first, second) != 0)
			abort();
		free(first);
		free(second);
		mime_message_free(&again);
		mime_buffer_free(&generated);
	}
	/* last: decoding records base64 defects, which the round trip avoids */
	check_same_payloads(whole, borrowed);
	mime_message_free(&borrowed);
	free(expected);
	mime_message_free(&whole);
	return 0;
}
