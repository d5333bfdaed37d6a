/* SPDX-License-Identifier: MIT */
/* imap-client-private: what imap-client.c, imap-client-connect.c and imap-client-raw.c share of the client core. */
#ifndef IMAPCACHE_IMAP_CLIENT_PRIVATE_H
#define IMAPCACHE_IMAP_CLIENT_PRIVATE_H

#include "imap-client.h"

#include <event2/util.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct bufferevent;
struct event;
struct evutil_addrinfo;
struct evdns_getaddrinfo_request;
struct client_lookup;

#define IMAP_CLIENT_TAG_MAX 32 /* prefix (at most 16 bytes) + a 64-bit counter */
#define IMAP_CLIENT_TAG_PREFIX_MAX 16 /* a tag is an atom; keep it short */
#define IMAP_CLIENT_NAME_MAX 32 /* "UID FETCH" and the longest extension verbs */
#define IMAP_CLIENT_REASON_MAX 512 /* one log line's worth of abort reason */
#define IMAP_CLIENT_READ_MAX (256 * 1024) /* bytes taken from the socket in one turn of the loop: a few MB answer in tens of turns, not hundreds */
#define IMAP_CLIENT_ADDRESS_MAX 64 /* "[" an IPv6 address with scope "]:" port */

#define COMMAND_FLAG_SETUP 0x100 /* sent while connecting (CAPABILITY, STARTTLS) */

enum imap_client_command_state {
	COMMAND_QUEUED,  /* waiting to be (fully) sent */
	COMMAND_SENT,    /* all bytes written, waiting for the tagged reply */
	COMMAND_TRAILING, /* a raw command answered before its last byte: the caller still
	                     writes the rest (a server reads a {N+} literal whatever it answered) */
	COMMAND_DONE,
};

struct imap_client_command {
	struct imap_client *client; /* NULL once done or detached from the client */
	struct imap_client_command *prev, *next;
	enum imap_client_command_state state;
	char *tag;            /* tag_inline, or a longer caller's tag on the heap */
	char tag_inline[IMAP_CLIENT_TAG_MAX];
	char name[IMAP_CLIENT_NAME_MAX]; /* upper-cased verb ("UID FETCH") */
	unsigned int flags;
	bool is_connect;      /* the pseudo-command of imap_client_connect */
	bool owned_by_caller; /* sent without a callback */
	bool detached;        /* caller freed it while pending */
	bool idle;            /* IDLE: no timeout after its continuation */
	bool idle_accepted;
	bool idle_done_wanted; /* DONE asked for before the server's "+" */
	bool raw;             /* imap_client_raw_command_new: caller's bytes, raw responses */
	bool raw_ended;       /* the caller wrote the raw command's last byte */
	char *taken_keyword;  /* imap_client_command_take_responses: kept out of the pool */

	/* What remains to be sent, and where it must pause for "+". */
	struct evbuffer *out;
	size_t *piece_lengths;
	unsigned int piece_count, piece_index;
	bool waiting_continuation;

	imap_client_command_fn *callback;
	void *context;
	imap_client_continuation_fn *continuation_handler;
	void *continuation_context;
	void (*destroy)(void *context);
	void *destroy_context;

	struct imap_client_result result;
	char *result_code, *result_text;
	unsigned int untagged_alloc;
};

enum imap_client_phase {
	PHASE_IDLE,            /* no connection */
	PHASE_TCP,             /* waiting for TCP */
	PHASE_TLS,             /* waiting for the TLS handshake */
	PHASE_GREETING,        /* waiting for the greeting */
	PHASE_SETUP,           /* CAPABILITY / STARTTLS before connect completes */
	PHASE_READY,
};

struct imap_client {
	struct event_base *base;
	struct imap_client_settings settings;
	char *host, *ca_file, tag_prefix[IMAP_CLIENT_TAG_PREFIX_MAX + 1];
	SSL_CTX *ssl_ctx;
	bool own_ssl_ctx;
	uint64_t tag_counter;

	enum imap_client_state state;
	enum imap_client_phase phase;
	bool starttls_done;
	bool read_only;
	bool reading_paused;
	bool bye_received;
	char *capabilities; /* " CAP1 CAP2 " upper-cased, or NULL */

	struct bufferevent *plain_bev, *bev; /* bev: the top (filter when TLS) */
	SSL *ssl;
	struct imap_parser *parser;
	struct event *connect_timer, *command_timer;

