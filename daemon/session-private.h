/* SPDX-License-Identifier: MIT */
/* session-private: what session.c, session-login.c and session-forward.c share of one client's session. */
#ifndef IMAPCACHED_SESSION_PRIVATE_H
#define IMAPCACHED_SESSION_PRIVATE_H

#include "session.h"
#include "imap-client.h"
#include "sync.h"
#include "upstream-pool.h"

#include <event2/bufferevent.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/time.h>

#define SESSION_TAG_MAX 126 /* before login, as Dovecot's imap-login; after it, the line is the limit */
#define SESSION_LITERAL_DIGITS_MAX 19 /* fits a uint64_t; more is an overflow */
#define SESSION_USER_MAX 256 /* an e-mail address is at most 254 bytes (RFC 5321) */
#define SESSION_MECHANISM_MAX 32 /* SASL names are at most 20 characters (RFC 4422) */
#define SESSION_VERB_MAX 64 /* "UID " and the longest extension verb */
#define SESSION_REPLY_MAX (SESSION_TAG_MAX + SESSION_VERB_MAX + 200) /* a reply before login, its tag within SESSION_TAG_MAX */
#define SESSION_IDLE_STAND_IN 1024 /* bytes of a line during IDLE past limits.line that go up in its stead */
#define SESSION_UPSTREAM_HIGH_WATER (256 * 1024) /* stop reading the client past this much unsent upstream */
#define SESSION_LOGIN_LITERALS_MAX 2 /* LOGIN has two arguments: user name and password */
#define SESSION_ID_PAIRS_MAX 30 /* RFC 2971 3.3: at most 30 field-value pairs */
#define SESSION_ID_LITERALS_MAX (2 * SESSION_ID_PAIRS_MAX) /* each field and value may be one */
#define SESSION_HELD_PREFETCH_MAX (256 * 1024) /* held updates past this many bytes: no more prefetch batches until the client takes them */
#define SESSION_PREFETCH_QUIET_MS 250 /* a client sends its next command within a round trip of an answer: this much quiet is an idle client */
#define SESSION_RESEND_MAX (64 * 1024) /* a COPY or MOVE in UID form longer than this is not kept (Dovecot's limit) */

/* The proxy's own command on the client's connection (session-own.c). */
enum session_own_kind {
	SESSION_OWN_SYNC,        /* right behind a SELECT/EXAMINE */
	SESSION_OWN_SEEN,        /* STORE +FLAGS (\Seen) before a FETCH answered here */
	SESSION_OWN_PREFETCH,    /* a batch of what the store lacks, while the client is idle */
	SESSION_OWN_MISSING,     /* what a FETCH answered here lacks */
	SESSION_OWN_SPLICE,      /* the items a FETCH answered here can't vouch for, alone */
	SESSION_OWN_VANISHED,    /* what a FETCH's VANISHED modifier reports, before it is answered here */
};

/* The VANISHED step of a FETCH answered here (fetch.h fetch_facts.vanished_known). */
enum session_vanished_state {
	SESSION_VANISHED_NONE,
	SESSION_VANISHED_ASKED,  /* the own UID FETCH runs */
	SESSION_VANISHED_KNOWN,  /* it said OK: vanished_lines and vanished_uids are what it said */
	SESSION_VANISHED_FAILED, /* it did not: the FETCH goes upstream */
};

/* A client's IDLE that the proxy pauses upstream for a prefetch batch
   (session-own.c): the client stays in IDLE and sees none of it. */
enum session_idle_pause {
	SESSION_IDLE_RUNNING,    /* not paused */
	SESSION_IDLE_ENDING,     /* DONE sent upstream: its tagged OK is kept, not passed on */
	SESSION_IDLE_FETCHING,   /* the batch runs */
	SESSION_IDLE_RESUMING,   /* IDLE sent again with the client's tag: its "+" is not passed on */
};

/* Where the \Seen step of the FETCH waiting to be routed stands. */
enum session_seen_state {
	SESSION_SEEN_NONE,       /* not asked */
	SESSION_SEEN_RUNNING,
	SESSION_SEEN_SET,        /* the upstream said OK: answer with the new flags */
	SESSION_SEEN_REFUSED,    /* it said NO: answer as for .PEEK */
	SESSION_SEEN_FAILED,     /* anything else: the FETCH goes upstream */
};

