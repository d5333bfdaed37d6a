/* SPDX-License-Identifier: MIT */
/* imap-client: the asynchronous IMAP client core (connection, TLS, tags, pipelined command queue, untagged data). */
#ifndef IMAPCACHE_IMAP_CLIENT_H
#define IMAPCACHE_IMAP_CLIENT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "imap-client-untagged.h"
#include "imap-parser.h"

struct event_base;
struct evbuffer;
struct evdns_base;
struct imap_client;
struct imap_client_command;

#define IMAP_CLIENT_DEFAULT_CONNECT_TIMEOUT_MSECS (30 * 1000) /* TCP + TLS + greeting over a slow link */
#define IMAP_CLIENT_DEFAULT_COMMAND_TIMEOUT_MSECS (5 * 60 * 1000) /* a silent server this long is gone */
#define IMAP_CLIENT_CONNECT_ATTEMPT_MIN_MSECS (2 * 1000) /* a live server answers a SYN far sooner */
/* What a server's line may hold. Its lines grow with its mailboxes (a
   SEARCH of 12,000 UIDs is past 64 KiB, a FLAGS line of many keywords, a
   THREAD of a deep discussion nests past 32 lists), so these are far
   above the parser's defaults for client commands; past them the
   connection is aborted as sending malformed data. */
#define IMAP_CLIENT_MAX_RESPONSE_LINE (16 * 1024 * 1024) /* bytes outside literals: 2 million UIDs */
#define IMAP_CLIENT_MAX_RESPONSE_ARGS (4 * 1024 * 1024)  /* so that the line's length is the bound */
#define IMAP_CLIENT_MAX_RESPONSE_DEPTH 4096              /* THREAD's nesting: one list per branching */

enum imap_client_tls_mode {
	IMAP_CLIENT_TLS_NONE,     /* plain text (loopback or tests only) */
	IMAP_CLIENT_TLS_STARTTLS, /* plain connect, STARTTLS before anything else */
	IMAP_CLIENT_TLS_IMPLICIT, /* TLS from the first byte (port 993) */
};

struct imap_client_settings {
	const char *host;          /* name or IP literal; also the name verified */
	unsigned int port;
	enum imap_client_tls_mode tls_mode;
	/* Certificate verification is on unless tls_no_verify is set. CA
	   bundle: ca_file, or the system store when NULL; clients with the
	   same two share one context (tls_client_context_get). */
	const char *ca_file;
	bool tls_no_verify;
	/* Optional shared context (not owned; overrides ca_file/tls_no_verify). */
	SSL_CTX *ssl_ctx;
	/* Optional resolver; NULL resolves with a blocking getaddrinfo. */
	struct evdns_base *dns_base;
	/* 0 picks the IMAP_CLIENT_DEFAULT_* value. The connect timeout covers
	   the lookup, TCP, TLS, the greeting and the first CAPABILITY; the
	   command timeout is how long the server may stay silent while a
	   command is pending (IDLE is exempt once the server accepted it).
	   Every address host resolves to (IPv4 and IPv6, in the resolver's
	   order) is tried in turn until one accepts the TCP connection; one
	   that refuses or is unreachable moves on at once. Each address but
	   the last gets the connect time left divided by the addresses left,
	   at least IMAP_CLIENT_CONNECT_ATTEMPT_MIN_MSECS, before the next is
	   tried; the last runs until the connect timeout. TLS and STARTTLS
	   start on the connected socket and verify host, never the address. */
	unsigned int connect_timeout_msecs;
	unsigned int command_timeout_msecs;
	/* Tag prefix; NULL: four random letters A-P as imaplib's Int2AP. */
	const char *tag_prefix;
	/* Literals larger than this are streamed to the literal callback
	   instead of being held (0: the parser's default, 64 KiB). */
	uint64_t max_inline_literal;
};

/* A command's outcome, as imaplib's typ: OK, NO, BAD, or abort (the
   connection was lost, the server said BYE, sent garbage, or timed out). */
