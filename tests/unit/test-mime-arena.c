/* SPDX-License-Identifier: MIT */
/* Unit tests for common/mime-arena: alignment, ownership, lending, large requests. */
#include "config.h"
#include "unit.h"
#include "mime-arena.h"

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void test_alignment_and_distinct(void)
{
	struct mime_arena *arena = mime_arena_new();
	unsigned char *previous = NULL;

	for (size_t size = 0; size < 300; size++) {
		unsigned char *ptr = mime_arena_alloc(arena, size);
		CU_ASSERT_EQUAL((uintptr_t)ptr % alignof(max_align_t), 0);
		/* Every byte is usable: ASan would flag a write past a chunk. */
		memset(ptr, 0xa5, size);
		if (previous != NULL)
			CU_ASSERT(ptr != previous);
		previous = ptr;
	}
	mime_arena_free(&arena);
	CU_ASSERT_PTR_NULL(arena);
	mime_arena_free(&arena); /* NULL is fine */
}

static void test_owns(void)
{
	struct mime_arena *arena = mime_arena_new();
	char *heap = malloc(16);
	char stack[16];
	char *first = mime_arena_strndup(arena, "hello world", 5);

	CU_ASSERT_STRING_EQUAL(first, "hello");
	CU_ASSERT_TRUE(mime_arena_owns(arena, first));
	CU_ASSERT_TRUE(mime_arena_owns(arena, first + 5));
	CU_ASSERT_FALSE(mime_arena_owns(arena, heap));
	CU_ASSERT_FALSE(mime_arena_owns(arena, stack));
	/* Pointers from later chunks and from a large request of its own. */
	char *pointers[2000];
	for (size_t i = 0; i < 2000; i++)
		pointers[i] = mime_arena_strndup(arena, "0123456789abcdef0123456789", 26);
	char *large = mime_arena_alloc(arena, 1024 * 1024);
	memset(large, 0, 1024 * 1024);
	for (size_t i = 0; i < 2000; i++)
		CU_ASSERT_TRUE(mime_arena_owns(arena, pointers[i]));
	CU_ASSERT_STRING_EQUAL(pointers[1999], "0123456789abcdef0123456789");
	CU_ASSERT_TRUE(mime_arena_owns(arena, large));
	CU_ASSERT_TRUE(mime_arena_owns(arena, large + 1024 * 1024 - 1));
	/* Small requests after the large one still come from a shared chunk. */
	char *after = mime_arena_alloc(arena, 8);
	CU_ASSERT_TRUE(mime_arena_owns(arena, after));
	CU_ASSERT(mime_arena_size(arena) >= 1024 * 1024 + 2000 * 26);
	CU_ASSERT(mime_arena_size(arena) < 4 * 1024 * 1024);
	free(heap);
	mime_arena_free(&arena);
}

static void test_lend(void)
{
	struct mime_arena *arena = mime_arena_new();
	char input[64] = "a message the caller keeps";
	char outside[8];

	CU_ASSERT_FALSE(mime_arena_owns(arena, input));
	mime_arena_lend(arena, input, 10);
	CU_ASSERT_TRUE(mime_arena_owns(arena, input));
	CU_ASSERT_TRUE(mime_arena_owns(arena, input + 9));
	CU_ASSERT_FALSE(mime_arena_owns(arena, input + 10));
	CU_ASSERT_FALSE(mime_arena_owns(arena, outside));
	mime_arena_free(&arena);
	/* The lent memory is the caller's: untouched by the arena's end. */
	CU_ASSERT_STRING_EQUAL(input, "a message the caller keeps");
}

/* Chunks grow, so a million small requests take few of them. */
static void test_many_small(void)
{
	struct mime_arena *arena = mime_arena_new();

	for (size_t i = 0; i < 1000000; i++)
		*(uint64_t *)mime_arena_alloc(arena, sizeof(uint64_t)) = i;
	size_t size = mime_arena_size(arena);
	CU_ASSERT(size >= 1000000 * 16);
	CU_ASSERT(size < 1000000 * 16 + 1024 * 1024);
	mime_arena_free(&arena);
}

/* Requests of every size class in a fixed pseudo-random order: each
   block is wholly usable (ASan flags a write past a chunk), owned, and
   overlaps no other (each keeps the pattern written into it). */
static void test_mixed_sizes(void)
{
	enum { BLOCKS = 600 };
	struct mime_arena *arena = mime_arena_new();
	unsigned char *blocks[BLOCKS];
	size_t sizes[BLOCKS];
	uint32_t state = 12345;

	for (size_t i = 0; i < BLOCKS; i++) {
		state = state * 1103515245u + 12345u;
		/* up to 2^18 bytes, most small: sizes between the chunk sizes
		   and the large-request bound are the ones that matter */
		size_t size = (state >> 8) % (1u << (1 + (state >> 27) % 18));
		blocks[i] = mime_arena_alloc(arena, size);
		sizes[i] = size;
		memset(blocks[i], (int)(i & 0xff), size);
		CU_ASSERT_TRUE(mime_arena_owns(arena, blocks[i]));
		if (size > 0)
			CU_ASSERT_TRUE(mime_arena_owns(arena, blocks[i] + size - 1));
	}
	for (size_t i = 0; i < BLOCKS; i++) {
		size_t bad = 0;
		for (size_t k = 0; k < sizes[i]; k++)
			bad += blocks[i][k] != (unsigned char)(i & 0xff);
		CU_ASSERT_EQUAL(bad, 0);
	}
	mime_arena_free(&arena);
}

/* Each size from just under to just over every power of two up to the
   large-request bound, in a fresh arena, so that each meets the chunk
   sizes of a young arena. */
static void test_sizes_at_chunk_edges(void)
{
	for (size_t bits = 4; bits <= 20; bits++) {
		for (size_t delta = 0; delta < 3; delta++) {
			size_t size = ((size_t)1 << bits) - 1 + delta;
			struct mime_arena *arena = mime_arena_new();
			unsigned char *small = mime_arena_alloc(arena, 100);
			unsigned char *block = mime_arena_alloc(arena, size);
			unsigned char *after = mime_arena_alloc(arena, 100);
			memset(small, 1, 100);
			memset(block, 2, size);
			memset(after, 3, 100);
			CU_ASSERT_EQUAL(small[99], 1);
			CU_ASSERT_EQUAL(block[0], 2);
			CU_ASSERT_EQUAL(block[size - 1], 2);
			CU_ASSERT_TRUE(mime_arena_owns(arena, block + size - 1));
			CU_ASSERT_TRUE(mime_arena_owns(arena, after + 99));
			mime_arena_free(&arena);
		}
	}
}

const char unit_suite_name[] = "mime-arena";
const struct unit_test unit_tests[] = {
	{ "allocations are aligned, distinct and usable", test_alignment_and_distinct },
	{ "owns tells arena pointers from others", test_owns },
	{ "lent memory counts as the arena's, never freed", test_lend },
	{ "a million small requests, few chunks", test_many_small },
	{ "mixed sizes: usable, owned, apart", test_mixed_sizes },
	{ "sizes at the chunk edges of a young arena", test_sizes_at_chunk_edges },
	{ NULL, NULL },
};