struct fetch_seen;
struct imap_command;

enum session_state {
	SESSION_STATE_NOT_AUTHENTICATED,
	SESSION_STATE_STARTTLS,  /* OK queued; the handshake starts once it is sent */
	SESSION_STATE_LOGIN,     /* LOGIN/AUTHENTICATE going upstream; client input waits */
	SESSION_STATE_AUTH_CLIENT, /* "+" sent for AUTHENTICATE: the next line is the client's response */
	SESSION_STATE_FORWARDING, /* logged in: commands go upstream, answers come back */
	SESSION_STATE_CLOSING,   /* last reply queued; freed once it is sent */
};

struct session {
	TAILQ_ENTRY(session) link;
	unsigned long id;
	struct event_base *base;
	struct conf *conf;
	evutil_socket_t fd;
	bool fd_owned_by_bev;          /* the TLS bufferevent closes it */
	struct bufferevent *bev;
	SSL_CTX *tls_context;          /* our reference, for STARTTLS */
	bool tls_active;
	bool starttls_offered;
	bool loopback;
	enum session_state state;
	struct event *step_event;      /* deferred work: resume input, start TLS, free */
	bool reading_paused;           /* output past the high-water mark */
	bool output_abandoned;         /* the client can't or won't take more: free at once */

	/* A line refused and dropped to its end: before login, any the
	   parser refused (session-prelogin.c); after it, one over limits.line
	   (session-forward.c). */
	bool skipping_line;            /* the rest of the line is being dropped */
	size_t skipped_line_bytes;     /* of it so far, held to limits.line before login */
	struct evbuffer *pending_reply; /* the skipped line's reply, sent at its end (session_set_pending_reply) */

	/* Before login (session-prelogin.c). */
	unsigned int prelogin_literals; /* {N} literals announced in the command being read */

	/* A literal the client announced must keep coming (timeouts.literal). */
	struct event *literal_timer;
	uint64_t literal_timer_remaining; /* bytes missing when it was last armed */

	/* Login and the upstream connection. */
	struct imap_client *upstream;
	const char *upstream_name;     /* in conf, which the session holds */
	char user[SESSION_USER_MAX];
	char login_tag[SESSION_TAG_MAX + 1];
	char *login_password;          /* LOGIN's password until sent upstream; wiped */
	char login_text[300];          /* the upstream's OK text, while capabilities are asked */
	char auth_mechanism[SESSION_MECHANISM_MAX];
	char *auth_initial;            /* AUTHENTICATE's base64 initial response until sent; wiped */
	struct imap_client_command *auth_command; /* upstream AUTHENTICATE waiting for the client's answer */
	bool auth_login_password;      /* AUTHENTICATE LOGIN: the client's next line is the password */

	/* Forwarding (session-forward.c). Every field from command_parser to
	   waiting_upstream_output is what forwarding made: session_forward_reset
	   clears them all. */
	struct imap_parser *command_parser; /* the client's bytes (made before login, kept after it) */
	struct imap_command_parser *command_reader; /* its complete lines, for routing */
	struct evbuffer *command_bytes; /* the command's raw bytes read and not yet sent upstream */
	char command_verb[SESSION_VERB_MAX]; /* of the command being read, upper case */
	bool command_ready;            /* its line is complete and waits to be routed */
	/* A line refused before its end had come (a parse error, a line
	   without a tag): its bytes up to the end are read into command_bytes
	   first, and then it is answered as a whole line would be. */
	bool refused_line;
	bool refusing_literal;         /* a refused verb's {N} literal: NO [CANNOT] goes instead of "+" */
	bool dropping_refused;         /* a refused verb's line past SESSION_PENDING_MAX: read to its end, not held */
	size_t refused_tag_len;        /* its tag's length in command_bytes; 0: none valid */
	size_t refused_line_bytes;     /* read of it after the refusal (the parser held what came before to limits.line) */
	struct imap_client_command *open_command; /* sent upstream while the client still sends it */
	bool open_is_idle;             /* it is IDLE: the next line (DONE) ends it */
	bool idle_established;         /* the upstream said "+" to it: the client idles */
	/* the client's IDLE sent upstream whose "+" has not come yet (its DONE
	   may have gone already): held lines wait for that "+" */
	const struct imap_client_command *idle_plus_pending;
	enum session_idle_pause idle_pause;
	struct evbuffer *idle_done_reply; /* the paused IDLE's tagged OK, for the client's DONE */
	bool idle_client_done;         /* the client ended its IDLE while it was paused */
	struct evbuffer *idle_client_line; /* the line that ended it, CRLF included: DONE, or what gets BAD */
	char *idle_tag;                /* the client's tag of the paused IDLE */
	bool waiting_go_ahead;         /* it announced a {N}: the client waits for the upstream's "+" */
	bool open_waits_proof;         /* it must go up as it comes, once the connection is proven */
	unsigned int forwarded_pending; /* forwarded commands not yet answered (the sync's too) */
	/* A command was answered here since the upstream last reported
	   expunges (Dovecot does at the end of every command but FETCH, STORE
	   and SEARCH by number): an EXPUNGE another client made may not be
	   reported to the upstream session yet (session-resend.c). */
	bool upstream_behind;

