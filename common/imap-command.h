/* SPDX-License-Identifier: MIT */
/* imap-command: client commands (tag, name, typed arguments) from a line parsed by imap-parser. */
#ifndef IMAPCACHE_IMAP_COMMAND_H
#define IMAPCACHE_IMAP_COMMAND_H

#include "imap-parser.h"
#include "imap-seqset.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/*
 * The line comes from a parser in IMAP_PARSER_MODE_COMMAND. Views point into
 * that line (valid until the parser's next feed) and into the command
 * parser (valid until its next imap_command_parse()).
 */

#define IMAP_SECTION_MAX_PARTS 32     /* MIME nesting deeper than this is refused */
#define IMAP_SEARCH_MAX_DEPTH 64      /* NOT/OR/() nesting: bounds the recursion */

enum imap_command_name {
	IMAP_COMMAND_CAPABILITY,
	IMAP_COMMAND_NOOP,
	IMAP_COMMAND_LOGOUT,
	IMAP_COMMAND_STARTTLS,
	IMAP_COMMAND_AUTHENTICATE,  /* u.authenticate */
	IMAP_COMMAND_LOGIN,         /* u.login */
	IMAP_COMMAND_ENABLE,        /* u.atoms: capability names */
	IMAP_COMMAND_ID,            /* u.id */
	IMAP_COMMAND_NAMESPACE,
	IMAP_COMMAND_SELECT,        /* u.select */
	IMAP_COMMAND_EXAMINE,       /* u.select */
	IMAP_COMMAND_CREATE,        /* u.mailbox */
	IMAP_COMMAND_DELETE,        /* u.mailbox */
	IMAP_COMMAND_RENAME,        /* u.rename */
	IMAP_COMMAND_SUBSCRIBE,     /* u.mailbox */
	IMAP_COMMAND_UNSUBSCRIBE,   /* u.mailbox */
	IMAP_COMMAND_LIST,          /* u.list */
	IMAP_COMMAND_LSUB,          /* u.list */
	IMAP_COMMAND_STATUS,        /* u.status */
	IMAP_COMMAND_APPEND,        /* u.append */
	IMAP_COMMAND_IDLE,
	IMAP_COMMAND_CHECK,
	IMAP_COMMAND_CLOSE,
	IMAP_COMMAND_UNSELECT,
	IMAP_COMMAND_EXPUNGE,       /* UID EXPUNGE: u.expunge */
	IMAP_COMMAND_SEARCH,        /* u.search */
	IMAP_COMMAND_FETCH,         /* u.fetch */
	IMAP_COMMAND_STORE,         /* u.store */
	IMAP_COMMAND_COPY,          /* u.copy */
	IMAP_COMMAND_MOVE,          /* u.copy */
};

enum imap_fetch_attr_type {
	IMAP_FETCH_ATTR_ENVELOPE,
	IMAP_FETCH_ATTR_FLAGS,
	IMAP_FETCH_ATTR_INTERNALDATE,
	IMAP_FETCH_ATTR_RFC822,
	IMAP_FETCH_ATTR_RFC822_HEADER,
	IMAP_FETCH_ATTR_RFC822_SIZE,
	IMAP_FETCH_ATTR_RFC822_TEXT,
	IMAP_FETCH_ATTR_BODY,           /* BODY without section: the structure */
	IMAP_FETCH_ATTR_BODYSTRUCTURE,
	IMAP_FETCH_ATTR_UID,
	IMAP_FETCH_ATTR_BODY_SECTION,   /* BODY[...] / BODY.PEEK[...]: section, partial, peek */
	IMAP_FETCH_ATTR_BINARY_SECTION, /* BINARY[...] / BINARY.PEEK[...] (RFC 3516) */
	IMAP_FETCH_ATTR_BINARY_SIZE,    /* BINARY.SIZE[...] */
	IMAP_FETCH_ATTR_MODSEQ,         /* RFC 7162 */
	IMAP_FETCH_ATTR_PREVIEW,        /* RFC 8970, without modifiers */
};

enum imap_section_text {
	IMAP_SECTION_TEXT_NONE,          /* the whole part (or message) */
	IMAP_SECTION_TEXT_HEADER,
	IMAP_SECTION_TEXT_HEADER_FIELDS,
	IMAP_SECTION_TEXT_HEADER_FIELDS_NOT,
	IMAP_SECTION_TEXT_TEXT,
	IMAP_SECTION_TEXT_MIME,          /* only after a part number */
};

/* A header name of HEADER.FIELDS[.NOT], the same whether the client sent it
   as an atom, a quoted string or a literal (see imap-parser.h, "Header lists
   in sections"). Names are non-empty RFC 5322 field names (printable
   US-ASCII but ':'); anything else is IMAP_COMMAND_ERROR_BAD_SECTION. */
struct imap_section_field {
	const char *name;               /* into the line, or (a name that needed
	                                   escapes) into the command parser; not
	                                   NUL-terminated */
	size_t len;
};

struct imap_section {
	uint32_t parts[IMAP_SECTION_MAX_PARTS]; /* "1.2.3" → 1, 2, 3 */
	unsigned int part_count;
	enum imap_section_text text;
	const struct imap_section_field *fields; /* HEADER.FIELDS[.NOT] */
	unsigned int field_count;
};

struct imap_fetch_attr {
	enum imap_fetch_attr_type type;
	bool peek;                      /* BODY.PEEK / BINARY.PEEK */
	struct imap_section section;    /* *_SECTION, BINARY_SIZE */
	bool has_partial;               /* <offset.length> */
	uint64_t partial_offset;
	uint64_t partial_length;
};

enum imap_store_mode {
	IMAP_STORE_REPLACE, /* FLAGS */
	IMAP_STORE_ADD,     /* +FLAGS */
	IMAP_STORE_REMOVE,  /* -FLAGS */
};

enum imap_search_key_type {
	IMAP_SEARCH_AND,         /* children: a parenthesized list, or the whole program */
	IMAP_SEARCH_OR,          /* children: two keys */
	IMAP_SEARCH_NOT,         /* children: one key */
	IMAP_SEARCH_ALL, IMAP_SEARCH_ANSWERED, IMAP_SEARCH_DELETED, IMAP_SEARCH_DRAFT,
	IMAP_SEARCH_FLAGGED, IMAP_SEARCH_NEW, IMAP_SEARCH_OLD, IMAP_SEARCH_RECENT,
	IMAP_SEARCH_SEEN, IMAP_SEARCH_UNANSWERED, IMAP_SEARCH_UNDELETED, IMAP_SEARCH_UNDRAFT,
	IMAP_SEARCH_UNFLAGGED, IMAP_SEARCH_UNSEEN,
	IMAP_SEARCH_BCC, IMAP_SEARCH_BODY, IMAP_SEARCH_CC, IMAP_SEARCH_FROM,
	IMAP_SEARCH_SUBJECT, IMAP_SEARCH_TEXT, IMAP_SEARCH_TO,           /* str */
	IMAP_SEARCH_KEYWORD, IMAP_SEARCH_UNKEYWORD,                      /* str: the flag */
	IMAP_SEARCH_HEADER,                                              /* str: field, str2: value */
	IMAP_SEARCH_BEFORE, IMAP_SEARCH_ON, IMAP_SEARCH_SINCE,
	IMAP_SEARCH_SENTBEFORE, IMAP_SEARCH_SENTON, IMAP_SEARCH_SENTSINCE, /* year, month, day */
	IMAP_SEARCH_LARGER, IMAP_SEARCH_SMALLER,                           /* number */
	IMAP_SEARCH_UID,                                                   /* set */
	IMAP_SEARCH_SEQUENCE_SET,                                          /* set */
	IMAP_SEARCH_MODSEQ,                                                /* number; str: entry name or NULL */
};

struct imap_search_key {
	enum imap_search_key_type type;
	const char *str;        /* NUL-terminated (may hold NULs if a literal) */
	size_t len;
	const char *str2;
	size_t len2;
	uint64_t number;
	int year, month, day;   /* month 1..12 */
	const struct imap_seqset *set;
	const struct imap_search_key *children; /* first child; siblings via next */
	unsigned int child_count;
	const struct imap_search_key *next;
};

/* SEARCH RETURN options (RFC 4731, RFC 5182), bits of search.return_options. */
#define IMAP_SEARCH_RETURN_MIN 0x01
#define IMAP_SEARCH_RETURN_MAX 0x02
#define IMAP_SEARCH_RETURN_ALL 0x04
#define IMAP_SEARCH_RETURN_COUNT 0x08
#define IMAP_SEARCH_RETURN_SAVE 0x10

struct imap_command {
	const char *tag;
	enum imap_command_name name;
	const char *name_str;     /* the command word as sent */
	bool uid;                 /* "UID FETCH" etc. */
	const struct imap_arg *args; /* arguments after the name */
	unsigned int arg_count;
	union {
		struct {
			const char *mechanism;
			const char *initial_response; /* SASL-IR, or NULL */
			size_t initial_response_len;
		} authenticate;
		struct {
			const char *user, *password;
			size_t user_len, password_len;
		} login;
		struct {
			const struct imap_arg *atoms;
			unsigned int count;
		} atoms;
		struct {
			const struct imap_arg *params; /* NULL for NIL */
			unsigned int count;
		} id;
		struct {
			const char *mailbox;
			size_t mailbox_len;
			bool condstore;
			bool qresync;
			uint32_t uidvalidity;       /* QRESYNC */
			uint64_t modseq;            /* QRESYNC */
			const struct imap_seqset *known_uids; /* QRESYNC, or NULL */
		} select;
		struct {
			const char *mailbox;
			size_t mailbox_len;
		} mailbox;
		struct {
			const char *from, *to;
			size_t from_len, to_len;
		} rename;
		struct {
			const char *reference, *pattern;
			size_t reference_len, pattern_len;
			bool extended;              /* RFC 5258 selection/return options: see args */
		} list;
		struct {
			const char *mailbox;
			size_t mailbox_len;
			unsigned int items;         /* IMAP_STATUS_* of imap-response.h */
		} status;
		struct {
			const char *mailbox;
			size_t mailbox_len;
			bool has_flags;             /* a flag list was given (maybe "()") */
			const struct imap_arg *flags;
			unsigned int flag_count;
			bool has_date;
			time_t date;
			int zone_minutes;
			const struct imap_arg *message; /* LITERAL or LITERAL_STREAMED */
		} append;
		struct {
			const struct imap_seqset *set;
		} expunge;
		struct {
			const char *charset;        /* NULL if none */
			unsigned int return_options; /* IMAP_SEARCH_RETURN_*; RETURN () gives ALL */
			bool has_return;
			const struct imap_search_key *program; /* an AND of the keys */
		} search;
		struct {
			const struct imap_seqset *set;
			const struct imap_fetch_attr *attrs;
			unsigned int attr_count;
			bool changedsince_given;
			uint64_t changedsince;
			bool vanished;
		} fetch;
		struct {
			const struct imap_seqset *set;
			enum imap_store_mode mode;
			bool silent;
			const struct imap_arg *flags;
			unsigned int flag_count;
			bool unchangedsince_given;
			uint64_t unchangedsince;
		} store;
		struct {
			const struct imap_seqset *set;
			const char *mailbox;
			size_t mailbox_len;
		} copy;
	} u;
};

/* Why a command is refused; each maps to a tagged BAD (or an untagged BAD
   when there is no tag). */
enum imap_command_error {
	IMAP_COMMAND_ERROR_NONE,
	IMAP_COMMAND_ERROR_EMPTY,             /* an empty line */
	IMAP_COMMAND_ERROR_BAD_TAG,           /* no tag, or one with '+', '*', '(' ... */
	IMAP_COMMAND_ERROR_MISSING_COMMAND,   /* a tag alone */
	IMAP_COMMAND_ERROR_UNKNOWN_COMMAND,
	IMAP_COMMAND_ERROR_MISSING_ARGUMENT,
	IMAP_COMMAND_ERROR_EXTRA_ARGUMENT,
	IMAP_COMMAND_ERROR_BAD_ARGUMENT,      /* wrong type: a list for a mailbox, ... */
	IMAP_COMMAND_ERROR_BAD_SEQUENCE_SET,
	IMAP_COMMAND_ERROR_BAD_FETCH_ATTRIBUTE,
	IMAP_COMMAND_ERROR_BAD_SECTION,
	IMAP_COMMAND_ERROR_BAD_STORE,
	IMAP_COMMAND_ERROR_BAD_FLAG,
	IMAP_COMMAND_ERROR_BAD_DATE,
	IMAP_COMMAND_ERROR_BAD_SEARCH_KEY,
	IMAP_COMMAND_ERROR_OUT_OF_MEMORY,
};

struct imap_command_parser;

struct imap_command_parser *imap_command_parser_new(void);
void imap_command_parser_free(struct imap_command_parser **parser);

/* Fills command_r from line. Returns IMAP_COMMAND_ERROR_NONE, or an error
   with *message_r a one-line text for "tag BAD <message>". command_r->tag
   is set whenever the line had a usable tag (else NULL), so the answer can
   be tagged. */
enum imap_command_error imap_command_parse(struct imap_command_parser *parser, const struct imap_arg *line,
					   struct imap_command *command_r, const char **message_r);
const char *imap_command_error_name(enum imap_command_error error);

/* Whether the arguments args[0..count) of a command line that
   imap_command_parse refused (an extension it does not know, arguments it
   does not take), or some of them (a LIST's RETURN options), may enable
   CONDSTORE upstream (RFC 7162 3.1): an atom at
   any depth holding CONDSTORE, QRESYNC, MODSEQ or CHANGEDSINCE in any case
   (HIGHESTMODSEQ and UNCHANGEDSINCE hold them). Strings and literals are
   data (a search text, a message), never looked into. */
bool imap_command_args_enable_condstore(const struct imap_arg *args, unsigned int count);

/* Parses one fetch attribute atom ("BODY.PEEK[1.HEADER]<0.100>", "UID").
   The macros ALL, FAST, FULL are expanded by imap_command_parse only. */
enum imap_command_error imap_command_parse_fetch_attr(struct imap_command_parser *parser, const char *atom,
						      size_t len, struct imap_fetch_attr *attr_r,
						      const char **message_r);

#endif
