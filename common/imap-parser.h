/* SPDX-License-Identifier: MIT */
/* imap-parser: incremental IMAP tokenizer that turns one line (with its literals) into a tree of arguments. */
#ifndef IMAPCACHE_IMAP_PARSER_H
#define IMAPCACHE_IMAP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

/* Default limits; each can be changed at any time with imap_parser_set_limits(). */
#define IMAP_PARSER_DEFAULT_MAX_LINE (64 * 1024) /* RFC 7162 asks for at least 8 KiB; 64 KiB fits any sane UID set */
#define IMAP_PARSER_DEFAULT_MAX_LITERAL ((uint64_t)256 * 1024 * 1024) /* a message larger than this is not mail */
#define IMAP_PARSER_DEFAULT_MAX_INLINE_LITERAL (64 * 1024) /* headers and small parts stay inline; bodies stream */
#define IMAP_PARSER_DEFAULT_MAX_DEPTH 32 /* BODYSTRUCTURE of a deeply nested MIME tree stays far below */
#define IMAP_PARSER_DEFAULT_MAX_ARGS 100000 /* a FETCH of ENVELOPE+BODYSTRUCTURE has a few hundred */
/* One line keeps at most this many times max_inline_literal bytes of
   literals inline (1 MiB by default): many literals on one line would
   otherwise add up without bound. Literals past it are streamed like large
   ones; 16 covers any FETCH that asks for a few sections at once. */
#define IMAP_PARSER_INLINE_LITERALS_PER_LINE 16
/* A header name sent as a literal inside "[...]" may be at most this long:
   RFC 5322 limits a header line, name included, to 998 bytes. */
#define IMAP_PARSER_MAX_HEADER_NAME 998

/*
 * The grammar a line is read with. It matters while tokenizing, because it
 * decides where free text begins (free text may hold '{', '"' or '(' that
 * must not be taken as syntax).
 *
 * COMMAND   client command lines. A synchronizing literal {n} stops the feed
 *           with IMAP_PARSER_LITERAL_ANNOUNCED so the server can decide
 *           whether to send "+". Non-synchronizing {n+} does not stop.
 * RESPONSE  server lines. Literals never stop the feed. After "+", and after
 *           a status word (OK NO BAD PREAUTH BYE, any case) in the second
 *           position of a line, the rest of the line is not tokenized: an
 *           optional "[...]" response code becomes a TEXT argument flagged
 *           IMAP_ARG_FLAG_RESPONSE_CODE (the bytes between the brackets),
 *           then the remaining text is one TEXT argument (always present,
 *           possibly empty, leading space removed).
 * TEXT_LINE each whole line is one TEXT argument (AUTHENTICATE
 *           responses, IDLE's DONE). Literals are not recognised.
 */
enum imap_parser_mode {
	IMAP_PARSER_MODE_COMMAND,
	IMAP_PARSER_MODE_RESPONSE,
	IMAP_PARSER_MODE_TEXT_LINE,
};

/* What a feed ended with. */
enum imap_parser_result {
	/* A whole line was read; imap_parser_get_line() returns it. */
	IMAP_PARSER_LINE_COMPLETE,
	/* All input was consumed and the line is not finished yet. */
	IMAP_PARSER_NEED_MORE,
	/* COMMAND mode only: "{n}\r\n" (synchronizing) was read and the size
	   is within the limit. The peer waits for a continuation: send "+"
	   and feed again to read the literal, or refuse (answer NO/BAD) and
	   call imap_parser_reset(). imap_parser_get_literal_size() gives n. */
	IMAP_PARSER_LITERAL_ANNOUNCED,
	/* The input broke the grammar or a limit; imap_parser_get_error()
	   says which. The parser stays in error until imap_parser_reset(). */
	IMAP_PARSER_ERROR,
};

