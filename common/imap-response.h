/* SPDX-License-Identifier: MIT */
/* imap-response: typed views over one server line parsed by imap-parser (status, codes, untagged data, FETCH). */
#ifndef IMAPCACHE_IMAP_RESPONSE_H
#define IMAPCACHE_IMAP_RESPONSE_H

#include "imap-parser.h"
#include "imap-seqset.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Views point into the parser's line (valid until its next feed) and into
 * the response parser (valid until its next imap_response_parse()). The
 * line must come from a parser in IMAP_PARSER_MODE_RESPONSE.
 */

enum imap_response_kind {
	IMAP_RESPONSE_TAGGED,       /* "tag OK/NO/BAD ..." */
	IMAP_RESPONSE_UNTAGGED,     /* "* ..." */
	IMAP_RESPONSE_CONTINUATION, /* "+ ..." */
};

enum imap_response_status {
	IMAP_RESPONSE_STATUS_NONE,  /* untagged data, or a continuation */
	IMAP_RESPONSE_STATUS_OK,
	IMAP_RESPONSE_STATUS_NO,
	IMAP_RESPONSE_STATUS_BAD,
	IMAP_RESPONSE_STATUS_PREAUTH,
	IMAP_RESPONSE_STATUS_BYE,
};

enum imap_response_code_type {
	IMAP_RESPONSE_CODE_NONE,           /* no [...] */
	IMAP_RESPONSE_CODE_ALERT,
	IMAP_RESPONSE_CODE_BADCHARSET,     /* args: optional list of charsets */
	IMAP_RESPONSE_CODE_CAPABILITY,     /* args: the capability atoms */
	IMAP_RESPONSE_CODE_PARSE,
	IMAP_RESPONSE_CODE_PERMANENTFLAGS, /* args[0]: the flag list */
	IMAP_RESPONSE_CODE_READ_ONLY,
	IMAP_RESPONSE_CODE_READ_WRITE,
	IMAP_RESPONSE_CODE_TRYCREATE,
	IMAP_RESPONSE_CODE_UIDNEXT,        /* number */
	IMAP_RESPONSE_CODE_UIDVALIDITY,    /* number */
	IMAP_RESPONSE_CODE_UNSEEN,         /* number */
	IMAP_RESPONSE_CODE_HIGHESTMODSEQ,  /* number */
	IMAP_RESPONSE_CODE_NOMODSEQ,
	IMAP_RESPONSE_CODE_MODIFIED,       /* set */
	IMAP_RESPONSE_CODE_APPENDUID,      /* number (UIDVALIDITY), set (UIDs) */
	IMAP_RESPONSE_CODE_COPYUID,        /* number (UIDVALIDITY), set (source), set2 (destination) */
	IMAP_RESPONSE_CODE_CLOSED,
	IMAP_RESPONSE_CODE_OTHER,          /* unknown: name and text kept */
};

struct imap_response_code {
	enum imap_response_code_type type;
	/* The code's name as sent ("UIDNEXT"), NUL-terminated; "" for NONE. */
	const char *name;
	/* The whole inside of the brackets. */
	const char *text;
	size_t text_len;
	/* The arguments after the name, tokenized; for OTHER codes whose text
	   does not tokenize, NULL and 0. */
	const struct imap_arg *args;
	unsigned int arg_count;
	uint64_t number;
	const struct imap_seqset *set;
	const struct imap_seqset *set2;
};

enum imap_response_data_type {
	IMAP_RESPONSE_DATA_NONE,       /* a status response or a continuation */
	IMAP_RESPONSE_DATA_CAPABILITY, /* atoms: args */
	IMAP_RESPONSE_DATA_LIST,       /* u.list */
	IMAP_RESPONSE_DATA_LSUB,       /* u.list */
	IMAP_RESPONSE_DATA_STATUS,     /* u.status */
	IMAP_RESPONSE_DATA_SEARCH,     /* u.search */
	IMAP_RESPONSE_DATA_ESEARCH,    /* u.esearch */
	IMAP_RESPONSE_DATA_FLAGS,      /* u.flags */
	IMAP_RESPONSE_DATA_EXISTS,     /* number */
	IMAP_RESPONSE_DATA_RECENT,     /* number */
	IMAP_RESPONSE_DATA_EXPUNGE,    /* number */
	IMAP_RESPONSE_DATA_VANISHED,   /* u.vanished */
	IMAP_RESPONSE_DATA_ENABLED,    /* atoms: args */
	IMAP_RESPONSE_DATA_ID,         /* u.id */
	IMAP_RESPONSE_DATA_NAMESPACE,  /* u.namespace */
	IMAP_RESPONSE_DATA_FETCH,      /* number (sequence number), u.fetch */
	IMAP_RESPONSE_DATA_OTHER,      /* unknown untagged data: name, args */
};

