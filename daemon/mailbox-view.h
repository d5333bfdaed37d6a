/* SPDX-License-Identifier: MIT */
/* mailbox-view: one session's snapshot of its selected mailbox: sequence numbers, UIDs, flags, held expunges. */
#ifndef IMAPCACHED_MAILBOX_VIEW_H
#define IMAPCACHED_MAILBOX_VIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The client's sequence numbers are positions in the view. They follow
 * the upstream's, except that an expunge the client may not be told of
 * yet (RFC 3501 7.4.1: not during FETCH, STORE or SEARCH) is held: the
 * message keeps its number, marked expunged, until
 * mailbox_view_release_expunges. While any is held the two numberings
 * differ, and mailbox_view_upstream_seq / _client_seq translate.
 *
 * What a message's entry holds is what the upstream last told this
 * session (flags, MODSEQ), or "not known" (UID 0, flags NULL, MODSEQ 0):
 * a new message of an EXISTS has no UID until one is learnt. Known UIDs
 * ascend with the sequence number, as in every IMAP mailbox; unknown
 * ones are only ever at the end.
 */

struct mailbox_view_message {
	uint32_t uid;       /* 0: not known yet */
	uint64_t modseq;    /* 0: not known */
	const char *flags;  /* the flag list's text between its parentheses, the view's (interned: as long as
			       the view lives); NULL: not known */
	bool recent;        /* \Recent, which is this session's alone (never stored) */
	bool expunged;      /* expunged upstream; the client is not told yet */
};

struct mailbox_view;

struct mailbox_view *mailbox_view_new(void);
void mailbox_view_free(struct mailbox_view **view);

/* Replaces every message with count messages of the given UIDs (strictly
   ascending, none 0), flags and MODSEQ not known, nothing held. Returns
   -1 (view unchanged) when the UIDs do not ascend or memory runs out. */
int mailbox_view_load(struct mailbox_view *view, const uint32_t *uids, uint32_t count);

/* Messages the client knows of, held expunges included: its EXISTS. */
uint32_t mailbox_view_count(const struct mailbox_view *view);
/* Messages the upstream has: the count less the held expunges. */
uint32_t mailbox_view_upstream_count(const struct mailbox_view *view);
/* Whether an expunge is held: the numberings differ. */
bool mailbox_view_has_held(const struct mailbox_view *view);

/* The message at the client's sequence number seq, or NULL when out of
   range. The pointer is valid until the view changes. */
const struct mailbox_view_message *mailbox_view_get(const struct mailbox_view *view, uint32_t seq);
/* The client's sequence number of uid, or 0 when the view has no such
   message (or its UID is not known). */
uint32_t mailbox_view_seq_of_uid(const struct mailbox_view *view, uint32_t uid);
/* The highest known UID, or 0. */
uint32_t mailbox_view_max_uid(const struct mailbox_view *view);

/* The upstream's number for the client's seq: 0 when seq is held (the
   upstream has no such message any more) or out of range. */
uint32_t mailbox_view_upstream_seq(const struct mailbox_view *view, uint32_t seq);
/* The client's number for the upstream's seq, or 0 when out of range. */
uint32_t mailbox_view_client_seq(const struct mailbox_view *view, uint32_t upstream_seq);

/* The upstream said "* n EXISTS": it has n messages now; new ones are
   added with UIDs not known. A smaller n than it had is a broken
   upstream: -1, view unchanged. */
int mailbox_view_upstream_exists(struct mailbox_view *view, uint32_t upstream_count);
/* A UID learnt for the client's seq (a FETCH response with UID). -1 when
   seq is out of range or uid would break the ascending order (or differs
   from a UID already known there). */
int mailbox_view_set_uid(struct mailbox_view *view, uint32_t seq, uint32_t uid);
/* Flags (the text between the list's parentheses, len bytes) and MODSEQ
   (0: leave as it is) of the client's seq. -1 when out of range or out
   of memory. */
int mailbox_view_set_flags(struct mailbox_view *view, uint32_t seq, const char *flags, size_t len);
/* Whether a flag list as the view keeps it (NULL: not known) holds flag
   (len bytes): a system flag ("\\Seen") in any case (Dovecot writes them
   in one form), a keyword exactly (Dovecot keeps it as first made). */
bool mailbox_view_flags_have(const char *flags, const char *flag, size_t len);
int mailbox_view_set_modseq(struct mailbox_view *view, uint32_t seq, uint64_t modseq);
void mailbox_view_set_recent(struct mailbox_view *view, uint32_t seq, bool recent);
/* The flags of the client's seq are not known any more (a STORE went
   upstream: with .SILENT its answer won't tell them). */
void mailbox_view_forget_flags(struct mailbox_view *view, uint32_t seq);

/* The upstream expunged its message upstream_seq. With hold, the
   client's numbering stays (the message is marked expunged); without,
   the message goes. Returns the client's sequence number it had, 0 when
   out of range. */
uint32_t mailbox_view_upstream_expunge(struct mailbox_view *view, uint32_t upstream_seq, bool hold);
/* The same for a UID the upstream reported VANISHED; 0 when the view has
   no message of that UID (it never told the client of it). */
uint32_t mailbox_view_expunge_uid(struct mailbox_view *view, uint32_t uid, bool hold);

/* Removes every held expunge, calling report with the client's sequence
   number of each, highest first (so each number is still right when the
   client reads it, as Dovecot orders them). Returns how many. */
typedef void mailbox_view_expunge_fn(uint32_t seq, void *context);
unsigned int mailbox_view_release_expunges(struct mailbox_view *view, mailbox_view_expunge_fn *report,
					   void *context);

#endif
