/* SPDX-License-Identifier: MIT */
/* conf: loads and validates imapcached.conf (libconfig) into a typed struct. */
#ifndef IMAPCACHE_CONF_H
#define IMAPCACHE_CONF_H

#include "log.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef CONF_DEFAULT_PATH /* the build sets it from --sysconfdir */
#define CONF_DEFAULT_PATH "/etc/imapcached/imapcached.conf"
#endif
#define CONF_MAX_ERRORS 20 /* past this many, more messages only bury the first */

/* How a listener or an upstream speaks TLS. */
enum conf_tls {
	CONF_TLS_NONE,
	CONF_TLS_STARTTLS,
	CONF_TLS_IMPLICIT,
};

struct conf_listener {
	char *address;         /* numeric IPv4 or IPv6 address */
	unsigned int port;     /* 0: the kernel picks a free port */
	enum conf_tls tls;
	char *cert;            /* PEM chain; set exactly when tls != NONE */
	char *key;
	bool loopback;         /* address is 127.0.0.0/8 or ::1 */
	int line;              /* where it was defined, for messages */
};

struct conf_upstream {
	char *name;
	char *host;
	unsigned int port;
	enum conf_tls tls;
	char *ca_file;         /* NULL: the system CA store */
	bool verify;           /* verify the certificate and host name */
	char **users;          /* fnmatch(3) patterns, matched case-insensitively */
	size_t users_count;    /* 0: this is the default upstream */
	int line;
};

/* cache.prefetch: what a session fetches on its own after a SELECT. */
enum conf_prefetch {
	CONF_PREFETCH_OFF,
	CONF_PREFETCH_HEADERS,   /* the fixed items and the header block of every message */
	CONF_PREFETCH_FULL,      /* and whole messages, within the body budget */
};

/* cache.keyword_searches: how a plain client's sync learns keywords. */
enum conf_keyword_searches {
	CONF_KEYWORD_SEARCHES_AUTO,   /* by searches when the link as measured makes them cheaper than the FETCH */
	CONF_KEYWORD_SEARCHES_ALWAYS, /* by searches, whatever the link */
	CONF_KEYWORD_SEARCHES_NEVER,  /* by the FETCH of every message's FLAGS */
};

struct conf {
	char *path;
	struct conf_listener *listeners;
	size_t listeners_count;
	struct conf_upstream *upstreams;
	size_t upstreams_count;
	/* The one upstream without users, or NULL when every upstream has them. */
	const struct conf_upstream *default_upstream;

	char *cache_dir;
	uint64_t cache_body_budget;   /* bytes of whole message bodies per account */
	uint64_t cache_body_max_size; /* a larger message's body is not kept */
	enum conf_prefetch cache_prefetch; /* what a session fetches on its own while the client is idle */
	enum conf_keyword_searches cache_keyword_searches; /* a plain client's keywords: searches or the FETCH */

	char *control_socket;         /* imapcachectl's UNIX socket (absolute) */

	char *user;                   /* started as root: the user to become once bound; NULL: stay */

	enum log_level log_level;

	unsigned int pool_size;       /* idle connections kept per account; 0: off */
	unsigned int pool_idle_timeout;
	unsigned int pool_max_age;    /* seconds after its upstream login a connection may be reused; 0: no limit */

	/* Seconds. */
	unsigned int timeout_preauth;
	unsigned int timeout_idle;
	unsigned int timeout_upstream_connect;
	unsigned int timeout_upstream_command; /* seconds an upstream may be silent with a command pending */
	unsigned int timeout_shutdown;
	unsigned int timeout_literal;   /* a literal the client announced makes no progress */

	size_t limit_line;
	uint64_t limit_literal_preauth;
	uint64_t limit_literal;
	unsigned int limit_sessions;
	unsigned int limit_sessions_per_account; /* logged-in sessions of one user on one upstream */

	unsigned int refcount;
};

/* Reads and validates the file at path. On success returns a config with
   one reference. On failure returns NULL and sets *errors_r to a newly
   allocated text (free() it) of one "file:line: what is wrong" line per
   problem (control characters, as a quoted value may hold, written as \n,
   \t or \xNN), at most CONF_MAX_ERRORS of them; a file that cannot be read
   gives "file: reason". Only the syntax and values are checked here: cert
   and key files are loaded by whoever makes the TLS contexts.
   An @include line reads the file it names in its place: an absolute
   name as it is, a relative one from path's directory (in included files
   too), at most 10 deep; one that cannot be read is reported as
   "file:line: cannot open include file PATH: reason" (file:line: the
   @include). An included file's problems carry its own name and line. A
   syntax error on a line with an unquoted size (64K) says to quote it. */
struct conf *conf_load(const char *path, char **errors_r);

/* As conf_load, from text in memory; name stands for the file name in
   messages, and relative @include names are taken from the working
   directory. */
struct conf *conf_load_string(const char *text, const char *name, char **errors_r);

/* A config with every default and no upstream (so not a valid one to run:
   conf_load requires an upstream). For tests and tools. */
struct conf *conf_new_defaults(void);

/* Reference counting: sessions keep the config they started with across a
   reload. conf_unref frees on the last reference and sets *config to NULL. */
void conf_ref(struct conf *config);
void conf_unref(struct conf **config);

/* The upstream for a login name: the first upstream, in file order, with
   a users pattern that matches it; else the default upstream; else NULL. */
const struct conf_upstream *conf_upstream_for_user(const struct conf *config,
						       const char *user);

/* "none", "starttls" or "implicit". */
const char *conf_tls_name(enum conf_tls tls);

/* Whether two configs bind the same listeners (address, port, tls), in
   the same order: a reload cannot change them without a restart. */
bool conf_listeners_equal(const struct conf *a, const struct conf *b);

/* The listener of config with like's address, port and tls (config's
   own entry at index prefer when that one has them, else the first), or
   NULL: where a listener bound from an older config finds its
   certificate and key after a reload. */
const struct conf_listener *conf_listener_find(const struct conf *config, const struct conf_listener *like,
					       size_t prefer);

#endif
