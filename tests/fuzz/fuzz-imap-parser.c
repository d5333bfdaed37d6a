/* SPDX-License-Identifier: MIT */
/* fuzz-imap-parser: any bytes give lines or a typed error, and the same ones whole or split. */
#include "config.h"
#include "imap-parser.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct digest {
	uint64_t hash;
	uint64_t streamed;
};

static void digest_add(struct digest *digest, const void *bytes, size_t len)
{
	const unsigned char *p = bytes;
	for (size_t i = 0; i < len; i++)
		digest->hash = (digest->hash ^ p[i]) * 1099511628211ull;
}

static void digest_arg(struct digest *digest, const struct imap_arg *arg)
{
	digest_add(digest, &arg->type, sizeof(arg->type));
	digest_add(digest, &arg->flags, sizeof(arg->flags));
	digest_add(digest, &arg->len, sizeof(arg->len));
	if (arg->type == IMAP_ARG_LIST) {
		for (unsigned int i = 0; i < arg->list_count; i++)
			digest_arg(digest, &arg->list[i]);
	} else if (arg->type != IMAP_ARG_LITERAL_STREAMED) {
		digest_add(digest, arg->str, (size_t)arg->len);
		if (arg->str[arg->len] != '\0')
			abort();
	}
	uint64_t number;
	if (imap_arg_get_number(arg, &number))
		digest_add(digest, &number, sizeof(number));
}

static int count_stream(struct imap_parser *parser, const struct imap_parser_literal_chunk *chunk,
			void *context)
{
	struct digest *digest = context;
	const struct imap_arg *args;
	unsigned int count;

	if (chunk->offset + chunk->len > chunk->size || chunk->len == 0)
		abort();
	imap_parser_get_open_args(parser, imap_parser_get_open_depth(parser), &args, &count);
	digest_add(digest, chunk->data, chunk->len);
	digest->streamed += chunk->len;
	return 0;
}

/* Feeds data in pieces of chunk bytes and returns a digest of all results. */
static uint64_t run(enum imap_parser_mode mode, const struct imap_parser_limits *limits,
		    const uint8_t *data, size_t size, size_t chunk)
{
	struct imap_parser *parser = imap_parser_new();
	struct digest digest = { 14695981039346656037ull, 0 };
	enum imap_parser_result result = IMAP_PARSER_NEED_MORE;

	if (parser == NULL)
		abort();
	imap_parser_set_mode(parser, mode);
	imap_parser_set_limits(parser, limits);
	imap_parser_set_literal_callback(parser, count_stream, &digest);
	for (size_t pos = 0; pos < size && result != IMAP_PARSER_ERROR;) {
		size_t piece = size - pos < chunk ? size - pos : chunk, consumed;
		result = imap_parser_feed_bytes(parser, data + pos, piece, &consumed);
		if (consumed > piece)
			abort();
		pos += consumed;
		if (result != IMAP_PARSER_NEED_MORE)
			digest_add(&digest, &result, sizeof(result));
		if (result == IMAP_PARSER_LINE_COMPLETE) {
			digest_arg(&digest, imap_parser_get_line(parser));
		} else if (result == IMAP_PARSER_LITERAL_ANNOUNCED) {
			uint64_t literal = imap_parser_get_literal_size(parser);
			digest_add(&digest, &literal, sizeof(literal));
		} else if (result == IMAP_PARSER_ERROR) {
			const char *message;
			enum imap_parser_error error = imap_parser_get_error(parser, &message);
			if (error == IMAP_PARSER_ERROR_NONE || message == NULL || strchr(message, '\n'))
				abort();
			digest_add(&digest, &error, sizeof(error));
		} else if (consumed != piece) {
			abort();
		}
	}
	imap_parser_free(&parser);
	digest_add(&digest, &digest.streamed, sizeof(digest.streamed));
	return digest.hash;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct imap_parser_limits limits;

	if (size < 2)
		return 0;
	/* The first two bytes pick the mode, tight limits and a split size. */
	enum imap_parser_mode mode = (enum imap_parser_mode)(data[0] % 3);
	imap_parser_get_default_limits(&limits);
	if (data[0] & 0x04) {
		limits.max_line = 64 + data[1];
		limits.max_literal = 1024;
		limits.max_inline_literal = data[1] % 16;
		limits.max_depth = 1 + data[1] % 8;
		limits.max_args = 4 + data[1] % 64;
	}
	size_t chunk = 1 + (data[1] >> 2);
	data += 2;
	size -= 2;
	uint64_t whole = run(mode, &limits, data, size, size > 0 ? size : 1);
	if (run(mode, &limits, data, size, chunk) != whole || run(mode, &limits, data, size, 1) != whole)
		abort();
	return 0;
}
