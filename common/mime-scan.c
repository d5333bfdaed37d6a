/* SPDX-License-Identifier: MIT */
/* mime-scan: fast byte scans for line ends, 8, 16 or 32 bytes at a time. */
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

static inline int starts_special_line(unsigned char ch)
{
	return ch == '-' || ch == '\r' || ch == '\n';
}

/* Line ends in whole 16-byte blocks from the start of data, as long as
   every CR in them is followed by LF and no line that starts in them (or
   right after) starts with '-', CR or LF. Returns the length of the blocks
   taken; their LFs and CRs are added to *lf_r and *cr_r (a CR ending the
   last block is counted, its LF is not). */
static size_t scan_plain_blocks(const unsigned char *data, size_t len, size_t *lf_r, size_t *cr_r)
{
	size_t i = 0;
#ifdef __SSE2__
	const __m128i v_lf = _mm_set1_epi8('\n'), v_cr = _mm_set1_epi8('\r');
	const __m128i v_dash = _mm_set1_epi8('-'), zero = _mm_setzero_si128();
	size_t lf = 0, cr = 0;

	while (i + 17 <= len) {
		/* byte counters; flushed before one could wrap at 256 */
		__m128i lf_count = zero, cr_count = zero;
		size_t blocks = 0;
		for (; blocks < 255 && i + 17 <= len; blocks++, i += 16) {
			__m128i here = _mm_loadu_si128((const __m128i *)(const void *)(data + i));
			__m128i next = _mm_loadu_si128((const __m128i *)(const void *)(data + i + 1));
			__m128i lf_here = _mm_cmpeq_epi8(here, v_lf);
			__m128i cr_here = _mm_cmpeq_epi8(here, v_cr);
			__m128i lf_next = _mm_cmpeq_epi8(next, v_lf);
			__m128i special_next = _mm_or_si128(_mm_or_si128(lf_next, _mm_cmpeq_epi8(next, v_cr)),
							    _mm_cmpeq_epi8(next, v_dash));
			__m128i bad = _mm_or_si128(_mm_and_si128(lf_here, special_next),
						   _mm_andnot_si128(lf_next, cr_here));
			if (_mm_movemask_epi8(bad) != 0)
				break;
			lf_count = _mm_sub_epi8(lf_count, lf_here);
			cr_count = _mm_sub_epi8(cr_count, cr_here);
		}
		__m128i sums = _mm_sad_epu8(lf_count, zero);
		lf += (size_t)_mm_cvtsi128_si32(sums) + (size_t)_mm_extract_epi16(sums, 4);
		sums = _mm_sad_epu8(cr_count, zero);
		cr += (size_t)_mm_cvtsi128_si32(sums) + (size_t)_mm_extract_epi16(sums, 4);
		if (blocks < 255)
			break;
	}
	*lf_r = lf;
	*cr_r = cr;
#else
	(void)data;
	(void)len;
	*lf_r = *cr_r = 0;
#endif
	return i;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define SCAN_HAVE_AVX2 1
#include <immintrin.h>

/* scan_plain_blocks with 32-byte blocks, for CPUs that have AVX2. */
__attribute__((target("avx2")))
static size_t scan_plain_blocks_avx2(const unsigned char *data, size_t len, size_t *lf_r,
				     size_t *cr_r)
{
	const __m256i v_lf = _mm256_set1_epi8('\n'), v_cr = _mm256_set1_epi8('\r');
	const __m256i v_dash = _mm256_set1_epi8('-'), zero = _mm256_setzero_si256();
	size_t lf = 0, cr = 0, i = 0;

	while (i + 33 <= len) {
		__m256i lf_count = zero, cr_count = zero;
		size_t blocks = 0;
		for (; blocks < 255 && i + 33 <= len; blocks++, i += 32) {
			__m256i here = _mm256_loadu_si256((const __m256i *)(const void *)(data + i));
			__m256i next = _mm256_loadu_si256((const __m256i *)(const void *)(data + i + 1));
			__m256i lf_here = _mm256_cmpeq_epi8(here, v_lf);
			__m256i cr_here = _mm256_cmpeq_epi8(here, v_cr);
			__m256i lf_next = _mm256_cmpeq_epi8(next, v_lf);
			__m256i special_next = _mm256_or_si256(
				_mm256_or_si256(lf_next, _mm256_cmpeq_epi8(next, v_cr)),
				_mm256_cmpeq_epi8(next, v_dash));
			__m256i bad = _mm256_or_si256(_mm256_and_si256(lf_here, special_next),
						      _mm256_andnot_si256(lf_next, cr_here));
			if (!_mm256_testz_si256(bad, bad))
				break;
			lf_count = _mm256_sub_epi8(lf_count, lf_here);
			cr_count = _mm256_sub_epi8(cr_count, cr_here);
		}
		uint64_t sums[4];
		_mm256_storeu_si256((__m256i *)(void *)sums, _mm256_sad_epu8(lf_count, zero));
		lf += (size_t)(sums[0] + sums[1] + sums[2] + sums[3]);
		_mm256_storeu_si256((__m256i *)(void *)sums, _mm256_sad_epu8(cr_count, zero));
		cr += (size_t)(sums[0] + sums[1] + sums[2] + sums[3]);
		if (blocks < 255)
			break;
	}
	*lf_r = lf;
	*cr_r = cr;
	return i;
}
#endif

size_t mime_scan_body_lines(const unsigned char *data, size_t len, struct mime_scan_lines *lines_r)
{
	return mime_scan_body_lines_with(data, len, MIME_SCAN_BEST, lines_r);
}

size_t mime_scan_body_lines_with(const unsigned char *data, size_t len, enum mime_scan_path path,
				 struct mime_scan_lines *lines_r)
{
	size_t pos = 0;     /* the start of the line being looked at */
	size_t lf = 0, crlf = 0;
	int last_lf = 0, last_crlf = 0;

	if (len > 0 && !starts_special_line(data[0])) {
		size_t blocks = 0;
#ifdef SCAN_HAVE_AVX2
		if (path == MIME_SCAN_BEST && __builtin_cpu_supports("avx2"))
			blocks = scan_plain_blocks_avx2(data, len, &lf, &crlf);
		else
#endif
		if (path != MIME_SCAN_SCALAR)
			blocks = scan_plain_blocks(data, len, &lf, &crlf);
		if (blocks > 0 && data[blocks - 1] == '\r')
			crlf--;  /* its LF is in the line taken up again below */
		if (lf > 0) {
			pos = blocks;
			while (data[pos - 1] != '\n')
				pos--;
			last_lf = 1;
			last_crlf = pos >= 2 && data[pos - 2] == '\r';
		}
	}
	while (pos < len && !starts_special_line(data[pos])) {
		size_t end = pos + mime_scan_line_end(data + pos, len - pos);
		if (end == len || (data[end] == '\r' && end + 1 == len))
			break;  /* incomplete, or a CR whose LF may come next */
		size_t eol = data[end] == '\r' && data[end + 1] == '\n' ? 2 : 1;
		last_lf = data[end + eol - 1] == '\n';
		last_crlf = eol == 2;
		lf += (size_t)last_lf;
		crlf += (size_t)last_crlf;
		pos = end + eol;
	}
	lines_r->lf = lf;
	lines_r->crlf = crlf;
	lines_r->last_lf = last_lf;
	lines_r->last_crlf = last_crlf;
	return pos;
}
