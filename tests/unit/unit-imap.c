/* SPDX-License-Identifier: MIT */
/* unit-imap: feeds IMAP input to a parser whole, byte by byte and split at every offset, for the imap suites. */
#include "config.h"
#include "unit.h"
#include "unit-imap.h"

#include <event2/buffer.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the literal callback saw on the current line. */
static char stream_log[UNIT_IMAP_DUMP_MAX];
static size_t stream_log_len;
static uint64_t stream_expected_offset;

void unit_imap_append(char *out, size_t out_size, const char *format, ...)
{
	size_t used = strlen(out);
	va_list args;

	if (used + 1 >= out_size)
		return;
	va_start(args, format);
	vsnprintf(out + used, out_size - used, format, args);
	va_end(args);
}

static void append_bytes(char *out, size_t out_size, const char *data, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)data[i];
		if (c == '"' || c == '\\')
			unit_imap_append(out, out_size, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			unit_imap_append(out, out_size, "\\x%02x", c);
		else
			unit_imap_append(out, out_size, "%c", c);
	}
}

void unit_imap_dump_arg(const struct imap_arg *arg, char *out, size_t out_size)
{
	const char *prefix = (arg->flags & IMAP_ARG_FLAG_LITERAL8) != 0 ? "~" : "";
	const char *plus = (arg->flags & IMAP_ARG_FLAG_NONSYNC) != 0 ? "+" : "";

	switch (arg->type) {
	case IMAP_ARG_NIL:
		unit_imap_append(out, out_size, "NIL");
		break;
	case IMAP_ARG_ATOM:
		append_bytes(out, out_size, arg->str, (size_t)arg->len);
		break;
	case IMAP_ARG_STRING:
		unit_imap_append(out, out_size, "\"");
		append_bytes(out, out_size, arg->str, (size_t)arg->len);
		unit_imap_append(out, out_size, "\"");
		break;
	case IMAP_ARG_LITERAL:
		unit_imap_append(out, out_size, "%s{%llu%s}\"", prefix, (unsigned long long)arg->len, plus);
		append_bytes(out, out_size, arg->str, (size_t)arg->len);
		unit_imap_append(out, out_size, "\"");
		break;
	case IMAP_ARG_LITERAL_STREAMED:
		unit_imap_append(out, out_size, "%s{%llu%s:streamed}", prefix, (unsigned long long)arg->len, plus);
		break;
	case IMAP_ARG_LIST:
		unit_imap_append(out, out_size, "(");
		for (unsigned int i = 0; i < arg->list_count; i++) {
			if (i > 0)
				unit_imap_append(out, out_size, " ");
			unit_imap_dump_arg(&arg->list[i], out, out_size);
		}
		unit_imap_append(out, out_size, ")");
		break;
	case IMAP_ARG_TEXT:
		unit_imap_append(out, out_size, (arg->flags & IMAP_ARG_FLAG_RESPONSE_CODE) != 0 ? "C\"" : "T\"");
		append_bytes(out, out_size, arg->str, (size_t)arg->len);
		unit_imap_append(out, out_size, "\"");
		break;
	}
}

void unit_imap_append_args(char *out, size_t out_size, const struct imap_arg *args, unsigned int count)
{
	struct imap_arg list = { .type = IMAP_ARG_LIST, .str = "", .list = args, .list_count = count };

	unit_imap_dump_arg(&list, out, out_size);
}

void unit_imap_dump_line(const struct imap_arg *line, char *out, size_t out_size, void *context)
{
	(void)context;
	for (unsigned int i = 0; i < line->list_count; i++) {
		if (i > 0)
			unit_imap_append(out, out_size, " ");
		unit_imap_dump_arg(&line->list[i], out, out_size);
	}
}

