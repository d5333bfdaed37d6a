/* SPDX-License-Identifier: MIT */
/* bench-imap-parse: tokenizer throughput and allocations on a 10,000-message FETCH stream, against a memchr line split. */
#include "config.h"
#include "imap-parser.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_MESSAGES 10000 /* the folder size */
#define BENCH_READ_SIZE (16 * 1024) /* what one socket read typically brings */
#define BENCH_ROUNDS 5 /* best of several passes hides a busy neighbour */
#define BENCH_TARGET_MBPS 150.0 /* the target on one core */
#define BENCH_TARGET_ALLOCATIONS 4.0 /* per message, the target */

struct text {
	char *data;
	size_t len;
	size_t capacity;
};

static void text_add(struct text *text, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void text_add(struct text *text, const char *format, ...)
{
	va_list args;

	for (;;) {
		va_start(args, format);
		int n = vsnprintf(text->data + text->len, text->capacity - text->len, format, args);
		va_end(args);
		if (n < 0) {
			fprintf(stderr, "bench-imap-parse: vsnprintf failed\n");
			exit(1);
		}
		if ((size_t)n < text->capacity - text->len) {
			text->len += (size_t)n;
			return;
		}
		text->capacity = text->capacity * 2 + (size_t)n;
		text->data = realloc(text->data, text->capacity);
		if (text->data == NULL) {
			fprintf(stderr, "bench-imap-parse: out of memory\n");
			exit(1);
		}
	}
}

static unsigned int bench_random(unsigned int *seed)
{
	*seed = *seed * 1103515245u + 12345u;
	return (*seed >> 16) & 0x7fff;
}

static const char *const names[] = { "Alice Example", "Bob Builder", "Carol Singer", "Dave O'Neil",
				     "Eve \\\"Mallory\\\" Smith" };
static const char *const words[] = { "quarterly", "report", "meeting", "Re:", "lunch", "invoice",
				     "draft", "update", "please", "review", "urgent", "Fwd:" };

static void add_address(struct text *text, unsigned int *seed)
{
	unsigned int n = bench_random(seed) % 5;
	text_add(text, "(\"%s\" NIL \"user%u\" \"example%u.org\")", names[n], bench_random(seed) % 1000,
		 n);
}

static void add_part(struct text *text, unsigned int *seed, const char *type, const char *subtype)
{
	text_add(text, "(\"%s\" \"%s\" (\"charset\" \"utf-8\") NIL NIL \"%s\" %u %u NIL NIL NIL NIL)",
		 type, subtype, bench_random(seed) % 2 ? "quoted-printable" : "7bit",
		 200 + bench_random(seed) % 20000, 5 + bench_random(seed) % 400);
}

/* One untagged FETCH of the shape Dovecot sends for the cache's first sync. */
static void add_message(struct text *text, unsigned int seq, unsigned int *seed)
{
	text_add(text, "* %u FETCH (UID %u FLAGS (%s) INTERNALDATE \"%02u-Jul-2024 %02u:%02u:%02u +0200\" "
		 "RFC822.SIZE %u ENVELOPE (\"Mon, %u Jul 2024 10:%02u:00 +0200\" ",
		 seq, seq * 3 + 100, bench_random(seed) % 3 ? "\\Seen" : "\\Seen \\Answered $Label1",
		 1 + seq % 28, seq % 24, seq % 60, (seq * 7) % 60, 1000 + bench_random(seed) % 90000,
		 1 + seq % 28, seq % 60);
	if (seq % 50 == 0) {
		/* Now and then a subject the server sends as a literal. */
		text_add(text, "{21}\r\nSubject with \"quotes\" ");
	} else {
		text_add(text, "\"");
		for (unsigned int i = 0, n = 2 + bench_random(seed) % 6; i < n; i++)
			text_add(text, "%s%s", i ? " " : "", words[bench_random(seed) % 12]);
		text_add(text, "\" ");
	}
	text_add(text, "(");
	add_address(text, seed);
	text_add(text, ") (");
	add_address(text, seed);
	text_add(text, ") (");
	add_address(text, seed);
	text_add(text, ") (");
	for (unsigned int i = 0, n = 1 + bench_random(seed) % 3; i < n; i++)
		add_address(text, seed);
	text_add(text, ") %s NIL NIL \"<%u.%u@example.org>\") BODYSTRUCTURE ",
		 bench_random(seed) % 4 ? "NIL" : "((NIL NIL \"cc\" \"example.org\"))", seq,
		 bench_random(seed));
	switch (bench_random(seed) % 3) {
	case 0:
		add_part(text, seed, "text", "plain");
		break;
	case 1:
		text_add(text, "(");
		add_part(text, seed, "text", "plain");
		add_part(text, seed, "text", "html");
		text_add(text, " \"alternative\" (\"boundary\" \"b%u\") NIL NIL NIL)", seq);
		break;
	default:
		text_add(text, "((");
		add_part(text, seed, "text", "plain");
		add_part(text, seed, "text", "html");
		text_add(text, " \"alternative\" (\"boundary\" \"a%u\") NIL NIL NIL)", seq);
		text_add(text, "(\"application\" \"pdf\" (\"name\" \"report.pdf\") NIL NIL \"base64\" %u NIL "
			 "(\"attachment\" (\"filename\" \"report.pdf\")) NIL NIL)",
			 10000 + bench_random(seed) % 500000);
		text_add(text, " \"mixed\" (\"boundary\" \"m%u\") NIL NIL NIL)", seq);
		break;
	}
	text_add(text, ")\r\n");
}

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Baseline: find each line end with memchr, as the cheapest possible reader would. */
static size_t baseline_pass(const struct text *stream)
{
	size_t lines = 0;
	for (size_t pos = 0; pos < stream->len; pos += BENCH_READ_SIZE) {
		size_t len = stream->len - pos < BENCH_READ_SIZE ? stream->len - pos : BENCH_READ_SIZE;
		const char *p = stream->data + pos, *end = p + len;
		while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
			lines++;
			p++;
		}
	}
	return lines;
}