enum imap_client_status {
	IMAP_CLIENT_STATUS_OK,
	IMAP_CLIENT_STATUS_NO,
	IMAP_CLIENT_STATUS_BAD,
	IMAP_CLIENT_STATUS_ABORT,
};

enum imap_client_state {
	IMAP_CLIENT_STATE_DISCONNECTED,    /* not yet connected, or aborted */
	IMAP_CLIENT_STATE_CONNECTING,      /* TCP/TLS/greeting/capabilities */
	IMAP_CLIENT_STATE_NOT_AUTHENTICATED,
	IMAP_CLIENT_STATE_AUTHENTICATED,
	IMAP_CLIENT_STATE_SELECTED,
	IMAP_CLIENT_STATE_LOGOUT,          /* LOGOUT sent */
};

/*
 * What a command returns: the status, the tagged line's response code
 * (inside of "[...]", or NULL) and text (for an abort: why), and the
 * untagged responses that arrived while it was the oldest command in
 * flight, in order. Owned by the command.
 */
struct imap_client_result {
	enum imap_client_status status;
	const char *code;
	const char *text;
	struct imap_client_untagged **untagged;
	unsigned int untagged_count;
};

/* Called once when a command completes (any status, abort included).
   result and the command are freed when it returns. */
typedef void imap_client_command_fn(struct imap_client *client,
				    struct imap_client_command *command,
				    const struct imap_client_result *result,
				    void *context);
/* Called for every untagged response, before it is added to a result.
   command is the command it is attributed to, or NULL. untagged is valid
   during the call only. */
typedef void imap_client_untagged_fn(struct imap_client *client,
				     struct imap_client_command *command,
				     const struct imap_client_untagged *untagged,
				     void *context);
/* Called for every chunk of a literal larger than max_inline_literal.
   imap_parser_get_open_args(parser, ...) tells where it is: the top level
   has "*", the number and "FETCH"; the innermost list ends with the
   item name (e.g. "BODY[]"). Return 0 to go on, -1 to abort the
   connection. Without a callback, large literals are skipped. */
typedef int imap_client_literal_fn(struct imap_client *client,
				   struct imap_parser *parser,
				   const struct imap_parser_literal_chunk *chunk,
				   void *context);

/* A client on base; nothing is sent until imap_client_connect. Copies
   what it keeps of settings. Returns NULL with *error_r (static or
   per-thread; see tls.h) when the TLS context can't be made.
   The program must ignore SIGPIPE: a write to a server that hung up
   would kill it (the daemon and imap_client_sync do). */
struct imap_client *imap_client_new(struct event_base *base,
				    const struct imap_client_settings *settings,
				    const char **error_r);
/* Completes every pending command with abort ("client freed") without
   calling their callbacks (commands the caller owns stay readable until
   it frees them), closes the connection, frees *client and sets it to
   NULL. Safe inside the client's own callbacks (the memory is released
   when the callback returns). */
void imap_client_free(struct imap_client **client);

/* Connects, does TLS (implicit or STARTTLS), reads the greeting and the
   capabilities. callback gets OK (greeting OK or PREAUTH; the state says
   which), or abort with the reason (refused, TLS verification, BYE
   greeting, timeout). Returns the connect "command", never NULL.
   The reason when no address connects: "cannot resolve HOST: why", or
   "cannot connect to HOST:PORT (N addresses): LAST-ADDRESS: why". A
   lookup still pending when the client is freed is cancelled. */
struct imap_client_command *imap_client_connect(struct imap_client *client,
						imap_client_command_fn *callback,
						void *context);

/* Same on a socket that is already connected (TCP, a UNIX socket, one
   end of a socketpair; the client owns and closes it). TLS, greeting and
   capabilities go as with imap_client_connect; settings.host is still the
   name verified. */
struct imap_client_command *imap_client_connect_fd(struct imap_client *client, int fd,
						   imap_client_command_fn *callback,
						   void *context);

void imap_client_set_untagged_callback(struct imap_client *client,
				       imap_client_untagged_fn *callback, void *context);
void imap_client_set_literal_callback(struct imap_client *client,
				      imap_client_literal_fn *callback, void *context);