	/* Connecting by name: the lookup, then each address in turn (PHASE_TCP). */
	struct client_lookup *lookup;                   /* pending lookup, or NULL */
	struct evdns_getaddrinfo_request *dns_request; /* its evdns request, or NULL */
	struct event *lookup_done_event;                /* goes on with the outcome from the loop */
	int lookup_error;                               /* EVUTIL_EAI_* of the finished lookup */
	bool resolving;                                 /* lookup not finished yet */
	struct evutil_addrinfo *addresses, *next_address;
	unsigned int address_count, addresses_tried;
	struct timespec connect_started;
	struct event *attempt_timer;                    /* this address's share of the connect timeout */
	unsigned int attempt_msecs;
	char attempt_address[IMAP_CLIENT_ADDRESS_MAX];  /* "127.0.0.1:143", "[::1]:143" */
	char attempt_error[IMAP_CLIENT_REASON_MAX / 2]; /* why the last address failed */

	struct imap_client_command *head, *tail; /* every pending command, in order */
	struct imap_client_command *send_cursor; /* first one not fully sent */
	struct imap_client_command *continuation_owner;
	struct imap_client_command *connect_command;
	unsigned int inflight; /* sent, not done */
	bool barrier_inflight;
	/* Commands whose first byte is on the wire and that are not done, by
	   kind: raw and own commands are never on the wire together, so every
	   line belongs to one kind. */
	unsigned int wire_raw, wire_own;

	imap_client_untagged_fn *untagged_callback;
	void *untagged_context;
	imap_client_literal_fn *literal_callback;
	void *literal_context;
	imap_client_raw_fn *raw_callback;
	void *raw_context;
	imap_client_output_drained_fn *drained_callback;
	void *drained_context;
	imap_client_closed_fn *closed_callback;
	void *closed_context;
	size_t drained_low_water;

	struct evbuffer *raw_line; /* bytes of the current raw line not yet delivered */
	bool raw_line_active;      /* the current line is delivered raw */
	bool raw_line_parted;      /* an untagged raw line whose first part went out */
	bool raw_line_stray;       /* a tagged raw line that answers no command went out */
	bool raw_line_handled;     /* the raw callback took an untagged line's data itself */
	bool raw_line_early;       /* the raw callback had the current line before the parser (client_raw_offer_fetch) */

	struct imap_client_untagged_pool pool;

	struct event *deferred_abort_event; /* completes commands sent while disconnected */
	unsigned int callback_depth;
	bool free_pending;
	bool aborting;
	char abort_reason[IMAP_CLIENT_REASON_MAX];
};

/* ---- small helpers ---- */

/* Allocation: out of memory is not a peer's doing, so these abort (tier 2). */
static inline char *xstrdup_len(const char *s, size_t len)
{
	char *copy = malloc(len + 1);

	if (copy == NULL)
		abort(); /* tier 2: out of memory is not a peer's doing */
	memcpy(copy, s, len);
	copy[len] = '\0';
	return copy;
}

static inline char *xstrdup(const char *s)
{
	return xstrdup_len(s, strlen(s));
}

static inline void *xcalloc(size_t count, size_t size)
{
	void *p = calloc(count, size);

	if (p == NULL)
		abort();
	return p;
}

static inline void *xreallocarray(void *p, size_t count, size_t size)
{
	if (size != 0 && count > SIZE_MAX / size)
		abort();
	p = realloc(p, count * size);
	if (p == NULL)
		abort();
	return p;
}

/* ---- status responses ---- */

/* Splits a status response's TEXT arguments into code and text. */
static inline void status_args(const struct imap_arg *args, unsigned int count, const char **code_r,
			       const char **text_r)
{
	*code_r = NULL;
	*text_r = "";
	for (unsigned int i = 0; i < count; i++) {
		if (args[i].type != IMAP_ARG_TEXT)
			continue;
		if (args[i].flags & IMAP_ARG_FLAG_RESPONSE_CODE)
			*code_r = args[i].str;
		else
			*text_r = args[i].str;
	}
}

/* Whether arg is OK, NO or BAD (which, in *status_r). */
static inline bool is_status_word(const struct imap_arg *arg, enum imap_client_status *status_r)
{
	if (imap_arg_atom_equals(arg, "OK"))
		*status_r = IMAP_CLIENT_STATUS_OK;
	else if (imap_arg_atom_equals(arg, "NO"))
		*status_r = IMAP_CLIENT_STATUS_NO;
	else if (imap_arg_atom_equals(arg, "BAD"))
		*status_r = IMAP_CLIENT_STATUS_BAD;
	else
		return false;
	return true;
}

/* ---- imap-client.c: the queue, callbacks, aborting ---- */

/* A new command of client, not queued yet; without a callback the caller owns (frees) it. */
struct imap_client_command *command_new(struct imap_client *client, unsigned int flags,
					imap_client_command_fn *callback, void *context);
