/* SPDX-License-Identifier: MIT */
/* prefetch: the next batch a session fetches on its own for its selected mailbox: what the store lacks, newest first. */
#ifndef IMAPCACHED_PREFETCH_H
#define IMAPCACHED_PREFETCH_H

#include "conf.h"

#include <stddef.h>
#include <stdint.h>

struct cache;
struct mailbox_view;
struct prefetch;

#define PREFETCH_BATCH_MESSAGES 200 /* a client command waits behind at most one batch: ~0.5 MB of headers */
#define PREFETCH_BATCH_BYTES (1024 * 1024) /* of whole messages per batch: 50 ms at 20 MB/s */
/* A batch's data should arrive within this: what a client command waits
   behind it, beside a round trip. Over a slow link the batches shrink
   (prefetch_batch_took): 200 headers take 200 ms at 20 Mbit/s. */
#define PREFETCH_BATCH_TRANSFER_USEC 100000
#define PREFETCH_BATCH_MIN_MESSAGES 12
#define PREFETCH_BATCH_MIN_BYTES (64 * 1024)
/* The first batch, before the link's speed is known: 50 ms at 20 Mbit/s. */
#define PREFETCH_BATCH_FIRST_MESSAGES 50
#define PREFETCH_BATCH_FIRST_BYTES (256 * 1024)
#define PREFETCH_SCAN_CHUNK 1000 /* messages looked up in the store per query: a few milliseconds */

/* The command's item lists. UID and INTERNALDATE first: Dovecot answers
   "* n FETCH (UID u INTERNALDATE ...", which no unsolicited FETCH starts
   with (prefetch_is_own_line); UID, so the store knows the message. */
#define PREFETCH_HEADER_ITEMS "(UID INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER])"
#define PREFETCH_BODY_ITEMS "(UID INTERNALDATE RFC822.SIZE BODY.PEEK[])"

struct prefetch_limits {
	enum conf_prefetch mode;
	uint64_t body_budget;     /* the store's: whole messages are fetched only while they fit */
	uint64_t body_max_size;
};

/*
 * One session's walk over its selected mailbox. Two walks, each from the
 * newest message down: first every message that lacks one of INTERNALDATE,
 * RFC822.SIZE, ENVELOPE, BODYSTRUCTURE or the header block; then (mode
 * full) every message whose size is known, fits body_max_size and the
 * budget left, and whose whole body is not stored. A message is asked for
 * once per walk, whatever the answer (the store may refuse it): the walk
 * never loops. New messages (a higher UID in the view) start the walks
 * again from the top.
 */
struct prefetch *prefetch_new(void);
void prefetch_free(struct prefetch **prefetch);

/* How long the last batch's data took to arrive, from its first line to
   its tagged reply: past PREFETCH_BATCH_TRANSFER_USEC the next batches
   take half as many messages and bytes (down to the _MIN ones), under
   half of it twice as many (up to PREFETCH_BATCH_MESSAGES and _BYTES),
   so that a client command waits about that long behind one on any link.
   The first batch takes PREFETCH_BATCH_FIRST_MESSAGES and _BYTES. */
void prefetch_batch_took(struct prefetch *prefetch, uint64_t usec);

/* The first batch sized for a link measured at bytes_per_sec (link.h;
   0: not known, PREFETCH_BATCH_FIRST_*): its data should take three
   quarters of PREFETCH_BATCH_TRANSFER_USEC, within the batches' limits,
   its messages in proportion (PREFETCH_BATCH_FIRST_BYTES per
   PREFETCH_BATCH_FIRST_MESSAGES). */
void prefetch_size_first(struct prefetch *prefetch, uint64_t bytes_per_sec);

/* The view was loaded anew (a SELECT): walk again from its newest message. */
void prefetch_restart(struct prefetch *prefetch);

/* Whether a batch may be due: a walk is not done, or the view has new
   messages (prefetch_next may still find nothing missing). */
bool prefetch_may_have_work(const struct prefetch *prefetch, const struct mailbox_view *view);

/* The next batch's command from after its tag (" FETCH set items\r\n"), in
   buf (size bytes). By sequence number: the upstream sends no EXPUNGE
   during a FETCH (RFC 3501 7.4.1), so the client's numbering, the view's
   and the upstream's stay the same while it runs. Returns 1 with it, 0 when nothing is missing (or
   writes are off, or mode is off), -1 when the store can't be read.
   body_bytes is what the store holds of whole messages now. */
int prefetch_next(struct prefetch *prefetch, const struct prefetch_limits *limits, struct cache *cache,
		  int64_t mailbox_id, const struct mailbox_view *view, char *buf, size_t size);

/* Whether an untagged line ("* n FETCH (...") answers one of the proxy's
   own data fetches (prefetch, or what a FETCH lacks), whose item lists
   start with UID and hold no FLAGS or MODSEQ: "(UID u" and then a data
   item. An unsolicited FETCH (a flag change) has FLAGS or MODSEQ there,
   or no UID first. */
bool prefetch_is_own_line(const unsigned char *data, size_t len);

#endif
