/* SPDX-License-Identifier: MIT */
/* mime-scan: fast byte scans for line ends, eight bytes at a time. */
#include "config.h"
#include "mime-scan.h"

#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define SCAN_LOW7 UINT64_C(0x7f7f7f7f7f7f7f7f)
#define SCAN_ONES UINT64_C(0x0101010101010101)

/* The high bit of each byte of word that equals byte (exact, no false
   positives), the rest zero. */
static inline uint64_t byte_mask(uint64_t word, unsigned char byte)
{
	uint64_t x = word ^ (SCAN_ONES * byte);
	uint64_t t = (x & SCAN_LOW7) + SCAN_LOW7;
	return ~(t | x | SCAN_LOW7);
}

/* How many bytes of a byte_mask result are set (without a popcount
   instruction, which the baseline x86-64 target lacks). */
static inline size_t mask_count(uint64_t mask)
{
	return (size_t)(((mask >> 7) * SCAN_ONES) >> 56);
}

static inline uint64_t load_word(const unsigned char *data)
{
	uint64_t word;
	memcpy(&word, data, sizeof(word));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	word = __builtin_bswap64(word);
#endif
	return word;
}

size_t mime_scan_line_end(const unsigned char *data, size_t len)
{
	size_t i = 0;

#ifdef __SSE2__
	const __m128i lf = _mm_set1_epi8('\n'), cr = _mm_set1_epi8('\r');
	for (; i + 16 <= len; i += 16) {
		__m128i chunk = _mm_loadu_si128((const __m128i *)(const void *)(data + i));
		int mask = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(chunk, lf),
							  _mm_cmpeq_epi8(chunk, cr)));
		if (mask != 0)
			return i + (size_t)__builtin_ctz((unsigned int)mask);
	}
#endif
	for (; i + 8 <= len; i += 8) {
		uint64_t word = load_word(data + i);
		uint64_t mask = byte_mask(word, '\n') | byte_mask(word, '\r');
		if (mask != 0)
			return i + (size_t)(__builtin_ctzll(mask) / 8);
	}
	for (; i < len; i++)
		if (data[i] == '\n' || data[i] == '\r')
			return i;
	return len;
}

void mime_scan_count_lines(const unsigned char *data, size_t len, int prev_cr,
			   size_t *lf_r, size_t *crlf_r)
{
	size_t lf = 0, crlf = 0, i = 0;
	uint64_t carry = prev_cr ? 0x80 : 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t word = load_word(data + i);
		uint64_t lf_mask = byte_mask(word, '\n');
		uint64_t cr_mask = byte_mask(word, '\r');
		lf += mask_count(lf_mask);
		crlf += mask_count(lf_mask & ((cr_mask << 8) | carry));
		carry = cr_mask >> 56;
	}
	int last_cr = carry != 0;
	for (; i < len; i++) {
		if (data[i] == '\n') {
			lf++;
			if (last_cr)
				crlf++;
		}
		last_cr = data[i] == '\r';
	}
	*lf_r = lf;
	*crlf_r = crlf;
}