/* Back-pressure: while paused the client reads nothing more from the
   server (bytes already read are still parsed, up to the end of what is
   buffered) and the command timeout is off. Meant for a literal callback
   whose consumer is slow: pause, and resume from the consumer's low-water
   callback. Resuming parses what was left at once. */
void imap_client_set_reading_paused(struct imap_client *client, bool paused);
bool imap_client_is_reading_paused(const struct imap_client *client);

enum imap_client_state imap_client_get_state(const struct imap_client *client);
/* The TLS connection once established (NULL for plain text). */
SSL *imap_client_get_ssl(const struct imap_client *client);
/* Whether the server advertised capability (case-insensitive; "AUTH=PLAIN"
   works too). Capabilities are replaced after STARTTLS and login. */
bool imap_client_has_capability(const struct imap_client *client, const char *capability);
/* The current capability list, space-separated ("" before the first). */
const char *imap_client_get_capabilities(const struct imap_client *client);
/* After SELECT/EXAMINE: whether the mailbox is read-only ([READ-ONLY]). */
bool imap_client_is_read_only(const struct imap_client *client);
/* The tag prefix in use (four letters unless settings gave one). */
const char *imap_client_get_tag_prefix(const struct imap_client *client);

/*
 * Sends a command built from format, in which:
 *   %s  raw text (a keyword, a sequence set, a parenthesized list)
 *   %a  const char *: an astring, written as atom, quoted string or literal
 *   %p  const char *: a list-mailbox pattern (like %a but % and * stay atoms)
 *   %q  const char *: always a quoted string or literal (never an atom)
 *   %L  const void *, size_t: a literal of those bytes
 *   %B  struct evbuffer *: a literal of its bytes, moved out of it (no copy)
 *   %u  unsigned int;  %U  uint64_t;  %%  a percent sign
 * The tag and CRLF are added. Literals use {n+} when the server has
 * LITERAL+ (or LITERAL- and n <= 4096), else wait for the continuation.
 * Commands are pipelined: sent at once unless an earlier command waits
 * for a continuation or must complete first (STARTTLS, AUTHENTICATE,
 * IDLE, LOGIN). callback may be NULL: then the caller owns the returned
 * command, reads it with imap_client_command_get_result once
 * imap_client_command_is_done, and frees it with imap_client_command_free.
 * When the client is not connected the command completes with abort (on
 * the next loop iteration, never inside this call). Never returns NULL.
 */
struct imap_client_command *imap_client_command_send(struct imap_client *client,
						     imap_client_command_fn *callback,
						     void *context, const char *format, ...);
struct imap_client_command *imap_client_command_sendv(struct imap_client *client,
						      imap_client_command_fn *callback,
						      void *context, const char *format,
						      va_list args);

/* Flags that change how a command is sent and completed. */
#define IMAP_CLIENT_COMMAND_FLAG_BARRIER 0x01 /* nothing is sent after it until it completes */
/* Same as imap_client_command_send, with flags. */
struct imap_client_command *imap_client_command_send_flags(struct imap_client *client,
							   unsigned int flags,
							   imap_client_command_fn *callback,
							   void *context, const char *format, ...);

bool imap_client_command_is_done(const struct imap_client_command *command);
/* The result; NULL until the command is done. */
const struct imap_client_result *imap_client_command_get_result(const struct imap_client_command *command);
/* The tag, e.g. "JGKE12" (empty for the connect command). */
const char *imap_client_command_get_tag(const struct imap_client_command *command);
/* For a command sent without a callback: frees it (a pending one is
   detached and completes silently) and sets *command to NULL. */
void imap_client_command_free(struct imap_client_command **command);

/*
 * A command driven by continuations (AUTHENTICATE, IDLE): the handler is
 * called with the text after "+ " of each continuation request. It
 * answers with imap_client_command_continue. Returns 0, or -1 to abort
 * the connection (a protocol violation).
 */
typedef int imap_client_continuation_fn(struct imap_client *client,
					struct imap_client_command *command,
					const char *text, void *context);
/* Sends command_line (without tag and CRLF; may hold no literal) as a
   barrier command whose continuations go to handler. */