/* Why a line was refused. Each is something a peer sent, never a bug. */
enum imap_parser_error {
	IMAP_PARSER_ERROR_NONE,
	/* More than max_line bytes outside literals before the line end. */
	IMAP_PARSER_ERROR_LINE_TOO_LONG,
	/* A literal announced more than max_literal bytes, or a header name
	   literal inside "[...]" more than IMAP_PARSER_MAX_HEADER_NAME. Checked
	   when the "{n}" is read, before any of its bytes. After a synchronizing one
	   the peer waits: answer and reset. After {n+} it sends the bytes
	   anyway: answer BYE and close (RFC 7888). */
	IMAP_PARSER_ERROR_LITERAL_TOO_BIG,
	/* Lists nested deeper than max_depth. */
	IMAP_PARSER_ERROR_TOO_DEEP,
	/* More than max_args arguments on one line (all depths counted). */
	IMAP_PARSER_ERROR_TOO_MANY_ARGS,
	/* A malformed literal announcement: "{" without digits, digits that
	   overflow, no "}" or no CRLF right after it, "~" without "{". */
	IMAP_PARSER_ERROR_BAD_LITERAL,
	/* A quoted string (also a quoted header name inside "[...]") with CR,
	   LF or NUL in it, or a "\" escaping anything but '"' or '\'. */
	IMAP_PARSER_ERROR_BAD_QUOTED,
	/* A byte that can't appear where it is: a control character outside a
	   literal, ')' with no open list, CR not followed by LF, a quote or
	   '(' glued to the previous argument, "[" never closed in an atom;
	   inside a header list in "[...]": a byte that is neither an
	   ASTRING-CHAR, a quote, '{', ' ' nor ')', names glued together, a
	   nested '(', CR, LF or NUL in a header name literal. */
	IMAP_PARSER_ERROR_UNEXPECTED_CHAR,
	/* The line ended while a list was still open, or inside the header
	   list "(...)" of a "[...]" section. */
	IMAP_PARSER_ERROR_UNCLOSED_LIST,
	/* The literal callback returned -1. */
	IMAP_PARSER_ERROR_LITERAL_REJECTED,
	/* Memory for the line's arguments could not be allocated. */
	IMAP_PARSER_ERROR_OUT_OF_MEMORY,
};

enum imap_arg_type {
	IMAP_ARG_NIL,             /* the atom NIL (any case), outside TEXT */
	IMAP_ARG_ATOM,            /* also numbers, flags (\Seen), "*", "+",
	                             and atoms with [...] sections and <partial>
	                             such as BODY[HEADER.FIELDS (TO)]<0.100>;
	                             see "Header lists in sections" below */
	IMAP_ARG_STRING,          /* a quoted string, unescaped */
	IMAP_ARG_LITERAL,         /* a literal kept inline (size <= max_inline_literal,
	                             and the line's total within
	                             IMAP_PARSER_INLINE_LITERALS_PER_LINE times that;
	                             its memory is taken at the announced size) */
	IMAP_ARG_LITERAL_STREAMED,/* a literal whose bytes went to the literal
	                             callback; only its size is kept */
	IMAP_ARG_LIST,            /* a parenthesized list */
	IMAP_ARG_TEXT,            /* free text (see enum imap_parser_mode) */
};

#define IMAP_ARG_FLAG_LITERAL8 0x01      /* ~{n}: may hold NUL and any byte */
#define IMAP_ARG_FLAG_NONSYNC 0x02       /* {n+}: LITERAL+/LITERAL- form */
#define IMAP_ARG_FLAG_RESPONSE_CODE 0x04 /* TEXT: the inside of a "[...]" code */

/*
 * Header lists in sections. Inside the brackets of an atom, "(" opens a list
 * of header names, each an RFC 3501 astring: an atom, a quoted string with
 * escapes, or a literal {n} / {n+} (in COMMAND mode {n} stops the feed with
 * LITERAL_ANNOUNCED like any other; its size may not exceed
 * IMAP_PARSER_MAX_HEADER_NAME and its bytes count toward max_line, since
 * they become part of the atom). The atom's str holds each name in one
 * canonical form whatever way it came: as is when it is made of
 * ASTRING-CHARs only, else as a quoted string with '"' and '\' escaped
 * (never a literal: a name literal holding CR, LF or NUL is refused).
 * Spaces and ')' are kept as sent. So
 *   BODY[HEADER.FIELDS ("Subject" {4}\r\nX-Up "a b")]
 * gives the atom BODY[HEADER.FIELDS (Subject X-Up "a b")], which can be
 * sent on as is. Lists do not nest inside brackets.
 */

/*
 * One argument. Owned by the parser: valid until the next feed, reset or
 * free after a line is complete.
 */
struct imap_arg {
	enum imap_arg_type type;
	unsigned int flags;       /* IMAP_ARG_FLAG_* */
	/* NIL, ATOM, STRING, LITERAL, TEXT: the bytes (for NIL the atom as
	   sent, e.g. "nil"), always followed by a NUL that len does not count
	   (a LITERAL may also hold NULs inside). LITERAL_STREAMED, LIST: "". */
	const char *str;
	/* NIL, ATOM, STRING, LITERAL, TEXT: length of str.
	   LITERAL_STREAMED: the literal's size. */
	uint64_t len;
	/* LIST: the children, in order, and how many there are. */
	const struct imap_arg *list;
	unsigned int list_count;
};