/* Appends command to the queue and sends what may go; when not connected it is aborted from the loop. */
void client_queue(struct imap_client *client, struct imap_client_command *command);
/* Writes as much of the queue as the protocol allows (in PHASE_SETUP only set-up commands). */
void client_send_more(struct imap_client *client);
/* Whether the server has seen command and owes it a tagged reply. */
bool command_awaits_reply(const struct imap_client_command *command);
/* The command untagged data is attributed to: the oldest one the server has seen, or NULL. */
struct imap_client_command *client_current_command(struct imap_client *client);
/* Finishes command (status, code or NULL, text or NULL): removes it, applies its effects, tells its owner. */
void command_complete(struct imap_client_command *command, enum imap_client_status status,
		      const char *code, const char *text);
/* Arms the command timer while the server owes an answer; activity (bytes from it) starts it over. */
void client_arm_timer(struct imap_client *client, bool activity);
/* Call before running a caller's callback: the client is not freed under it. */
void client_enter(struct imap_client *client);
/* Call after the callback: true when the client was freed meanwhile (don't touch it). */
bool client_leave(struct imap_client *client);
/* Reads and dispatches the lines in the input, up to IMAP_CLIENT_LINES_PER_READ per call. */
void client_read(struct imap_client *client);
/* The connection's libevent read callback (context: the client). */
void client_read_cb(struct bufferevent *bev, void *context);
/* Closes the connection and completes every pending command with abort, for a printf-style reason. */
void client_abort(struct imap_client *client, const char *format, ...)
	__attribute__((format(printf, 2, 3)));
/* client_abort with a ready reason. */
void client_abort_reason(struct imap_client *client, const char *reason);
/* Completes the queued commands with abort on the next loop iteration (nothing is connected). */
void client_defer_abort_commands(struct imap_client *client);

/* ---- imap-client-connect.c: set-up and tear-down ---- */

/* Replaces the capability list with the space-separated words of text. */
void client_set_capabilities(struct imap_client *client, const char *text);
/* Replaces the capability list with the atoms of a CAPABILITY response's arguments. */
void client_set_capabilities_args(struct imap_client *client, const struct imap_arg *args,
				  unsigned int count);
/* Takes the greeting line (PHASE_GREETING to PHASE_SETUP). Returns 0, or -1 once it aborted the client. */
int client_handle_greeting(struct imap_client *client, const struct imap_arg *args,
			   unsigned int count);
/* Moves the connection forward until it is ready: capabilities, STARTTLS, then the connect command's reply. */
void client_connect_step(struct imap_client *client);
/* Drops the connection (lookup, sockets, TLS, timers, parser state) and goes to PHASE_IDLE; the queue stays. */
void client_close(struct imap_client *client);
/* The connect timer's callback: aborts, naming the phase it got to (context: the client). */
void client_connect_timeout_cb(evutil_socket_t fd, short events, void *context);
/* One address's share of the connect timeout ran out: on to the next (context: the client). */
void client_attempt_timeout_cb(evutil_socket_t fd, short events, void *context);
/* The host lookup finished: connects to its first address, or aborts (context: the client). */
void client_lookup_done_cb(evutil_socket_t fd, short events, void *context);

/* ---- imap-client-raw.c: the raw passthrough ---- */

/* A raw command answered before its last byte was written: COMMAND_TRAILING until imap_client_raw_command_end. */
void command_answer_trailing(struct imap_client_command *command);
/* Sets the output low-water mark of the output drained callback on the connection, if any. */
void client_set_write_watermark(struct imap_client *client);
/* The connection's libevent write callback: calls the output drained callback (context: the client). */
void client_write_cb(struct bufferevent *bev, void *context);
/* imap_parser_feed, keeping a copy of a raw line's bytes; a long untagged one goes out in parts. */
enum imap_parser_result client_feed(struct imap_client *client, struct evbuffer *input);

enum client_raw_offer {
	CLIENT_RAW_OFFER_NONE,  /* not such a line: feed it to the parser as usual */
	CLIENT_RAW_OFFER_TAKEN, /* the raw callback took its data: it is gone from the input, never parsed */
	CLIENT_RAW_OFFER_PARSE, /* the raw callback had its bytes: parse it, without handing them again */
	CLIENT_RAW_OFFER_GONE,  /* the client was aborted or freed meanwhile */
};
/* At the start of a raw line that is whole in input's first piece and
   reads "* n FETCH (" with no literal: hands it to the raw callback before
   the parser reads it, so that a line the callback takes (the sync's
   10,000 FLAGS lines) costs no parse. */
enum client_raw_offer client_raw_offer_fetch(struct imap_client *client, struct evbuffer *input);
/* Hands the rest of a complete raw line to the raw callback. Returns -1 when the client was aborted or freed. */
int client_raw_deliver_line(struct imap_client *client, const struct imap_arg *args,
			    unsigned int count);
/* The raw command an untagged BAD completes because the server refused its (non-atom) tag, or NULL. */
struct imap_client_command *client_tag_refused_command(struct imap_client *client,
						       const struct imap_arg *args, unsigned int count);


#endif
