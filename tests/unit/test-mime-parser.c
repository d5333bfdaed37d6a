/* SPDX-License-Identifier: MIT */
/* Unit tests for common/mime-parser: the tree, defects, splits and bad input. */
#include "config.h"
#include "unit.h"
#include "mime-parser.h"
#include "mime-scan.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define BAD_INPUT_SECONDS 20.0 /* generous: ASan builds are several times slower */
#define BAD_INPUT_MAX_RSS_KB (1024 * 1024) /* 1 GiB: each bad input is at most ~10 MB */

static struct mime_message *parse_chunks(const char *data, size_t len, size_t chunk)
{
	struct mime_parser *parser = mime_parser_new(0);
	struct mime_message *message = NULL;
	const char *error;

	for (size_t pos = 0; pos < len; pos += chunk) {
		size_t n = len - pos < chunk ? len - pos : chunk;
		CU_ASSERT_EQUAL(mime_parser_feed(parser, data + pos, n, &error), MIME_PARSER_NEED_MORE);
	}
	CU_ASSERT_EQUAL(mime_parser_finish(parser, &message, &error), MIME_PARSER_COMPLETE);
	mime_parser_free(&parser);
	CU_ASSERT_PTR_NULL(parser);
	return message;
}

static struct mime_message *parse_split(const char *data, size_t len, size_t split)
{
	struct mime_parser *parser = mime_parser_new(0);
	struct mime_message *message = NULL;
	const char *error;

	mime_parser_feed(parser, data, split, &error);
	mime_parser_feed(parser, data + split, len - split, &error);
	mime_parser_finish(parser, &message, &error);
	mime_parser_free(&parser);
	return message;
}

static char *describe(const struct mime_message *message)
{
	struct mime_buffer out = { 0 };
	mime_message_describe(message, 1, &out);
	mime_buffer_append(&out, "", 0);
	return mime_buffer_steal(&out, NULL);
}

/* Whole, byte by byte, and split at every offset: the same tree. */
static void assert_split_invariant(const char *data)
{
	size_t len = strlen(data);
	struct mime_message *whole = mime_parse(data, len);
	char *expected = describe(whole);
	struct mime_message *bytewise = parse_chunks(data, len, 1);
	char *got = describe(bytewise);
	CU_ASSERT_STRING_EQUAL(got, expected);
	free(got);
	mime_message_free(&bytewise);
	for (size_t split = 0; split <= len; split++) {
		struct mime_message *message = parse_split(data, len, split);
		got = describe(message);
		if (strcmp(got, expected) != 0) {
			CU_FAIL("split changes the tree");
			split = len;
		}
		free(got);
		mime_message_free(&message);
	}
	free(expected);
	mime_message_free(&whole);
}

static const char simple_lf[] =
	"From: Alice <alice@example.org>\n"
	"To: bob@example.net\n"
	"Received: one\n"
	"Subject: folded\n"
	"  subject line\n"
	"received: two\n"
	"\n"
	"Hello\n"
	"From the body\n";

static const char multipart_crlf[] =
	"From nobody Mon Jan  1 00:00:00 2024\r\n"
	"MIME-Version: 1.0\r\n"
	"Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n"
	"\r\n"
	"preamble line\r\n"
	"--XYZ\r\n"
	"Content-Type: text/plain; charset=us-ascii\r\n"
	"\r\n"
	"first part\r\n"
	"\r\n"
	"--XYZ\r\n"
	"Content-Type: message/rfc822\r\n"
	"\r\n"
	"Subject: inner\r\n"
	"Content-Type: multipart/alternative; boundary=inner\r\n"
	"\r\n"
	"--inner\r\n"
	"\r\n"
	"plain\r\n"
	"--inner\r\n"
	"Content-Type: text/html\r\n"
	"\r\n"
	"<p>html</p>\r\n"
	"--inner--\r\n"
	"\r\n"
	"--XYZ--\r\n"
	"epilogue\r\n";

