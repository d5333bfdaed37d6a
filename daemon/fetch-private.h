/* SPDX-License-Identifier: MIT */
/* fetch-private: the plan of a local FETCH answer, shared by fetch.c (messages, writing) and fetch-items.c (items). */
#ifndef IMAPCACHED_FETCH_PRIVATE_H
#define IMAPCACHED_FETCH_PRIVATE_H

#include "cache.h"
#include "fetch.h"
#include "mime-buffer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct fetch_splice;
struct imap_command;

/* The items of an answer, in Dovecot's handler terms: buffered ones go
   into the line first; the rest follow in the order asked. */
enum fetch_kind {
	FETCH_KIND_UID,
	FETCH_KIND_FLAGS,
	FETCH_KIND_INTERNALDATE,
	FETCH_KIND_SIZE,
	FETCH_KIND_MODSEQ,
	FETCH_KIND_PREVIEW,      /* buffered in Dovecot too; never written from the store, always spliced */
	FETCH_KIND_ENVELOPE,
	FETCH_KIND_BODY,
	FETCH_KIND_BODYSTRUCTURE,
	FETCH_KIND_RFC822,
	FETCH_KIND_RFC822_HEADER,
	FETCH_KIND_RFC822_TEXT,
	FETCH_KIND_SECTION,      /* BODY[...] */
	FETCH_KIND_BINARY,       /* BINARY[n] */
	FETCH_KIND_BINARY_SIZE,  /* BINARY.SIZE[n]: never written from the store, always spliced */
};

/* Where a body item's bytes come from. */
enum fetch_source_kind {
	FETCH_SOURCE_NONE,
	FETCH_SOURCE_WHOLE,   /* BODY[], RFC822: the stored message */
	FETCH_SOURCE_HEADER,  /* BODY[HEADER], RFC822.HEADER */
	FETCH_SOURCE_TEXT,    /* BODY[TEXT], RFC822.TEXT */
	FETCH_SOURCE_FIELDS,  /* BODY[HEADER.FIELDS (...)] and .NOT */
	FETCH_SOURCE_PART,    /* BODY[n...]: the MIME library's section */
	FETCH_SOURCE_BINARY,  /* BINARY[n] */
};

struct fetch_item {
	enum fetch_kind kind;
	enum fetch_source_kind source;
	char *name;              /* as the answer names it: "BODY[1.MIME]<0>" */
	char *section;           /* the MIME library's section text: "1.MIME", "HEADER.FIELDS (A B)" */
	bool sets_seen;          /* a non-PEEK body item */
	bool has_partial;
	uint64_t partial_offset, partial_length;
};

struct fetch_message {
	uint32_t seq, uid;
	uint64_t modseq;         /* for the MODSEQ item: from before a \Seen this fetch set */
	uint64_t new_modseq;     /* with seen_set: the MODSEQ after it */
	char *flags;             /* NULL: not known */
	bool recent;
	bool unseen;             /* the fetch would set \Seen: the upstream must do it first */
	bool missing;            /* the store lacks what the fetch needs: fetched first */
	bool seen_set;           /* the upstream set \Seen for this fetch: FLAGS are shown */
	bool outside_change;     /* another client changed its flags too: FLAGS again after the lines */
	uint64_t spliced;        /* 1 << item index of the items fetched upstream alone (fetch_answer_splice_groups) */
};

/* Stored values of a run of the answer's messages, from one lookup. */
struct fetch_chunk {
	size_t first, count;     /* answer->messages[first, first + count) */
	struct cache_message *stored; /* uid 0: no row */
	size_t cursor;           /* the lookup's position while it runs */
	unsigned int wanted;     /* CACHE_HAS of the values to copy */
	bool without_values;     /* only what is present was kept, no value (the plan's check needs none) */
	size_t kept_body_bytes;  /* of the bodies the lookup checked and handed over (stored[].body) */
	size_t kept_value_bytes; /* of the values copied, and of fields */
	struct cache_value *fields; /* per message, with answer->fields_item: its bytes as the plan's check built them
				       (data NULL: not built) */
};

#define FETCH_KEPT_BODY_BYTES (16u << 20) /* bodies a plan's lookup read and checked, kept for the writer; past it re-read */
#define FETCH_BODY_EXTENTS 16 /* a kept body's chains copied per look */
#define FETCH_LINE_KEPT_BYTES (256u << 10) /* a line's buffer kept for the next: larger ones are bodies, freed */
#define FETCH_KEPT_VALUE_BYTES (32u << 20) /* what a plan read, kept for the writer: 10,000 messages' ENVELOPE and BODYSTRUCTURE or header blocks fit */

