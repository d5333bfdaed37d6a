/* SPDX-License-Identifier: MIT */
/* mime-charset: charset conversion with iconv, and email.charset's Charset. */
#ifndef IMAPCACHE_MIME_CHARSET_H
#define IMAPCACHE_MIME_CHARSET_H

#include "mime-buffer.h"

enum mime_charset_result {
	MIME_CHARSET_CONVERTED,       /* every byte was valid in the charset */
	MIME_CHARSET_REPLACED,        /* invalid sequences became U+FFFD */
	MIME_CHARSET_UNKNOWN,         /* iconv does not know the charset */
};

/* The length (1 to 4) of the well-formed UTF-8 sequence at the start of
   in (len >= 1), or 0 when it starts ill-formed: then *bad_r is how many
   bytes that start spans (the lead byte and the continuation bytes that
   fit it, at least 1), the bytes one U+FFFD replaces. */
size_t mime_charset_utf8_sequence(const unsigned char *in, size_t len, size_t *bad_r);

/* Converts len bytes in charset to UTF-8, appending to out; invalid
   sequences become U+FFFD (Python's errors='replace'). An unknown charset
   appends nothing and returns MIME_CHARSET_UNKNOWN. */
enum mime_charset_result mime_charset_to_utf8(const char *charset, const void *input,
					      size_t len, struct mime_buffer *out);
/* Converts UTF-8 text to charset. Returns 0, or -1 (out unchanged) when the
   charset is unknown or cannot represent the text. */
int mime_charset_from_utf8(const char *charset, const void *input, size_t len,
			   struct mime_buffer *out);
/* Appends each byte as the code point of the same value (Latin-1), as
   Python's surrogate-free fallbacks do. */
void mime_charset_latin1_to_utf8(const void *input, size_t len, struct mime_buffer *out);

/* How a charset is written in headers and bodies (email.charset). */
enum mime_charset_encoding {
	MIME_CHARSET_ENCODING_NONE,
	MIME_CHARSET_ENCODING_QP,
	MIME_CHARSET_ENCODING_BASE64,
	MIME_CHARSET_ENCODING_SHORTEST,
};

/* email.charset.Charset: names are lower-case; output_charset is where the
   body is converted to (iso-2022-jp for euc-jp, say) and equals
   input_charset when there is no conversion. */
struct mime_charset {
	char input_charset[64];
	char output_charset[64];
	enum mime_charset_encoding header_encoding;
	enum mime_charset_encoding body_encoding;
};

/* Fills charset_r for name with Python's table (us-ascii, the iso-8859
   family, utf-8, euc-jp, iso-2022-jp, ...; aliases such as latin_1 and
   ascii resolved; anything else: base64 headers and bodies). */
void mime_charset_init(struct mime_charset *charset_r, const char *name);
/* The Content-Transfer-Encoding name of the body encoding, or NULL. */
const char *mime_charset_body_encoding_name(const struct mime_charset *charset);

#endif
