/* SPDX-License-Identifier: MIT */
/* cache-pages: the pages a checkpoint added to the store's file leave the page cache, but for the b-tree pages lookups walk. */
#include "config.h"
#include "cache-pages.h"

#include "cache-private.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* Page types that stay cached: interior index and table pages, index
   leaves (SQLite's file format, 1.6). A table leaf is 13; an overflow
   page and a free-list trunk page begin with the number of the next,
   whose first byte is 0 in a file under 256 GiB of 16 KiB pages. */
#define PAGE_INTERIOR_INDEX 2
#define PAGE_INTERIOR_TABLE 5
#define PAGE_LEAF_INDEX 10

struct cache_pages_run {
	off_t from, to;
};

struct cache_pages {
	int file;
	off_t looked_to;                /* the file's pages before this were looked at */
	struct cache_pages_run *runs;   /* the last look's runs, advised once */
	size_t count, capacity;
};

struct cache_pages *cache_pages_open(const char *path)
{
	struct cache_pages *pages = calloc(1, sizeof(*pages));
	struct stat st;

	if (pages == NULL)
		return NULL;
	pages->file = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (pages->file < 0 || fstat(pages->file, &st) != 0) {
		cache_pages_close(&pages);
		return NULL;
	}
	pages->looked_to = st.st_size;
	/* it reads one byte a page: no readahead of what was dropped */
	(void)posix_fadvise(pages->file, 0, 0, POSIX_FADV_RANDOM);
	return pages;
}

void cache_pages_close(struct cache_pages **pagesp)
{
	struct cache_pages *pages = *pagesp;

	if (pages == NULL)
		return;
	*pagesp = NULL;
	if (pages->file >= 0)
		close(pages->file);
	free(pages->runs);
	free(pages);
}

static bool cache_pages_stays(int file, off_t offset)
{
	unsigned char type = 0;

	if (pread(file, &type, 1, offset) != 1)
		return true;
	return type == PAGE_INTERIOR_INDEX || type == PAGE_INTERIOR_TABLE || type == PAGE_LEAF_INDEX;
}

static void cache_pages_advise(int file, struct cache_pages_run run)
{
	(void)posix_fadvise(file, run.from, run.to - run.from, POSIX_FADV_DONTNEED);
}

/* Advises run away now, and keeps it for the next checkpoint's advice
   (not when there is no memory for it: then once only). */
static void cache_pages_drop(struct cache_pages *pages, struct cache_pages_run run)
{
	cache_pages_advise(pages->file, run);
	if (pages->count == pages->capacity) {
		size_t capacity = pages->capacity ? pages->capacity * 2 : 64;
		struct cache_pages_run *grown = realloc(pages->runs, capacity * sizeof(*grown));

		if (grown == NULL)
			return;
		pages->runs = grown;
		pages->capacity = capacity;
	}
	pages->runs[pages->count++] = run;
}

void cache_pages_checkpointed(struct cache_pages *pages)
{
	struct cache_pages_run run = { -1, -1 };
	struct stat st;
	off_t offset;

	for (size_t i = 0; i < pages->count; i++)
		cache_pages_advise(pages->file, pages->runs[i]);
	pages->count = 0;
	if (fstat(pages->file, &st) != 0)
		return;
	if (pages->looked_to > st.st_size) /* an incremental vacuum cut the file */
		pages->looked_to = st.st_size;
	offset = pages->looked_to > CACHE_PAGE_SIZE ? pages->looked_to : CACHE_PAGE_SIZE; /* page 1: the header */
	for (; offset + CACHE_PAGE_SIZE <= st.st_size; offset += CACHE_PAGE_SIZE) {
		if (!cache_pages_stays(pages->file, offset)) {
			run.from = run.from < 0 ? offset : run.from;
			continue;
		}
		if (run.from >= 0) {
			run.to = offset;
			cache_pages_drop(pages, run);
		}
		run.from = -1;
	}
	if (run.from >= 0) {
		run.to = offset;
		cache_pages_drop(pages, run);
	}
	pages->looked_to = offset;
}
