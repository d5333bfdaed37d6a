/* SPDX-License-Identifier: MIT */
/* imap-dump: the stdin loop the protocol dump tools share: small reads fed to the tokenizer, each event handed on (header-only). */
#ifndef IMAP_DUMP_H
#define IMAP_DUMP_H

#include "imap-parser.h"

#include <stdbool.h>
#include <stdio.h>

#define IMAP_DUMP_READ_MAX 4096 /* small reads, so lines and literals span them */

/* A complete line is in parser (imap_parser_get_line). */
typedef void imap_dump_line_fn(struct imap_parser *parser, void *context);
/* parser stopped at a synchronizing literal (imap_parser_get_literal_size). */
typedef void imap_dump_literal_fn(struct imap_parser *parser, void *context);

/* Reads stdin in pieces of read_size bytes (at most IMAP_DUMP_READ_MAX),
   feeds them to parser and calls line for each complete line and literal
   for each literal announcement (NULL: an announcement is an error). A
   tokenizer error is printed as "ERROR tokenizer MESSAGE" and ends the
   loop: returns false then, true at the end of the input. */
static inline bool imap_dump_feed_stdin(struct imap_parser *parser, size_t read_size, imap_dump_line_fn *line,
					imap_dump_literal_fn *literal, void *context)
{
	char buffer[IMAP_DUMP_READ_MAX];
	size_t got;

	if (read_size > sizeof(buffer))
		read_size = sizeof(buffer);
	while ((got = fread(buffer, 1, read_size, stdin)) > 0) {
		size_t pos = 0;

		while (pos < got) {
			size_t consumed;
			const char *message;
			enum imap_parser_result result = imap_parser_feed_bytes(parser, buffer + pos, got - pos, &consumed);

			pos += consumed;
			if (result == IMAP_PARSER_NEED_MORE)
				break;
			if (result == IMAP_PARSER_LITERAL_ANNOUNCED && literal != NULL) {
				literal(parser, context);
				continue;
			}
			if (result != IMAP_PARSER_LINE_COMPLETE) {
				imap_parser_get_error(parser, &message);
				printf("ERROR tokenizer %s\n", message);
				return false;
			}
			line(parser, context);
		}
	}
	return true;
}

#endif