struct imap_client_command *imap_client_command_send_continued(struct imap_client *client,
							       const char *command_line,
							       imap_client_continuation_fn *handler,
							       void *handler_context,
							       imap_client_command_fn *callback,
							       void *context);
/* destroy(context) runs when the command is freed (state a continuation
   handler needs until then). */
void imap_client_command_set_destroy(struct imap_client_command *command,
				     void (*destroy)(void *context), void *context);
/* Writes line and CRLF as the answer to a continuation. */
void imap_client_command_continue(struct imap_client_command *command, const char *line);

/* IDLE (RFC 2177): a barrier command; untagged data the server sends
   while idling goes to the untagged callback and into its result. End it
   with imap_client_idle_done (before or after the server's "+"); callback
   then gets the tagged reply. The command timeout is off while idling. */
struct imap_client_command *imap_client_idle(struct imap_client *client,
					     imap_client_command_fn *callback, void *context);
void imap_client_idle_done(struct imap_client_command *command);
/* Whether the server has accepted IDLE ("+") and DONE is not yet sent. */
bool imap_client_idle_is_accepted(const struct imap_client_command *command);

/* The imaplib-style response pool: every untagged response and every
   response code is stored under its keyword ("EXISTS", "UIDVALIDITY",
   "READ-ONLY"...). Pops (returns and forgets) the oldest one stored
   under keyword; the caller unrefs it. NULL when there is none. */
struct imap_client_untagged *imap_client_pop_response(struct imap_client *client,
						      const char *keyword);

/* imaplib's _untagged_response (return and clear) for a command just
   queued: moves the responses stored under keyword in the pool
   into command's result (oldest first, ahead of what it collects itself),
   and keeps the responses under keyword that arrive for command out of
   the pool. Once per command, before it is done (assert). */
void imap_client_command_take_responses(struct imap_client_command *command, const char *keyword);

/* The first untagged response with keyword (NULL: any) in result at or
   after *index (start with 0); *index is moved past it. NULL when there
   is no more. */
const struct imap_client_untagged *imap_client_result_next(const struct imap_client_result *result,
							   const char *keyword,
							   unsigned int *index);

/*
 * Raw passthrough, for a proxy: commands whose bytes the caller writes
 * itself and whose responses it receives as the exact bytes the server
 * sent, on the same connection as the client's own commands.
 *
 * A raw command and an own command (imap_client_command_send and the
 * rest) are never on the wire at the same time: each kind waits until
 * the other kind's commands on the wire are done. So every line the
 * server sends belongs to one kind: while raw commands are on the wire,
 * or none at all (unsolicited data), the lines go to the raw callback;
 * while own commands are, they are consumed as usual (the untagged
 * callback still sees both).
 *
 * Raw lines are still parsed (capabilities, state, BYE, the untagged
 * callback), but are never collected into a result or the response pool.
 */
enum imap_client_raw_kind {
	IMAP_CLIENT_RAW_UNTAGGED,     /* "* ..." */
	IMAP_CLIENT_RAW_CONTINUATION, /* "+ ...": the server waits for more of the raw command */
	IMAP_CLIENT_RAW_TAGGED,       /* the raw command's completion, without its tag:
	                                 the bytes start at the space after it (" OK done\r\n") */
	IMAP_CLIENT_RAW_STRAY,        /* a whole tagged line that answers no command: the server
	                                 read bytes the caller sent within a command it had already
	                                 answered as commands of their own (Dovecot does so with
	                                 the rest of a line it refused as BAD, {N+} or not) */
};
/* Called with the bytes of each raw line, in order. A line comes whole
   (line_end true) unless it is an untagged one longer than 32 KiB (a
   streamed literal): then it comes in consecutive parts, the last with
   line_end true, and only the line's first part starts with "*". command
   is the raw command the line belongs to (the oldest one on the wire;
   for TAGGED, the one it completes), or NULL for unsolicited data. data
   is valid only during the call. Return 0, or -1 to abort the connection,
   or IMAP_CLIENT_RAW_HANDLED for a whole untagged FETCH line whose data
   the callback took from the bytes itself: the untagged callback is then
   not called for it (nor is the line parsed into a response). A whole
   "* n FETCH (" line without a literal comes before the parser reads it
   (client_raw_offer_fetch): one the server wrote wrong reaches the
   callback, and the connection is aborted after it, unless the callback
   took it (HANDLED): the line is then never parsed.
   May pause reading (imap_client_set_reading_paused): the rest of the
   line then waits. */
