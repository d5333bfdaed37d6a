/* SPDX-License-Identifier: MIT */
/* sync: brings a session's mailbox view and the account's store up to date at SELECT/EXAMINE and from every update after it. */
#ifndef IMAPCACHED_SYNC_H
#define IMAPCACHED_SYNC_H

#include "imap-client.h"
#include "mailbox-view.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cache;

/*
 * One session's selection, as doc/cache.md describes it. The session sends
 * the client's SELECT or EXAMINE upstream and, right behind it in the same
 * flight, the command sync_select_begin gives (a raw command with the
 * proxy's own tag); it hands sync every untagged response of the SELECT
 * (sync_select_data), the SELECT's completion (sync_select_done), every
 * untagged response of its own command (sync_fetch_data) and that
 * command's completion (sync_fetch_done). Only then does the client get
 * its SELECT's tagged reply. After that, every untagged response that
 * reaches the client goes to sync_update.
 *
 * The view is vouched for (sync_is_ready) only when the sync saw a
 * sequence number and UID for every message the mailbox has, with no
 * expunge in between; otherwise everything goes upstream until the next
 * SELECT. The store learns the UID list, UIDNEXT and HIGHESTMODSEQ of a
 * vouched sync (not the flags: one row each would cost the SELECT's
 * event-loop turn too much; the view holds them), and a UIDVALIDITY
 * change drops the mailbox's rows first.
 */

struct sync;

/* cache may be NULL (no store: the view alone); the view is the session's
   and is filled here. Returns NULL when out of memory. */
struct sync *sync_new(struct cache *cache, struct mailbox_view *view);
void sync_free(struct sync **sync);

/* The client's SELECT (examine false) or EXAMINE of mailbox (the decoded
   astring, len bytes) goes upstream now: the view is emptied, and the
   returned command (from after the tag: " UID FETCH 1:* (FLAGS)\r\n") is
   to be sent right behind it. */
const char *sync_select_begin(struct sync *sync, const char *mailbox, size_t len, bool examine);

/* An untagged response of the SELECT. */
void sync_select_data(struct sync *sync, const struct imap_client_untagged *untagged);
/* The SELECT completed with status and code (NULL: none). On anything
   but OK the mailbox is not selected (RFC 3501 6.3.1) and the sync's own
   command answers nothing worth keeping. */
void sync_select_done(struct sync *sync, enum imap_client_status status, const char *code);

/* An untagged response of the sync's own command. Returns true when it is
   the sync's own data (a FETCH), which the client must not see; false for
   what the client must get (EXISTS, EXPUNGE, RECENT, FLAGS, OK...), which
   sync takes note of too. */
bool sync_fetch_data(struct sync *sync, const struct imap_client_untagged *untagged);
/* The sync's own command completed: the view is loaded (and the store
   updated) when it can be vouched for. */
void sync_fetch_done(struct sync *sync, enum imap_client_status status);

/* An untagged response that reaches the client outside the SELECT's round
   trip: EXISTS, EXPUNGE and VANISHED move the view; FETCH FLAGS (and
   MODSEQ) are what this session was told of the message now. */
void sync_update(struct sync *sync, const struct imap_client_untagged *untagged);
/* The client left the mailbox (CLOSE, UNSELECT, a failed SELECT). */
void sync_deselect(struct sync *sync);

/* Whether the view can answer for the selected mailbox now. */
bool sync_is_ready(const struct sync *sync);
/* The store's id of the selected mailbox, or 0 when it has none. */
int64_t sync_mailbox_id(const struct sync *sync);
/* Whether the mailbox was selected read-only (EXAMINE, or [READ-ONLY]). */
bool sync_is_read_only(const struct sync *sync);

#endif