static void test_headers_in_order(void)
{
	struct mime_message *message = mime_parse(simple_lf, strlen(simple_lf));

	CU_ASSERT_EQUAL(mime_message_len(message), 5);
	CU_ASSERT_STRING_EQUAL(mime_message_key(message, 2), "Received");
	CU_ASSERT_STRING_EQUAL(mime_message_key(message, 4), "received");
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "RECEIVED", NULL), "one");
	CU_ASSERT_STRING_EQUAL(mime_message_get_nth(message, "received", 1), "two");
	CU_ASSERT_PTR_NULL(mime_message_get_nth(message, "received", 2));
	/* compat32 keeps the fold in the value */
	CU_ASSERT_STRING_EQUAL(mime_message_get(message, "subject", NULL), "folded\n  subject line");
	CU_ASSERT_EQUAL(message->payload_kind, MIME_PAYLOAD_BYTES);
	CU_ASSERT_STRING_EQUAL((char *)message->payload, "Hello\nFrom the body\n");
	CU_ASSERT_EQUAL(message->defect_count, 0);
	CU_ASSERT_STRING_EQUAL(mime_message_get_content_type(message), "text/plain");
	mime_message_free(&message);
	CU_ASSERT_PTR_NULL(message);
}

static void test_multipart_tree(void)
{
	struct mime_message *message = mime_parse(multipart_crlf, strlen(multipart_crlf));

	CU_ASSERT_STRING_EQUAL(message->unixfrom, "From nobody Mon Jan  1 00:00:00 2024");
	CU_ASSERT_TRUE(mime_message_is_multipart(message));
	CU_ASSERT_EQUAL(message->part_count, 2);
	CU_ASSERT_STRING_EQUAL(message->preamble, "preamble line");
	CU_ASSERT_STRING_EQUAL(message->epilogue, "epilogue\r\n");
	struct mime_message *first = mime_message_get_part(message, 0);
	/* the CRLF before a boundary belongs to the boundary */
	CU_ASSERT_STRING_EQUAL((char *)first->payload, "first part\r\n");
	struct mime_message *forward = mime_message_get_part(message, 1);
	CU_ASSERT_STRING_EQUAL(mime_message_get_content_type(forward), "message/rfc822");
	CU_ASSERT_EQUAL(forward->part_count, 1);
	struct mime_message *inner = mime_message_get_part(forward, 0);
	CU_ASSERT_STRING_EQUAL(mime_message_get(inner, "subject", NULL), "inner");
	CU_ASSERT_EQUAL(inner->part_count, 2);
	CU_ASSERT_STRING_EQUAL((char *)inner->parts[0]->payload, "plain");
	CU_ASSERT_STRING_EQUAL((char *)inner->parts[1]->payload, "<p>html</p>");
	/* the blank line after the inner close boundary, less the line end
	   that belongs to the outer boundary (Python gives '' too) */
	CU_ASSERT_STRING_EQUAL(inner->epilogue, "");
	for (struct mime_message *p = message; p != NULL; p = mime_message_walk_next(message, p))
		CU_ASSERT_EQUAL(p->defect_count, 0);
	/* offsets of the first part's body */
	CU_ASSERT_EQUAL(memcmp(multipart_crlf + first->body_start, "first part\r\n\r\n--XYZ", 19), 0);
	CU_ASSERT_EQUAL(first->body_end - first->body_start, strlen("first part\r\n"));
	mime_message_free(&message);
}

static void test_split_invariance(void)
{
	static const char *const inputs[] = {
		simple_lf, multipart_crlf,
		"Subject: x\r\rbody with bare CR\rline\r",
		"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nno close",
		"no headers at all\nsecond\n",
		"Content-Type: message/delivery-status\n\nA: 1\nB: 2\n\nC: 3\n\n\nD: 4\n",
		"From x\nFrom y\nA: b\nFrom z\n\nbody",
	};
	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++)
		assert_split_invariant(inputs[i]);
}

/* Counts the leaf payloads of tree that point into [data, data + len). */
static size_t count_borrowed_leaves(struct mime_message *tree, const char *data, size_t len)
{
	size_t borrowed = 0;
	for (struct mime_message *part = mime_message_walk_next(tree, NULL); part != NULL;
	     part = mime_message_walk_next(tree, part)) {
		uintptr_t p = (uintptr_t)part->payload, base = (uintptr_t)data;
		if (part->payload_kind == MIME_PAYLOAD_BYTES && p >= base && p - base < len)
			borrowed++;
	}
	return borrowed;
}

/* mime_parse_borrowed gives the tree mime_parse gives, with leaf bodies
   pointing into the input where they lie there whole; the input sits in
   a buffer of its exact size, so reading past a payload is caught by ASan. */
