/* SPDX-License-Identifier: MIT */
/* mime-encoded-word: RFC 2047 encoded words in header values, decoded and encoded. */
#ifndef IMAPCACHE_MIME_ENCODED_WORD_H
#define IMAPCACHE_MIME_ENCODED_WORD_H

#include "mime-buffer.h"

#define MIME_ENCODED_WORD_MAX 75 /* RFC 2047 2: an encoded word is at most 75 characters */

/* Decodes a header value to UTF-8 text, as str(make_header(decode_header(v)))
   does: line breaks of folds removed, each =?charset[*lang]?B|Q?text?= word
   decoded and converted from its charset (invalid bytes as U+FFFD, unknown
   charsets as Latin-1), white space between two adjacent encoded words
   dropped. Bytes outside encoded words that are not valid UTF-8 become
   U+FFFD. Returns how many encoded words were decoded. Appends to out. */
size_t mime_encoded_word_decode(const char *value, size_t len, struct mime_buffer *out);

enum mime_encoded_word_encoding {
	MIME_ENCODED_WORD_B,
	MIME_ENCODED_WORD_Q,
};

/* Encodes UTF-8 text as encoded words in charset (converted with iconv;
   utf-8 when the charset can't hold the text), each at most
   MIME_ENCODED_WORD_MAX characters and never splitting a character,
   separated by linesep and a space. Appends to out. */
void mime_encoded_word_encode(const char *text, size_t len, const char *charset,
			      enum mime_encoded_word_encoding encoding, const char *linesep,
			      struct mime_buffer *out);

#endif
