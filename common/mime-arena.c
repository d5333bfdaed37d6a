/* SPDX-License-Identifier: MIT */
/* mime-arena: a bump allocator freed all at once, for the parts and fields a parser makes. */
#include "config.h"
#include "mime-arena.h"
#include "mime-buffer.h"

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN alignof(max_align_t)
/* The arena and its first chunk are one malloc of this size: enough for
   the tree of a typical message (a few parts, a few dozen headers). */
#define ARENA_FIRST_ALLOC 4096
/* Chunks double up to this size, so a huge message needs few of them. */
#define ARENA_CHUNK_MAX (256 * 1024)
/* A request over this size gets a chunk of its own, leaving the current
   chunk's free space for the small requests after it. */
#define ARENA_LARGE (ARENA_CHUNK_MAX / 4)

/* No request comes near this; past it, size arithmetic could overflow. */
#define ARENA_MAX_REQUEST (SIZE_MAX / 4)

/* Chunk ranges kept in the arena itself: a typical tree needs one or two. */
#define ARENA_INLINE_RANGES 8

struct arena_chunk {
	struct arena_chunk *next;
	unsigned char *start, *end; /* the usable bytes */
};

struct arena_range {
	uintptr_t start, end;
};

struct mime_arena {
	struct arena_chunk *chunks;     /* the bump chunk first */
	unsigned char *next, *limit;    /* free space in the bump chunk */
	size_t next_chunk_size, total;
	uintptr_t lent_start, lent_end;  /* mime_arena_lend's range */
	/* Every chunk's usable bytes in address order, so that owns is a
	   binary search however many chunks a huge message needed. */
	struct arena_range *ranges;
	size_t range_count, range_alloc;
	struct arena_range inline_ranges[ARENA_INLINE_RANGES];
	struct arena_chunk first;
};

static void arena_out_of_memory(size_t size)
{
	fprintf(stderr, "imapcache: out of memory allocating %zu bytes\n", size);
	abort();
}

