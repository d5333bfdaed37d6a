/* SPDX-License-Identifier: MIT */
/* upstream-pool: clean, logged-in upstream connections kept after a client's LOGOUT for the next session of the same account. */
#ifndef IMAPCACHED_UPSTREAM_POOL_H
#define IMAPCACHED_UPSTREAM_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct imap_client;
struct imap_client_command;
struct upstream_pool;

#define UPSTREAM_POOL_DIGEST_SIZE 32 /* HMAC-SHA256 */
#define UPSTREAM_POOL_LABEL_MAX 320 /* "user on upstream": a 254-byte address and a short name */
#define UPSTREAM_POOL_GLOBAL_MAX 256 /* idle connections in all: each is a socket here and a login upstream */
#define UPSTREAM_POOL_CAPABILITY_MAX 4096 /* as UPSTREAM_CAPABILITY_MAX */
#define UPSTREAM_POOL_TEXT_MAX 300 /* the text of the login's tagged OK */
#define UPSTREAM_POOL_FRESH_SECS 1 /* answered under 2 s ago (whole seconds of the clock): as good as a NOOP now */
#define UPSTREAM_POOL_WAIT_MSECS 1000 /* UNSELECT answers within a round trip; later, a fresh login is as quick */

/*
 * Which connections may serve a login. account is a keyed digest of the
 * upstream (name, host, port) and the user name; credential one of the
 * account and the secret (password, SASL response, token). The key of the
 * digests is random and made once per pool, so a digest says nothing
 * outside this process; no secret is ever kept in the clear. label is
 * for log lines only (it never holds the secret).
 */
struct upstream_pool_key {
	unsigned char account[UPSTREAM_POOL_DIGEST_SIZE];
	unsigned char credential[UPSTREAM_POOL_DIGEST_SIZE];
	unsigned int generation; /* the pool's at the login: a flush (reload) ends it */
	uint64_t authenticated_at; /* pool clock: when the connection logged in upstream */
	char label[UPSTREAM_POOL_LABEL_MAX];
};

/* What the pool asks of the owner of its connections (opaque pointers). */
struct upstream_pool_callbacks {
	/* The pool is done with a connection (expired, over a cap, emptied):
	   end it politely (LOGOUT upstream), then call upstream_pool_forget
	   once it is gone. The pool keeps counting it as closing until then. */
	void (*close)(void *connection, void *context);
	/* Free the connection now, without a goodbye (the pool is freed). */
	void (*free)(void *connection, void *context);
	/* Seconds on a monotonic clock; NULL: CLOCK_MONOTONIC. For tests. */
	uint64_t (*now)(void *context);
};

/* An empty pool with size 0 (off) until upstream_pool_set_limits. With a
   base, a timer expires idle connections on its own; without one (tests)
   the caller runs upstream_pool_expire. callbacks is copied. Returns NULL
   with *error_r when out of memory or without random bytes for the key. */
struct upstream_pool *upstream_pool_new(struct event_base *base, const struct upstream_pool_callbacks *callbacks,
					void *context, const char **error_r);
/* Calls free for every connection the pool still has (idle, held or
   closing), frees *pool and sets it to NULL. NULL is fine. */
void upstream_pool_free(struct upstream_pool **pool);

/* size: idle connections kept per account (0: pooling off; every idle
   one is closed at once); idle_timeout: seconds an idle one is kept;
   global_max: idle connections in all. Lower limits close the oldest
   idle connections that are now over them. */
void upstream_pool_set_limits(struct upstream_pool *pool, unsigned int size, unsigned int idle_timeout,
			      unsigned int global_max);
bool upstream_pool_is_enabled(const struct upstream_pool *pool);
/* max_age: seconds after its upstream login that a connection may still
   be pooled or taken (0: no limit), so that a password changed or a token
   revoked upstream stops working through a chain of reuses. */
void upstream_pool_set_max_age(struct upstream_pool *pool, unsigned int max_age);
/* Counts flushes (reloads): a key of an older generation is never pooled. */
unsigned int upstream_pool_generation(const struct upstream_pool *pool);

/* Fills *key_r for a login as user on upstream (name, host, port) with
   secret (secret_len bytes: what the client proved itself with; the
   caller wipes it). mechanism ("LOGIN", "PLAIN", "XOAUTH2"...) is part of
   the credential digest. key_r->authenticated_at is now (the login that
   follows is a fresh one unless a take changes it). key_r->generation is
   the pool's now: a caller
   whose configuration is older sets its own (upstream_pool_generation when
   it started). Returns false (logged) when the digest can't be made: then
   the login must neither take nor put a pooled connection. */
bool upstream_pool_make_key(const struct upstream_pool *pool, const char *upstream_name, const char *host,
			    unsigned int port, const char *user, const char *mechanism, const void *secret,
			    size_t secret_len, struct upstream_pool_key *key_r);

enum upstream_pool_put_result {
	UPSTREAM_POOL_PUT_POOLED,  /* kept idle for the next login with the same key */
	UPSTREAM_POOL_PUT_CLOSING, /* pooling is off: handed to the close callback */
};

/* Hands a clean, logged-in, unselected connection to the pool, which owns
   it from now on (also when it was held). It must have answered a command
   just now (its cleaning, or a check): a take within
   UPSTREAM_POOL_FRESH_SECS trusts it without a check of its own.
   capabilities and text are what a login that takes it answers with.
   Over the per-account or global cap,
   the oldest idle connection (of the account, or of all) is closed. A key
   made before the last upstream_pool_flush (a login under the old
   configuration), or whose upstream login is max_age old, is never
   pooled: the connection is closed. */
