/* SPDX-License-Identifier: MIT */
/* casemap: i;unicode-casemap (RFC 5051) in the form Dovecot 2.3 compares SEARCH strings in. */
#include "config.h"
#include "casemap.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unicase.h>
#include <uninorm.h>
#include <unictype.h>
#include <unistr.h>

#define CASEMAP_HANGUL_FIRST 0xac00 /* the precomposed syllables, decomposed by arithmetic (Unicode 3.12) */
#define CASEMAP_HANGUL_LAST 0xd7a3
#define CASEMAP_MULTI_LAST 0xffff   /* Dovecot applies multi-character decompositions in the BMP only */

static const unsigned char casemap_replacement[] = { 0xef, 0xbf, 0xbd }; /* U+FFFD */

/* Appends one code point as UTF-8. */
static void casemap_put(ucs4_t uc, struct mime_buffer *out)
{
	uint8_t bytes[6];
	int len = u8_uctomb(bytes, uc, sizeof(bytes));

	if (len > 0)
		mime_buffer_append(out, bytes, (size_t)len);
}

/* Appends U+FFFD unless out already ends with one. */
static void casemap_put_replacement(struct mime_buffer *out)
{
	if (out->len >= sizeof(casemap_replacement) &&
	    memcmp(out->data + out->len - sizeof(casemap_replacement), casemap_replacement,
		   sizeof(casemap_replacement)) == 0)
		return;
	mime_buffer_append(out, casemap_replacement, sizeof(casemap_replacement));
}

/* Appends the jamo of a Hangul syllable. */
static void casemap_put_hangul(ucs4_t uc, struct mime_buffer *out)
{
	unsigned int index = uc - CASEMAP_HANGUL_FIRST;
	unsigned int trailing = index % 28;

	casemap_put(0x1100 + index / (21 * 28), out);
	casemap_put(0x1161 + (index % (21 * 28)) / 28, out);
	if (trailing != 0)
		casemap_put(0x11a7 + trailing, out);
}

/* Appends the mapped form of one titlecased code point: its decomposition
   (one level, canonical or compatibility) where Dovecot's table has one,
   else itself. */
static void casemap_put_decomposed(ucs4_t uc, struct mime_buffer *out)
{
	ucs4_t parts[UC_DECOMPOSITION_MAX_LENGTH];
	int tag, count;

	if (uc >= CASEMAP_HANGUL_FIRST && uc <= CASEMAP_HANGUL_LAST) {
		casemap_put_hangul(uc, out);
		return;
	}
	/* Dovecot's table leaves out every character with a titlecase field:
	   after step 1 those are the ones whose field names themselves */
	if (uc_totitle(uc) != uc || uc_is_general_category(uc, UC_TITLECASE_LETTER)) {
		casemap_put(uc, out);
		return;
	}
	count = uc_decomposition(uc, &tag, parts);
	if (count <= 0 || (count > 1 && uc > CASEMAP_MULTI_LAST)) {
		casemap_put(uc, out);
		return;
	}
	for (int i = 0; i < count; i++)
		casemap_put(parts[i], out);
}

int casemap_append(const void *text, size_t len, struct mime_buffer *out)
{
	const uint8_t *p = text, *end = p + len;
	int result = 0;

	while (p < end) {
		ucs4_t uc;
		int bytes;

		if (*p < 0x80) {
			/* ASCII, most of every header: its titlecase is its upper
			   case, and none of it decomposes (uc_totitle and the
			   lookups cost a call each, 12% of a SUBJECT search) */
			mime_buffer_append_byte(out, *p >= 'a' && *p <= 'z' ? (uint8_t)(*p - 'a' + 'A') : *p);
			p++;
			continue;
		}
		bytes = u8_mbtoucr(&uc, p, (size_t)(end - p));

		if (bytes <= 0) {
			result = -1;
			casemap_put_replacement(out);
			p++;
			continue;
		}
		p += bytes;
		casemap_put_decomposed(uc_totitle(uc), out);
	}
	return result;
}