/* STATUS items present, bits of imap_response_status_data.present. */
#define IMAP_STATUS_MESSAGES 0x01
#define IMAP_STATUS_RECENT 0x02
#define IMAP_STATUS_UIDNEXT 0x04
#define IMAP_STATUS_UIDVALIDITY 0x08
#define IMAP_STATUS_UNSEEN 0x10
#define IMAP_STATUS_HIGHESTMODSEQ 0x20
#define IMAP_STATUS_SIZE 0x40
#define IMAP_STATUS_DELETED 0x80

/* ESEARCH results present, bits of imap_response_esearch.present. */
#define IMAP_ESEARCH_MIN 0x01
#define IMAP_ESEARCH_MAX 0x02
#define IMAP_ESEARCH_COUNT 0x04
#define IMAP_ESEARCH_ALL 0x08
#define IMAP_ESEARCH_MODSEQ 0x10

struct imap_response_list {
	const struct imap_arg *flags;  /* mailbox attributes (atoms) */
	unsigned int flag_count;
	char delimiter;                /* '\0' for NIL */
	const char *mailbox;           /* as sent (modified UTF-7 not decoded) */
	size_t mailbox_len;
	const struct imap_arg *extended; /* RFC 5258 extended items, if any */
	unsigned int extended_count;
};

struct imap_response_status_data {
	const char *mailbox;
	size_t mailbox_len;
	unsigned int present;          /* IMAP_STATUS_* */
	uint64_t messages, recent, uidnext, uidvalidity, unseen, highestmodseq, size, deleted;
};

struct imap_response_search {
	const uint32_t *numbers;
	unsigned int count;
	bool has_modseq;               /* RFC 7162 "(MODSEQ n)" at the end */
	uint64_t modseq;
};

struct imap_response_esearch {
	const char *tag;               /* the correlator's tag, or NULL */
	size_t tag_len;
	bool uid;
	unsigned int present;          /* IMAP_ESEARCH_* */
	uint32_t min, max, count;
	uint64_t modseq;
	const struct imap_seqset *all;
};

struct imap_response_vanished {
	bool earlier;
	const struct imap_seqset *uids;
};

struct imap_response_id {
	const struct imap_arg *params; /* field, value, field, value...; NULL for NIL */
	unsigned int count;            /* number of args (twice the pairs) */
};

struct imap_response_namespace {
	/* Each NULL for NIL, else a list of (prefix delimiter ...) lists. */
	const struct imap_arg *personal, *other, *shared;
};

enum imap_fetch_item_type {
	IMAP_FETCH_UID,            /* number */
	IMAP_FETCH_FLAGS,          /* value: list of flag atoms */
	IMAP_FETCH_INTERNALDATE,   /* value: string; number: seconds since the epoch */
	IMAP_FETCH_RFC822_SIZE,    /* number */
	IMAP_FETCH_ENVELOPE,       /* value: list (see imap_envelope_from_arg) */
	IMAP_FETCH_BODYSTRUCTURE,  /* value: list */
	IMAP_FETCH_BODY,           /* value: list (BODY without section: non-extensible structure) */
	IMAP_FETCH_BODY_SECTION,   /* section, origin; value: nstring or streamed literal */
	IMAP_FETCH_BINARY_SECTION, /* section, origin; value: nstring, literal8 or streamed */
	IMAP_FETCH_BINARY_SIZE,    /* section; number (any 64-bit value: Dovecot 2.3
	                              sends 2^64 - n for some parts) */
	IMAP_FETCH_RFC822,         /* value: nstring or streamed */
	IMAP_FETCH_RFC822_HEADER,  /* value: nstring or streamed */
	IMAP_FETCH_RFC822_TEXT,    /* value: nstring or streamed */
	IMAP_FETCH_MODSEQ,         /* number */
	IMAP_FETCH_OTHER,          /* an extension: name and value kept */
};

struct imap_fetch_item {
	enum imap_fetch_item_type type;
	const char *name;          /* the item's atom as sent, e.g. "BODY[1]<0>" */
	const char *section;       /* inside the brackets ("" for BODY[]); NULL without brackets;
	                              header names as imap-parser.h writes them ("Header lists
	                              in sections"): Dovecot's ("SUBJECT" "A B") gives (SUBJECT "A B") */
	size_t section_len;
	bool has_origin;           /* "<origin>" after the section */
	uint64_t origin;
	const struct imap_arg *value;
	uint64_t number;
};

