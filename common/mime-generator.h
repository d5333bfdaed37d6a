/* SPDX-License-Identifier: MIT */
/* mime-generator: writes a mime_message tree back as bytes (email.generator.Generator). */
#ifndef IMAPCACHE_MIME_GENERATOR_H
#define IMAPCACHE_MIME_GENERATOR_H

#include <stddef.h>

#include "mime-buffer.h"
#include "mime-message.h"

struct mime_generator_options {
	int unixfrom;          /* write the envelope line ("From nobody ..." when unset) */
	int mangle_from;       /* body lines starting "From " get a '>' */
	size_t max_header_len; /* fold unfolded header lines longer than this; 0: never */
	const char *linesep;   /* every line end is written as this; NULL is "\n" */
};

/* Appends the message to out as Python's Generator.flatten does: headers
   in order, a blank line, the body (multipart: preamble, boundaries, parts,
   epilogue; message/rfc822: the enclosed message). A multipart without a
   boundary gets a new one ("===============N==") set on the message. */
void mime_generator_write(struct mime_message *message,
			  const struct mime_generator_options *options, struct mime_buffer *out);

#endif
