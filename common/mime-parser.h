/* SPDX-License-Identifier: MIT */
/* mime-parser: an incremental parser from message bytes to a mime_message tree. */
#ifndef IMAPCACHE_MIME_PARSER_H
#define IMAPCACHE_MIME_PARSER_H

#include <stddef.h>

#include "mime-message.h"

#define MIME_PARSER_MAX_DEPTH 100      /* Dovecot stops at 100 too; deeper is an attack, not mail */
#define MIME_PARSER_MAX_PARTS 20000    /* per message; caps the tree at a few MB of part structs */
#define MIME_PARSER_MAX_HEADERS 10000  /* per part; real mail has a few hundred at most */
#define MIME_PARSER_DEFAULT_MAX_SIZE ((size_t)1 << 30) /* 1 GiB: IMAP literals this big are refused earlier */

enum mime_parser_result {
	MIME_PARSER_NEED_MORE,    /* fed; more input (or mime_parser_finish) expected */
	MIME_PARSER_COMPLETE,     /* finish: *message_r is the tree */
	MIME_PARSER_TOO_BIG,      /* more than max_size bytes were fed */
};

struct mime_parser;

/* A parser that accepts at most max_size bytes (0: the default). It splits
   lines at CRLF, CR or LF as Python's email.feedparser does, and builds
   the same tree as email.parser.BytesParser (compat32) with the same
   defects, plus the library's own bounds (depth, parts, headers). A NUL
   byte in a header line or the envelope line is stored as 0x80 (values
   are C strings; Dovecot does the same). */
struct mime_parser *mime_parser_new(size_t max_size);
/* Frees the parser and any tree it is still building; *parser becomes NULL. */
void mime_parser_free(struct mime_parser **parser);

/* Feeds the next bytes: NEED_MORE, or TOO_BIG with *error_r (the parser
   then refuses further input). Any split of the input gives the same tree. */
enum mime_parser_result mime_parser_feed(struct mime_parser *parser, const void *data,
					 size_t len, const char **error_r);
/* Ends the input: COMPLETE with *message_r (owned by the caller), or
   TOO_BIG with *error_r when feeding failed before. */
enum mime_parser_result mime_parser_finish(struct mime_parser *parser,
					   struct mime_message **message_r, const char **error_r);

/* Parses a whole message in one call; never fails below the default size
   (larger input is cut there, with the tree of what fits). */
struct mime_message *mime_parse(const void *data, size_t len);
/* The same tree without copying the leaf bodies: a leaf's payload points
   into data (and has no NUL after it) wherever its bytes lie there in one
   piece. data must stay alive and unchanged until the tree is freed. For
   callers that keep the raw message anyway, as the IMAP views need it. */
struct mime_message *mime_parse_borrowed(const void *data, size_t len);

#endif