/* Records each streamed chunk; at offset 0, also the argument just before it. */
static int record_stream(struct imap_parser *parser, const struct imap_parser_literal_chunk *chunk,
			 void *context)
{
	(void)context;
	stream_log[sizeof(stream_log) - 1] = '\0';
	if (chunk->offset == 0) {
		const struct imap_arg *args;
		unsigned int count;
		imap_parser_get_open_args(parser, imap_parser_get_open_depth(parser), &args, &count);
		unit_imap_append(stream_log, sizeof(stream_log), "[depth=%u prev=",
		       imap_parser_get_open_depth(parser));
		if (count > 0)
			unit_imap_dump_arg(&args[count - 1], stream_log, sizeof(stream_log));
		unit_imap_append(stream_log, sizeof(stream_log), "]");
		stream_expected_offset = 0;
	}
	if (chunk->offset != stream_expected_offset || chunk->len == 0)
		unit_imap_append(stream_log, sizeof(stream_log), "<BAD OFFSET>");
	stream_expected_offset += chunk->len;
	append_bytes(stream_log, sizeof(stream_log), (const char *)chunk->data, chunk->len);
	if (chunk->last)
		unit_imap_append(stream_log, sizeof(stream_log), "|");
	if (chunk->last != (chunk->offset + chunk->len == chunk->size))
		unit_imap_append(stream_log, sizeof(stream_log), "<BAD LAST>");
	stream_log_len = strlen(stream_log);
	return 0;
}

static struct imap_parser *make_parser(const struct unit_imap_options *options)
{
	struct imap_parser *parser = imap_parser_new();

	CU_ASSERT_PTR_NOT_NULL_FATAL(parser);
	imap_parser_set_mode(parser, options->mode);
	if (options->limits != NULL)
		imap_parser_set_limits(parser, options->limits);
	if (options->stream_literals)
		imap_parser_set_literal_callback(parser, record_stream, NULL);
	stream_log[0] = '\0';
	stream_log_len = 0;
	return parser;
}

/* Reports one feed's result into the transcript; returns 0 to stop. */
static int note_result(struct imap_parser *parser, enum imap_parser_result result,
		       const struct unit_imap_options *options, char *out, size_t out_size)
{
	unit_imap_line_fn *line_callback = options->line_callback != NULL ? options->line_callback
									   : unit_imap_dump_line;

	switch (result) {
	case IMAP_PARSER_LINE_COMPLETE:
		unit_imap_append(out, out_size, "LINE ");
		line_callback(imap_parser_get_line(parser), out, out_size, options->context);
		unit_imap_append(out, out_size, "\n");
		if (stream_log_len > 0) {
			unit_imap_append(out, out_size, "STREAMED %s\n", stream_log);
			stream_log[0] = '\0';
			stream_log_len = 0;
		}
		return 1;
	case IMAP_PARSER_LITERAL_ANNOUNCED:
		unit_imap_append(out, out_size, "ANNOUNCED %llu\n",
		       (unsigned long long)imap_parser_get_literal_size(parser));
		return 1;
	case IMAP_PARSER_ERROR:
		unit_imap_append(out, out_size, "ERROR %s\n",
		       imap_parser_error_name(imap_parser_get_error(parser, NULL)));
		return 0;
	case IMAP_PARSER_NEED_MORE:
		return 1;
	}
	return 0;
}

/* Feeds one piece completely; returns 0 once an error stopped the parser. */
static int feed_piece(struct imap_parser *parser, const char *data, size_t len,
		      const struct unit_imap_options *options, char *out, size_t out_size)
{
	size_t done = 0;

	for (unsigned int rounds = 0; rounds < len + 2; rounds++) {
		size_t consumed;
		enum imap_parser_result result =
			imap_parser_feed_bytes(parser, data + done, len - done, &consumed);
		CU_ASSERT(consumed <= len - done);
		done += consumed;
		if (!note_result(parser, result, options, out, out_size))
			return 0;
		if (result == IMAP_PARSER_NEED_MORE) {
			CU_ASSERT_EQUAL(done, len);
			return 1;
		}
		if (done == len && result != IMAP_PARSER_LITERAL_ANNOUNCED)
			return 1;
	}
	CU_FAIL("parser made no progress");
	return 0;
}

static void finish(struct imap_parser *parser, int alive, char *out, size_t out_size)
{
	if (alive) {
		/* Input ended: say whether a line was left unfinished. */
		size_t consumed;
		enum imap_parser_result result = imap_parser_feed_bytes(parser, "", 0, &consumed);
		if (result == IMAP_PARSER_NEED_MORE && imap_parser_is_mid_line(parser))
			unit_imap_append(out, out_size, "NEED_MORE\n");
	}
	imap_parser_free(&parser);
	CU_ASSERT_PTR_NULL(parser);
}