static void assert_borrowed_same(const char *text, size_t expect_borrowed)
{
	size_t len = strlen(text);
	char *data = malloc(len == 0 ? 1 : len);
	memcpy(data, text, len);
	struct mime_message *copied = mime_parse(data, len);
	struct mime_message *borrowed = mime_parse_borrowed(data, len);
	char *expected = describe(copied), *got = describe(borrowed);
	CU_ASSERT_STRING_EQUAL(got, expected);
	CU_ASSERT_EQUAL(count_borrowed_leaves(borrowed, data, len), expect_borrowed);
	CU_ASSERT_EQUAL(count_borrowed_leaves(copied, data, len), 0);
	/* Decoding reads a payload by its length: the same bytes either way. */
	struct mime_message *b = mime_message_walk_next(borrowed, NULL);
	for (struct mime_message *c = mime_message_walk_next(copied, NULL); c != NULL && b != NULL;
	     c = mime_message_walk_next(copied, c), b = mime_message_walk_next(borrowed, b)) {
		struct mime_buffer from_copy = { 0 }, from_borrowed = { 0 };
		CU_ASSERT_EQUAL(mime_message_get_payload(b, 1, &from_borrowed),
				mime_message_get_payload(c, 1, &from_copy));
		CU_ASSERT_EQUAL(from_borrowed.len, from_copy.len);
		if (from_copy.len > 0 && from_borrowed.len == from_copy.len)
			CU_ASSERT(memcmp(from_borrowed.data, from_copy.data, from_copy.len) == 0);
		mime_buffer_free(&from_copy);
		mime_buffer_free(&from_borrowed);
	}
	free(got);
	free(expected);
	mime_message_free(&copied);
	mime_message_free(&borrowed);
	free(data);
}

static void test_borrowed(void)
{
	assert_borrowed_same(simple_lf, 1);
	assert_borrowed_same(multipart_crlf, 3); /* "first part", "plain", the html */
	assert_borrowed_same("Subject: no final line end\n\nbody", 1);
	assert_borrowed_same("Content-Transfer-Encoding: base64\n\naGVsbG8gd29y\nbGQ=", 1);
	assert_borrowed_same("Content-Transfer-Encoding: quoted-printable\n\ncaf=E9 =\nend=", 1);
	assert_borrowed_same("Subject: bare CRs\r\rbody\rline\r", 1);
	assert_borrowed_same("Content-Type: multipart/mixed; boundary=b\n\n--b\n\nno close", 1);
	assert_borrowed_same("no headers at all\nsecond\n", 1);
	assert_borrowed_same("Subject: empty body\n\n", 0);
	assert_borrowed_same("", 0);
	/* A "From " line that ends the headers is pushed back into the body:
	   that body is not one piece of the input, so it is a copy. */
	assert_borrowed_same("From x\nFrom y\nA: b\nFrom z\n\nbody", 0);
	assert_borrowed_same("Content-Type: message/delivery-status\n\nA: 1\n\nB: 2\n", 0);
}

/* A borrowed tree can be changed like any other: what the API frees is
   only what it allocated itself. */
static void test_borrowed_changes(void)
{
	size_t len = strlen(multipart_crlf);
	char *data = malloc(len);
	memcpy(data, multipart_crlf, len);
	struct mime_message *tree = mime_parse_borrowed(data, len);
	struct mime_message *first = mime_message_get_part(tree, 0);
	CU_ASSERT_EQUAL(count_borrowed_leaves(tree, data, len), 3);
	mime_message_set_payload(first, "new body\n", 9, NULL);
	CU_ASSERT_EQUAL(count_borrowed_leaves(tree, data, len), 2);
	CU_ASSERT_STRING_EQUAL((char *)first->payload, "new body\n");
	CU_ASSERT_EQUAL(mime_message_replace_header(first, "content-type", "text/x-new"), 0);
	CU_ASSERT_STRING_EQUAL(mime_message_get_content_type(first), "text/x-new");
	CU_ASSERT_EQUAL(mime_message_delete(tree, "MIME-Version"), 1);
	for (int i = 0; i < 100; i++)
		mime_message_set(tree, "X-Added", "value");
	CU_ASSERT_EQUAL(mime_message_count(tree, "x-added"), 100);
	CU_ASSERT_EQUAL(mime_message_set_boundary(tree, "other"), 0);
	/* Replacing the parts frees the old ones, borrowed bodies included. */
	mime_message_set_payload(mime_message_get_part(tree, 1), "flat\n", 5, NULL);
	CU_ASSERT_EQUAL(count_borrowed_leaves(tree, data, len), 0);
	char *text = mime_message_as_string(tree, 0, NULL);
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "new body"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "boundary=\"other\""));
	free(text);
	mime_message_free(&tree);
	free(data);
}