struct imap_parser_limits {
	size_t max_line;             /* bytes outside literals, per line */
	uint64_t max_literal;        /* announced size of any literal */
	uint64_t max_inline_literal; /* larger literals are streamed */
	unsigned int max_depth;      /* list nesting; 0 = no lists allowed */
	unsigned int max_args;       /* arguments on one line, all depths */
};

/* One chunk of a streamed literal, given to the literal callback. */
struct imap_parser_literal_chunk {
	uint64_t offset;            /* of data within the literal */
	const unsigned char *data;
	size_t len;
	uint64_t size;              /* the literal's announced size */
	bool last;                  /* offset + len == size */
	unsigned int flags;         /* IMAP_ARG_FLAG_LITERAL8 / _NONSYNC */
};

struct imap_parser;

/*
 * Receives a literal larger than max_inline_literal in order, in chunks as
 * they arrive (at least one call; the last has last = true). data is valid
 * only during the call. While it runs, imap_parser_get_open_args() shows
 * the arguments parsed so far (e.g. "BODY[1]" just before the literal in a
 * FETCH list). Return 0 to go on, -1 to stop the line with
 * IMAP_PARSER_ERROR_LITERAL_REJECTED.
 */
typedef int imap_parser_literal_fn(struct imap_parser *parser,
				   const struct imap_parser_literal_chunk *chunk,
				   void *context);

/* A new parser in COMMAND mode with the default limits and no literal
   callback. Returns NULL when memory runs out. */
struct imap_parser *imap_parser_new(void);
/* Frees the parser and everything it returned; sets *parser to NULL.
   NULL and *parser == NULL are allowed. */
void imap_parser_free(struct imap_parser **parser);

/* Fills limits_r with the IMAP_PARSER_DEFAULT_* values. */
void imap_parser_get_default_limits(struct imap_parser_limits *limits_r);
/* Changes the limits; allowed at any time, and they apply from the next
   byte read (e.g. tighter before authentication, wider after). */
void imap_parser_set_limits(struct imap_parser *parser,
			    const struct imap_parser_limits *limits);
void imap_parser_get_limits(const struct imap_parser *parser,
			    struct imap_parser_limits *limits_r);

/* Sets the grammar of the next line and those after it. Must be called
   between lines (before the first byte of a line, e.g. right after
   LINE_COMPLETE or a reset), never in the middle of one (assert). */
void imap_parser_set_mode(struct imap_parser *parser, enum imap_parser_mode mode);
enum imap_parser_mode imap_parser_get_mode(const struct imap_parser *parser);

/* Sets (or with callback NULL, clears) the literal callback. Without a
   callback, literals above max_inline_literal are skipped and only their
   size is kept (IMAP_ARG_LITERAL_STREAMED). */
void imap_parser_set_literal_callback(struct imap_parser *parser,
				      imap_parser_literal_fn *callback,
				      void *context);

/*
 * Reads from input up to the end of one line (or the announced literal, or
 * the error) and drains what it read; bytes after the line stay in input.
 * Call again while it returns LINE_COMPLETE to read the following lines.
 * The previous line's arguments become invalid when this is called.
 */
enum imap_parser_result imap_parser_feed(struct imap_parser *parser,
					 struct evbuffer *input);
/* Same from plain bytes: *consumed_r tells how many of the size bytes were
   read: all of them for NEED_MORE; up to and including the line's LF for
   LINE_COMPLETE, the announcement's LF for LITERAL_ANNOUNCED, and the byte
   that broke the line (or less) for ERROR. data may be NULL when size is 0. */
enum imap_parser_result imap_parser_feed_bytes(struct imap_parser *parser,
					       const void *data, size_t size,
					       size_t *consumed_r);

/* After LINE_COMPLETE: the line as a LIST argument whose children are the
   line's top-level arguments (list_count may be 0 for an empty line).
   NULL when no line is complete. */
const struct imap_arg *imap_parser_get_line(const struct imap_parser *parser);

/* After ERROR: the error, and a one-line message for a BAD/BYE text or a
   log line (static or parser-owned; never contains CR/LF). */
enum imap_parser_error imap_parser_get_error(const struct imap_parser *parser,
					     const char **message_r);
/* A stable name such as "LINE_TOO_LONG". */
const char *imap_parser_error_name(enum imap_parser_error error);

/* After LITERAL_ANNOUNCED: the size n of "{n}". */
uint64_t imap_parser_get_literal_size(const struct imap_parser *parser);