	/* The cache (doc/cache.md). */
	struct cache *cache;           /* the account's store, or NULL: proxy only */
	bool store_paused;             /* reading upstream waits for the store's WAL (cache_wants_pause) */
	struct mailbox_view *view;     /* the selected mailbox as this client sees it */
	struct sync *sync;
	char *news_target;             /* session_news_set_target's, until the command is sent */
	bool news_sets_seen;           /* session_news_set_fetch's, until the command is sent */
	struct imap_client_command *select_command; /* the client's SELECT/EXAMINE on its way */
	struct imap_client_command *own_command;    /* the proxy's own command, while it runs */
	struct imap_client_command **sync_behind;   /* the sync's commands sent behind own_command, in order */
	unsigned int sync_behind_count;            /* answered ones are NULL */
	enum session_own_kind own_kind;
	struct evbuffer *held_reply;   /* the SELECT's tagged reply, until the sync is done */
	bool swallowing_line;          /* the rest of a long line of the own command's data */
	struct evbuffer *idle_held;    /* what the upstream said while the client was idle (prefetch) */
	struct evbuffer *seen_lines;   /* the \Seen STORE's FETCH lines, for a FETCH that then goes upstream */
	bool holding_line;             /* the rest of such a line is still to come */
	struct fetch_seen *seen;       /* the \Seen step's messages (ascending UIDs, old MODSEQs) */
	size_t seen_count;
	enum session_seen_state seen_state;
	uint32_t *missing;             /* UIDs (ascending) the FETCH waiting to be routed lacks */
	size_t missing_count;
	bool missing_tried;            /* they were fetched: what still lacks goes upstream */
	uint64_t missing_changedsince; /* the step asked CHANGEDSINCE this (fetch.h); 0: the plain form */
	bool modseq_stepped;           /* the CHANGEDSINCE step was taken since the SELECT: others are plain */
	struct fetch_splice_group *splice_groups; /* the splice step's own FETCHes (fetch.h) */
	size_t splice_group_count, splice_group_next;
	struct fetch_splice *splice;   /* what they captured, for the FETCH waiting to be routed */
	bool splice_tried;             /* they were sent: what is still not vouched for goes upstream */
	struct evbuffer *splice_bye;   /* the upstream's BYE during the splice step, held for after the answer */
	bool holding_bye;              /* the rest of that line is still to come */
	enum session_vanished_state vanished_state;
	struct evbuffer *vanished_lines; /* its "* VANISHED (EARLIER)" lines (NULL until the step) */
	bool vanished_line_open;       /* the rest of such a line is still to come */
	uint32_t *vanished_uids;       /* the UIDs its FETCH lines named, in their order */
	size_t vanished_uid_count, vanished_uid_alloc;
	bool command_replanned;        /* the command waited (its own steps, pending ones): routed again */
	bool held_first;               /* held lines went out as this command was taken up */
	uint64_t binary_size_usec;     /* when a BINARY or BINARY.SIZE last went upstream (session_now_usec), 0: never */
	uint32_t binary_splice_uid;    /* the last message of the last splice FETCH of BINARY items */
	uint64_t binary_splice_usec;   /* when that was sent, 0: never */
	struct fetch_fill *fill;       /* stores what passing FETCH lines carry */
	struct prefetch *prefetch;     /* the walk over the selected mailbox; NULL: off */
	unsigned int prefetch_batches; /* sent since the walk last ran out */
	struct event *prefetch_timer;  /* the client's quiet must last before a batch starts */
	uint64_t last_activity_usec;   /* monotonic: the client's last command routed or answered */
	uint64_t prefetch_started_usec; /* when the walk's first batch went */
	uint64_t own_data_usec;        /* when the running own FETCH's first line came; 0: none yet */
	uint64_t own_data_bytes;       /* the bytes of its lines so far (link.h) */
	bool own_data_link;            /* they time the link: the sync's full form, a batch of whole messages */
	uint64_t sync_flight_usec;     /* when the SELECT and its sync went; 0: its answer is in */
	struct event *batch_event;     /* ends the store's batch of this event-loop turn */
	bool batch_open;
	bool batch_commit;             /* a tagged reply passed this turn: the batch commits now, not soon */
	struct fetch_answer *local_answer; /* a FETCH answered here, still being written */
	char *local_tag;               /* its tag, for the tagged OK */
	bool client_condstore;         /* the client enabled CONDSTORE (or QRESYNC) upstream */
	bool client_qresync;           /* it enabled QRESYNC */
	/* The command whose sending made client_condstore true, until its
	   tagged reply: a BAD means the upstream enabled nothing, unless
	   something else enabled it meanwhile (then NULL). */
	struct imap_client_command *condstore_tentative;
	bool client_enabled_other;     /* it enabled another extension: forwarding only (session_note_enabled) */
	bool upstream_said_bye;        /* its "* BYE" went to the client: no second one from us */
	bool upstream_reading_paused;  /* the client reads slower than the upstream sends */
	bool waiting_upstream_output;  /* the upstream reads slower than the client sends */
	bool state_logged_in;          /* the upstream accepted the login */
	bool literal_bytes_read;       /* this read took literal bytes: acknowledge them at once */

