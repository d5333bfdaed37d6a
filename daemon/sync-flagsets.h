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
 * for 10,000, which a slow link takes long to carry. With ESEARCH, the
 * same flags come as one `UID SEARCH RETURN (ALL) flag` per flag: a UID
 * set each, a few bytes per run of messages. Each message's FLAGS is then
 * written as Dovecot writes it (imap_write_flags): \Answered \Flagged
 * \Deleted \Seen \Draft, in that order, then its keywords in the order of
 * the mailbox's FLAGS list (Dovecot's keyword index).
 *
 * The system flags are searched in the SELECT's own flight. Keywords are
 * searched only once the SELECT's FLAGS are in, in a flight of their own
 * (sync_flagsets_add_keywords), and only those FLAGS names: Dovecot
 * registers a keyword a SEARCH names when the mailbox has none such (a
 * stored list outlives a mailbox made anew), tells the session so in
 * FLAGS and PERMANENTFLAGS, and the next STORE writes it into the mailbox
 * for good. Whether that flight (a round trip) costs less than the FETCH
 * is the sync's choice (sync.h).
 */

#define SYNC_FLAGSETS_SYSTEM 5        /* the system flags' searches, first */
#define SYNC_FLAGSETS_KEYWORDS_MAX 32 /* keywords searched; a mailbox with more gets the FETCH */

struct sync_flagsets;

/* How many keywords flag_list (a FLAGS list's text, flags one space
   apart) has, or -1 when its flags can't stand for a FETCH of FLAGS: a
   backslash flag other than the five and \Recent (the session's, from
   RECENT), a word that is not an atom (or has "["), a keyword twice in
   any case, more than SYNC_FLAGSETS_KEYWORDS_MAX keywords. */
int sync_flagsets_keyword_count(const char *flag_list);

/* The searches of the system flags, for a mailbox whose FLAGS were
   flag_list when last seen (stored); NULL when sync_flagsets_keyword_count
   refuses it, or no memory. */
struct sync_flagsets *sync_flagsets_new(const char *flag_list);
void sync_flagsets_free(struct sync_flagsets **sets);

/* Adds a search for each keyword of flag_list, the SELECT's FLAGS, after
   the system flags' (searches SYNC_FLAGSETS_SYSTEM and on, in the list's
   order); the list is then the one searched. Once only. Returns how many
   were added, or -1 (nothing changed) when the list is refused, keywords
   were added before, or memory runs out. */
int sync_flagsets_add_keywords(struct sync_flagsets *sets, const char *flag_list);

/* How many searches there are (the system flags', then the keywords'),
   and search i's command from after its tag (" UID SEARCH RETURN (ALL)
   SEEN\r\n", " UID SEARCH RETURN (ALL) KEYWORD $Junk\r\n"), valid until
   the next call; NULL past the last or when memory runs out. */
unsigned int sync_flagsets_count(const struct sync_flagsets *sets);
const char *sync_flagsets_command(struct sync_flagsets *sets, unsigned int i);

/* Search i's answer: its ESEARCH's ALL (NULL: no message has the flag).
   Returns false when i is out of range, answered twice, or memory runs out. */
bool sync_flagsets_answer(struct sync_flagsets *sets, unsigned int i, const struct imap_seqset *uids);

/* Whether flag_list, the SELECT's FLAGS now, is the list searched: the
   one given, every keyword of it searched. */
bool sync_flagsets_searched(const struct sync_flagsets *sets, const char *flag_list);

/* Sets the flags of every message of view (loaded with the mailbox's
   UIDs, ascending) from the answers. Returns -1 when a search was not
   answered, an answer names a single UID the view lacks, or memory runs
   out (the view's flags are then partly set: reload it). */
int sync_flagsets_load(const struct sync_flagsets *sets, struct mailbox_view *view);

#endif
