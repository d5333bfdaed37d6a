/* SPDX-License-Identifier: MIT */
/* sync: brings a session's mailbox view and the account's store up to date at SELECT/EXAMINE and from every update after it. */
#ifndef IMAPCACHED_SYNC_H
#define IMAPCACHED_SYNC_H

#include "conf.h"
#include "imap-client.h"
#include "link.h"
#include "mailbox-news.h"
#include "mailbox-view.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cache;
struct event_base;

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
 * SELECT. The store learns the UID list and UIDNEXT of a vouched sync at
 * once (a UIDVALIDITY change drops the mailbox's rows first), the flags
 * and MODSEQ it saw (all of them, or the changed ones) over the next
 * event-loop turns, and then its HIGHESTMODSEQ: a stored HIGHESTMODSEQ m
 * vouches that every stored flag row is at least as new as m, which is
 * what lets the next sync ask only for what changed since m.
 */

struct sync;

/* cache may be NULL (no store: the view alone); the view is the session's
   and is filled here. Returns NULL when out of memory. */
struct sync *sync_new(struct cache *cache, struct mailbox_view *view);
void sync_free(struct sync **sync);

/* What the client enabled on its own connection, and what the upstream
   advertises: they choose the sync's form (doc/cache.md). They apply from
   the next sync_select_begin; until set, none (the full form). */
struct sync_options {
	bool condstore;           /* the client enabled CONDSTORE (or QRESYNC) */
	bool qresync;             /* the client enabled QRESYNC */
	bool esearch;             /* the upstream advertises ESEARCH */
	struct link_facts link;   /* the upstream's link as measured: whether keywords are searched */
	enum conf_keyword_searches keyword_searches; /* auto: by link; always; never */
};
void sync_set_options(struct sync *sync, const struct sync_options *options);

/* With a base, the store's flag rows of a sync are written
   SYNC_WRITE_CHUNK at a time, one event-loop turn each, and the mailbox's
   HIGHESTMODSEQ after the last, by a writer that holds a reference to the
   store and goes on after sync_free or the next SELECT; without (NULL,
   the default), all at once. */
#define SYNC_WRITE_CHUNK 500 /* rows per turn: ~20 ms of SQLite writes, so no turn is held long */
void sync_set_event_base(struct sync *sync, struct event_base *base);

/* The client's SELECT (examine false) or EXAMINE of mailbox (the decoded
   astring, len bytes) goes upstream now: the view is emptied, and the
   returned command (from after the tag: " UID FETCH 1:* (FLAGS)\r\n",
   "(FLAGS MODSEQ)" once the client enabled CONDSTORE, or "(FLAGS)
   (CHANGEDSINCE m VANISHED)" or "(FLAGS) (CHANGEDSINCE m)" when the
   options and the store allow; " UID SEARCH RETURN (ALL) ALL\r\n" for
   the SEARCH form of a client that enabled neither) is to be sent right
   behind it, then sync_extra_command's, in the same flight. The text is valid
   until the next call on sync. */
const char *sync_select_begin(struct sync *sync, const char *mailbox, size_t len, bool examine);
/* The sync's i-th command after the first of a flight (from 0), each to
   be sent behind the one before in the same flight, or NULL past the
   last: the CONDSTORE form's " UID SEARCH RETURN (ALL) ALL\r\n" for its
   sequence map; the SEARCH form's one search per system flag
   (sync-flagsets.h), and in its keyword flight (sync_fetch_done) the
   searches after that flight's first. Valid until the next call. */
const char *sync_extra_command(struct sync *sync, unsigned int i);
/* The commands that went, the first and then the extra ones in order
   (fewer than offered when memory ran out: the sync then ends after those,
   and the full form follows). Their tags tell the SEARCH form's answers
   apart: ESEARCH names its command's tag (tags NULL when memory ran out:
   the full form follows). */
void sync_commands_sent(struct sync *sync, const char *const *tags, unsigned int count);

/* An untagged response of the SELECT. */
void sync_select_data(struct sync *sync, const struct imap_client_untagged *untagged);
/* The SELECT completed with status and code (NULL: none). On anything
   but OK the mailbox is not selected (RFC 3501 6.3.1) and the sync's own
   command answers nothing worth keeping. */
void sync_select_done(struct sync *sync, enum imap_client_status status, const char *code);

/* An untagged response of the sync's own commands. Returns true when it
   is the sync's own data (a FETCH, ESEARCH, VANISHED (EARLIER)), which the
   client must not see; false for what the client must get (EXISTS,
   EXPUNGE, RECENT, FLAGS, OK...), which sync takes note of too. */
bool sync_fetch_data(struct sync *sync, const struct imap_client_untagged *untagged);
/* The same for a FETCH line of the sync's own command read from its bytes
   (data, len: "* n FETCH (...)" and its CRLF), the common shape only:
   UID, FLAGS and MODSEQ items as Dovecot writes them. Returns false for
   any other line, which then goes to sync_fetch_data as a response. */
bool sync_fetch_line(struct sync *sync, const unsigned char *data, size_t len);
/* What sync_fetch_line reads of a line (flags: the text between FLAGS's
   parentheses, malloc'd), for its fuzz target; false: not that shape. */
struct sync_fetch_line {
	uint32_t seq, uid;
	uint64_t modseq;   /* 0: none */
	char *flags;
};
bool sync_fetch_line_read(const unsigned char *data, size_t len, struct sync_fetch_line *line_r);
/* One of the sync's own commands completed. After the last, the view is
   loaded (and the store updated) when it can be vouched for. Returns NULL,
   or the first command of a new flight to send now as the sync's own,
   then sync_extra_command's, their tags to sync_commands_sent (their
   answers go to sync_fetch_data and sync_fetch_done as before): the
   SEARCH form's keyword searches, when the SELECT's FLAGS name keywords
   and their flight costs less than the FETCH at the link's measured rate
   (sync_options.link); the full form, when what a CHANGEDSINCE or SEARCH
   form told can't be vouched for (the SELECT reported another
   UIDVALIDITY, a lower HIGHESTMODSEQ, NOMODSEQ, or a mailbox the stored
   UID list contradicts; keywords not searched). */
const char *sync_fetch_done(struct sync *sync, enum imap_client_status status);

/* An untagged response that reaches the client outside the SELECT's round
   trip: EXISTS, EXPUNGE and VANISHED move the view; FETCH FLAGS (and
   MODSEQ) are what this session was told of the message now. */
void sync_update(struct sync *sync, const struct imap_client_untagged *untagged);
/* sync_update of an untagged FETCH line read from its bytes by the
   session's fetch-fill (the upstream's number, and its UID, FLAGS and
   MODSEQ items as written), so that the line need not be parsed into a
   response. Returns true when it did what sync_update does with the
   parsed line; false when the flags are not a plain list of atoms
   (single spaces, no NIL, not too long), and the caller lets the line be
   parsed for sync_update instead. One difference: a line the response
   parser refuses for an item the sync does not read (an INTERNALDATE
   that is no date, an ENVELOPE of the wrong shape) is ignored by
   sync_update, and still tells the view its UID, FLAGS and MODSEQ here. */
struct fetch_fill_line;
bool sync_update_fetch_line(struct sync *sync, const struct fetch_fill_line *line);
/* The client left the mailbox (CLOSE, UNSELECT, a failed SELECT). */
void sync_deselect(struct sync *sync);

/* Whether the view can answer for the selected mailbox now. */
bool sync_is_ready(const struct sync *sync);
/* The store's id of the selected mailbox, or 0 when it has none. */
int64_t sync_mailbox_id(const struct sync *sync);
/* The selected mailbox's name as the client gave it, while ready; NULL. */
const char *sync_mailbox_name(const struct sync *sync);
/* Whether the mailbox was selected read-only (EXAMINE, or [READ-ONLY]). */
bool sync_is_read_only(const struct sync *sync);

/*
 * News of the mailbox (mailbox-news.h): every change this session's
 * client is told of (a FETCH with other flags, EXISTS growing, EXPUNGE,
 * VANISHED: sync_update) is counted for the account's other sessions; a
 * session not yet told of one counted by another answers nothing locally.
 */

/* Whether this session was told of every change counted of its mailbox. */
bool sync_told_all_news(const struct sync *sync);

/* Where a command the session sends upstream starts from. */
struct sync_news_sent {
	struct mailbox_news_sent news;
	uint64_t selection;
	bool selected;           /* the sync was ready: the mark is of its mailbox */
};
struct sync_news_sent sync_news_sent(const struct sync *sync);
/* A command sent at sent completed with OK, after which the upstream has
   told every change made before it (flags and new messages only unless
   expunges_too: not after FETCH, STORE or SEARCH, RFC 3501 7.4.1). */
void sync_news_caught_up(struct sync *sync, const struct sync_news_sent *sent, bool expunges_too);
/* A command of this session changed mailbox (NULL: the selected one):
   counted for the others; this session was told of it when it is the
   selected one. */
void sync_news_add(struct sync *sync, const char *mailbox, bool expunge);

#endif
