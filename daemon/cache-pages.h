/* SPDX-License-Identifier: MIT */
/* cache-pages: the pages a checkpoint added to the store's file leave the page cache, but for the b-tree pages lookups walk. */
#ifndef IMAPCACHED_CACHE_PAGES_H
#define IMAPCACHED_CACHE_PAGES_H

/*
 * A fill of bodies writes each of their bytes twice: to the WAL, whose
 * pages are the same 16 MiB over and over (cache-worker.h), and then,
 * at each checkpoint, into the store's file, where a warm of 10,000
 * messages adds 300 MB of page cache. Few of those bodies are read again
 * soon, and on any machine that much page cache crowds out what else is
 * cached; on a VM whose free memory goes back to its host (the one this
 * was measured on: 3 ms a MB to touch a page for the first time) the new
 * pages cost more than the rest of the fill: the worker's checkpoints
 * spent 37% of a warm's CPU there.
 *
 * So after each checkpoint the pages it added to the file leave the page
 * cache (POSIX_FADV_DONTNEED), and their memory is what the next
 * checkpoint's pages are made of, except for the pages every lookup
 * walks: interior b-tree pages, and the leaves of indexes and of WITHOUT
 * ROWID tables (messages and every other table of the store's but
 * body_chunks and the text index's). A page's type is its first byte
 * (SQLite's file format, 1.6). Only clean pages can be dropped, and a
 * checkpoint syncs the file only when no commit came while it ran (never
 * during a fill): the first advice starts their writeback, and the next
 * checkpoint's advises them again, when they are clean. A body read
 * later comes from the disk.
 *
 * Used by the store's worker thread alone (one per store).
 */

struct cache_pages;

/* Opens path (the store's file) read-only; what it holds now stays as it
   is. NULL when it can't be opened (or no memory): nothing is dropped. */
struct cache_pages *cache_pages_open(const char *path);

/* A checkpoint put frames in the file: the pages it added leave the page
   cache, and those the checkpoint before added are advised again. */
void cache_pages_checkpointed(struct cache_pages *pages);

/* NULL is fine. */
void cache_pages_close(struct cache_pages **pages);

#endif