struct fetch_answer {
	struct cache *cache;
	int64_t mailbox_id;
	struct fetch_item *items;
	unsigned int item_count, buffered_count;
	struct fetch_message *messages;
	size_t message_count, message_alloc;
	size_t next;             /* the next message to write */
	struct fetch_chunk chunk;
	const struct fetch_item *fields_item; /* the first HEADER.FIELDS item: built once, by the plan's check */
	struct mime_buffer line; /* the line being written, its memory reused (up to FETCH_LINE_KEPT_BYTES) */
	struct evbuffer *pending; /* the line's start and body bytes, when a body is written (NULL until one is) */
	struct mime_buffer scratch; /* a derived value being written, reused */
	struct evbuffer *preview; /* a stored PREVIEW being read (NULL until one is) */
	unsigned int wanted;     /* CACHE_HAS of the values its items read */
	bool read_only;
	bool binary_marked;      /* facts->binary_marked */
	bool binary_size_asked;  /* a BINARY.SIZE item: it may leave Dovecot the stream (spliced with it) */
	/* Of the items written, the last one that reads a BINARY stream in
	   Dovecot's order (BINARY, BINARY.SIZE) was written from the store:
	   a direct session's read of it let go of the stream Dovecot kept */
	bool binary_last_local;
	uint32_t binary_marked_uid; /* facts->binary_marked_uid */
	bool sets_seen;          /* a non-PEEK body item on a read-write mailbox */
	bool condstore, qresync; /* what the client enabled: a \Seen set shows its new MODSEQ */
	bool has_flags_item;
	bool reads_flags;        /* a FLAGS item, or \Seen to set: the messages' flags are copied */
	size_t missing_count;
	size_t missing_heavy_count;  /* those lacking more than FETCH_ASKS_LIGHT: at most half may */
	unsigned int missing_asks;   /* 1 << enum fetch_ask of what they lack */
	bool missing_beyond_modseq;  /* one of them lacks more than its MODSEQ */
	uint64_t vouched_modseq;     /* facts->vouched_modseq with CONDSTORE enabled (0: none) */
	const struct mailbox_view *view; /* facts->view, for the CHANGEDSINCE form of the missing fetch */
	bool may_splice;             /* facts->splice_allowed, and no two items answer under one name */
	size_t spliced_count;        /* messages with spliced items */
	const char *splice_why;      /* why the first of them was (for the debug log) */
	const struct fetch_splice *splice; /* the values captured (borrowed; owned once adopted) */
	struct fetch_splice *splice_owned;
	bool cut;                    /* facts->splice_cut: the last message's line ends before item cut_item */
	unsigned int cut_item;
	struct cache_pin *pin;       /* its messages' rows stay until it is freed */
	bool needs_vanished;         /* the VANISHED modifier, its step not taken */
	char *vanished;              /* its "* VANISHED (EARLIER)" lines, written first; NULL: none */
	size_t vanished_len;
};


/* Adds the command's items to answer in Dovecot's order (buffered items
   first, each single item once). Returns 1, 0 when the command must go
   upstream (*why_r says why), -1 when memory runs out. */
int fetch_items_add(struct fetch_answer *answer, const struct imap_command *command,
		    const struct fetch_facts *facts, const char **why_r);

/* Frees an item's strings. */
void fetch_item_free(struct fetch_item *item);

/* ---- fetch-write.c: one message's line, from what the plan read ---- */

/* One message while its line is checked or written. */
struct fetch_source {
	struct fetch_answer *answer;
	const struct fetch_message *message;
	const struct cache_message *stored;
	struct evbuffer *body;       /* the whole stored message, read on demand */
	const unsigned char *raw;
	size_t raw_len;
	struct mime_message *root;   /* raw parsed, on demand */
	struct mime_buffer derived;  /* a header block derived from raw */
	bool derived_header;
	bool kept_body_used;         /* the use of stored->body is counted */
	struct cache_value *fields;  /* the chunk's slot of answer->fields_item for the message, or NULL */
	const char *why;             /* why the last item can't be written, when a check said */
};

/* Frees what a source read or derived for its message (the source is
   reused for the next one). */
void fetch_source_clear(struct fetch_source *source);
/* Whether every item can be written for source's message, or fetched
   alone by the splice step (*spliced_r: 1 << the index of each such
   item); *why_r says why not when it can't. */
bool fetch_message_check(struct fetch_source *source, uint64_t *spliced_r, const char **why_r);
/* Writes source's message's line into out, its items in the answer's
   order. Returns 0, or -1 when a value went away or memory ran out. */
int fetch_message_write(struct mime_buffer *out, struct fetch_source *source);
/* The trailing FETCH (FLAGS) lines of messages whose \Seen another
   client set, as Dovecot sends them after the answer. */
void fetch_write_seen_updates(const struct fetch_answer *answer, struct evbuffer *out);
/* Whether item may be fetched alone upstream (the splice step), and the
   name its value comes back under. */
bool fetch_item_may_splice(const struct fetch_item *item);
const char *fetch_item_splice_name(const struct fetch_item *item);

/* ---- fetch.c's, for fetch-write.c ---- */

/* Whether what item needs of a message is stored (present: CACHE_HAS
   bits); whether it derives is fetch_message_check's. */
bool fetch_item_is_stored(const struct fetch_item *item, unsigned int present);

#endif