struct imap_response_fetch {
	const struct imap_fetch_item *items;
	unsigned int count;
};

struct imap_response {
	enum imap_response_kind kind;
	const char *tag;                  /* TAGGED: the tag; else "*" or "+" */
	enum imap_response_status status;
	struct imap_response_code code;
	const char *text;                 /* status or continuation text ("" if none) */
	size_t text_len;
	enum imap_response_data_type type;
	const char *name;                 /* the untagged keyword as sent ("" if none) */
	uint32_t number;                  /* EXISTS, RECENT, EXPUNGE, FETCH */
	const struct imap_arg *args;      /* untagged data: arguments after the keyword */
	unsigned int arg_count;
	union {
		struct imap_response_list list;
		struct imap_response_status_data status;
		struct imap_response_search search;
		struct imap_response_esearch esearch;
		struct imap_response_vanished vanished;
		struct imap_response_id id;
		struct imap_response_namespace namespace;
		struct imap_response_fetch fetch;
		struct {
			const struct imap_arg *flags;
			unsigned int count;
		} flags;
	} u;
};

/* Why a line is no valid server response. */
enum imap_response_error {
	IMAP_RESPONSE_ERROR_NONE,
	IMAP_RESPONSE_ERROR_EMPTY,             /* an empty line */
	IMAP_RESPONSE_ERROR_BAD_TAG,           /* the first word is no tag, "*" or "+" */
	IMAP_RESPONSE_ERROR_BAD_STATUS,        /* a tagged line without OK/NO/BAD */
	IMAP_RESPONSE_ERROR_MISSING_ARGUMENT,  /* the data ends too early */
	IMAP_RESPONSE_ERROR_BAD_ARGUMENT,      /* an argument of the wrong type or form */
	IMAP_RESPONSE_ERROR_BAD_NUMBER,        /* a number out of range or not a number */
	IMAP_RESPONSE_ERROR_BAD_SEQUENCE_SET,  /* a set in a code, VANISHED or ESEARCH */
	IMAP_RESPONSE_ERROR_BAD_CODE,          /* a known response code with bad arguments */
	IMAP_RESPONSE_ERROR_BAD_FETCH_ITEM,    /* a FETCH item without value or of bad form */
	IMAP_RESPONSE_ERROR_OUT_OF_MEMORY,
};

struct imap_response_parser;

struct imap_response_parser *imap_response_parser_new(void);
void imap_response_parser_free(struct imap_response_parser **parser);

/* Fills response_r from line (imap_parser_get_line() of a RESPONSE-mode
   parser). Returns IMAP_RESPONSE_ERROR_NONE, or an error with a one-line
   *message_r for the log (the client core turns it into imaplib's abort). */
enum imap_response_error imap_response_parse(struct imap_response_parser *parser,
					     const struct imap_arg *line,
					     struct imap_response *response_r,
					     const char **message_r);
const char *imap_response_error_name(enum imap_response_error error);

/* Finds the first FETCH item of type; NULL if the response has none. */
const struct imap_fetch_item *imap_response_fetch_find(const struct imap_response *response,
						       enum imap_fetch_item_type type);

/* ENVELOPE, as views; nstrings are NULL (len 0) for NIL, address lists
   NULL (count 0) for NIL. */
struct imap_envelope {
	const char *date, *subject, *in_reply_to, *message_id;
	size_t date_len, subject_len, in_reply_to_len, message_id_len;
	const struct imap_arg *from, *sender, *reply_to, *to, *cc, *bcc;
	unsigned int from_count, sender_count, reply_to_count, to_count, cc_count, bcc_count;
};
/* Returns false if value is no 10-element ENVELOPE list of the right types. */
bool imap_envelope_from_arg(const struct imap_arg *value, struct imap_envelope *envelope_r);

struct imap_address {
	const char *name, *adl, *mailbox, *host;  /* NULL for NIL */
	size_t name_len, adl_len, mailbox_len, host_len;
};
/* One element of an address list: a 4-element list of nstrings. An RFC 2822
   group is written as an address with host NIL (start, mailbox = group
   name) and one with mailbox and host NIL (end). */
bool imap_address_from_arg(const struct imap_arg *value, struct imap_address *address_r);

#endif
