/* SPDX-License-Identifier: MIT */
/* Unit tests for common/mime-buffer: appends across growth, truncation, numbers, printf, steal. */
#include "config.h"
#include "unit.h"
#include "mime-buffer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Pieces of every length from 0 to 299 appended in turn: each lands
   after the last, through every growth step, and a NUL always follows. */
static void test_append_across_growth(void)
{
	struct mime_buffer buffer = { 0 };
	unsigned char *expected = malloc(300 * 300);
	unsigned char piece[300];
	size_t total = 0;

	for (size_t len = 0; len < 300; len++) {
		for (size_t i = 0; i < len; i++)
			piece[i] = (unsigned char)(len + i);
		mime_buffer_append(&buffer, piece, len);
		memcpy(expected + total, piece, len);
		total += len;
		CU_ASSERT_EQUAL(buffer.len, total);
		CU_ASSERT(buffer.alloc > buffer.len);
		CU_ASSERT_EQUAL(buffer.data == NULL ? 0 : buffer.data[buffer.len], 0);
		mime_buffer_append_byte(&buffer, (unsigned char)len);
		expected[total++] = (unsigned char)len;
		CU_ASSERT_EQUAL(buffer.data[buffer.len], 0);
	}
	CU_ASSERT(memcmp(buffer.data, expected, total) == 0);
	free(expected);
	mime_buffer_free(&buffer);
	CU_ASSERT_PTR_NULL(buffer.data);
	CU_ASSERT_EQUAL(buffer.len + buffer.alloc, 0);
}

/* An append that exactly fills the room left (the inline path's edge). */
static void test_append_exact_fit(void)
{
	struct mime_buffer buffer = { 0 };

	mime_buffer_append(&buffer, "x", 1);
	size_t room = buffer.alloc - buffer.len - 1;
	char *fill = malloc(room + 1);
	memset(fill, 'y', room + 1);
	mime_buffer_append(&buffer, fill, room);
	CU_ASSERT_EQUAL(buffer.len + 1, buffer.alloc);
	CU_ASSERT_EQUAL(buffer.data[buffer.len], 0);
	mime_buffer_append(&buffer, fill, 1); /* no room for its NUL: grows */
	CU_ASSERT(buffer.alloc > buffer.len);
	CU_ASSERT_EQUAL(buffer.len, room + 2);
	CU_ASSERT_EQUAL(buffer.data[0], 'x');
	CU_ASSERT_EQUAL(buffer.data[buffer.len - 1], 'y');
	CU_ASSERT_EQUAL(buffer.data[buffer.len], 0);
	free(fill);
	mime_buffer_free(&buffer);
}

static void test_truncate_reset_steal(void)
{
	struct mime_buffer buffer = { 0 };

	mime_buffer_append_str(&buffer, "hello, world");
	mime_buffer_truncate(&buffer, 5);
	CU_ASSERT_STRING_EQUAL((char *)buffer.data, "hello");
	mime_buffer_truncate(&buffer, 50); /* past the end: nothing changes */
	CU_ASSERT_EQUAL(buffer.len, 5);
	size_t alloc = buffer.alloc;
	mime_buffer_reset(&buffer);
	CU_ASSERT_EQUAL(buffer.len, 0);
	CU_ASSERT_EQUAL(buffer.alloc, alloc);
	CU_ASSERT_STRING_EQUAL((char *)buffer.data, "");
	mime_buffer_append_str(&buffer, "kept");
	size_t len = 0;
	char *stolen = mime_buffer_steal(&buffer, &len);
	CU_ASSERT_STRING_EQUAL(stolen, "kept");
	CU_ASSERT_EQUAL(len, 4);
	CU_ASSERT_PTR_NULL(buffer.data);
	free(stolen);
	stolen = mime_buffer_steal(&buffer, &len); /* an empty buffer gives "" */
	CU_ASSERT_STRING_EQUAL(stolen, "");
	CU_ASSERT_EQUAL(len, 0);
	free(stolen);
}

static void test_numbers_and_printf(void)
{
	struct mime_buffer buffer = { 0 };

	mime_buffer_append_uint(&buffer, 0);
	mime_buffer_append_byte(&buffer, ' ');
	mime_buffer_append_uint(&buffer, 1234567890);
	mime_buffer_append_byte(&buffer, ' ');
	mime_buffer_append_uint(&buffer, SIZE_MAX);
	char expected[64];
	snprintf(expected, sizeof(expected), "0 1234567890 %zu", (size_t)SIZE_MAX);
	CU_ASSERT_STRING_EQUAL((char *)buffer.data, expected);
	mime_buffer_reset(&buffer);
	/* printf past its 256-byte stack buffer */
	char long_text[1000];
	memset(long_text, 'z', sizeof(long_text) - 1);
	long_text[sizeof(long_text) - 1] = '\0';
	mime_buffer_printf(&buffer, "<%s>%d", long_text, 42);
	CU_ASSERT_EQUAL(buffer.len, 1 + 999 + 1 + 2);
	CU_ASSERT_EQUAL(buffer.data[0], '<');
	CU_ASSERT_STRING_EQUAL((char *)buffer.data + 1000, ">42");
	mime_buffer_free(&buffer);
}

const char unit_suite_name[] = "mime-buffer";
const struct unit_test unit_tests[] = {
	{ "appends of every length across growth", test_append_across_growth },
	{ "an append that exactly fills the buffer", test_append_exact_fit },
	{ "truncate, reset and steal", test_truncate_reset_steal },
	{ "decimal numbers and printf", test_numbers_and_printf },
	{ NULL, NULL },
};