static int count_defect(const struct mime_message *message, enum mime_defect defect)
{
	int count = 0;
	for (size_t i = 0; i < message->defect_count; i++)
		if (message->defects[i] == defect)
			count++;
	return count;
}

static void test_defects(void)
{
	struct mime_message *message;
	const char *text;

	text = "Content-Type: multipart/mixed\n\nbody\n";
	message = mime_parse(text, strlen(text));
	CU_ASSERT_EQUAL(count_defect(message, MIME_DEFECT_NO_BOUNDARY_IN_MULTIPART), 1);
	CU_ASSERT_EQUAL(count_defect(message, MIME_DEFECT_MULTIPART_INVARIANT_VIOLATION), 1);
	CU_ASSERT_FALSE(mime_message_is_multipart(message));
	mime_message_free(&message);

	text = "Content-Type: multipart/mixed; boundary=b\n\nno boundary here\n";
	message = mime_parse(text, strlen(text));
	CU_ASSERT_EQUAL(count_defect(message, MIME_DEFECT_START_BOUNDARY_NOT_FOUND), 1);
	CU_ASSERT_STRING_EQUAL((char *)message->payload, "no boundary here\n");
	mime_message_free(&message);

	text = "Content-Type: multipart/mixed; boundary=b\n\n--b\n\npart\n";
	message = mime_parse(text, strlen(text));
	CU_ASSERT_EQUAL(count_defect(message, MIME_DEFECT_CLOSE_BOUNDARY_NOT_FOUND), 1);
	CU_ASSERT_EQUAL(message->part_count, 1);
	mime_message_free(&message);

	text = " continued\nSubject: x\nFrom y\nno colon line\nmore\n";
	message = mime_parse(text, strlen(text));
	CU_ASSERT_EQUAL(count_defect(message, MIME_DEFECT_FIRST_HEADER_LINE_IS_CONTINUATION), 1);
	CU_ASSERT_EQUAL(count_defect(message, MIME_DEFECT_MISSING_HEADER_BODY_SEPARATOR), 1);
	/* the last "From " line goes back to the body, as feedparser does */
	CU_ASSERT_STRING_EQUAL((char *)message->payload, "From y\nno colon line\nmore\n");
	mime_message_free(&message);

	text = "A: 1\nFrom misplaced\nB: 2\n:no name\nC:\n\nbody";
	message = mime_parse(text, strlen(text));
	CU_ASSERT_EQUAL(count_defect(message, MIME_DEFECT_MISPLACED_ENVELOPE_HEADER), 1);
	CU_ASSERT_EQUAL(count_defect(message, MIME_DEFECT_INVALID_HEADER), 1);
	CU_ASSERT_EQUAL(count_defect(message, MIME_DEFECT_HEADER_MISSING_VALUE), 1);
	CU_ASSERT_EQUAL(mime_message_len(message), 3);
	mime_message_free(&message);

	text = "Content-Type: multipart/mixed; boundary=b\nContent-Transfer-Encoding: base64\n\n"
		"--b\n\nx\n--b--\n";
	message = mime_parse(text, strlen(text));
	CU_ASSERT_EQUAL(count_defect(message,
				     MIME_DEFECT_INVALID_MULTIPART_CONTENT_TRANSFER_ENCODING), 1);
	mime_message_free(&message);

	text = "Content-Transfer-Encoding: base64\n\nYWJj\nZA\n";
	message = mime_parse(text, strlen(text));
	struct mime_buffer out = { 0 };
	CU_ASSERT_EQUAL(mime_message_get_payload(message, 1, &out), MIME_PAYLOAD_RESULT_BYTES);
	CU_ASSERT_EQUAL(out.len, 4);
	CU_ASSERT_EQUAL(memcmp(out.data, "abcd", 4), 0);
	CU_ASSERT_EQUAL(count_defect(message, MIME_DEFECT_INVALID_BASE64_PADDING), 1);
	mime_buffer_free(&out);
	mime_message_free(&message);

	text = "Content-Transfer-Encoding: base64\n\nYW!Jj\n";
	message = mime_parse(text, strlen(text));
	mime_message_get_payload(message, 1, &out);
	CU_ASSERT_EQUAL(out.len, 3);
	CU_ASSERT_EQUAL(count_defect(message, MIME_DEFECT_INVALID_BASE64_CHARACTERS), 1);
	mime_buffer_free(&out);
	mime_message_free(&message);
}

