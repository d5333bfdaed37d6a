/* SPDX-License-Identifier: MIT */
/* search-text: a message's text as Dovecot 2.3's BODY and TEXT keys search it, decoded and in casemap form. */
#ifndef IMAPCACHED_SEARCH_TEXT_H
#define IMAPCACHED_SEARCH_TEXT_H

#include "mime-buffer.h"

#include <stdbool.h>
#include <stddef.h>

/*
 * What Dovecot 2.3 searches without an fts plugin (lib-mail's
 * message-search.c and message-decoder.c, checked against it: doc/cache.md,
 * "Local SEARCH"), part by part, the match starting anew in each part:
 *   - TEXT: each header of each part (the message's, a MIME part's, a
 *     message/rfc822 part's message's) as its name in casemap form, the
 *     bytes from the name's end past the colon and the white space after
 *     it as they are, then the value unfolded, RFC 2047 decoded and in
 *     casemap form, then CR LF; and each part's body as BODY sees it;
 *   - BODY: the body of each part whose Content-Type is text/ or
 *     message/ anything (or missing: text/plain), never a multipart's preamble or
 *     epilogue; its Content-Transfer-Encoding undone (an unknown one: the
 *     body is skipped), its charset made UTF-8 (no charset: UTF-8), then
 *     in casemap form; HTML is searched as it is.
 * A key holds no CR or LF (search_string_prepare_key), so a match never
 * spans a line: the header lines and the body lines can be kept apart,
 * and a match found in either is the match Dovecot finds.
 *
 * search_text_extract gives up (-1) on what it can't vouch for, and the
 * SEARCH then goes upstream: a NUL, a bare CR, a header without a colon,
 * with a name that is not printable ASCII or a value only of white space,
 * a header block without its end, two Content-Type or
 * Content-Transfer-Encoding fields, a Content-Type that does not read as
 * type/subtype with token or quoted parameters (RFC 2231 ones included),
 * a multipart without a boundary, multipart/digest, a line starting with
 * "--" and a boundary that is not that boundary's line, nested
 * boundaries one of which starts with the other, a multipart without its
 * closing line, an encoded multipart or message/rfc822, quoted-printable
 * other than clean "=XX" (upper-case hex) and soft breaks or with white
 * space at a line's end, base64 other than clean, text that is not valid
 * UTF-8 in UTF-8 or US-ASCII, any other charset but ISO-8859-1 unless
 * the text is plain ASCII and the charset's name not one of a family
 * that reads ASCII otherwise (UTF-16, UTF-7, EBCDIC, HZ, ISO-2022...;
 * a charset no one knows is read as UTF-8 by Dovecot, so as ASCII
 * here), and parts nested deeper than SEARCH_TEXT_DEPTH_MAX.
 */

#define SEARCH_TEXT_DEPTH_MAX 20 /* MIME nesting read here; real mail nests 3 or 4 deep */

/* Appends the header lines (TEXT only) of a whole message (size bytes at
   message, BODY[] as stored) to *head and its body text (BODY and TEXT)
   to *body, each line ending in LF, parts apart. Returns 0, or -1 when
   the message is one Dovecot may read otherwise (*head and *body then
   hold part of it). */
int search_text_extract(const unsigned char *message, size_t size, struct mime_buffer *head,
			struct mime_buffer *body);

/* Whether text (len bytes from search_text_extract) holds needle (a key
   from search_string_prepare_key, not empty). */
bool search_text_contains(const unsigned char *text, size_t len, const struct mime_buffer *needle);

#endif
