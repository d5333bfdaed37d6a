/* SPDX-License-Identifier: MIT */
/* unit-imap: feeds IMAP input to a parser whole, byte by byte and split at every offset, and writes what it got, for the imap suites. */
#ifndef IMAPCACHE_UNIT_IMAP_H
#define IMAPCACHE_UNIT_IMAP_H

#include "imap-parser.h"

#include <stddef.h>

#define UNIT_IMAP_DUMP_MAX (256 * 1024) /* the largest transcript a test compares */

/* Called for each complete line; appends what it makes of the line to
   out (a transcript). The default, unit_imap_dump_line, writes the tree. */
typedef void unit_imap_line_fn(const struct imap_arg *line, char *out, size_t out_size,
			       void *context);

struct unit_imap_options {
	enum imap_parser_mode mode;
	const struct imap_parser_limits *limits; /* NULL: defaults */
	unit_imap_line_fn *line_callback;        /* NULL: unit_imap_dump_line */
	void *context;
	int stream_literals;                     /* set a literal callback that
						    records the streamed bytes */
};

/* Appends the printf-formatted text to the NUL-terminated out (size
   out_size), truncating what does not fit. */
void unit_imap_append(char *out, size_t out_size, const char *format, ...) __attribute__((format(printf, 3, 4)));
/* Appends count args as one list in unit_imap_dump_arg's form: "(a b)". */
void unit_imap_append_args(char *out, size_t out_size, const struct imap_arg *args, unsigned int count);

/* Appends a readable form of arg to out: atoms as is, NIL, "quoted",
   {n}"literal", ~{n} for literal8, {n+} non-sync, {n:streamed:<bytes>}
   for a streamed literal with the bytes the callback got, (lists), T"text",
   C"code". */
void unit_imap_dump_arg(const struct imap_arg *arg, char *out, size_t out_size);
void unit_imap_dump_line(const struct imap_arg *line, char *out, size_t out_size, void *context);

/* Feeds input in pieces of chunk bytes (0: whole) and writes the transcript:
   one "LINE <dump>\n" per line, "ANNOUNCED <n>\n" for a synchronizing
   literal (feeding goes on as if "+" was sent), "ERROR <NAME>\n" (then
   stops) and "NEED_MORE\n" if input ends inside a line. */
void unit_imap_transcript(const char *input, size_t len, const struct unit_imap_options *options,
			  size_t chunk, char *out, size_t out_size);
/* Same, split once at offset (first piece, then the rest). */
void unit_imap_transcript_split(const char *input, size_t len,
				const struct unit_imap_options *options, size_t split, char *out,
				size_t out_size);

/* Checks that input gives expected fed whole, one byte at a time, split at
   every offset, and in pieces of 2, 3, 7 and 64 bytes; and via an evbuffer.
   Reports each mismatch through CUnit with the way it was fed. */
void unit_imap_check(const char *input, size_t len, const struct unit_imap_options *options,
		     const char *expected);
/* For a NUL-terminated input in COMMAND or RESPONSE mode. */
void unit_imap_check_str(const char *input, enum imap_parser_mode mode, const char *expected);

#endif
