/* SPDX-License-Identifier: MIT */
/* control-digest: the DIGEST request, a digest of each value the store would serve of a mailbox's messages. */
#ifndef IMAPCACHED_CONTROL_DIGEST_H
#define IMAPCACHED_CONTROL_DIGEST_H

#include <stdint.h>

struct cache;
struct evbuffer;

/*
 * The answer to "DIGEST ACCOUNT MAILBOX [UID]" (imapcachectl verify), in
 * lines of TAB-separated fields:
 *
 *   MAILBOX TAB uidvalidity TAB highestmodseq   (first; 0: not known)
 *   VALUE TAB uid TAB kind TAB value            one per stored value of a
 *       message with a row, in UID order; kind as cache_stats_kind_name
 *       (internaldate, envelope, bodystructure, body, header, flags,
 *       size, modseq, message); value: for size and modseq the number,
 *       else the SHA-256 (lower-case hex) of the stored bytes as
 *       cache.h describes them (the whole message for message)
 *   DAMAGED TAB uid TAB kind                    a value that fails its
 *       checksum: the daemon would not serve it (it fetches it from
 *       upstream), and the lookup drops it, as every lookup does
 *   NEXT TAB uid                                the answer stops before
 *       uid: ask again from there
 *
 * One answer covers at most CONTROL_DIGEST_MESSAGES messages and (past
 * its first message) CONTROL_DIGEST_BODY_BYTES of whole messages, so
 * that it holds the event loop only a few milliseconds.
 */
#define CONTROL_DIGEST_MESSAGES 100 /* the values of 100 messages are read and hashed in about a millisecond */
#define CONTROL_DIGEST_BODY_BYTES (2 * 1024 * 1024) /* SHA-256 of 2 MiB takes about 5 ms */
#define CONTROL_DIGEST_PIECE (256 * 1024) /* a whole message is read and hashed this much at a time */

enum control_digest_result {
	CONTROL_DIGEST_DONE,
	CONTROL_DIGEST_NO_MAILBOX, /* the store has no such mailbox */
	CONTROL_DIGEST_FAILED,     /* the store or memory failed (logged) */
};

/* Appends the data lines of DIGEST for mailbox of cache, from first_uid
   on, to out (nothing when it does not return DONE). */
enum control_digest_result control_digest_mailbox(struct cache *cache, const char *mailbox, uint32_t first_uid,
						   struct evbuffer *out);

#endif
