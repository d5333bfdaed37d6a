/* SPDX-License-Identifier: MIT */
/* mailbox-news: which changes of a mailbox each session of an account has been told of, so that a session not yet told asks the upstream. */
#ifndef IMAPCACHED_MAILBOX_NEWS_H
#define IMAPCACHED_MAILBOX_NEWS_H

#include <stdbool.h>
#include <stdint.h>

/*
 * A session's view of its mailbox is what its own upstream connection
 * told it. When another session of the same account changes the mailbox
 * through the proxy (a STORE, an EXPUNGE, an APPEND) or hears of a change,
 * the upstream tells this session's connection only at its next command
 * (Dovecot: after a FETCH's data, with new flags in the data itself). A
 * local answer from the older view would not be the upstream's answer;
 * so every change the proxy learns of is counted here, per account and
 * mailbox, and a session whose mark is behind sends its FETCH and SEARCH
 * upstream, which tells it, until a command that lets the upstream report
 * them has completed.
 *
 * Counts only ever grow, one pair per (account, mailbox name) for the
 * life of the process (a few bytes a mailbox), up to MAILBOX_NEWS_MAX
 * mailboxes. A change that can't be counted (past that, or out of
 * memory) counts for every mailbox: each session is behind until its
 * next command that reports changes. Changes made by clients that bypass
 * the proxy are not seen here (doc/cache.md says what that means).
 */

#define MAILBOX_NEWS_MAX 10000 /* mailboxes changed through the proxy; a linear list stays fast below this */

/* How far the changes of a mailbox go, or how far a session was told. */
struct mailbox_news_mark {
	uint64_t changes;   /* every change: flags, new messages, expunges */
	uint64_t expunges;  /* expunges alone: RFC 3501 7.4.1 lets FETCH, STORE and SEARCH not report them */
};

/* What one session was told. */
struct mailbox_news_told {
	struct mailbox_news_mark all;  /* every change up to here */
	struct mailbox_news_mark own;  /* a running count of the changes it was told of as they were counted */
	uint64_t lost;                 /* mailbox_news_lost as of its last catch-up */
};

/* Where a command the session sent upstream started from. */
struct mailbox_news_sent {
	struct mailbox_news_mark now, own;
	uint64_t lost;
};

/* The mark of every change counted so far of mailbox in account (a
   store's cache_serial). INBOX is matched in any case. */
struct mailbox_news_mark mailbox_news_now(uint64_t account, const char *mailbox);

/* Counts one change of mailbox (an expunge when expunge). With told: a
   session was told of it (it came in that session's upstream answer); if
   it had been told of every earlier change, it stays so. */
void mailbox_news_add(uint64_t account, const char *mailbox, bool expunge, struct mailbox_news_told *told);

/* A session's mark at SELECT: told of everything so far. */
struct mailbox_news_told mailbox_news_told_now(uint64_t account, const char *mailbox);

/* Whether told covers every change of mailbox counted so far. */
bool mailbox_news_told_all(uint64_t account, const char *mailbox, const struct mailbox_news_told *told);

/* Taken as a command goes upstream. */
struct mailbox_news_sent mailbox_news_sent(uint64_t account, const char *mailbox, const struct mailbox_news_told *told);

/* The command sent at sent has completed, and the upstream then reported
   every change made before it was sent (the flag changes and new
   messages only, unless expunges_too): told moves on to sent, or to now
   when every change since came in its own answer. */
void mailbox_news_catch_up(uint64_t account, const char *mailbox, struct mailbox_news_told *told,
			   const struct mailbox_news_sent *sent, bool expunges_too);

/* Forgets every mailbox (tests; the daemon's exit). */
void mailbox_news_clear(void);

#endif