void unit_imap_transcript(const char *input, size_t len, const struct unit_imap_options *options,
			  size_t chunk, char *out, size_t out_size)
{
	struct imap_parser *parser = make_parser(options);
	int alive = 1;

	out[0] = '\0';
	if (chunk == 0)
		chunk = len > 0 ? len : 1;
	for (size_t pos = 0; alive && pos < len; pos += chunk) {
		size_t piece = len - pos < chunk ? len - pos : chunk;
		alive = feed_piece(parser, input + pos, piece, options, out, out_size);
	}
	finish(parser, alive, out, out_size);
}

void unit_imap_transcript_split(const char *input, size_t len,
				const struct unit_imap_options *options, size_t split, char *out,
				size_t out_size)
{
	struct imap_parser *parser = make_parser(options);

	out[0] = '\0';
	int alive = feed_piece(parser, input, split, options, out, out_size);
	if (alive)
		alive = feed_piece(parser, input + split, len - split, options, out, out_size);
	finish(parser, alive, out, out_size);
}

/* Feeds through an evbuffer built of many small chains. */
static void transcript_evbuffer(const char *input, size_t len,
				const struct unit_imap_options *options, char *out,
				size_t out_size)
{
	struct imap_parser *parser = make_parser(options);
	struct evbuffer *buffer = evbuffer_new();
	int alive = 1;

	CU_ASSERT_PTR_NOT_NULL_FATAL(buffer);
	out[0] = '\0';
	/* Separate chains of 5 bytes each, so a line spans many of them. */
	for (size_t pos = 0; pos < len; pos += 5) {
		struct evbuffer *piece = evbuffer_new();
		evbuffer_add(piece, input + pos, len - pos < 5 ? len - pos : 5);
		evbuffer_add_buffer(buffer, piece);
		evbuffer_free(piece);
	}
	for (unsigned int rounds = 0; alive && rounds < len + 2; rounds++) {
		size_t before = evbuffer_get_length(buffer);
		enum imap_parser_result result = imap_parser_feed(parser, buffer);
		alive = note_result(parser, result, options, out, out_size);
		if (result == IMAP_PARSER_NEED_MORE) {
			CU_ASSERT_EQUAL(evbuffer_get_length(buffer), 0);
			break;
		}
		if (evbuffer_get_length(buffer) == 0 && before > 0 &&
		    result != IMAP_PARSER_LITERAL_ANNOUNCED)
			break;
	}
	evbuffer_free(buffer);
	finish(parser, alive, out, out_size);
}

static char *transcript_buffer(void)
{
	char *out = malloc(UNIT_IMAP_DUMP_MAX);
	CU_ASSERT_PTR_NOT_NULL_FATAL(out);
	out[0] = '\0';
	return out;
}

static void compare(const char *how, const char *input, const char *got, const char *expected)
{
	if (strcmp(got, expected) == 0) {
		CU_PASS(how);
		return;
	}
	fprintf(stderr, "\n--- input (fed %s):\n%s\n--- expected:\n%s--- got:\n%s", how, input,
		expected, got);
	CU_FAIL(how);
}

void unit_imap_check(const char *input, size_t len, const struct unit_imap_options *options,
		     const char *expected)
{
	static const size_t chunks[] = { 0, 1, 2, 3, 7, 64 };
	char *out = transcript_buffer();
	char how[64];

	for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
		unit_imap_transcript(input, len, options, chunks[i], out, UNIT_IMAP_DUMP_MAX);
		snprintf(how, sizeof(how), "in pieces of %zu", chunks[i]);
		compare(how, input, out, expected);
	}
	for (size_t split = 0; split <= len; split++) {
		unit_imap_transcript_split(input, len, options, split, out, UNIT_IMAP_DUMP_MAX);
		snprintf(how, sizeof(how), "split at %zu", split);
		compare(how, input, out, expected);
	}
	transcript_evbuffer(input, len, options, out, UNIT_IMAP_DUMP_MAX);
	compare("through an evbuffer", input, out, expected);
	free(out);
}

void unit_imap_check_str(const char *input, enum imap_parser_mode mode, const char *expected)
{
	struct unit_imap_options options = { .mode = mode };

	unit_imap_check(input, strlen(input), &options, expected);
}