	/* The upstream pool (upstream-pool.h). */
	struct upstream_pool_key pool_key; /* digests of the account and credential of this login */
	bool pool_key_valid;
	unsigned int pool_generation;  /* the pool's when the session started (with its conf) */
	char *login_capabilities;      /* the tagged OK's filtered list, in the upstream's case */
	struct event *pool_check_timer; /* a taken connection's proof must come back in time; the replay's next turn */
	/* A pooled connection used before it answered (session_login_unproven). */
	bool upstream_unproven;        /* its proof has not answered yet: credentials kept */
	struct imap_client_command *upstream_proof; /* the command that proves it, ahead of the session's */
	struct evbuffer *replay;       /* the first command sent upstream meanwhile, for a fresh login */
	bool replay_lost;              /* that command went up as it came (a literal): it can't be sent again */
	bool replaying;                /* the dead connection is freed: the fresh login follows next turn */
	bool login_answered;           /* the client has its tagged OK: a later login is the replay's */
	struct event *login_timer;     /* connecting and logging in upstream must end within upstream_connect */
	uint64_t pool_fresh_authenticated_at; /* pool_key's before a take changed it */
	bool pool_state_changed;       /* state a pooled connection can't shed (session_line_changes_state) */

	char peer_name[LISTENER_NAME_MAX];
	char listener_name[LISTENER_NAME_MAX];
	uint64_t bytes_in;
	uint64_t bytes_out;
	struct timeval started;
	unsigned int bad_commands;
	const char *end_reason;
	char error_text[300];          /* end_reason when an I/O error ended it */
};

/* The pool and the probe every session uses (session_set_upstream_pool,
   session_set_upstream_probe); NULL when there is none. */
extern struct upstream_pool *session_pool;
extern struct upstream_probe *session_probe;

/* ---- session.c ---- */

