/* SPDX-License-Identifier: MIT */
/* sync-flagsets: a mailbox's flags from one UID set per flag, the sync of a client that enabled neither CONDSTORE nor QRESYNC. */
#ifndef IMAPCACHED_SYNC_FLAGSETS_H
#define IMAPCACHED_SYNC_FLAGSETS_H

#include "imap-seqset.h"
#include "mailbox-view.h"

#include <stdbool.h>
#include <stdint.h>

/*
 * A client that enabled neither extension can't have its flags synced by
 * CHANGEDSINCE (that would enable CONDSTORE on its connection), so its
 * SELECT brings `UID FETCH 1:* (FLAGS)`: about 40 bytes a message, 400 KB
 * for 10,000, which a slow link takes long to carry. With ESEARCH, a
 * mailbox whose FLAGS (as the last SELECT reported them, stored) hold no
 * keyword has the same flags as one `UID SEARCH RETURN (ALL) flag` per
 * system flag: a UID set each, a few bytes per run of messages. Each
 * message's FLAGS is then written as Dovecot writes it (imap_write_flags):
 * \Answered \Flagged \Deleted \Seen \Draft, in that order.
 *
 * Keywords are not searched: Dovecot registers the keyword a SEARCH names
 * when the mailbox has none such (a stored list outlives a mailbox made
 * anew), tells the session so in FLAGS and PERMANENTFLAGS, and the next
 * STORE writes it into the mailbox for good. A mailbox with keywords gets
 * the FETCH.
 */

struct sync_flagsets;

/* The searches for flag_list (a FLAGS list's text, flags one space
   apart). NULL when they can't stand for a FETCH of FLAGS: the list has a
   keyword or a backslash flag other than the five and \Recent (the
   session's, from RECENT), or no memory. */
struct sync_flagsets *sync_flagsets_new(const char *flag_list);
void sync_flagsets_free(struct sync_flagsets **sets);

/* How many searches there are (one per system flag), and search i's
   command from after its tag (" UID SEARCH RETURN (ALL) SEEN\r\n"), valid
   until the next call; NULL past the last or when memory runs out. */
unsigned int sync_flagsets_count(const struct sync_flagsets *sets);
const char *sync_flagsets_command(struct sync_flagsets *sets, unsigned int i);

/* Search i's answer: its ESEARCH's ALL (NULL: no message has the flag).
   Returns false when i is out of range, answered twice, or memory runs out. */
bool sync_flagsets_answer(struct sync_flagsets *sets, unsigned int i, const struct imap_seqset *uids);

/* Whether flag_list, the SELECT's FLAGS now, is the list searched. */
bool sync_flagsets_searched(const struct sync_flagsets *sets, const char *flag_list);

/* Sets the flags of every message of view (loaded with the mailbox's
   UIDs, ascending) from the answers. Returns -1 when a search was not
   answered, an answer names a single UID the view lacks, or memory runs
   out (the view's flags are then partly set: reload it). */
int sync_flagsets_load(const struct sync_flagsets *sets, struct mailbox_view *view);

#endif