#define IMAP_CLIENT_RAW_HANDLED 1
typedef int imap_client_raw_fn(struct imap_client *client, struct imap_client_command *command,
			       enum imap_client_raw_kind kind, const unsigned char *data, size_t len,
			       bool line_end, void *context);
void imap_client_set_raw_callback(struct imap_client *client, imap_client_raw_fn *callback,
				  void *context);

/* Starts a raw command: tag (any length; NULL: one of the core's own,
   the tag prefix and a counter) is written; the caller writes the rest
   (" NOOP\r\n", from the space after the tag, literals included,
   exactly as they are to go out) with imap_client_raw_command_write and
   then calls imap_client_raw_command_end. Several raw commands may share
   a tag, a caller's or the core's: replies are matched to them in the
   order they were sent, as a server answers them. A tag that is not an
   atom (RFC 3501 allows "]" in a tag; Dovecot refuses it) may get an
   untagged BAD instead: that completes the oldest raw command on the
   wire, when its tag is such a one, with status BAD (the line went to
   the raw callback). name is
   the verb ("UID FETCH"), for the
   state the command implies (SELECT, CLOSE, LOGOUT; IDLE is exempt from
   the command timeout once the server's "+" came). Bytes go out as soon
   as the command's turn comes; nothing after it is sent before it ended.
   callback (never NULL) gets the parsed completion after the TAGGED bytes
   were delivered, or an abort. It may come before _end (the server
   answered before the caller wrote every byte: a refused synchronizing
   literal, or a {N+} one): the command then stays writable, and holds
   every command behind it, until the caller has written what its own
   client still sends of it (a server reads a LITERAL+ literal whatever it
   answered, RFC 7888) and called _end, which frees it (and the result
   the callback was given: an _end inside the callback comes last). An aborted command
   is freed when callback returns, and must not be written to after that
   (nor after the closed callback). */
struct imap_client_command *imap_client_raw_command_new(struct imap_client *client, const char *tag,
							const char *name, imap_client_command_fn *callback,
							void *context);
void imap_client_raw_command_write(struct imap_client_command *command, const void *data, size_t len);
/* Same, moving data's bytes out of it without copying. */
void imap_client_raw_command_write_buffer(struct imap_client_command *command, struct evbuffer *data);
/* The command's last byte was written: later commands may follow it. */
void imap_client_raw_command_end(struct imap_client_command *command);
bool imap_client_command_is_raw(const struct imap_client_command *command);
/* Whether a raw command was answered before its _end (see above). */
bool imap_client_raw_command_is_answered(const struct imap_client_command *command);
/* The context given with the command's callback. */
void *imap_client_command_get_context(const struct imap_client_command *command);

/* Called once when a connection that was made (or being made) ends for
   any reason (server hung up or said BYE, I/O or protocol error, timeout,
   after LOGOUT), after every pending command completed with abort; not
   when the client is freed. reason says why. The client may be freed
   inside it. */
typedef void imap_client_closed_fn(struct imap_client *client, const char *reason, void *context);
void imap_client_set_closed_callback(struct imap_client *client, imap_client_closed_fn *callback,
				     void *context);

/* Back-pressure towards the server: bytes written but not yet sent
   (the socket's buffer and raw commands still waiting their turn). A
   writer stops when it is large and resumes from the drained callback,
   called when what the socket still has to send falls to low_water. */
typedef void imap_client_output_drained_fn(struct imap_client *client, void *context);
size_t imap_client_get_output_pending(const struct imap_client *client);
void imap_client_set_output_drained_callback(struct imap_client *client, size_t low_water,
					     imap_client_output_drained_fn *callback, void *context);

const char *imap_client_status_name(enum imap_client_status status);

#endif
