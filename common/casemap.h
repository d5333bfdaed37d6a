/* SPDX-License-Identifier: MIT */
/* casemap: i;unicode-casemap (RFC 5051) in the form Dovecot 2.3 compares SEARCH strings in. */
#ifndef IMAPCACHE_CASEMAP_H
#define IMAPCACHE_CASEMAP_H

#include "mime-buffer.h"

#include <stddef.h>

/*
 * Dovecot 2.3's uni_utf8_to_decomposed_titlecase, which is what its
 * SEARCH compares (the key and the text each mapped, then a substring
 * match), is not RFC 5051's full form. Character by character:
 *   1. the simple titlecase mapping (UnicodeData's field 14: "ß" stays
 *      "ß", "é" becomes "É");
 *   2. a Hangul syllable becomes its jamo;
 *   3. otherwise one level of decomposition, canonical or compatibility
 *      ("É" becomes "E" + U+0301, so "é" matches "e" + U+0301; "ﬁ"
 *      becomes "fi", still lower case; NBSP a space), the multi-character
 *      ones only in the BMP, and none for a character whose field 14 is
 *      set (the titlecase digraph "ǅ" stays);
 *   4. one level only: "ǻ" becomes "Å" + U+0301, whose "Å" is not
 *      decomposed again, so it does not match "a" + U+030A + U+0301.
 * The tables are libunistring's (its Unicode version may be newer than
 * the one Dovecot was built with: a character assigned since then may
 * map differently).
 */

/* Appends the casemap form of len bytes of UTF-8 at text to out. Returns
   0, or -1 when the text is not strictly valid UTF-8 (then each invalid
   byte is appended as one U+FFFD, never two in a row, as Dovecot does,
   though Dovecot takes some sequences strict UTF-8 refuses: surrogates,
   code points past U+10FFFF; a caller that must match Dovecot exactly
   gives up on -1). */
int casemap_append(const void *text, size_t len, struct mime_buffer *out);

#endif