/* Runs the session's deferred work from the event loop (session_step). */
void session_schedule_step(struct session *session);
/* Queues a formatted reply to the client, counted in bytes_out. */
void session_send(struct session *session, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* Queues an optional "* BYE bye" and moves to closing; the session is
   freed once its output is sent, or SESSION_CLOSE_TIMEOUT later. */
void session_close(struct session *session, const char *reason, const char *bye);
/* Arms the literal timer while a literal is due, stops it otherwise. */
void session_update_literal_timer(struct session *session);
/* Counts a BAD; too many end the session. Returns false when closed. */
bool session_count_bad(struct session *session);
/* Drops the rest of a line being skipped (skipping_line) up to its LF,
   then sends its reply (session_skipped_line_answer). Past most bytes
   dropped (skipped_line_bytes) the session ends instead. Returns whether
   the line was answered and the session goes on. */
bool session_skip_line(struct session *session, struct evbuffer *input, size_t most);
bool session_skipped_line_answer(struct session *session);
/* The reply a skipped line gets at its end (printf-style; "" for none:
   it was answered otherwise), whatever the tag's length. */
void session_set_pending_reply(struct session *session, const char *format, ...)
	__attribute__((format(printf, 2, 3)));
/* Wipes and frees what a login keeps of the client's secrets. */
void session_wipe_credentials(struct session *session);
/* RFC 3501 tag character: ASTRING-CHAR except "+". */
bool session_tag_char(unsigned char c);
/* The length of the tag that begins a parsed line (args, count: the
   line's top level, complete or so far): the first argument when it is
   an atom of tag characters, else 0. */
size_t session_tag_arg_length(const struct imap_arg *args, unsigned int count);
/* Whether credentials may be taken on this connection: TLS, or loopback. */
bool session_login_allowed(const struct session *session);
/* The capabilities offered before login, space-separated, into buf. */
void session_format_capability(const struct session *session, char *buf, size_t size);

/* ---- session-prelogin.c: the client's commands before login ---- */

/* Makes the session's command parser, with the limits before login. */
int session_prelogin_start(struct session *session, const struct conf *conf);
/* Reads and answers the client's commands (and AUTHENTICATE responses)
   before login, a bounded number per call. */
void session_prelogin_input(struct session *session);
/* The bytes of a literal still due before login (0 when none). */
uint64_t session_prelogin_literal_due(const struct session *session);

/* ---- session-login.c: before login, and the login upstream ---- */

/* LOGIN user password: args are the verb's arguments, literals inline. */
void session_handle_login(struct session *session, const char *tag, const struct imap_arg *args,
			  unsigned int count);
/* ID before login (RFC 2971): the proxy's own name and version. */
void session_handle_id(struct session *session, const char *tag, const struct imap_arg *args, unsigned int count);
/* AUTHENTICATE mechanism [initial-response]. */
void session_handle_authenticate(struct session *session, const char *tag, const struct imap_arg *args,
				 unsigned int count);
/* A line the client sent after a "+" of AUTHENTICATE. */
void session_handle_auth_response(struct session *session, const char *line, size_t len);
/* The timer of a pooled connection's NOOP check. */
void session_pool_check_timeout(evutil_socket_t fd, short what, void *context);
/* A raw line of the unproven connection's proof command (session_upstream_raw
   passes them all here): its tagged OK proves the connection. Returns 0,
   or -1 when it failed (the connection is aborted and the closed callback
   replays). */
int session_login_proof_line(struct session *session, enum imap_client_raw_kind kind, const unsigned char *data,
			     size_t len);
/* The unproven connection is gone (why): logs in anew and sends the
   kept command again. Returns false when that can't be done (a command
   went up as it came): the session must end as for any lost connection. */
bool session_login_replay(struct session *session, const char *why);
/* login_timer's callback: an upstream that has not connected and answered
   the login within timeouts.upstream_connect is closed, and the client's
   login answered NO [UNAVAILABLE]. */
void session_login_timeout(evutil_socket_t fd, short what, void *context);

/* ---- session-forward.c: after login ---- */

/* The client core's callbacks for the upstream connection of a logged-in
   session (set when the login is accepted). */
void session_upstream_closed(struct imap_client *client, const char *reason, void *context);
int session_upstream_raw(struct imap_client *client, struct imap_client_command *command,
			 enum imap_client_raw_kind kind, const unsigned char *data, size_t len, bool line_end,
			 void *context);
void session_upstream_drained(struct imap_client *client, void *context);
/* Reads the client's commands, a bounded number per call: routes each
   (answered here, or upstream byte for byte). */
void session_forward_input(struct session *session);
/* Sets the logged-in session up for its commands and the upstream's
   answers. Returns -1 when out of memory. */
int session_forward_start(struct session *session);
/* Frees what session_forward_start made (NULL parts are fine). */
void session_forward_free(struct session *session);
/* Frees what forwarding made and clears its fields, as before the
   login: the replay's fresh login starts it again. */
void session_forward_reset(struct session *session);
/* Bytes of a literal the client is due to send now (0: none, or it waits
   for the upstream's "+"). */
uint64_t session_forward_literal_due(const struct session *session);
/* The client has read its output (session_write): a FETCH answered here
   goes on. */
void session_forward_output_drained(struct session *session);

/* ---- session-own.c: the proxy's own commands ---- */

/* Whether a line the upstream sends for command is the own command's
   (its tagged reply, its FETCH data): the client must not get it. */
bool session_own_swallows(struct session *session, const struct imap_client_command *command,
			  enum imap_client_raw_kind kind, const unsigned char *data, size_t len, bool line_end);
/* Whether an untagged line the upstream sends while an own command other
   than the sync runs is held for the client (session_own_release_held):
   Dovecot tells a client of changes at the end of its commands (and a
   client with no command in progress, during prefetch, of nothing). Such
   commands go by sequence number, so no EXPUNGE comes among them. */
bool session_own_holds_line(struct session *session, const struct imap_client_command *command,
			    enum imap_client_raw_kind kind, const unsigned char *data, size_t len, bool line_end);
/* Appends the held lines to output: before the tagged reply of the
   client's next command (or IDLE's "+"), as the upstream would have sent
   them. */
void session_own_release_held(struct session *session, struct evbuffer *output);
/* A parsed untagged response while the own command runs. */
void session_own_untagged(struct session *session, const struct imap_client_untagged *untagged);
/* The route's "sent" hook of SELECT and EXAMINE: the sync right behind. */
void session_own_start_sync(struct session *session, const struct imap_command *command,
			    struct imap_client_command *upstream);
/* Sends line, a sync command (sync_select_begin's, or sync_fetch_done's
   next flight), and right behind it the sync's extra commands of that
   flight (sync_extra_command), telling the sync their tags. */
void session_own_send_sync_flight(struct session *session, const char *line);
/* Forgets the sync's commands behind the one running (their memory). */
void session_own_sync_behind_clear(struct session *session);
/* Whether command is the proxy's own one running, or a command of the
   sync's flight not yet answered: Dovecot may answer pipelined commands
   out of order, so any of them may be the one a line belongs to. */
bool session_own_runs(const struct session *session, const struct imap_client_command *command);
/* The link's samples (link.h). A line of len bytes of the own FETCH
   running (a prefetch batch, the sync's full form); and that command's
   end (ok: answered OK), which notes its rate when its lines were many
   enough and own_data_link says they time the link, not the server
   (header batches make Dovecot parse every message). */
void session_own_data(struct session *session, size_t len);
void session_own_data_done(struct session *session, bool ok);
/* The SELECT's tagged reply came: its flight's round trip is noted. */
void session_own_select_answered(struct session *session);
/* Whether command's tagged reply waits in held_reply (a SELECT whose
   sync runs). */
bool session_own_holds_reply(const struct session *session, const struct imap_client_command *command);
/* Has the upstream set \Seen on count messages (their UIDs and sequence
   numbers, ascending) before a FETCH is answered here; the session's
   seen_state tells when it is done. Returns -1 when memory runs out
   (nothing sent). */
int session_own_set_seen(struct session *session, const uint32_t *uids, const uint32_t *seqs, size_t count);
/* Forgets the \Seen step (the FETCH was routed). */
void session_own_seen_reset(struct session *session);
/* Fetches what count messages (UIDs and sequence numbers, ascending)
   lack, items as fetch_answer_missing gave them, before a FETCH is
   answered here. Returns -1 when memory runs out (nothing sent). */
int session_own_fetch_missing(struct session *session, const uint32_t *uids, const uint32_t *seqs, size_t count,
			      const char *items, uint64_t changedsince);
/* The stored HIGHESTMODSEQ of the selected mailbox, for a FETCH's plan
   (fetch_facts.vouched_modseq): 0 when the client has not enabled
   CONDSTORE, nothing vouched is stored, or the step was taken since
   the SELECT (once is enough: it fills the whole view). */
uint64_t session_own_vouched_modseq(struct session *session);
/* Forgets the missing step (the FETCH was routed). */
void session_own_missing_reset(struct session *session);
/* Fetches the (message, item) pairs a FETCH answered here can't vouch
   for, one own FETCH per group (taken over: freed by the step), their
   values captured in session->splice. Returns -1 when memory runs out
   (nothing sent; groups freed). */
int session_own_fetch_splice(struct session *session, struct fetch_splice_group *groups, size_t count);
/* Forgets the splice step and what it captured (the FETCH was routed). */
void session_own_splice_reset(struct session *session);
/* Asks the upstream what "UID FETCH set ... (CHANGEDSINCE changedsince
   VANISHED)" reports, with RFC822.SIZE for items (its lines then tell
   themselves from updates), into the vanished_* fields. Returns -1 when
   memory runs out (nothing sent). */
int session_own_fetch_vanished(struct session *session, const char *set, uint64_t changedsince);
/* Forgets the VANISHED step (the FETCH was routed). */
void session_own_vanished_reset(struct session *session);
/* What a local handler did with a command. */
enum session_local {
	SESSION_LOCAL_UPSTREAM,  /* not answerable here: it goes upstream */
	SESSION_LOCAL_ANSWERED,
	SESSION_LOCAL_WAIT,      /* answerable here, after the answers still pending upstream */
};

/* ---- session-fetch.c ---- */

/* FETCH and UID FETCH after login: answered here, or WAIT for the own
   steps before it, or UPSTREAM. */
enum session_local session_answer_fetch(struct session *session, const char *tag, const struct imap_command *command);
/* Whether held upstream news keeps the command being routed (FETCH or
   SEARCH) from a local answer: the upstream answers in its own order. */
bool session_held_blocks_local(struct session *session);
/* Whether an upstream line is a BYE during the splice step, held for
   session_fetch_cut_answer (and not passed on). */
bool session_holds_splice_bye(struct session *session, const struct imap_client_command *command,
			      enum imap_client_raw_kind kind, const unsigned char *data, size_t len, bool line_end);
/* The upstream ended the splice step with the BYE held in splice_bye, on
   the own FETCH of failing: writes what Dovecot would have written of the
   waiting FETCH before it (fetch_facts.splice_cut) when the store can,
   then that BYE. With more than one group, only when the message the
   answer is cut at is failing's: one before it in a group not sent
   could have failed first. */
void session_fetch_cut_answer(struct session *session, const struct fetch_splice_group *failing);
/* The client is between commands and nothing is pending: the next
   prefetch batch goes once the client has been quiet for
   SESSION_PREFETCH_QUIET_MS (at once when it has been). */
void session_own_prefetch_when_quiet(struct session *session);
/* Whether a line from upstream for command belongs to an IDLE pause (the
   paused IDLE's tagged OK, the resumed one's "+"): kept from the client. */
bool session_own_idle_swallows(struct session *session, const struct imap_client_command *command,
			       enum imap_client_raw_kind kind, const unsigned char *data, size_t len);
/* A forwarded command completed: true when it was the paused IDLE (the
   pause goes on; the caller does nothing more with it). */
bool session_own_idle_ended(struct session *session, struct imap_client_command *command);
/* The client sent a line while its IDLE is paused (DONE): true when the
   pause took it. */
bool session_own_idle_line(struct session *session, struct evbuffer *input, size_t len);
/* The prefetch timer's callback. */
void session_own_prefetch_timer(evutil_socket_t fd, short what, void *context);
/* Monotonic microseconds. */
uint64_t session_now_usec(void);

/* How many sessions are logged in as user on the upstream named
   upstream_name (session.c). */
unsigned int session_count_account(const char *upstream_name, const char *user);

/* ---- session-news.c: changes of mailboxes told to the account's other sessions ---- */

struct session_news_verb;

/* What one forwarded command tells of mailbox changes, at its OK. */
struct session_news {
	const struct session_news_verb *verb; /* NULL: nothing */
	struct sync_news_sent sent;
	char *mailbox;           /* the one session_news_set_target named (APPEND, COPY, MOVE, DELETE, RENAME); NULL */
	char *left;              /* the selected one, as EXPUNGE, MOVE or CLOSE went; NULL */
	bool sets_seen;          /* a FETCH of a body without PEEK: \Seen may change */
};

/* The mailbox the command being routed puts messages into (APPEND, COPY,
   MOVE) or takes away (DELETE, RENAME), for session_news_sending. */
void session_news_set_target(struct session *session, const char *mailbox, size_t len);
/* The FETCH being routed: whether it may set \Seen upstream. */
void session_news_set_fetch(struct session *session, const struct imap_command *command);
/* The command being routed (session->command_verb) goes upstream now. */
void session_news_sending(struct session *session, struct session_news *news);
/* Its tagged reply came (news is cleared). */
void session_news_done(struct session *session, struct session_news *news, enum imap_client_status status);
/* Frees what news holds. */
void session_news_clear(struct session_news *news);
/* Whether a change another session was told of, and this one not yet,
   keeps FETCH and SEARCH from a local answer (logged). */
bool session_news_blocks_local(struct session *session);
/* The \Seen step set \Seen upstream: news for the other sessions. */
void session_news_seen_set(struct session *session);

/* ---- session-enabled.c ---- */

/* Whether a parsed command leaves the upstream connection in a state that
   UNSELECT can't undo, so that it must not serve another session: ENABLE,
   a LOGIN or AUTHENTICATE after login, and RFC 7162's CONDSTORE-enabling
   commands. */
bool session_enabled_changes_state(const struct imap_command *command);
/* The parsed command goes upstream: whether it made client_condstore
   true, which its BAD is to take back (condstore_tentative). */
bool session_enabled_sent(struct session *session, const struct imap_command *command);
/* The tagged reply of a forwarded command. */
void session_enabled_answered(struct session *session, struct imap_client_command *command,
			      enum imap_client_status status);
/* An untagged response from upstream during command (NULL: none):
   ENABLED, a HIGHESTMODSEQ that says CONDSTORE was enabled, a FLAGS that
   keeps the connection out of the pool. */
void session_enabled_untagged(struct session *session, struct imap_client_command *command,
			      const struct imap_client_untagged *untagged);

/* ---- session-local.c: after login, answered here (session-forward.c routes to them) ---- */

/* Each answers the command here and returns SESSION_LOCAL_ANSWERED, or
   says to wait for the forwarded commands before it, or to send it
   upstream. LOGOUT: answered here when the upstream connection can go
   to the pool. COMPRESS, NOTIFY, UNAUTHENTICATE: NO [CANNOT]. SEARCH:
   from the view and the store when the cache gives the upstream's exact
   answer (search.h). */
enum session_local session_answer_capability(struct session *session, const char *tag,
					     const struct imap_command *command);
enum session_local session_answer_starttls(struct session *session, const char *tag,
					   const struct imap_command *command);
enum session_local session_answer_cannot(struct session *session, const char *tag,
					 const struct imap_command *command);
enum session_local session_answer_logout(struct session *session, const char *tag,
					 const struct imap_command *command);
enum session_local session_answer_search(struct session *session, const char *tag,
					 const struct imap_command *command);
/* A STORE went upstream: a .SILENT one's messages' flags are forgotten
   here until the upstream tells them again. */
void session_store_sent(struct session *session, const struct imap_command *command,
			struct imap_client_command *upstream);

/* ---- session-resend.c ---- */

struct session_resend;

/* Whether a command of verb (upper case, "UID FETCH" as two words) makes
   Dovecot report expunges at its end: all but FETCH, STORE and SEARCH by
   number (RFC 3501 7.4.1). */
bool session_verb_reports_expunges(const char *verb);
/* For a COPY or MOVE about to go upstream (line: its bytes after the tag,
   len of them, CRLF included) while upstream_behind: what to send again
   should the upstream refuse it for an expunge it had not reported, in
   UID form. NULL otherwise, or when it can't be had (then a refusal
   stands). */
struct session_resend *session_resend_keep(const struct session *session, const struct imap_command *command,
					   const char *line, size_t len);
/* Whether a tagged reply (its bytes after the tag) is that refusal. */
bool session_resend_refused(const struct session_resend *resend, const unsigned char *data, size_t len);
/* The verb ("UID COPY", "UID MOVE") and the line to send again. */
const char *session_resend_verb(const struct session_resend *resend);
const char *session_resend_line(const struct session_resend *resend, size_t *len_r);
/* NULL is fine. */
void session_resend_free(struct session_resend **resend);

/* ---- session-forward.c ---- */

/* Whether the client is between commands with nothing pending: the proxy
   may use the connection for itself. */
bool session_forward_idle(struct session *session);
/* The client's tag of a forwarded command. */
const char *session_forward_tag(struct imap_client_command *command);
/* Sends IDLE upstream again under the client's tag, as the open command
   (for an IDLE the proxy paused). Returns it, or NULL when out of memory
   (the session is closed). */
struct imap_client_command *session_forward_resend_idle(struct session *session, const char *tag);

#endif