/* After ERROR with IMAP_PARSER_ERROR_LITERAL_TOO_BIG (and before the
   reset): the refused literal's announced size and whether it was {n+},
   whose bytes the peer sends anyway (RFC 7888), not {n} (or ~{n}), which
   waits for a "+" and can be refused. Returns false after any other
   result or error. */
bool imap_parser_get_refused_literal(const struct imap_parser *parser, uint64_t *size_r, bool *nonsync_r);

/* Bytes of the literal being read that are still to come: after
   LITERAL_ANNOUNCED (once fed again) or within a {n+} one; 0 outside a
   literal's data. */
uint64_t imap_parser_get_literal_remaining(const struct imap_parser *parser);

/* Number of lists open on the current, unfinished line (0: top level). */
unsigned int imap_parser_get_open_depth(const struct imap_parser *parser);
/* The arguments completed so far at the open level depth (0: top level,
   imap_parser_get_open_depth(): the innermost open list). Valid until the
   parser reads more. Meant for the literal callback and for a server that
   wants the tag of a line it refuses. */
void imap_parser_get_open_args(const struct imap_parser *parser,
			       unsigned int depth,
			       const struct imap_arg **args_r,
			       unsigned int *count_r);

/* True when bytes of a line that is not complete yet have been read (a
   peer that closes now closed mid-line or mid-literal). */
bool imap_parser_is_mid_line(const struct imap_parser *parser);

/* Forgets the current line (and any error) so the next byte fed starts a
   new line. Keeps mode, limits and callback. */
void imap_parser_reset(struct imap_parser *parser);

/* Between lines, gives back what the parser holds for a line (the
   argument arena, the argument arrays and the token buffer) and forgets
   the last complete line, whose arguments become invalid; mode, limits
   and callback stay. The next line allocates again, so call it when the
   peer is expected to stay quiet (an idle connection), not after every
   line. In the middle of a line or after an error it changes nothing and
   returns false. */
bool imap_parser_release_memory(struct imap_parser *parser);

/* Overwrites with zeros every byte the parser holds for a line (the
   argument arena and the token buffer), then resets it: for a line that
   carried a secret (LOGIN's password), before the parser is freed or
   reused. Bytes a buffer held before it last grew are not covered. */
void imap_parser_wipe(struct imap_parser *parser);

/* Counters for tests and benchmarks. */
struct imap_parser_stats {
	uint64_t lines;        /* lines completed */
	uint64_t allocations;  /* malloc/realloc calls made by the parser */
	uint64_t arena_bytes;  /* bytes the argument arena holds now */
};
void imap_parser_get_stats(const struct imap_parser *parser,
			   struct imap_parser_stats *stats_r);

/* --- Accessors. Each returns false (and leaves outputs alone) when the
   argument is not of the asked form; arg may not be NULL. --- */

bool imap_arg_is_nil(const struct imap_arg *arg);
/* ATOM only. */
bool imap_arg_get_atom(const struct imap_arg *arg, const char **atom_r);
/* ATOM equal to word, ASCII case-insensitive. */
bool imap_arg_atom_equals(const struct imap_arg *arg, const char *word);
/* STRING or LITERAL (quoted or literal). */
bool imap_arg_get_string(const struct imap_arg *arg, const char **str_r, size_t *len_r);
/* ATOM, NIL (as the atom "NIL" it is), STRING or LITERAL (RFC 3501
   astring: "SELECT NIL" selects the mailbox named NIL). */
bool imap_arg_get_astring(const struct imap_arg *arg, const char **str_r, size_t *len_r);
/* NIL (gives NULL, 0) or STRING or LITERAL (RFC 3501 nstring). */
bool imap_arg_get_nstring(const struct imap_arg *arg, const char **str_r, size_t *len_r);
/* LIST. */
bool imap_arg_get_list(const struct imap_arg *arg, const struct imap_arg **args_r,
		       unsigned int *count_r);
/* ATOM of 1 to 19 digits whose value is at most 2^63 - 1 (RFC 9051
   number64). Leading zeros are accepted. */
bool imap_arg_get_number(const struct imap_arg *arg, uint64_t *number_r);
/* Same, at most 2^32 - 1 (RFC 3501 number, e.g. UIDs, sequence numbers). */
bool imap_arg_get_number32(const struct imap_arg *arg, uint32_t *number_r);
/* Nonzero number32 (RFC 3501 nz-number). */
bool imap_arg_get_nz_number(const struct imap_arg *arg, uint32_t *number_r);

#endif
