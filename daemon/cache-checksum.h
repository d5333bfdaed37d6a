/* SPDX-License-Identifier: MIT */
/* cache-checksum: the checksum each stored value carries, so that damage SQLite can't see is not served. */
#ifndef IMAPCACHED_CACHE_CHECKSUM_H
#define IMAPCACHED_CACHE_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/*
 * XXH64 (seed 0) of size bytes at data, as the xxHash specification
 * defines it (https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md).
 *
 * Why this one: SQLite checks no page's content, so the store checksums
 * every value it serves. The threat is damage (a flipped bit, a torn or
 * misplaced page), not an attacker, who could rewrite the checksum too:
 * a cryptographic hash buys nothing here and costs several times more.
 * XXH64 runs at several GB/s on one core (eight bytes per step, no
 * tables), finds every 1- to 3-bit flip and misses other damage with
 * probability 2^-64, and has published test vectors to prove this copy
 * right. CRC-32C would need the CPU's instruction to be as fast, and 32
 * bits miss one damaged value in 4 billion. The value is stored as
 * SQLite's signed 64-bit integer (cache_checksum_column).
 */
uint64_t cache_checksum(const void *data, size_t size);

/* The checksum as stored in an INTEGER column. */
static inline int64_t cache_checksum_column(const void *data, size_t size)
{
	return (int64_t)cache_checksum(data, size);
}

#endif