static size_t align_up(size_t size)
{
	return (size + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
}

static unsigned char *align_pointer(unsigned char *ptr)
{
	return (unsigned char *)(((uintptr_t)ptr + ARENA_ALIGN - 1) & ~(uintptr_t)(ARENA_ALIGN - 1));
}

struct mime_arena *mime_arena_new(void)
{
	struct mime_arena *arena = mime_xmalloc(ARENA_FIRST_ALLOC);
	unsigned char *base = (unsigned char *)arena;

	memset(arena, 0, sizeof(*arena));
	arena->first.start = align_pointer(base + sizeof(*arena));
	arena->first.end = base + ARENA_FIRST_ALLOC;
	arena->chunks = &arena->first;
	arena->next = arena->first.start;
	arena->limit = arena->first.end;
	arena->next_chunk_size = ARENA_FIRST_ALLOC * 4;
	arena->total = ARENA_FIRST_ALLOC;
	arena->ranges = arena->inline_ranges;
	arena->range_alloc = ARENA_INLINE_RANGES;
	arena->ranges[0].start = (uintptr_t)arena->first.start;
	arena->ranges[0].end = (uintptr_t)arena->first.end;
	arena->range_count = 1;
	return arena;
}

void mime_arena_free(struct mime_arena **arena_p)
{
	struct mime_arena *arena = *arena_p;

	if (arena == NULL)
		return;
	struct arena_chunk *chunk = arena->chunks;
	while (chunk != NULL) {
		struct arena_chunk *next = chunk->next;
		if (chunk != &arena->first)
			free(chunk);
		chunk = next;
	}
	if (arena->ranges != arena->inline_ranges)
		free(arena->ranges);
	free(arena);
	*arena_p = NULL;
}

/* The index of the last range starting at or before p, or -1. */
static ptrdiff_t arena_range_before(const struct mime_arena *arena, uintptr_t p)
{
	size_t low = 0, high = arena->range_count;

	while (low < high) {
		size_t mid = low + (high - low) / 2;
		if (arena->ranges[mid].start <= p)
			low = mid + 1;
		else
			high = mid;
	}
	return (ptrdiff_t)low - 1;
}

static void arena_add_range(struct mime_arena *arena, const struct arena_chunk *chunk)
{
	if (arena->range_count == arena->range_alloc) {
		size_t grown = arena->range_alloc * 2;
		struct arena_range *ranges = mime_xmalloc(grown * sizeof(*ranges));
		memcpy(ranges, arena->ranges, arena->range_count * sizeof(*ranges));
		if (arena->ranges != arena->inline_ranges)
			free(arena->ranges);
		arena->ranges = ranges;
		arena->range_alloc = grown;
	}
	size_t at = (size_t)(arena_range_before(arena, (uintptr_t)chunk->start) + 1);
	memmove(arena->ranges + at + 1, arena->ranges + at,
		(arena->range_count - at) * sizeof(*arena->ranges));
	arena->ranges[at].start = (uintptr_t)chunk->start;
	arena->ranges[at].end = (uintptr_t)chunk->end;
	arena->range_count++;
}

static struct arena_chunk *arena_add_chunk(struct mime_arena *arena, size_t usable)
{
	size_t header = align_up(sizeof(struct arena_chunk));
	struct arena_chunk *chunk = mime_xmalloc(header + usable + ARENA_ALIGN);
	chunk->start = align_pointer((unsigned char *)chunk + header);
	chunk->end = chunk->start + usable;
	arena->total += header + usable + ARENA_ALIGN;
	arena_add_range(arena, chunk);
	return chunk;
}

/* A request too big for the bump chunk's free space. */
static void *arena_alloc_slow(struct mime_arena *arena, size_t size)
{
	if (size > ARENA_LARGE) {
		/* Its own chunk, behind the bump chunk. */
		struct arena_chunk *chunk = arena_add_chunk(arena, size);
		chunk->next = arena->chunks->next;
		arena->chunks->next = chunk;
		return chunk->start;
	}
	/* A request up to ARENA_LARGE may exceed the next chunk's size while
	   chunks are still small (16 KiB first). */
	size_t usable = arena->next_chunk_size < size ? size : arena->next_chunk_size;
	struct arena_chunk *chunk = arena_add_chunk(arena, usable);
	if (arena->next_chunk_size < ARENA_CHUNK_MAX)
		arena->next_chunk_size *= 2;
	chunk->next = arena->chunks;
	arena->chunks = chunk;
	arena->next = chunk->start + size;
	arena->limit = chunk->end;
	return chunk->start;
}

void *mime_arena_alloc(struct mime_arena *arena, size_t size)
{
	if (size > ARENA_MAX_REQUEST)
		arena_out_of_memory(size);
	size = align_up(size == 0 ? 1 : size);
	if ((size_t)(arena->limit - arena->next) < size)
		return arena_alloc_slow(arena, size);
	void *ptr = arena->next;
	arena->next += size;
	return ptr;
}

char *mime_arena_strndup(struct mime_arena *arena, const char *text, size_t len)
{
	char *copy = mime_arena_alloc(arena, len + 1);

	memcpy(copy, text, len);
	copy[len] = '\0';
	return copy;
}

void mime_arena_lend(struct mime_arena *arena, const void *data, size_t len)
{
	arena->lent_start = (uintptr_t)data;
	arena->lent_end = (uintptr_t)data + len;
}

int mime_arena_owns(const struct mime_arena *arena, const void *ptr)
{
	uintptr_t p = (uintptr_t)ptr;

	if (p >= arena->lent_start && p < arena->lent_end)
		return 1;
	ptrdiff_t at = arena_range_before(arena, p);
	return at >= 0 && p < arena->ranges[at].end;
}

size_t mime_arena_size(const struct mime_arena *arena)
{
	return arena->total;
}
