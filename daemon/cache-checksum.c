/* SPDX-License-Identifier: MIT */
/* cache-checksum: XXH64, written from its specification. */
#include "config.h"
#include "cache-checksum.h"

#include <endian.h>
#include <string.h>

#define XXH_PRIME64_1 0x9E3779B185EBCA87ULL
#define XXH_PRIME64_2 0xC2B2AE3D27D4EB4FULL
#define XXH_PRIME64_3 0x165667B19E3779F9ULL
#define XXH_PRIME64_4 0x85EBCA77C2B2AE63ULL
#define XXH_PRIME64_5 0x27D4EB2F165667C5ULL
#define XXH_STRIPE 32 /* bytes the four accumulators take per step */

static inline uint64_t checksum_rotl(uint64_t x, unsigned int r)
{
	return (x << r) | (x >> (64 - r));
}

/* Little-endian reads, whatever the host's order (one load each: a byte
   loop is not merged by the compiler, and cost ten times as much). */
static inline uint64_t checksum_read64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

static inline uint64_t checksum_read32(const unsigned char *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static inline uint64_t checksum_round(uint64_t acc, uint64_t input)
{
	acc += input * XXH_PRIME64_2;
	acc = checksum_rotl(acc, 31);
	return acc * XXH_PRIME64_1;
}

static inline uint64_t checksum_merge(uint64_t acc, uint64_t value)
{
	acc ^= checksum_round(0, value);
	return acc * XXH_PRIME64_1 + XXH_PRIME64_4;
}

/* The four accumulators over the whole stripes of p; advances *p. */
static uint64_t checksum_stripes(const unsigned char **p, const unsigned char *end)
{
	uint64_t v1 = XXH_PRIME64_1 + XXH_PRIME64_2;
	uint64_t v2 = XXH_PRIME64_2;
	uint64_t v3 = 0;
	uint64_t v4 = 0 - XXH_PRIME64_1;
	uint64_t h;

	while (end - *p >= XXH_STRIPE) {
		v1 = checksum_round(v1, checksum_read64(*p));
		v2 = checksum_round(v2, checksum_read64(*p + 8));
		v3 = checksum_round(v3, checksum_read64(*p + 16));
		v4 = checksum_round(v4, checksum_read64(*p + 24));
		*p += XXH_STRIPE;
	}
	h = checksum_rotl(v1, 1) + checksum_rotl(v2, 7) + checksum_rotl(v3, 12) + checksum_rotl(v4, 18);
	h = checksum_merge(h, v1);
	h = checksum_merge(h, v2);
	h = checksum_merge(h, v3);
	return checksum_merge(h, v4);
}

uint64_t cache_checksum(const void *data, size_t size)
{
	const unsigned char *p = data;
	const unsigned char *end = p + size;
	uint64_t h;

	if (size == 0)
		p = end = (const unsigned char *)"";
	h = size >= XXH_STRIPE ? checksum_stripes(&p, end) : XXH_PRIME64_5;
	h += (uint64_t)size;
	for (; end - p >= 8; p += 8) {
		h ^= checksum_round(0, checksum_read64(p));
		h = checksum_rotl(h, 27) * XXH_PRIME64_1 + XXH_PRIME64_4;
	}
	if (end - p >= 4) {
		h ^= checksum_read32(p) * XXH_PRIME64_1;
		h = checksum_rotl(h, 23) * XXH_PRIME64_2 + XXH_PRIME64_3;
		p += 4;
	}
	for (; p < end; p++) {
		h ^= *p * XXH_PRIME64_5;
		h = checksum_rotl(h, 11) * XXH_PRIME64_1;
	}
	h ^= h >> 33;
	h *= XXH_PRIME64_2;
	h ^= h >> 29;
	h *= XXH_PRIME64_3;
	h ^= h >> 32;
	return h;
}
