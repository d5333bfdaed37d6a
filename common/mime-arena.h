/* SPDX-License-Identifier: MIT */
/* mime-arena: a bump allocator freed all at once, for the parts and fields a parser makes. */
#ifndef IMAPCACHE_MIME_ARENA_H
#define IMAPCACHE_MIME_ARENA_H

#include <stddef.h>

/* An arena hands out memory from a few large chunks and frees it only
   with the arena: a parsed message costs a handful of mallocs instead of
   one per header, part and array. Nothing in it is freed on its own;
   mime_arena_owns tells its pointers from malloc'ed ones. Allocation
   aborts only when memory is exhausted (tier 2). */
struct mime_arena;

struct mime_arena *mime_arena_new(void);
/* Frees every chunk; *arena becomes NULL. */
void mime_arena_free(struct mime_arena **arena);

/* size bytes aligned for any type, uninitialised. */
void *mime_arena_alloc(struct mime_arena *arena, size_t size);
/* A copy of text[0..len) with a NUL after it. */
char *mime_arena_strndup(struct mime_arena *arena, const char *text, size_t len);

/* Records that things in the arena point into data, which the caller
   keeps alive: mime_arena_owns counts it as the arena's (never freed). */
void mime_arena_lend(struct mime_arena *arena, const void *data, size_t len);

/* Whether ptr points into memory this arena handed out or was lent. */
int mime_arena_owns(const struct mime_arena *arena, const void *ptr);

/* Bytes the arena's chunks hold (used or not): for tests and benchmarks. */
size_t mime_arena_size(const struct mime_arena *arena);

#endif