static void test_digest_and_delivery_status(void)
{
	const char *text =
		"Content-Type: multipart/digest; boundary=d\n\n"
		"--d\n\nSubject: one\n\nbody one\n"
		"--d\nContent-Type: text/plain\n\nplain\n"
		"--d--\n";
	struct mime_message *message = mime_parse(text, strlen(text));

	CU_ASSERT_EQUAL(message->part_count, 2);
	struct mime_message *first = message->parts[0];
	CU_ASSERT_STRING_EQUAL(mime_message_get_content_type(first), "message/rfc822");
	CU_ASSERT_EQUAL(first->part_count, 1);
	CU_ASSERT_STRING_EQUAL(mime_message_get(first->parts[0], "subject", NULL), "one");
	CU_ASSERT_STRING_EQUAL(mime_message_get_content_type(message->parts[1]), "text/plain");
	mime_message_free(&message);

	text = "Content-Type: message/delivery-status\n\nA: 1\nB: 2\n\nC: 3\n";
	message = mime_parse(text, strlen(text));
	CU_ASSERT_EQUAL(message->part_count, 2);
	CU_ASSERT_STRING_EQUAL(mime_message_get(message->parts[0], "b", NULL), "2");
	CU_ASSERT_STRING_EQUAL(mime_message_get(message->parts[1], "c", NULL), "3");
	mime_message_free(&message);
}

static void test_size_limit(void)
{
	struct mime_parser *parser = mime_parser_new(10);
	struct mime_message *message = NULL;
	const char *error = NULL;

	CU_ASSERT_EQUAL(mime_parser_feed(parser, "Subject: ", 9, &error), MIME_PARSER_NEED_MORE);
	CU_ASSERT_EQUAL(mime_parser_feed(parser, "xy", 2, &error), MIME_PARSER_TOO_BIG);
	CU_ASSERT_PTR_NOT_NULL(error);
	CU_ASSERT_EQUAL(mime_parser_finish(parser, &message, &error), MIME_PARSER_TOO_BIG);
	CU_ASSERT_PTR_NULL(message);
	mime_parser_free(&parser);
}

/* --- bad input: bounded time and memory, defects recorded --- */

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void assert_bounds(double started)
{
	struct rusage usage;
	CU_ASSERT(now_seconds() - started < BAD_INPUT_SECONDS);
	getrusage(RUSAGE_SELF, &usage);
	CU_ASSERT(usage.ru_maxrss < BAD_INPUT_MAX_RSS_KB);
}

static size_t tree_size(struct mime_message *root, size_t *depth_r)
{
	size_t count = 0, max_depth = 0;
	for (struct mime_message *p = root; p != NULL; p = mime_message_walk_next(root, p)) {
		size_t depth = 0;
		for (struct mime_message *q = p; q != root; q = q->parent)
			depth++;
		if (depth > max_depth)
			max_depth = depth;
		count++;
	}
	*depth_r = max_depth;
	return count;
}

static void test_bad_truncated(void)
{
	double started = now_seconds();
	size_t len = strlen(multipart_crlf);

	for (size_t cut = 0; cut < len; cut++) {
		struct mime_message *message = mime_parse(multipart_crlf, cut);
		CU_ASSERT_PTR_NOT_NULL(message);
		mime_message_free(&message);
	}
	/* cut inside the parts: the close boundary is missing */
	struct mime_message *message = mime_parse(multipart_crlf, len - 30);
	CU_ASSERT_EQUAL(count_defect(message, MIME_DEFECT_CLOSE_BOUNDARY_NOT_FOUND), 1);
	mime_message_free(&message);
	assert_bounds(started);
}

static void test_bad_binary_garbage(void)
{
	double started = now_seconds();
	size_t len = 4 * 1024 * 1024;
	unsigned char *data = malloc(len);
	unsigned int state = 12345;

	for (size_t i = 0; i < len; i++) {
		state = state * 1103515245u + 12345u;
		data[i] = (unsigned char)(state >> 16);
	}
	struct mime_message *message = parse_chunks((char *)data, len, 65536);
	CU_ASSERT_PTR_NOT_NULL(message);
	CU_ASSERT(message->defect_count > 0);
	mime_message_free(&message);
	free(data);
	assert_bounds(started);
}

