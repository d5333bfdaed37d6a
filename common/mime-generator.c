/* SPDX-License-Identifier: MIT */
/* mime-generator: writes a mime_message tree back as bytes (email.generator.Generator). */
#include "config.h"
#include "mime-generator.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *generator_linesep(const struct mime_generator_options *options)
{
	return options->linesep != NULL ? options->linesep : "\n";
}

/* _write_lines: every line end (CRLF, CR, LF) becomes linesep; with
   mangle_from, lines starting "From " get '>' first. */
static void write_lines(const struct mime_generator_options *options, const void *data,
			size_t len, struct mime_buffer *out)
{
	const unsigned char *text = data;
	const char *linesep = generator_linesep(options);
	int line_start = 1;

	for (size_t i = 0; i < len; i++) {
		if (line_start && options->mangle_from && len - i >= 5 &&
		    memcmp(text + i, "From ", 5) == 0)
			mime_buffer_append_byte(out, '>');
		line_start = 0;
		if (text[i] == '\r' || text[i] == '\n') {
			if (text[i] == '\r' && i + 1 < len && text[i + 1] == '\n')
				i++;
			mime_buffer_append_str(out, linesep);
			line_start = 1;
		} else {
			mime_buffer_append_byte(out, text[i]);
		}
	}
}

static void generate(struct mime_message *message, const struct mime_generator_options *options,
		     struct mime_buffer *out, size_t depth);

/* Generator._make_boundary: a boundary not found in the parts' text. */
static char *make_boundary(const struct mime_buffer *text)
{
	static unsigned long counter;
	char boundary[64];

	for (;;) {
		snprintf(boundary, sizeof(boundary), "===============%019lu==",
			 (unsigned long)time(NULL) * 1000003UL + ++counter);
		/* memmem: a binary part's NUL must not hide a clash after it */
		if (text->data == NULL || memmem(text->data, text->len, boundary, strlen(boundary)) == NULL)
			return mime_xstrdup(boundary);
	}
}

static void generate_multipart(struct mime_message *message,
			       const struct mime_generator_options *options,
			       struct mime_buffer *out, size_t depth)
{
	const char *linesep = generator_linesep(options);
	struct mime_buffer *texts = mime_xmalloc((message->part_count + 1) * sizeof(*texts));
	struct mime_buffer all = { 0 };

	for (size_t i = 0; i < message->part_count; i++) {
		memset(&texts[i], 0, sizeof(texts[i]));
		struct mime_generator_options inner = *options;
		inner.unixfrom = 0;
		generate(message->parts[i], &inner, &texts[i], depth + 1);
		mime_buffer_append(&all, texts[i].data, texts[i].len);
	}
	char *boundary = mime_message_get_boundary(message);
	if (boundary == NULL || boundary[0] == '\0') {
		free(boundary);
		boundary = make_boundary(&all);
		if (mime_message_set_boundary(message, boundary) < 0) {
			mime_message_set(message, "Content-Type", "multipart/mixed");
			mime_message_set_boundary(message, boundary);
		}
	}
	mime_buffer_free(&all);
	if (message->preamble != NULL) {
		write_lines(options, message->preamble, message->preamble_len, out);
		mime_buffer_append_str(out, linesep);
	}
	mime_buffer_printf(out, "--%s%s", boundary, linesep);
	for (size_t i = 0; i < message->part_count; i++) {
		if (i > 0)
			mime_buffer_printf(out, "%s--%s%s", linesep, boundary, linesep);
		mime_buffer_append(out, texts[i].data, texts[i].len);
		mime_buffer_free(&texts[i]);
	}
	mime_buffer_printf(out, "%s--%s--%s", linesep, boundary, linesep);
	if (message->epilogue != NULL)
		write_lines(options, message->epilogue, message->epilogue_len, out);
	free(texts);
	free(boundary);
}

static void generate_delivery_status(struct mime_message *message,
				     const struct mime_generator_options *options,
				     struct mime_buffer *out, size_t depth)
{
	const char *linesep = generator_linesep(options);
	size_t sep_len = strlen(linesep);

	for (size_t i = 0; i < message->part_count; i++) {
		struct mime_buffer text = { 0 };
		struct mime_generator_options inner = *options;
		inner.unixfrom = 0;
		generate(message->parts[i], &inner, &text, depth + 1);
		if (i > 0)
			mime_buffer_append_str(out, linesep);
		/* the block's trailing empty line is dropped */
		size_t len = text.len;
		if (len >= sep_len && memcmp(text.data + len - sep_len, linesep, sep_len) == 0)
			len -= sep_len;
		mime_buffer_append(out, text.data, len);
		mime_buffer_free(&text);
	}
}

static void generate(struct mime_message *message, const struct mime_generator_options *options,
		     struct mime_buffer *out, size_t depth)
{
	const char *linesep = generator_linesep(options);
	struct mime_buffer body = { 0 };
	const char *type = mime_message_get_content_type(message);

	if (options->unixfrom) {
		if (message->unixfrom != NULL) {
			mime_buffer_append_str(out, message->unixfrom);
		} else {
			time_t now = time(NULL);
			char stamp[64];
			strftime(stamp, sizeof(stamp), "%a %b %e %H:%M:%S %Y", localtime(&now));
			mime_buffer_printf(out, "From nobody %s", stamp);
		}
		mime_buffer_append_str(out, linesep);
	}
	/* The body first: generating a multipart may set a new boundary. */
	if (message->payload_kind == MIME_PAYLOAD_PARTS) {
		if (strcmp(type, "message/delivery-status") == 0)
			generate_delivery_status(message, options, &body, depth);
		else if (strncmp(type, "multipart/", 10) == 0)
			generate_multipart(message, options, &body, depth);
		else if (message->part_count > 0) {
			struct mime_generator_options inner = *options;
			inner.unixfrom = 0;
			generate(message->parts[0], &inner, &body, depth + 1);
		}
	} else if (message->payload_kind == MIME_PAYLOAD_BYTES) {
		if (strncmp(type, "multipart/", 10) == 0 || strncmp(type, "message/", 8) == 0)
			mime_buffer_append(&body, message->payload, message->payload_len);
		else
			write_lines(options, message->payload, message->payload_len, &body);
	}
	for (size_t i = 0; i < message->header_count; i++)
		mime_header_write(out, message->headers[i].name, message->headers[i].value,
				  options->max_header_len, linesep);
	mime_buffer_append_str(out, linesep);
	mime_buffer_append(out, body.data, body.len);
	mime_buffer_free(&body);
	if (out->data == NULL)
		mime_buffer_append(out, "", 0);
}

void mime_generator_write(struct mime_message *message,
			  const struct mime_generator_options *options, struct mime_buffer *out)
{
	generate(message, options, out, 0);
}