enum upstream_pool_put_result upstream_pool_put(struct upstream_pool *pool, const struct upstream_pool_key *key,
						void *connection, const char *capabilities, const char *text);

/* The most recently pooled idle connection whose key matches (account and
   credential, generation, not max_age old), removed from the pool and the
   caller's again; its capabilities and login text are copied into the
   buffers (truncated, NUL-terminated) and key->authenticated_at becomes
   the connection's. *fresh_r: it was pooled within UPSTREAM_POOL_FRESH_SECS
   (it answered then): no need to check it. NULL when none matches or
   pooling is off. */
void *upstream_pool_take(struct upstream_pool *pool, struct upstream_pool_key *key,
			 char *capabilities_r, size_t capabilities_size, char *text_r, size_t text_size,
			 bool *fresh_r);

/* Marks a held connection as one a login may take before it is put
   (upstream_pool_take_held), with data for the taker. false: not held. */
bool upstream_pool_set_held_data(struct upstream_pool *pool, void *connection, void *data);
/* The most recently held connection with held data whose key matches
   (as a take matches): no longer the pool's
   (a later put, retire or forget of it is the caller's mistake);
   *held_data_r is its data and key->authenticated_at the connection's.
   NULL when there is none. */
void *upstream_pool_take_held(struct upstream_pool *pool, struct upstream_pool_key *key, void **held_data_r);

/* The pool owns connection but nobody may take it yet (it is being
   cleaned: UNSELECT); later upstream_pool_put, _retire or _forget it.
   Returns false when out of memory: the close callback was called, the
   pool does not track it, and it must not be put. */
bool upstream_pool_hold(struct upstream_pool *pool, void *connection, const struct upstream_pool_key *key);
/* The pool owns connection (held, idle, or new to it) and must close it:
   the close callback is called. */
void upstream_pool_retire(struct upstream_pool *pool, void *connection, const char *reason);
/* connection is gone (closed by the upstream, or after the close
   callback): the pool forgets it without calling anything. Logs one line
   when it was idle. Returns false when the pool did not have it. */
bool upstream_pool_forget(struct upstream_pool *pool, void *connection, const char *reason);

/* Closes every idle connection pooled idle_timeout seconds ago or more,
   or logged in upstream max_age seconds ago or more. */
void upstream_pool_expire(struct upstream_pool *pool);
/* Closes every idle connection (reload, shutdown), logging reason; keys
   made before it are no longer pooled. */
void upstream_pool_flush(struct upstream_pool *pool, const char *reason);

/* Idle connections: of key's account (any credential), or all (NULL). */
unsigned int upstream_pool_idle_count(const struct upstream_pool *pool, const struct upstream_pool_key *key);
/* Connections held or closing: still owned by the pool, not takeable. */
unsigned int upstream_pool_busy_count(const struct upstream_pool *pool);
/* Called when the busy count falls to 0 (for an exit that waits for the
   LOGOUTs); NULL to stop. */
void upstream_pool_set_idle_callback(struct upstream_pool *pool, void (*callback)(void *context), void *context);

/* ---- the daemon's pool of client-core connections ---- */

/* A pool of struct imap_client connections on base: close sends LOGOUT,
   free frees; a pooled one's untagged data is discarded and one that the
   upstream closes (BYE, hang-up) is dropped. */
struct upstream_pool *upstream_pool_new_clients(struct event_base *base, const char **error_r);

/* Hands client (logged in, no command pending, no IDLE, no literal half
   sent) to the pool after its session's LOGOUT; the pool owns it from now
   on and replaces its callbacks. It is held and pooled only after it
   answered OK: a selected mailbox is left with UNSELECT (which expunges
   nothing), an unselected connection is sent NOOP (so that a login within
   UPSTREAM_POOL_FRESH_SECS may trust it even when its session sat idle);
   a login may take it meanwhile (upstream_pool_take_held). Without UNSELECT the caller must not
   pool a selected one (LOGOUT it instead). When pooling is off or the
   command fails, LOGOUT upstream and close. */
void upstream_pool_put_client(struct upstream_pool *pool, const struct upstream_pool_key *key,
			      struct imap_client *client, const char *capabilities, const char *text);

/* upstream_pool_take for client-core connections: the client comes with
   its reading resumed, the pool's callbacks still set (set your own). */
struct imap_client *upstream_pool_take_client(struct upstream_pool *pool, struct upstream_pool_key *key,
					      char *capabilities_r, size_t capabilities_size, char *text_r,
					      size_t text_size, bool *fresh_r);

/* For a login that found no idle connection: a held one whose cleaning
   command (UNSELECT or NOOP, a raw command) is still unanswered, taken
   at once. Its answer still comes first on the wire, to the taker's raw
   callback (command == *cleaning_r, which is valid until its TAGGED line
   or an abort): an OK shows the connection alive and unselected; the
   lines before it are the last session's and not the taker's. The pool's
   callbacks are still set (set your own). NULL when there is none. */
struct imap_client *upstream_pool_take_cleaning_client(struct upstream_pool *pool, struct upstream_pool_key *key,
						       char *capabilities_r, size_t capabilities_size,
						       char *text_r, size_t text_size,
						       struct imap_client_command **cleaning_r);

#endif