static void test_bad_huge_header_line(void)
{
	double started = now_seconds();
	size_t len = 10 * 1024 * 1024;
	char *data = malloc(len + 32);

	memcpy(data, "X-Long: ", 8);
	memset(data + 8, 'a', len);
	memcpy(data + 8 + len, "\n\nbody\n", 8);
	struct mime_message *message = parse_chunks(data, len + 15, 4096);
	CU_ASSERT_EQUAL(strlen(mime_message_get(message, "x-long", "")), len);
	CU_ASSERT_STRING_EQUAL((char *)message->payload, "body\n");
	mime_message_free(&message);
	free(data);
	assert_bounds(started);
}

static void test_bad_deep_nesting(void)
{
	double started = now_seconds();
	struct mime_buffer text = { 0 };

	for (int i = 0; i < 1000; i++)
		mime_buffer_printf(&text, "Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n", i, i);
	mime_buffer_append_str(&text, "\nleaf\n");
	for (int i = 999; i >= 0; i--)
		mime_buffer_printf(&text, "--b%d--\n", i);
	struct mime_message *message = parse_chunks((char *)text.data, text.len, 4096);
	size_t depth;
	size_t count = tree_size(message, &depth);
	CU_ASSERT(depth < MIME_PARSER_MAX_DEPTH);
	CU_ASSERT(count <= MIME_PARSER_MAX_DEPTH);
	int deep_defect = 0;
	for (struct mime_message *p = message; p != NULL; p = mime_message_walk_next(message, p))
		deep_defect += count_defect(p, MIME_DEFECT_NESTING_TOO_DEEP);
	CU_ASSERT_EQUAL(deep_defect, 1);
	/* the same through message/rfc822 containers */
	mime_buffer_reset(&text);
	for (int i = 0; i < 1000; i++)
		mime_buffer_append_str(&text, "Content-Type: message/rfc822\n\n");
	mime_buffer_append_str(&text, "Subject: bottom\n\nleaf\n");
	struct mime_message *nested = mime_parse(text.data, text.len);
	count = tree_size(nested, &depth);
	CU_ASSERT(depth < MIME_PARSER_MAX_DEPTH);
	mime_message_free(&nested);
	mime_message_free(&message);
	mime_buffer_free(&text);
	assert_bounds(started);
}

static void test_bad_many_parts(void)
{
	double started = now_seconds();
	struct mime_buffer text = { 0 };

	mime_buffer_append_str(&text, "Content-Type: multipart/mixed; boundary=p\n\n");
	for (int i = 0; i < 100000; i++)
		mime_buffer_append_str(&text, "--p\n\nx\n");
	mime_buffer_append_str(&text, "--p--\n");
	struct mime_message *message = parse_chunks((char *)text.data, text.len, 65536);
	CU_ASSERT(message->part_count < MIME_PARSER_MAX_PARTS);
	CU_ASSERT(message->part_count > MIME_PARSER_MAX_PARTS / 2);
	CU_ASSERT_EQUAL(count_defect(message, MIME_DEFECT_TOO_MANY_PARTS), 1);
	CU_ASSERT_STRING_EQUAL(message->epilogue, "");
	mime_message_free(&message);
	mime_buffer_free(&text);
	assert_bounds(started);
}

const char unit_suite_name[] = "mime-parser";
/* The leaf-body line scan, written the plain way, to hold the vector
   paths against. */
static size_t reference_body_lines(const unsigned char *data, size_t len,
				   struct mime_scan_lines *lines)
{
	size_t pos = 0;

	memset(lines, 0, sizeof(*lines));
	while (pos < len && data[pos] != '-' && data[pos] != '\r' && data[pos] != '\n') {
		size_t end = pos;
		while (end < len && data[end] != '\r' && data[end] != '\n')
			end++;
		if (end == len || (data[end] == '\r' && end + 1 == len))
			break;
		size_t eol = data[end] == '\r' && data[end + 1] == '\n' ? 2 : 1;
		lines->last_lf = data[end + eol - 1] == '\n';
		lines->last_crlf = eol == 2;
		lines->lf += (size_t)lines->last_lf;
		lines->crlf += (size_t)lines->last_crlf;
		pos = end + eol;
	}
	return pos;
}