static size_t parser_pass(struct imap_parser *parser, const struct text *stream)
{
	size_t lines = 0;
	for (size_t pos = 0; pos < stream->len; pos += BENCH_READ_SIZE) {
		size_t len = stream->len - pos < BENCH_READ_SIZE ? stream->len - pos : BENCH_READ_SIZE;
		size_t done = 0;
		while (done < len) {
			size_t consumed;
			enum imap_parser_result result =
				imap_parser_feed_bytes(parser, stream->data + pos + done, len - done, &consumed);
			done += consumed;
			if (result == IMAP_PARSER_LINE_COMPLETE) {
				lines++;
			} else if (result != IMAP_PARSER_NEED_MORE) {
				const char *message;
				imap_parser_get_error(parser, &message);
				fprintf(stderr, "bench-imap-parse: parse error: %s at byte %zu: %.60s\n", message, pos + done, stream->data + pos + done);
				exit(1);
			}
		}
	}
	return lines;
}

int main(void)
{
	struct text stream = { NULL, 0, 0 };
	unsigned int seed = 20240701;
	double best_baseline = 1e9, best_parser = 1e9;
	struct imap_parser_stats before, after;

	for (unsigned int seq = 1; seq <= BENCH_MESSAGES; seq++)
		add_message(&stream, seq, &seed);

	struct imap_parser *parser = imap_parser_new();
	if (parser == NULL) {
		fprintf(stderr, "bench-imap-parse: out of memory\n");
		return 1;
	}
	imap_parser_set_mode(parser, IMAP_PARSER_MODE_RESPONSE);
	imap_parser_get_stats(parser, &before);
	for (int round = 0; round < BENCH_ROUNDS; round++) {
		double start = now_seconds();
		size_t lines = baseline_pass(&stream);
		double baseline = now_seconds() - start;
		start = now_seconds();
		size_t parsed = parser_pass(parser, &stream);
		double parsing = now_seconds() - start;
		if (parsed != BENCH_MESSAGES || lines < BENCH_MESSAGES) {
			fprintf(stderr, "bench-imap-parse: parsed %zu lines of %u\n", parsed, BENCH_MESSAGES);
			return 1;
		}
		if (baseline < best_baseline)
			best_baseline = baseline;
		if (parsing < best_parser)
			best_parser = parsing;
	}
	imap_parser_get_stats(parser, &after);
	imap_parser_free(&parser);

	double mb = (double)stream.len / 1e6;
	double allocations = (double)(after.allocations - before.allocations) /
			     ((double)BENCH_MESSAGES * BENCH_ROUNDS);
	printf("stream: %u FETCH lines (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE), %.2f MB\n",
	       BENCH_MESSAGES, mb);
	printf("baseline memchr line split: %8.1f MB/s\n", mb / best_baseline);
	printf("imap-parser tokenizer:      %8.1f MB/s (%.1f%% of baseline; target >= %.0f MB/s: %s)\n",
	       mb / best_parser, 100.0 * best_baseline / best_parser, BENCH_TARGET_MBPS,
	       mb / best_parser >= BENCH_TARGET_MBPS ? "met" : "NOT met");
	printf("allocations per message:    %8.3f (first pass included: %llu in all; target < %.0f: %s)\n",
	       allocations, (unsigned long long)(after.allocations - before.allocations),
	       BENCH_TARGET_ALLOCATIONS, allocations < BENCH_TARGET_ALLOCATIONS ? "met" : "NOT met");
	free(stream.data);
	return 0;
}
