/* SPDX-License-Identifier: MIT */
/* mime-codec: base64, quoted-printable and uuencode, with Python's fallbacks. */
#ifndef IMAPCACHE_MIME_CODEC_H
#define IMAPCACHE_MIME_CODEC_H

#include "mime-buffer.h"

/* What base64 decoding found; each value names the defects to record, as
   Python's email._encoded_words.decode_b reports them. */
enum mime_base64_result {
	MIME_BASE64_OK,
	MIME_BASE64_BAD_PADDING,              /* decoded after adding '=' */
	MIME_BASE64_BAD_CHARACTERS,           /* decoded, skipping non-alphabet bytes */
	MIME_BASE64_BAD_CHARACTERS_AND_PADDING,
	MIME_BASE64_BAD_LENGTH,               /* undecodable: output is the input */
};

/* Decodes base64 the way Python's decode_b does after line ends are
   removed: strict first (only when clean), then lenient, then lenient with
   padding added, finally giving back the input as it is. CR and LF in the
   input are dropped first. Appends to out. */
enum mime_base64_result mime_codec_base64_decode(const void *input, size_t len,
						 struct mime_buffer *out);

/* Appends base64 of input; with line_len > 0, a line end (linesep) after
   every line_len characters and at the end (binascii.b2a_base64 style). */
void mime_codec_base64_encode(const void *input, size_t len, size_t line_len,
			      const char *linesep, struct mime_buffer *out);

/* Decodes quoted-printable as binascii.a2b_qp does: "=XX" in either case,
   "=" + line end is a soft break, a stray "=" is kept; with header set, '_'
   is a space (RFC 2047 Q). Appends to out. */
void mime_codec_qp_decode(const void *input, size_t len, int header,
			  struct mime_buffer *out);

/* Encodes input as quoted-printable body text (RFC 2045 6.7): lines of at
   most 76 characters with soft breaks, trailing white space encoded; line
   ends in the input (LF or CRLF) are kept as linesep. */
void mime_codec_qp_encode(const void *input, size_t len, const char *linesep,
			  struct mime_buffer *out);

/* Encodes for an RFC 2047 Q word: letters, digits and "!*+-/" kept, space
   as '_', the rest as =XX. */
void mime_codec_q_encode(const void *input, size_t len, struct mime_buffer *out);

/* Decodes uuencoded data between "begin MODE NAME" and "end", as Python's
   email.message does (a line with trailing garbage is decoded up to its
   length byte). Returns 0 (also when the data stops before "end": what
   was decoded is kept, as email.message does since Python 3.12), or -1
   with out untouched when there is no valid begin line, an empty line
   comes before "end" or a line can't be decoded. */
int mime_codec_uu_decode(const void *input, size_t len, struct mime_buffer *out);

#endif
