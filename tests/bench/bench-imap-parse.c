/* SPDX-License-Identifier: MIT */
/* bench-imap-parse: tokenizer throughput and allocations on a 10,000-message FETCH stream, against a memchr line split. */
#include "config.h"
#include "imap-parser.h"
#include "imap-response.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_MESSAGES 10000 /* the folder size */
#define BENCH_READ_SIZE (16 * 1024) /* what one socket read typically brings */
#define BENCH_ROUNDS 5 /* best of several passes hides a busy neighbour */
#define BENCH_TARGET_MBPS 150.0 /* the target on one core */
#define BENCH_TARGET_ALLOCATIONS 4.0 /* per message, the target */

/* Every malloc, calloc and realloc of the process is counted by interposing
   glibc's allocator, so the count covers the parsers and anything they call.
   Under AddressSanitizer its own allocator must stay in charge: no count. */
#if defined(__SANITIZE_ADDRESS__)
#define BENCH_COUNTS_ALLOCATIONS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BENCH_COUNTS_ALLOCATIONS 0
#endif
#endif
#ifndef BENCH_COUNTS_ALLOCATIONS
#define BENCH_COUNTS_ALLOCATIONS 1
#endif

static unsigned long long allocation_count;

#if BENCH_COUNTS_ALLOCATIONS
void *__libc_malloc(size_t size);
void *__libc_calloc(size_t count, size_t size);
void *__libc_realloc(void *ptr, size_t size);

void *malloc(size_t size)
{
	allocation_count++;
	return __libc_malloc(size);
}

void *calloc(size_t count, size_t size)
{
	allocation_count++;
	return __libc_calloc(count, size);
}

void *realloc(void *ptr, size_t size)
{
	allocation_count++;
	return __libc_realloc(ptr, size);
}
#endif

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

/* CPU time of this thread: on a machine shared with other work, time spent
   waiting for a core is not the parser's. */
static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
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

/* Tokenizes the stream as the client core reads it; with responses, also builds the FETCH views. */
static size_t parser_pass(struct imap_parser *parser, struct imap_response_parser *responses,
			  const struct text *stream)
{
	size_t lines = 0;
	for (size_t pos = 0; pos < stream->len; pos += BENCH_READ_SIZE) {
		size_t len = stream->len - pos < BENCH_READ_SIZE ? stream->len - pos : BENCH_READ_SIZE;
		size_t done = 0;
		while (done < len) {
			size_t consumed;
			const char *message;
			enum imap_parser_result result =
				imap_parser_feed_bytes(parser, stream->data + pos + done, len - done, &consumed);
			done += consumed;
			if (result == IMAP_PARSER_LINE_COMPLETE) {
				lines++;
				struct imap_response response;
				if (responses != NULL &&
				    (imap_response_parse(responses, imap_parser_get_line(parser), &response, &message) !=
					     IMAP_RESPONSE_ERROR_NONE ||
				     imap_response_fetch_find(&response, IMAP_FETCH_BODYSTRUCTURE) == NULL)) {
					fprintf(stderr, "bench-imap-parse: response error: %s\n", message);
					exit(1);
				}
			} else if (result != IMAP_PARSER_NEED_MORE) {
				imap_parser_get_error(parser, &message);
				fprintf(stderr, "bench-imap-parse: parse error: %s at byte %zu: %.60s\n", message,
					pos + done, stream->data + pos + done);
				exit(1);
			}
		}
	}
	return lines;
}

struct measure {
	double best_seconds;
	double allocations_per_message;
};

/* Best time of BENCH_ROUNDS passes, and allocations per message over all of them. */
static struct measure measure(const struct text *stream, bool with_responses)
{
	struct measure result = { 1e9, 0 };
	struct imap_parser *parser = imap_parser_new();
	struct imap_response_parser *responses = with_responses ? imap_response_parser_new() : NULL;

	if (parser == NULL || (with_responses && responses == NULL)) {
		fprintf(stderr, "bench-imap-parse: out of memory\n");
		exit(1);
	}
	imap_parser_set_mode(parser, IMAP_PARSER_MODE_RESPONSE);
	unsigned long long before = allocation_count;
	for (int round = 0; round < BENCH_ROUNDS; round++) {
		double start = now_seconds();
		size_t parsed = parser_pass(parser, responses, stream);
		double seconds = now_seconds() - start;
		if (parsed != BENCH_MESSAGES) {
			fprintf(stderr, "bench-imap-parse: parsed %zu lines of %u\n", parsed, BENCH_MESSAGES);
			exit(1);
		}
		if (seconds < result.best_seconds)
			result.best_seconds = seconds;
	}
	result.allocations_per_message =
		(double)(allocation_count - before) / ((double)BENCH_MESSAGES * BENCH_ROUNDS);
	imap_response_parser_free(&responses);
	imap_parser_free(&parser);
	return result;
}

int main(void)
{
	struct text stream = { NULL, 0, 0 };
	unsigned int seed = 20240701;
	double best_baseline = 1e9;

	for (unsigned int seq = 1; seq <= BENCH_MESSAGES; seq++)
		add_message(&stream, seq, &seed);
	for (int round = 0; round < BENCH_ROUNDS; round++) {
		double start = now_seconds();
		size_t lines = baseline_pass(&stream);
		double seconds = now_seconds() - start;
		if (lines < BENCH_MESSAGES) {
			fprintf(stderr, "bench-imap-parse: baseline found %zu lines\n", lines);
			return 1;
		}
		if (seconds < best_baseline)
			best_baseline = seconds;
	}
	struct measure tokenizer = measure(&stream, false);
	struct measure full = measure(&stream, true);

	double mb = (double)stream.len / 1e6;
	printf("stream: %u FETCH lines (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE), %.2f MB, "
	       "read in %d-byte pieces, best of %d passes, thread CPU time\n", BENCH_MESSAGES, mb, BENCH_READ_SIZE, BENCH_ROUNDS);
	printf("baseline memchr line split:      %8.1f MB/s\n", mb / best_baseline);
	printf("tokenizer (imap-parser):         %8.1f MB/s  %5.2f%% of baseline\n", mb / tokenizer.best_seconds,
	       100.0 * best_baseline / tokenizer.best_seconds);
	printf("tokenizer + FETCH views:         %8.1f MB/s  %5.2f%% of baseline (target >= %.0f MB/s: %s)\n",
	       mb / full.best_seconds, 100.0 * best_baseline / full.best_seconds, BENCH_TARGET_MBPS,
	       mb / full.best_seconds >= BENCH_TARGET_MBPS ? "met" : "NOT met");
	if (BENCH_COUNTS_ALLOCATIONS)
		printf("allocations per message:         %8.3f tokenizer, %.3f with FETCH views, first pass's "
		       "warm-up included (target < %.0f: %s)\n",
		       tokenizer.allocations_per_message, full.allocations_per_message, BENCH_TARGET_ALLOCATIONS,
		       full.allocations_per_message < BENCH_TARGET_ALLOCATIONS ? "met" : "NOT met");
	else
		printf("allocations per message:         not counted under AddressSanitizer\n");
	free(stream.data);
	return 0;
}