#define SCAN_CASES 3000 /* random bodies; each path must match the reference on all */

static void test_body_line_scan(void)
{
	static const enum mime_scan_path paths[] = { MIME_SCAN_BEST, MIME_SCAN_SSE2,
						     MIME_SCAN_SCALAR };
	static const char *const ends[] = { "\n", "\r\n", "\r\n", "\n", "\r" };
	unsigned char data[4096];
	uint32_t seed = 12345;
	size_t mismatches = 0;

	for (int round = 0; round < SCAN_CASES; round++) {
		size_t len = 0;
		/* lines of text, each ending in LF, CRLF or (rarely) CR; some
		   start with '-' or are empty; the input may stop anywhere */
		while (len < sizeof(data) - 200) {
			seed = seed * 1103515245u + 12345u;
			uint32_t r = seed >> 8;
			size_t line = r % 90;
			if (r % 97 == 0)
				data[len++] = '-';
			for (size_t k = 0; k < line; k++)
				data[len++] = (unsigned char)('A' + (k + r) % 26);
			const char *eol = ends[(r >> 8) % (round % 7 == 0 ? 5 : 4)];
			memcpy(data + len, eol, strlen(eol));
			len += strlen(eol);
			if ((r >> 16) % 61 == 0)
				break;
		}
		size_t cut = round % 3 == 0 ? len - (seed >> 4) % (len + 1) : len;
		struct mime_scan_lines expected;
		size_t expected_run = reference_body_lines(data, cut, &expected);
		for (size_t p = 0; p < sizeof(paths) / sizeof(paths[0]); p++) {
			struct mime_scan_lines got;
			size_t run = mime_scan_body_lines_with(data, cut, paths[p], &got);
			if (run != expected_run || got.lf != expected.lf || got.crlf != expected.crlf ||
			    (run > 0 && (got.last_lf != expected.last_lf ||
					 got.last_crlf != expected.last_crlf)))
				mismatches++;
		}
	}
	CU_ASSERT_EQUAL(mismatches, 0);
	/* the cases the blocks must hand back to the line loop */
	static const char *const edges[] = {
		"0123456789abcdef0123456789abcdef0123456789\n--b\n",
		"0123456789abcdef0123456789abcdef0123456789\r\n\r\nrest\n",
		"0123456789abcdef0123456789abcde\r\n0123456789abcdef0123456789abcdef\n\n",
		"0123456789abcdef0123456789abcdef0123456789\rlone CR line\nand more text here\n",
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r",
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
	};
	for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
		const unsigned char *text = (const unsigned char *)edges[i];
		struct mime_scan_lines expected, got;
		size_t expected_run = reference_body_lines(text, strlen(edges[i]), &expected);
		for (size_t p = 0; p < sizeof(paths) / sizeof(paths[0]); p++) {
			size_t run = mime_scan_body_lines_with(text, strlen(edges[i]), paths[p], &got);
			CU_ASSERT_EQUAL(run, expected_run);
			CU_ASSERT_EQUAL(got.lf, expected.lf);
			CU_ASSERT_EQUAL(got.crlf, expected.crlf);
		}
	}
}

const struct unit_test unit_tests[] = {
	{ "headers in order, duplicates, folds", test_headers_in_order },
	{ "multipart tree, preamble, epilogue, offsets", test_multipart_tree },
	{ "same tree for every split of the input", test_split_invariance },
	{ "borrowed parse: the same tree, bodies point into the input", test_borrowed },
	{ "borrowed parse: the tree can be changed and freed", test_borrowed_changes },
	{ "defects as email.errors names them", test_defects },
	{ "digest defaults and delivery-status blocks", test_digest_and_delivery_status },
	{ "size limit is a typed error", test_size_limit },
	{ "leaf body line scan: vector paths agree with the plain loop", test_body_line_scan },
	{ "bad input: truncated at every offset", test_bad_truncated },
	{ "bad input: 4 MB of binary garbage", test_bad_binary_garbage },
	{ "bad input: a 10 MB header line", test_bad_huge_header_line },
	{ "bad input: 1,000-deep nesting", test_bad_deep_nesting },
	{ "bad input: 100,000 parts", test_bad_many_parts },
	{ NULL, NULL },
};
