/* SPDX-License-Identifier: MIT */
/* Unit tests for common/mime-generator: parse, generate, parse again gives the same tree. */
#include "config.h"
#include "unit.h"
#include "mime-generator.h"
#include "mime-parser.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROUND_TRIP_RANDOM_MESSAGES 300 /* random trees per run; each is small */

/* parse(x) -> generate -> parse: the same tree (offsets aside), and a
   second generation gives the same bytes. */
static void assert_round_trip(const char *data, size_t len)
{
	struct mime_message *first = mime_parse(data, len);
	struct mime_generator_options options = { .unixfrom = first->unixfrom != NULL };
	struct mime_buffer generated = { 0 }, again = { 0 }, a = { 0 }, b = { 0 };

	mime_generator_write(first, &options, &generated);
	struct mime_message *second = mime_parse(generated.data, generated.len);
	mime_message_describe(first, 0, &a);
	mime_message_describe(second, 0, &b);
	mime_buffer_append(&a, "", 0);
	mime_buffer_append(&b, "", 0);
	if (strcmp((char *)a.data, (char *)b.data) != 0) {
		fprintf(stderr, "round trip changed the tree:\n%s\n---\n%s\n", a.data, b.data);
		CU_FAIL("round trip changed the tree");
	}
	mime_generator_write(second, &options, &again);
	CU_ASSERT_EQUAL(again.len, generated.len);
	CU_ASSERT_EQUAL(memcmp(again.data, generated.data, generated.len), 0);
	mime_buffer_free(&generated);
	mime_buffer_free(&again);
	mime_buffer_free(&a);
	mime_buffer_free(&b);
	mime_message_free(&first);
	mime_message_free(&second);
}

static void test_fixed_messages(void)
{
	static const char *const messages[] = {
		"Subject: plain\n\nbody\n",
		"From me Mon Jan 1 2024\nSubject: x\n\nno final newline",
		("Content-Type: multipart/mixed; boundary=b\n\npre\n\n--b\n\none\n\n--b\n"
		 "Content-Type: multipart/alternative; boundary=c\n\n--c\n\nin\n--c--\n\n--b--\nepi\n"),
		"Content-Type: message/rfc822\n\nSubject: inner\n\ninner body\n",
		"Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: a\n\nb\n--d--\n",
		"Content-Type: message/delivery-status\n\nA: 1\n\nB: 2\n",
		"Subject: folded\n value\nX: y\n\nbody\n",
	};
	for (size_t i = 0; i < sizeof(messages) / sizeof(messages[0]); i++)
		assert_round_trip(messages[i], strlen(messages[i]));
}

static unsigned int random_state = 1;

static unsigned int random_next(unsigned int bound)
{
	random_state = random_state * 1103515245u + 12345u;
	return (random_state >> 8) % bound;
}

static void random_part(struct mime_buffer *out, int depth, int *boundary_counter)
{
	static const char *const words[] = { "alpha", "beta", "From here", "--", "=3D", "x\ty" };
	unsigned int kind = depth >= 4 ? 0 : random_next(4);

	if (random_next(3) == 0)
		mime_buffer_printf(out, "X-Header-%u: value %u\n", random_next(100), random_next(100));
	if (kind == 1 || kind == 2) {
		int b = (*boundary_counter)++;
		mime_buffer_printf(out, "Content-Type: multipart/%s; boundary=\"bnd%d\"\n\n",
				   kind == 1 ? "mixed" : "digest", b);
		if (random_next(2))
			mime_buffer_append_str(out, "preamble text\n");
		unsigned int parts = 1 + random_next(3);
		for (unsigned int i = 0; i < parts; i++) {
			mime_buffer_printf(out, "--bnd%d\n", b);
			random_part(out, depth + 1, boundary_counter);
			mime_buffer_append_str(out, "\n");
		}
		mime_buffer_printf(out, "--bnd%d--\n", b);
		if (random_next(2))
			mime_buffer_append_str(out, "epilogue\n");
		return;
	}
	if (kind == 3) {
		mime_buffer_append_str(out, "Content-Type: message/rfc822\n\n");
		random_part(out, depth + 1, boundary_counter);
		return;
	}
	mime_buffer_append_str(out, "Content-Type: text/plain\n\n");
	unsigned int lines = random_next(4);
	for (unsigned int i = 0; i < lines; i++)
		mime_buffer_printf(out, "%s %u\n", words[random_next(6)], random_next(1000));
}

static void test_random_trees(void)
{
	for (int i = 0; i < ROUND_TRIP_RANDOM_MESSAGES; i++) {
		struct mime_buffer text = { 0 };
		int counter = 0;
		mime_buffer_append_str(&text, "Subject: random\n");
		random_part(&text, 0, &counter);
		assert_round_trip((char *)text.data, text.len);
		mime_buffer_free(&text);
	}
}

/* A multipart without a boundary, whose one part holds text. */
static struct mime_message *unbounded_multipart(const void *payload, size_t len)
{
	struct mime_message *root = mime_message_new();
	struct mime_message *part = mime_message_new();
	mime_message_set(root, "Content-Type", "multipart/mixed");
	mime_message_set_payload(part, payload, len, NULL);
	mime_message_attach(root, part);
	return root;
}

/* The boundary the generator invents for a multipart with this part. */
static unsigned long long invented_boundary(const void *payload, size_t len)
{
	struct mime_message *root = unbounded_multipart(payload, len);
	free(mime_message_as_string(root, 0, NULL));
	char *boundary = mime_message_get_boundary(root);
	unsigned long long number = 0;
	CU_ASSERT_EQUAL(sscanf(boundary, "===============%llu==", &number), 1);
	free(boundary);
	mime_message_free(&root);
	return number;
}

/* Generator._make_boundary's check: a boundary that occurs in a part is
   not used, even after a NUL in a binary part. The next boundary is
   foreseeable (the time and a counter), so a part can hold it. */
static void test_boundary_clash_after_nul(void)
{
	for (int attempt = 0; attempt < 5; attempt++) {
		time_t before = time(NULL);
		unsigned long long next = invented_boundary("x", 1) + 1;
		char payload[64];
		int len = snprintf(payload, sizeof(payload), "a%c===============%019llu==", '\0',
				   next);
		unsigned long long used = invented_boundary(payload, (size_t)len);
		if (time(NULL) != before)
			continue; /* the second changed: the guess may be stale */
		CU_ASSERT_NOT_EQUAL(used, next);
		CU_ASSERT_EQUAL(used, next + 1);
		return;
	}
	CU_FAIL("the clock ticked over in every attempt");
}

const char unit_suite_name[] = "mime-generator";
const struct unit_test unit_tests[] = {
	{ "round trip of fixed messages", test_fixed_messages },
	{ "round trip of random trees", test_random_trees },
	{ "an invented boundary avoids a clash after a NUL", test_boundary_clash_after_nul },
	{ NULL, NULL },
};
