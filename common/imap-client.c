/* SPDX-License-Identifier: MIT */
/* imap-client: connection, TLS, tags, pipelined command queue and untagged data of the IMAP client core. */
#include "config.h"
#include "imap-client.h"
#include "imap-util.h"
#include "log.h"
#include "tls.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IMAP_CLIENT_TLS_SOCKET_HIGH_WATER (64 * 1024) /* encrypted bytes queued on the socket */

#define IMAP_CLIENT_TAG_MAX 32 /* prefix (at most 16 bytes) + a 64-bit counter */
#define IMAP_CLIENT_TAG_PREFIX_MAX 16 /* a tag is an atom; keep it short */
#define IMAP_CLIENT_NAME_MAX 32 /* "UID FETCH" and the longest extension verbs */
#define IMAP_CLIENT_LINES_PER_READ 256 /* lines per read callback, so one server can't starve the loop */
#define IMAP_CLIENT_LITERAL_MINUS_MAX 4096 /* RFC 7888: LITERAL- allows {n+} only up to 4096 bytes */
#define IMAP_CLIENT_REASON_MAX 512 /* one log line's worth of abort reason */
#define IMAP_CLIENT_ADDRESS_MAX 64 /* "[" an IPv6 address with scope "]:" port */
#define IMAP_CLIENT_PORT_TEXT_MAX 8 /* "65535" and its NUL */

#define COMMAND_FLAG_SETUP 0x100 /* sent while connecting (CAPABILITY, STARTTLS) */
#define IMAP_CLIENT_RAW_FLUSH_SIZE (32 * 1024) /* an untagged line this long streams a literal: pass it on in parts */
#define IMAP_CLIENT_RAW_HELD_MAX (1024 * 1024) /* a tagged or "+" line carries no literal: longer is garbage */

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

	struct imap_client_untagged_pool pool;

	struct event *deferred_abort_event; /* completes commands sent while disconnected */
	unsigned int callback_depth;
	bool free_pending;
	bool aborting;
	char abort_reason[IMAP_CLIENT_REASON_MAX];
};

static void client_abort(struct imap_client *client, const char *format, ...)
	__attribute__((format(printf, 2, 3)));
static void client_send_more(struct imap_client *client);
static void client_release(struct imap_client *client);

/* ---- small helpers ---- */

static char *xstrdup_len(const char *s, size_t len)
{
	char *copy = malloc(len + 1);

	if (copy == NULL)
		abort(); /* tier 2: out of memory is not a peer's doing */
	memcpy(copy, s, len);
	copy[len] = '\0';
	return copy;
}

static char *xstrdup(const char *s)
{
	return xstrdup_len(s, strlen(s));
}

static void *xcalloc(size_t count, size_t size)
{
	void *p = calloc(count, size);

	if (p == NULL)
		abort();
	return p;
}

static void *xreallocarray(void *p, size_t count, size_t size)
{
	if (size != 0 && count > SIZE_MAX / size)
		abort();
	p = realloc(p, count * size);
	if (p == NULL)
		abort();
	return p;
}

const char *imap_client_status_name(enum imap_client_status status)
{
	switch (status) {
	case IMAP_CLIENT_STATUS_OK: return "OK";
	case IMAP_CLIENT_STATUS_NO: return "NO";
	case IMAP_CLIENT_STATUS_BAD: return "BAD";
	case IMAP_CLIENT_STATUS_ABORT: return "abort";
	}
	return "?";
}

static void command_add_untagged(struct imap_client_command *command, struct imap_client_untagged *untagged)
{
	if (command->result.untagged_count == command->untagged_alloc) {
		command->untagged_alloc = command->untagged_alloc == 0 ? 8 : command->untagged_alloc * 2;
		command->result.untagged = xreallocarray(command->result.untagged, command->untagged_alloc,
							 sizeof(*command->result.untagged));
	}
	imap_client_untagged_ref(untagged);
	command->result.untagged[command->result.untagged_count++] = untagged;
}

struct imap_client_untagged *imap_client_pop_response(struct imap_client *client, const char *keyword)
{
	return imap_client_untagged_pool_pop(&client->pool, keyword);
}

void imap_client_command_take_responses(struct imap_client_command *command, const char *keyword)
{
	struct imap_client_untagged *untagged;

	assert(command->taken_keyword == NULL && command->state != COMMAND_DONE && command->client != NULL);
	while ((untagged = imap_client_untagged_pool_pop(&command->client->pool, keyword)) != NULL) {
		command_add_untagged(command, untagged);
		imap_client_untagged_unref(&untagged);
	}
	command->taken_keyword = xstrdup(keyword);
}

const struct imap_client_untagged *imap_client_result_next(const struct imap_client_result *result,
							   const char *keyword, unsigned int *index)
{
	for (; *index < result->untagged_count; (*index)++) {
		const struct imap_client_untagged *untagged = result->untagged[*index];

		if (keyword == NULL || strcasecmp(untagged->keyword, keyword) == 0) {
			(*index)++;
			return untagged;
		}
	}
	return NULL;
}

/* ---- capabilities ---- */

/* Replaces the capability list with the space-separated words of text. */
static void client_set_capabilities(struct imap_client *client, const char *text)
{
	size_t len = strlen(text);
	char *caps = malloc(len + 3), *p = caps;

	if (caps == NULL)
		abort();
	*p++ = ' ';
	for (const char *s = text; *s != '\0'; s++)
		*p++ = (char)toupper((unsigned char)*s);
	*p++ = ' ';
	*p = '\0';
	free(client->capabilities);
	client->capabilities = caps;
}

static void client_set_capabilities_args(struct imap_client *client, const struct imap_arg *args,
					 unsigned int count)
{
	size_t len = 0;
	char *text, *p;

	for (unsigned int i = 0; i < count; i++)
		len += (args[i].type == IMAP_ARG_ATOM ? (size_t)args[i].len : 0) + 1;
	text = p = xcalloc(1, len + 1);
	for (unsigned int i = 0; i < count; i++) {
		const char *atom;

		if (!imap_arg_get_atom(&args[i], &atom))
			continue;
		if (p != text)
			*p++ = ' ';
		p = stpcpy(p, atom);
	}
	client_set_capabilities(client, text);
	free(text);
}

bool imap_client_has_capability(const struct imap_client *client, const char *capability)
{
	size_t len = strlen(capability);
	const char *p;

	if (client->capabilities == NULL || len == 0)
		return false;
	for (p = client->capabilities; (p = strcasestr(p, capability)) != NULL; p++) {
		if (p[-1] == ' ' && p[len] == ' ')
			return true;
	}
	return false;
}

const char *imap_client_get_capabilities(const struct imap_client *client)
{
	static _Thread_local char buf[4096];
	size_t len;

	if (client->capabilities == NULL)
		return "";
	len = strlen(client->capabilities);
	if (len < 2)
		return "";
	snprintf(buf, sizeof(buf), "%.*s", (int)(len - 2), client->capabilities + 1);
	return buf;
}

/* ---- command life cycle ---- */

static struct imap_client_command *command_new(struct imap_client *client, unsigned int flags,
					       imap_client_command_fn *callback, void *context)
{
	struct imap_client_command *command = xcalloc(1, sizeof(*command));

	command->client = client;
	command->flags = flags;
	command->callback = callback;
	command->context = context;
	command->owned_by_caller = callback == NULL;
	command->tag = command->tag_inline;
	command->out = evbuffer_new();
	if (command->out == NULL)
		abort();
	return command;
}

static void command_release(struct imap_client_command *command)
{
	if (command->destroy != NULL)
		command->destroy(command->destroy_context);
	for (unsigned int i = 0; i < command->result.untagged_count; i++)
		imap_client_untagged_unref(&command->result.untagged[i]);
	free(command->result.untagged);
	free(command->taken_keyword);
	free(command->result_code);
	free(command->result_text);
	free(command->piece_lengths);
	if (command->tag != command->tag_inline)
		free(command->tag);
	if (command->out != NULL)
		evbuffer_free(command->out);
	free(command);
}

static void client_list_remove(struct imap_client *client, struct imap_client_command *command)
{
	if (client->send_cursor == command)
		client->send_cursor = command->next;
	if (client->continuation_owner == command)
		client->continuation_owner = NULL;
	if (client->connect_command == command)
		client->connect_command = NULL;
	if (command->prev != NULL)
		command->prev->next = command->next;
	else
		client->head = command->next;
	if (command->next != NULL)
		command->next->prev = command->prev;
	else
		client->tail = command->prev;
	command->prev = command->next = NULL;
	if (command->piece_index > 0 && client->phase != PHASE_IDLE && command->state != COMMAND_TRAILING) {
		if (command->raw) {
			assert(client->wire_raw > 0);
			client->wire_raw--;
		} else {
			assert(client->wire_own > 0);
			client->wire_own--;
		}
	}
	if (command->state == COMMAND_SENT) {
		assert(client->inflight > 0);
		client->inflight--;
		if (command->flags & IMAP_CLIENT_COMMAND_FLAG_BARRIER)
			client->barrier_inflight = false;
	}
}

/* Arms the command timer while the server owes us an answer; with
   activity (the server sent something) it starts over. */
static void client_arm_timer(struct imap_client *client, bool activity)
{
	bool waiting = false;

	if (client->command_timer == NULL)
		return;
	for (struct imap_client_command *c = client->head; c != NULL; c = c->next) {
		if (c->is_connect || (c->state != COMMAND_SENT && !c->waiting_continuation))
			continue;
		if (c->idle && c->idle_accepted)
			continue;
		waiting = true;
		break;
	}
	if (waiting && client->phase == PHASE_READY && !client->reading_paused) {
		if (!activity && evtimer_pending(client->command_timer, NULL))
			return; /* our own sending is no sign of life from the server */
		struct timeval tv = {
			.tv_sec = client->settings.command_timeout_msecs / 1000,
			.tv_usec = (client->settings.command_timeout_msecs % 1000) * 1000,
		};
		evtimer_add(client->command_timer, &tv);
	} else {
		evtimer_del(client->command_timer);
	}
}

static void client_ignore_result_cb(struct imap_client *client, struct imap_client_command *command,
				    const struct imap_client_result *result, void *context)
{
	(void)client;
	(void)command;
	(void)result;
	(void)context;
}

/* State changes a completed command implies, before its caller hears of it. */
static void client_command_effects(struct imap_client *client, struct imap_client_command *command)
{
	enum imap_client_status status = command->result.status;

	if (status == IMAP_CLIENT_STATUS_ABORT)
		return;
	if (strcmp(command->name, "SELECT") == 0 || strcmp(command->name, "EXAMINE") == 0) {
		if (status == IMAP_CLIENT_STATUS_OK) {
			client->state = IMAP_CLIENT_STATE_SELECTED;
			if (command->result.code != NULL &&
			    strncasecmp(command->result.code, "READ-ONLY", 9) == 0)
				client->read_only = true;
			else if (strcmp(command->name, "EXAMINE") == 0)
				client->read_only = true;
			else
				client->read_only = false;
		} else if (client->state == IMAP_CLIENT_STATE_SELECTED) {
			client->state = IMAP_CLIENT_STATE_AUTHENTICATED; /* RFC 3501 6.3.1 */
		}
	} else if ((strcmp(command->name, "LOGIN") == 0 || strcmp(command->name, "AUTHENTICATE") == 0) &&
		   status == IMAP_CLIENT_STATUS_OK) {
		client->state = IMAP_CLIENT_STATE_AUTHENTICATED;
		/* capabilities change with login (RFC 3501 6.2.2): take them from
		   the tagged OK, or ask */
		if (command->result.code == NULL ||
		    strncasecmp(command->result.code, "CAPABILITY ", 11) != 0) {
			free(client->capabilities);
			client->capabilities = NULL;
			imap_client_command_send(client, client_ignore_result_cb, NULL, "CAPABILITY");
		}
	} else if ((strcmp(command->name, "CLOSE") == 0 || strcmp(command->name, "UNSELECT") == 0) &&
		   status == IMAP_CLIENT_STATUS_OK) {
		client->state = IMAP_CLIENT_STATE_AUTHENTICATED;
		client->read_only = false;
	}
}

static void client_enter(struct imap_client *client)
{
	client->callback_depth++;
}

/* Returns true when the client was freed meanwhile (don't touch it). */
static bool client_leave(struct imap_client *client)
{
	assert(client->callback_depth > 0);
	if (--client->callback_depth == 0 && client->free_pending) {
		client_release(client);
		return true;
	}
	return client->free_pending;
}

/* A raw command answered before the caller wrote its last byte stays in
   the queue, holding the commands behind it, until imap_client_raw_command_end:
   it no longer waits for a reply, but the server still reads the rest. */
static void command_answer_trailing(struct imap_client_command *command)
{
	struct imap_client *client = command->client;

	if (command->piece_index > 0) {
		assert(client->wire_raw > 0);
		client->wire_raw--;
	}
	if (client->continuation_owner == command)
		client->continuation_owner = NULL;
	command->state = COMMAND_TRAILING;
}

/* Whether the server has seen command and owes it a tagged reply. */
static bool command_awaits_reply(const struct imap_client_command *command)
{
	return !command->is_connect && (command->state == COMMAND_SENT ||
					(command->state == COMMAND_QUEUED && command->piece_index > 0));
}

/* Finishes command: removes it, applies its effects, tells its owner. */
static void command_complete(struct imap_client_command *command, enum imap_client_status status,
			     const char *code, const char *text)
{
	struct imap_client *client = command->client;
	bool trailing = command->raw && !command->raw_ended && status != IMAP_CLIENT_STATUS_ABORT &&
			command->state != COMMAND_TRAILING;

	assert(client != NULL && command->state != COMMAND_DONE);
	if (command->state == COMMAND_TRAILING) {
		/* aborted: its reply was delivered already */
		client_list_remove(client, command);
		command_release(command);
		return;
	}
	if (trailing)
		command_answer_trailing(command);
	else
		client_list_remove(client, command);
	if (!trailing) {
		command->state = COMMAND_DONE;
		command->client = NULL;
	}
	command->result.status = status;
	command->result_code = code != NULL ? xstrdup(code) : NULL;
	command->result_text = xstrdup(text != NULL ? text : "");
	command->result.code = command->result_code;
	command->result.text = command->result_text;
	client_command_effects(client, command);
	/* a barrier or a refused literal may have been holding the queue */
	if (!client->aborting && !client->free_pending)
		client_send_more(client);
	if (command->detached) {
		if (!trailing)
			command_release(command);
	} else if (command->callback != NULL && client->free_pending) {
		if (!trailing)
			command_release(command);
	} else if (command->callback != NULL) {
		client_enter(client);
		command->callback(client, command, &command->result, command->context);
		if (!trailing)
			command_release(command);
		client_leave(client);
	}
}

bool imap_client_command_is_done(const struct imap_client_command *command)
{
	return command->state == COMMAND_DONE;
}

const struct imap_client_result *imap_client_command_get_result(const struct imap_client_command *command)
{
	return command->state == COMMAND_DONE ? &command->result : NULL;
}

const char *imap_client_command_get_tag(const struct imap_client_command *command)
{
	return command->tag;
}

void imap_client_command_free(struct imap_client_command **commandp)
{
	struct imap_client_command *command = *commandp;

	if (command == NULL)
		return;
	*commandp = NULL;
	assert(command->owned_by_caller);
	if (command->state == COMMAND_DONE)
		command_release(command);
	else
		command->detached = true;
}

/* ---- building commands ---- */

/* RFC 3501 list-char: ATOM-CHAR, list-wildcards or resp-specials. */
static bool is_list_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f && strchr("(){\"\\", c) == NULL;
}

static void command_end_piece(struct imap_client_command *command, size_t *piece_start)
{
	size_t end = evbuffer_get_length(command->out);

	command->piece_lengths = xreallocarray(command->piece_lengths, command->piece_count + 1,
					       sizeof(*command->piece_lengths));
	command->piece_lengths[command->piece_count++] = end - *piece_start;
	*piece_start = end;
}

/* Writes a literal's announcement; its bytes must follow. */
static void command_put_literal_header(struct imap_client *client, struct imap_client_command *command,
				       size_t len, size_t *piece_start)
{
	bool nonsync = imap_client_has_capability(client, "LITERAL+") ||
		       (imap_client_has_capability(client, "LITERAL-") &&
			len <= IMAP_CLIENT_LITERAL_MINUS_MAX);

	evbuffer_add_printf(command->out, "{%zu%s}\r\n", len, nonsync ? "+" : "");
	if (!nonsync)
		command_end_piece(command, piece_start);
}

static void command_put_literal(struct imap_client *client, struct imap_client_command *command,
				const void *data, size_t len, size_t *piece_start)
{
	command_put_literal_header(client, command, len, piece_start);
	evbuffer_add(command->out, data, len);
}

enum astring_mode { ASTRING_ANY, ASTRING_PATTERN, ASTRING_QUOTED };

static void command_put_astring(struct imap_client *client, struct imap_client_command *command,
				const char *s, enum astring_mode mode, size_t *piece_start)
{
	size_t len = strlen(s);
	enum imap_util_astring_form form = imap_util_astring_form(s, len);
	bool pattern_atom = mode == ASTRING_PATTERN && len > 0 && strcasecmp(s, "NIL") != 0;

	for (size_t i = 0; i < len && pattern_atom; i++)
		pattern_atom = is_list_char((unsigned char)s[i]);
	if (pattern_atom || (form == IMAP_UTIL_ASTRING_ATOM && mode != ASTRING_QUOTED))
		evbuffer_add(command->out, s, len);
	else if (form != IMAP_UTIL_ASTRING_LITERAL)
		imap_util_append_quoted(command->out, s, len);
	else
		command_put_literal(client, command, s, len, piece_start);
}

/* Sets command->name from the first word (two for UID commands). */
static void command_set_name(struct imap_client_command *command, const char *format)
{
	size_t n = 0;
	int words = 0;

	for (const char *p = format; *p != '\0' && n + 1 < sizeof(command->name); p++) {
		if (*p == ' ') {
			if (words == 0 && strcmp(command->name, "UID") == 0) {
				command->name[n++] = ' ';
				words++;
				continue;
			}
			break;
		}
		if (*p == '%')
			break;
		command->name[n++] = (char)toupper((unsigned char)*p);
		command->name[n] = '\0';
	}
}

static void client_defer_abort_commands(struct imap_client *client);

static void client_queue(struct imap_client *client, struct imap_client_command *command)
{
	command->prev = client->tail;
	if (client->tail != NULL)
		client->tail->next = command;
	else
		client->head = command;
	client->tail = command;
	if (client->send_cursor == NULL)
		client->send_cursor = command;
	if (client->phase == PHASE_IDLE)
		client_defer_abort_commands(client);
	else
		client_send_more(client);
}


/* Writes "TAG " and the formatted command with CRLF into command->out. */
static void command_build(struct imap_client *client, struct imap_client_command *command,
			  const char *format, va_list args)
{
	size_t piece_start = 0;

	snprintf(command->tag_inline, sizeof(command->tag_inline), "%s%llu", client->tag_prefix,
		 (unsigned long long)++client->tag_counter);
	command_set_name(command, format);
	evbuffer_add_printf(command->out, "%s ", command->tag);
	for (const char *p = format; *p != '\0'; p++) {
		const char *start = p;

		while (*p != '\0' && *p != '%')
			p++;
		if (p > start)
			evbuffer_add(command->out, start, (size_t)(p - start));
		if (*p == '\0')
			break;
		switch (*++p) {
		case 's':
			evbuffer_add_printf(command->out, "%s", va_arg(args, const char *));
			break;
		case 'a':
			command_put_astring(client, command, va_arg(args, const char *), ASTRING_ANY,
					    &piece_start);
			break;
		case 'p':
			command_put_astring(client, command, va_arg(args, const char *), ASTRING_PATTERN,
					    &piece_start);
			break;
		case 'q':
			command_put_astring(client, command, va_arg(args, const char *), ASTRING_QUOTED,
					    &piece_start);
			break;
		case 'L': {
			const void *data = va_arg(args, const void *);
			size_t len = va_arg(args, size_t);

			command_put_literal(client, command, data, len, &piece_start);
			break;
		}
		case 'B': {
			struct evbuffer *data = va_arg(args, struct evbuffer *);

			command_put_literal_header(client, command, evbuffer_get_length(data), &piece_start);
			evbuffer_add_buffer(command->out, data); /* moves the chains, no copy */
			break;
		}
		case 'u':
			evbuffer_add_printf(command->out, "%u", va_arg(args, unsigned int));
			break;
		case 'U':
			evbuffer_add_printf(command->out, "%llu",
					    (unsigned long long)va_arg(args, uint64_t));
			break;
		case '%':
			evbuffer_add(command->out, "%", 1);
			break;
		default:
			assert(!"unknown conversion in an IMAP command format");
		}
	}
	evbuffer_add(command->out, "\r\n", 2);
	command_end_piece(command, &piece_start);
}

static struct imap_client_command *client_command_sendv(struct imap_client *client, unsigned int flags,
							imap_client_command_fn *callback, void *context,
							const char *format, va_list args)
{
	struct imap_client_command *command = command_new(client, flags, callback, context);

	command_build(client, command, format, args);
	if (strcmp(command->name, "STARTTLS") == 0 || strcmp(command->name, "LOGIN") == 0 ||
	    strcmp(command->name, "AUTHENTICATE") == 0 || strcmp(command->name, "IDLE") == 0)
		command->flags |= IMAP_CLIENT_COMMAND_FLAG_BARRIER;
	if (strcmp(command->name, "LOGOUT") == 0 && client->phase != PHASE_IDLE)
		client->state = IMAP_CLIENT_STATE_LOGOUT; /* its BYE is expected, not an abort */
	client_queue(client, command);
	return command;
}

struct imap_client_command *imap_client_command_sendv(struct imap_client *client,
						      imap_client_command_fn *callback,
						      void *context, const char *format, va_list args)
{
	return client_command_sendv(client, 0, callback, context, format, args);
}

struct imap_client_command *imap_client_command_send(struct imap_client *client,
						     imap_client_command_fn *callback,
						     void *context, const char *format, ...)
{
	struct imap_client_command *command;
	va_list args;

	va_start(args, format);
	command = client_command_sendv(client, 0, callback, context, format, args);
	va_end(args);
	return command;
}

struct imap_client_command *imap_client_command_send_flags(struct imap_client *client,
							   unsigned int flags,
							   imap_client_command_fn *callback,
							   void *context, const char *format, ...)
{
	struct imap_client_command *command;
	va_list args;

	va_start(args, format);
	command = client_command_sendv(client, flags, callback, context, format, args);
	va_end(args);
	return command;
}

struct imap_client_command *imap_client_command_send_continued(struct imap_client *client,
							       const char *command_line,
							       imap_client_continuation_fn *handler,
							       void *handler_context,
							       imap_client_command_fn *callback,
							       void *context)
{
	struct imap_client_command *command = command_new(client, IMAP_CLIENT_COMMAND_FLAG_BARRIER,
							  callback, context);
	size_t piece_start = 0;

	snprintf(command->tag_inline, sizeof(command->tag_inline), "%s%llu", client->tag_prefix,
		 (unsigned long long)++client->tag_counter);
	command_set_name(command, command_line);
	evbuffer_add_printf(command->out, "%s %s\r\n", command->tag, command_line);
	command_end_piece(command, &piece_start);
	command->continuation_handler = handler;
	command->continuation_context = handler_context;
	if (strcmp(command->name, "IDLE") == 0)
		command->idle = true;
	client_queue(client, command);
	return command;
}

void imap_client_command_set_destroy(struct imap_client_command *command, void (*destroy)(void *context),
				     void *context)
{
	command->destroy = destroy;
	command->destroy_context = context;
}

void imap_client_command_continue(struct imap_client_command *command, const char *line)
{
	struct imap_client *client = command->client;

	if (client == NULL || client->bev == NULL || command->state != COMMAND_SENT)
		return; /* already done or aborted: nothing to answer */
	bufferevent_write(client->bev, line, strlen(line));
	bufferevent_write(client->bev, "\r\n", 2);
	if (command->idle)
		command->idle_accepted = false; /* DONE sent: the reply is due */
	client_arm_timer(client, false);
}

/* Writes as much of the queue as the protocol allows. */
static void client_send_more(struct imap_client *client)
{
	struct imap_client_command *command;

	if (client->phase != PHASE_READY && client->phase != PHASE_SETUP)
		return;
	while ((command = client->send_cursor) != NULL) {
		if (command->waiting_continuation || client->barrier_inflight)
			break;
		if ((command->flags & IMAP_CLIENT_COMMAND_FLAG_BARRIER) && client->inflight > 0 &&
		    command->piece_index == 0)
			break; /* a barrier goes out alone, after the others finished */
		if (client->phase == PHASE_SETUP && !command->is_connect &&
		    !(command->flags & COMMAND_FLAG_SETUP))
			break;
		if (command->piece_index == 0 && (command->raw ? client->wire_own : client->wire_raw) > 0)
			break; /* raw and own commands take turns on the wire */
		if (command->raw) {
			if (command->piece_index == 0) {
				command->piece_index = 1;
				client->wire_raw++;
				client->continuation_owner = command;
			}
			evbuffer_add_buffer(bufferevent_get_output(client->bev), command->out);
			if (!command->raw_ended)
				break; /* the caller has more to write: nothing may follow yet */
			if (command->state == COMMAND_TRAILING) {
				client_list_remove(client, command); /* answered already */
				command_release(command);
				continue;
			}
			command->state = COMMAND_SENT;
			client->inflight++;
			client->send_cursor = command->next;
			continue;
		}
		if (command->piece_index == 0)
			client->wire_own++;
		evbuffer_remove_buffer(command->out, bufferevent_get_output(client->bev),
				       command->piece_lengths[command->piece_index++]);
		if (command->piece_index < command->piece_count) {
			command->waiting_continuation = true;
			client->continuation_owner = command;
			break;
		}
		command->state = COMMAND_SENT;
		client->inflight++;
		client->send_cursor = command->next;
		if (command->flags & IMAP_CLIENT_COMMAND_FLAG_BARRIER)
			client->barrier_inflight = true;
		if (command->continuation_handler != NULL)
			client->continuation_owner = command;
	}
	client_arm_timer(client, false);
}

/* ---- reading responses ---- */

/* Splits a status response's TEXT arguments into code and text. */
static void status_args(const struct imap_arg *args, unsigned int count, const char **code_r,
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

static bool is_status_word(const struct imap_arg *arg, enum imap_client_status *status_r)
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

/* The response code's name (up to the first space), upper-cased, in buf. */
static const char *code_name(const char *code, char *buf, size_t size)
{
	size_t n = 0;

	while (code[n] != '\0' && code[n] != ' ' && n + 1 < size) {
		buf[n] = (char)toupper((unsigned char)code[n]);
		n++;
	}
	buf[n] = '\0';
	return buf;
}

/* Side effects of any response code: capabilities, read-only, the pool. */
static void client_handle_code(struct imap_client *client, const char *code)
{
	char name[64];
	const char *rest;
	struct imap_client_untagged *stored;

	if (code == NULL)
		return;
	code_name(code, name, sizeof(name));
	rest = code + strlen(name);
	while (*rest == ' ')
		rest++;
	if (strcmp(name, "CAPABILITY") == 0)
		client_set_capabilities(client, rest);
	else if (strcmp(name, "READ-ONLY") == 0)
		client->read_only = true;
	else if (strcmp(name, "READ-WRITE") == 0)
		client->read_only = false;
	stored = imap_client_untagged_new(name, false, 0, NULL, 0, 0, NULL, rest);
	imap_client_untagged_pool_add(&client->pool, stored);
	imap_client_untagged_unref(&stored);
}

/* The command untagged data is attributed to: the oldest one the server has seen. */
static struct imap_client_command *client_current_command(struct imap_client *client)
{
	for (struct imap_client_command *c = client->head; c != NULL; c = c->next) {
		if (command_awaits_reply(c) || c->is_connect)
			return c;
	}
	return NULL;
}

static void client_connect_step(struct imap_client *client);

static int client_handle_greeting(struct imap_client *client, const struct imap_arg *args,
				  unsigned int count)
{
	const char *code, *text;

	status_args(args, count, &code, &text);
	if (count >= 2 && imap_arg_atom_equals(&args[1], "BYE")) {
		client_abort(client, "server refused the connection: BYE %s", text);
		return -1;
	}
	if (count >= 2 && imap_arg_atom_equals(&args[1], "PREAUTH")) {
		client->state = IMAP_CLIENT_STATE_AUTHENTICATED;
	} else if (count >= 2 && imap_arg_atom_equals(&args[1], "OK")) {
		client->state = IMAP_CLIENT_STATE_NOT_AUTHENTICATED;
	} else {
		client_abort(client, "server sent no IMAP greeting");
		return -1;
	}
	client->phase = PHASE_SETUP;
	if (client->settings.tls_mode == IMAP_CLIENT_TLS_STARTTLS &&
	    client->state == IMAP_CLIENT_STATE_AUTHENTICATED) {
		client_abort(client, "server sent PREAUTH before STARTTLS: refusing plain text");
		return -1;
	}
	return 0;
}

static void client_handle_untagged(struct imap_client *client, const struct imap_arg *args,
				   unsigned int count, bool raw)
{
	struct imap_client_command *command = client_current_command(client);
	struct imap_client_untagged *untagged;
	enum imap_client_status status;
	const char *keyword, *code = NULL, *text = NULL;
	uint32_t number = 0;
	bool has_number = false;
	unsigned int first;

	if (count >= 3 && imap_arg_get_number32(&args[1], &number) &&
	    imap_arg_get_atom(&args[2], &keyword)) {
		has_number = true;
		first = 3;
	} else if (count >= 2 && imap_arg_get_atom(&args[1], &keyword)) {
		first = 2;
	} else {
		client_abort(client, "server sent a malformed untagged response");
		return;
	}
	if (is_status_word(&args[1], &status) || imap_arg_atom_equals(&args[1], "BYE") ||
	    imap_arg_atom_equals(&args[1], "PREAUTH")) {
		status_args(args + 2, count - 2, &code, &text);
		first = count;
		client_handle_code(client, code);
	} else if (strcasecmp(keyword, "CAPABILITY") == 0) {
		client_set_capabilities_args(client, args + first, count - first);
	}
	untagged = imap_client_untagged_new(keyword, has_number, number, args, count, first, code, text);
	if (client->untagged_callback != NULL) {
		client_enter(client);
		client->untagged_callback(client, command, untagged, client->untagged_context);
		if (client_leave(client)) {
			imap_client_untagged_unref(&untagged);
			return;
		}
	}
	/* raw lines went to their owner as bytes: keeping them would grow
	   without bound on a proxy's long session */
	if (command != NULL && !raw)
		command_add_untagged(command, untagged);
	if (!raw && (command == NULL || !command->is_connect) &&
	    (command == NULL || command->taken_keyword == NULL ||
	     strcasecmp(untagged->keyword, command->taken_keyword) != 0))
		imap_client_untagged_pool_add(&client->pool, untagged);
	if (strcmp(untagged->keyword, "BYE") == 0)
		client->bye_received = true;
	if (strcmp(untagged->keyword, "BYE") == 0 && client->state != IMAP_CLIENT_STATE_LOGOUT)
		client_abort(client, "server closed the connection: BYE %s", text);
	imap_client_untagged_unref(&untagged);
}

static void client_handle_continuation(struct imap_client *client, const struct imap_arg *args,
				       unsigned int count)
{
	struct imap_client_command *command = client->continuation_owner;
	const char *code, *text;

	status_args(args, count, &code, &text);
	if (command == NULL) {
		client_abort(client, "server sent a continuation request nobody asked for");
		return;
	}
	if (command->raw) {
		/* its owner got the line and answers with raw bytes */
		if (command->idle)
			command->idle_accepted = true;
		client_arm_timer(client, false);
		return;
	}
	if (command->waiting_continuation) {
		command->waiting_continuation = false;
		client->continuation_owner = NULL;
		client_send_more(client);
		return;
	}
	if (command->continuation_handler == NULL) {
		client_abort(client, "server sent a continuation request nobody asked for");
		return;
	}
	if (command->idle)
		command->idle_accepted = true;
	client_enter(client);
	int ret = command->continuation_handler(client, command, text, command->continuation_context);
	if (client_leave(client))
		return;
	if (ret < 0)
		client_abort(client, "%s: cannot answer the server's continuation request", command->name);
	else
		client_arm_timer(client, false);
}

static void client_handle_tagged(struct imap_client *client, const struct imap_arg *args,
				 unsigned int count)
{
	struct imap_client_command *command;
	enum imap_client_status status;
	const char *tag, *code, *text;

	if (!imap_arg_get_atom(&args[0], &tag) || count < 2 || !is_status_word(&args[1], &status)) {
		client_abort(client, "server sent a malformed tagged response");
		return;
	}
	for (command = client->head; command != NULL; command = command->next) {
		if (command_awaits_reply(command) && strcmp(command->tag, tag) == 0)
			break;
	}
	if (command == NULL) {
		client_abort(client, "server answered tag %s that was not sent", tag);
		return;
	}
	status_args(args + 2, count - 2, &code, &text);
	client_handle_code(client, code);
	command_complete(command, status, code, text);
}

/* Hands bytes of the current raw line to the raw callback. Returns -1
   when the client was aborted or freed meanwhile. */
static int client_raw_deliver(struct imap_client *client, struct imap_client_command *command,
			      enum imap_client_raw_kind kind, bool line_end)
{
	size_t len = evbuffer_get_length(client->raw_line);
	const unsigned char *data = evbuffer_pullup(client->raw_line, -1);
	int ret;

	client_enter(client);
	ret = client->raw_callback(client, command, kind, data, len, line_end, client->raw_context);
	if (client_leave(client))
		return -1;
	if (client->raw_line != NULL)
		evbuffer_drain(client->raw_line, len);
	if (ret < 0) {
		client_abort(client, "the raw data's consumer gave up");
		return -1;
	}
	return client->phase == PHASE_IDLE ? -1 : 0;
}

/* The raw command a tag names, or NULL. */
static struct imap_client_command *client_find_sent(struct imap_client *client, const char *tag)
{
	for (struct imap_client_command *c = client->head; c != NULL; c = c->next) {
		if (command_awaits_reply(c) && strcmp(c->tag, tag) == 0)
			return c;
	}
	return NULL;
}

/* A complete raw line: the rest of its bytes go to the raw callback;
   a tagged one without its tag, and only when it answers a raw command. */
static int client_raw_deliver_line(struct imap_client *client, const struct imap_arg *args,
				   unsigned int count)
{
	struct imap_client_command *command = NULL;
	const char *tag;

	if (imap_arg_atom_equals(&args[0], "*"))
		return client_raw_deliver(client, client_current_command(client), IMAP_CLIENT_RAW_UNTAGGED,
					  true);
	if (imap_arg_atom_equals(&args[0], "+")) {
		command = client->continuation_owner;
		if (command == NULL || !command->raw) {
			evbuffer_drain(client->raw_line, evbuffer_get_length(client->raw_line));
			return 0; /* the usual checks refuse it */
		}
		return client_raw_deliver(client, command, IMAP_CLIENT_RAW_CONTINUATION, true);
	}
	enum imap_client_status status;

	if (imap_arg_get_atom(&args[0], &tag) && count >= 2 && is_status_word(&args[1], &status) &&
	    (command = client_find_sent(client, tag)) != NULL && command->raw) {
		evbuffer_drain(client->raw_line, strlen(tag));
		return client_raw_deliver(client, command, IMAP_CLIENT_RAW_TAGGED, true);
	}
	if (command == NULL && imap_arg_get_atom(&args[0], &tag) && count >= 2 && is_status_word(&args[1], &status)) {
		client->raw_line_stray = true;
		return client_raw_deliver(client, NULL, IMAP_CLIENT_RAW_STRAY, true);
	}
	evbuffer_drain(client->raw_line, evbuffer_get_length(client->raw_line));
	return 0;
}

/* RFC 3501 ATOM-CHAR: a tag of them is one every server takes. */
static bool tag_is_atom(const char *tag)
{
	for (; *tag != '\0'; tag++) {
		unsigned char c = (unsigned char)*tag;

		if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\]", c) != NULL)
			return false;
	}
	return true;
}

/* A server that refuses a tag answers with an untagged BAD (Dovecot
   refuses "]", which RFC 3501 allows in a tag): the raw command it
   completes is the oldest on the wire, when its tag is not an atom. */
static struct imap_client_command *client_tag_refused_command(struct imap_client *client,
							      const struct imap_arg *args, unsigned int count)
{
	struct imap_client_command *command = client_current_command(client);

	if (count < 2 || !imap_arg_atom_equals(&args[1], "BAD") || command == NULL || !command->raw ||
	    command->is_connect || tag_is_atom(command->tag))
		return NULL;
	return command;
}

/* Whether the line about to start belongs to raw commands. */
static bool client_line_is_raw(struct imap_client *client)
{
	struct imap_client_command *command;

	if (client->raw_callback == NULL || client->phase != PHASE_READY)
		return false;
	command = client_current_command(client);
	return command == NULL ? client->wire_own == 0 : command->raw;
}

/* imap_parser_feed, keeping a copy of the bytes of a raw line; a long
   untagged one (a streamed literal) is passed on in parts as it comes. */
static enum imap_parser_result client_feed(struct imap_client *client, struct evbuffer *input)
{
	if (!client->raw_line_active && !imap_parser_is_mid_line(client->parser)) {
		client->raw_line_active = client_line_is_raw(client);
		client->raw_line_parted = false;
	}
	if (!client->raw_line_active)
		return imap_parser_feed(client->parser, input);
	for (;;) {
		struct evbuffer_iovec vec;
		enum imap_parser_result result;
		size_t consumed, held;

		if (evbuffer_peek(input, -1, NULL, &vec, 1) < 1)
			return IMAP_PARSER_NEED_MORE;
		if (vec.iov_len > IMAP_CLIENT_RAW_FLUSH_SIZE)
			vec.iov_len = IMAP_CLIENT_RAW_FLUSH_SIZE; /* hold at most two parts' worth */
		result = imap_parser_feed_bytes(client->parser, vec.iov_base, vec.iov_len, &consumed);
		if (client->free_pending || client->raw_line == NULL)
			return IMAP_PARSER_ERROR;
		evbuffer_add(client->raw_line, vec.iov_base, consumed);
		evbuffer_drain(input, consumed);
		if (result != IMAP_PARSER_NEED_MORE)
			return result;
		held = evbuffer_get_length(client->raw_line);
		if (held >= IMAP_CLIENT_RAW_FLUSH_SIZE) {
			unsigned char first = '*';

			if (!client->raw_line_parted)
				evbuffer_copyout(client->raw_line, &first, 1);
			if (first == '*') {
				client->raw_line_parted = true;
				if (client_raw_deliver(client, client_current_command(client),
						       IMAP_CLIENT_RAW_UNTAGGED, false) < 0)
					return IMAP_PARSER_ERROR;
				if (client->reading_paused)
					return IMAP_PARSER_NEED_MORE; /* the consumer is full */
			} else if (held > IMAP_CLIENT_RAW_HELD_MAX) {
				client_abort(client, "server sent a tagged or continuation line of over %d bytes",
					     IMAP_CLIENT_RAW_HELD_MAX);
				return IMAP_PARSER_ERROR;
			}
		}
		if (evbuffer_get_length(input) == 0)
			return IMAP_PARSER_NEED_MORE;
	}
}

/* Dispatches one complete line. */
static void client_handle_line(struct imap_client *client, const struct imap_arg *line)
{
	const struct imap_arg *args = line->list;
	unsigned int count = line->list_count;

	if (count == 0) {
		client_abort(client, "server sent an empty line");
		return;
	}
	if (client->phase == PHASE_GREETING) {
		if (!imap_arg_atom_equals(&args[0], "*")) {
			client_abort(client, "server sent no IMAP greeting");
			return;
		}
		if (client_handle_greeting(client, args, count) < 0)
			return;
		client_handle_untagged(client, args, count, false);
		if (client->phase == PHASE_SETUP)
			client_connect_step(client);
		return;
	}
	if (client->raw_line_active) {
		client->raw_line_active = false;
		client->raw_line_stray = false;
		if (client_raw_deliver_line(client, args, count) < 0 || client->raw_line_stray)
			return;
		if (imap_arg_atom_equals(&args[0], "*")) {
			struct imap_client_command *refused = client_tag_refused_command(client, args, count);

			client_handle_untagged(client, args, count, true);
			if (refused != NULL && client->phase == PHASE_READY && !client->free_pending)
				command_complete(refused, IMAP_CLIENT_STATUS_BAD, NULL, "tag refused");
			return;
		}
	}
	if (imap_arg_atom_equals(&args[0], "+"))
		client_handle_continuation(client, args + 1, count - 1);
	else if (imap_arg_atom_equals(&args[0], "*"))
		client_handle_untagged(client, args, count, false);
	else
		client_handle_tagged(client, args, count);
}

static void client_read(struct imap_client *client)
{
	struct evbuffer *input;

	if (client->bev == NULL || (client->phase != PHASE_GREETING && client->phase != PHASE_SETUP &&
				    client->phase != PHASE_READY))
		return;
	input = bufferevent_get_input(client->bev);
	if (evbuffer_get_length(input) > 0)
		client_arm_timer(client, true); /* any bytes, even mid-literal, are a sign of life */
	client_enter(client);
	for (unsigned int lines = 0; lines < IMAP_CLIENT_LINES_PER_READ; lines++) {
		struct bufferevent *bev = client->bev;
		enum imap_parser_result result;

		if (bev == NULL || evbuffer_get_length(input) == 0)
			break;
		result = client_feed(client, input);
		if (client->free_pending || client->bev != bev)
			break;
		if (result == IMAP_PARSER_NEED_MORE)
			break;
		if (result != IMAP_PARSER_LINE_COMPLETE) {
			const char *message = "unexpected literal announcement";

			if (result == IMAP_PARSER_ERROR)
				imap_parser_get_error(client->parser, &message);
			client_abort(client, "server sent malformed data: %s", message);
			break;
		}
		client_arm_timer(client, true);
		client_handle_line(client, imap_parser_get_line(client->parser));
		if (client->free_pending || client->bev != bev)
			break; /* aborted, or STARTTLS swapped the stream */
		if (client->reading_paused)
			break;
	}
	if (client_leave(client))
		return;
	/* Nothing pending and nothing more to read: the connection goes idle,
	   so the parser's line memory (16 KiB and more) goes back. */
	if (client->bev != NULL && client->inflight == 0 && evbuffer_get_length(input) == 0 &&
	    bufferevent_get_input(client->bev) == input)
		(void)imap_parser_release_memory(client->parser);
	if (client->bev != NULL && client->phase != PHASE_TLS && !client->reading_paused &&
	    evbuffer_get_length(input) > 0 &&
	    bufferevent_get_input(client->bev) == input) {
		/* the line cap was hit: come back on the next loop iteration */
		bufferevent_trigger(client->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
	}
}

static void client_read_cb(struct bufferevent *bev, void *context)
{
	(void)bev;
	client_read(context);
}

static int client_literal_cb(struct imap_parser *parser, const struct imap_parser_literal_chunk *chunk,
			     void *context)
{
	struct imap_client *client = context;
	int ret;

	if (client->literal_callback == NULL)
		return 0;
	client_enter(client);
	ret = client->literal_callback(client, parser, chunk, client->literal_context);
	if (client_leave(client))
		return -1;
	return ret;
}

/* ---- connection ---- */

static const char *phase_name(enum imap_client_phase phase)
{
	switch (phase) {
	case PHASE_IDLE: return "not connected";
	case PHASE_TCP: return "while connecting";
	case PHASE_TLS: return "during the TLS handshake";
	case PHASE_GREETING: return "before the greeting";
	case PHASE_SETUP: return "while setting up the session";
	case PHASE_READY: return "during the session";
	}
	return "?";
}

/* A pending evdns lookup's link to its client: cancelling it clears
   client, and the callback (which libevent always calls) frees it. */
struct client_lookup {
	struct imap_client *client;
};

/* Drops the pending lookup, if any; its callback only frees memory. */
static void client_lookup_cancel(struct imap_client *client)
{
	struct client_lookup *lookup = client->lookup;
	struct evdns_getaddrinfo_request *request = client->dns_request;

	if (lookup == NULL)
		return;
	client->lookup = NULL;
	client->dns_request = NULL;
	lookup->client = NULL;
	if (request != NULL)
		evdns_getaddrinfo_cancel(request);
}

/* Ends the current address's attempt (its socket) without touching the rest. */
static void client_attempt_drop(struct imap_client *client)
{
	if (client->attempt_timer != NULL)
		evtimer_del(client->attempt_timer);
	if (client->plain_bev != NULL)
		bufferevent_free(client->plain_bev);
	client->plain_bev = client->bev = NULL;
}

/* Forgets the lookup and its addresses. */
static void client_addresses_clear(struct imap_client *client)
{
	client_lookup_cancel(client);
	if (client->lookup_done_event != NULL)
		event_del(client->lookup_done_event);
	if (client->attempt_timer != NULL)
		evtimer_del(client->attempt_timer);
	if (client->addresses != NULL)
		evutil_freeaddrinfo(client->addresses);
	client->addresses = client->next_address = NULL;
	client->resolving = false;
}

static void client_close(struct imap_client *client)
{
	client_addresses_clear(client);
	if (client->bev != NULL)
		bufferevent_free(client->bev); /* a TLS filter frees the SSL and the socket under it */
	else if (client->plain_bev != NULL)
		bufferevent_free(client->plain_bev);
	client->bev = client->plain_bev = NULL;
	client->ssl = NULL;
	if (client->connect_timer != NULL)
		evtimer_del(client->connect_timer);
	if (client->command_timer != NULL)
		evtimer_del(client->command_timer);
	client->phase = PHASE_IDLE;
	client->state = IMAP_CLIENT_STATE_DISCONNECTED;
	client->starttls_done = false;
	client->bye_received = false;
	client->inflight = 0;
	client->barrier_inflight = false;
	client->wire_raw = client->wire_own = 0;
	client->continuation_owner = NULL;
	client->raw_line_active = false;
	client->raw_line_parted = false;
	if (client->raw_line != NULL)
		evbuffer_drain(client->raw_line, evbuffer_get_length(client->raw_line));
	if (client->parser != NULL)
		imap_parser_reset(client->parser);
}

/* Closes the connection and completes every pending command with abort. */
static void client_abort_reason(struct imap_client *client, const char *reason)
{
	bool was_connected = client->phase != PHASE_IDLE;

	if (client->aborting)
		return;
	client->aborting = true;
	if (reason != client->abort_reason)
		snprintf(client->abort_reason, sizeof(client->abort_reason), "%s", reason);
	if (client->phase != PHASE_IDLE)
		log_debug("imap-client %s:%u: %s", client->host, client->settings.port, client->abort_reason);
	for (struct imap_client_command *c = client->head; c != NULL; c = c->next) {
		if (c->state == COMMAND_SENT)
			c->state = COMMAND_QUEUED; /* inflight is reset by client_close */
	}
	client_close(client);
	/* only those pending now: commands sent from the callbacks are
	   aborted on the next loop iteration, so a retry loop can't spin here */
	unsigned int pending = 0;

	for (struct imap_client_command *c = client->head; c != NULL; c = c->next)
		pending++;
	while (pending-- > 0 && client->head != NULL)
		command_complete(client->head, IMAP_CLIENT_STATUS_ABORT, NULL, client->abort_reason);
	if (client->head != NULL && client->deferred_abort_event != NULL)
		client_defer_abort_commands(client);
	client->aborting = false;
	if (was_connected && client->closed_callback != NULL && !client->free_pending) {
		client_enter(client);
		client->closed_callback(client, client->abort_reason, client->closed_context);
		client_leave(client);
	}
}

static void client_abort(struct imap_client *client, const char *format, ...)
{
	char reason[IMAP_CLIENT_REASON_MAX];
	va_list args;

	va_start(args, format);
	vsnprintf(reason, sizeof(reason), format, args);
	va_end(args);
	client_abort_reason(client, reason);
}

static void client_deferred_abort_cb(evutil_socket_t fd, short events, void *context)
{
	struct imap_client *client = context;

	(void)fd;
	(void)events;
	client_enter(client);
	if (client->phase == PHASE_IDLE)
		client_abort_reason(client, client->abort_reason[0] != '\0' ? client->abort_reason :
					    "not connected");
	client_leave(client);
}

static void client_defer_abort_commands(struct imap_client *client)
{
	event_active(client->deferred_abort_event, EV_TIMEOUT, 0);
}

static void client_connect_timeout_cb(evutil_socket_t fd, short events, void *context)
{
	struct imap_client *client = context;

	(void)fd;
	(void)events;
	client_enter(client);
	if (client->resolving)
		client_abort(client, "timed out after %u ms connecting to %s:%u (while resolving the name)",
			     client->settings.connect_timeout_msecs, client->host, client->settings.port);
	else if (client->phase == PHASE_TCP && client->addresses != NULL)
		client_abort(client, "timed out after %u ms connecting to %s:%u (address %u of %u, %s)",
			     client->settings.connect_timeout_msecs, client->host, client->settings.port,
			     client->addresses_tried, client->address_count, client->attempt_address);
	else
		client_abort(client, "timed out after %u ms connecting to %s:%u (%s)",
			     client->settings.connect_timeout_msecs, client->host, client->settings.port,
			     phase_name(client->phase));
	client_leave(client);
}

static void client_command_timeout_cb(evutil_socket_t fd, short events, void *context)
{
	struct imap_client *client = context;

	(void)fd;
	(void)events;
	client_enter(client);
	client_abort(client, "timed out: %s:%u sent nothing for %u ms while a command was pending",
		     client->host, client->settings.port, client->settings.command_timeout_msecs);
	client_leave(client);
}

/* Sends small writes at once: IMAP is request/response, and Nagle's
   algorithm meeting the peer's delayed ACK stalls each reply by ~40 ms.
   Not a TCP socket (a socketpair in tests): nothing to do. */
static void client_set_nodelay(struct imap_client *client)
{
	int one = 1;

	(void)setsockopt(bufferevent_getfd(client->plain_bev), IPPROTO_TCP, TCP_NODELAY,
			 &one, sizeof(one));
}

static void client_event_cb(struct bufferevent *bev, short events, void *context);
static void client_attempt_failed(struct imap_client *client, const char *why);

static void client_set_write_watermark(struct imap_client *client)
{
	if (client->bev != NULL)
		bufferevent_setwatermark(client->bev, EV_WRITE, client->drained_low_water, 0);
}

static void client_write_cb(struct bufferevent *bev, void *context)
{
	struct imap_client *client = context;

	(void)bev;
	if (client->drained_callback == NULL)
		return;
	client_enter(client);
	client->drained_callback(client, client->drained_context);
	client_leave(client);
}

static void client_start_tls(struct imap_client *client)
{
	struct bufferevent *filter;
	const char *error;
	SSL *ssl;

	ssl = tls_client_ssl_new(client->ssl_ctx, client->host, &error);
	if (ssl == NULL) {
		client_abort(client, "TLS set-up failed: %s", error);
		return;
	}
	filter = bufferevent_openssl_filter_new(client->base, client->plain_bev, ssl,
						BUFFEREVENT_SSL_CONNECTING,
						BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (filter == NULL) {
		SSL_free(ssl);
		client_abort(client, "TLS set-up failed: cannot create the TLS stream");
		return;
	}
	/* IMAP frames itself, so a missing close_notify is an EOF, not an attack */
	bufferevent_openssl_set_allow_dirty_shutdown(filter, 1);
	/* The TLS filter stops encrypting while the socket is this far behind,
	   so back-pressure on the filter reaches the socket (unbounded, a
	   50 MB APPEND through the proxy grew RSS by 17 MB). */
	bufferevent_setwatermark(client->plain_bev, EV_WRITE, 0, IMAP_CLIENT_TLS_SOCKET_HIGH_WATER);
	client->bev = filter;
	client->ssl = ssl;
	client->phase = PHASE_TLS;
	bufferevent_setcb(filter, client_read_cb, client_write_cb, client_event_cb, client);
	client_set_write_watermark(client);
	bufferevent_enable(filter, EV_READ | EV_WRITE);
}

static void client_setup_done_cb(struct imap_client *client, struct imap_client_command *command,
				 const struct imap_client_result *result, void *context)
{
	(void)command;
	(void)context;
	if (result->status == IMAP_CLIENT_STATUS_ABORT)
		return;
	if (result->status != IMAP_CLIENT_STATUS_OK) {
		client_abort(client, "CAPABILITY failed while connecting: %s", result->text);
		return;
	}
	client_connect_step(client);
}

static void client_starttls_done_cb(struct imap_client *client, struct imap_client_command *command,
				    const struct imap_client_result *result, void *context)
{
	struct evbuffer *input;

	(void)command;
	(void)context;
	if (result->status == IMAP_CLIENT_STATUS_ABORT)
		return;
	if (result->status != IMAP_CLIENT_STATUS_OK) {
		client_abort(client, "server refused STARTTLS: %s", result->text);
		return;
	}
	/* Whatever came after the tagged OK was sent before TLS protected
	   it (a STARTTLS command injection): drop it unread. */
	input = bufferevent_get_input(client->plain_bev);
	if (evbuffer_get_length(input) > 0)
		log_debug("imap-client %s:%u: discarding %zu bytes received before TLS", client->host,
			  client->settings.port, evbuffer_get_length(input));
	evbuffer_drain(input, evbuffer_get_length(input));
	imap_parser_reset(client->parser);
	free(client->capabilities); /* what the server said in plain text can't be trusted */
	client->capabilities = NULL;
	client->starttls_done = true;
	client_start_tls(client);
}

/* Moves the connection forward until it is ready: capabilities, STARTTLS. */
static void client_connect_step(struct imap_client *client)
{
	if (client->capabilities == NULL) {
		imap_client_command_send_flags(client, COMMAND_FLAG_SETUP, client_setup_done_cb, NULL,
					       "CAPABILITY");
		return;
	}
	if (client->settings.tls_mode == IMAP_CLIENT_TLS_STARTTLS && !client->starttls_done) {
		if (!imap_client_has_capability(client, "STARTTLS")) {
			client_abort(client, "%s:%u does not offer STARTTLS", client->host,
				     client->settings.port);
			return;
		}
		imap_client_command_send_flags(client, COMMAND_FLAG_SETUP, client_starttls_done_cb, NULL,
					       "STARTTLS");
		return;
	}
	client->phase = PHASE_READY;
	evtimer_del(client->connect_timer);
	if (client->connect_command != NULL) {
		struct imap_client_command *command = client->connect_command;
		const struct imap_client_untagged *greeting =
			command->result.untagged_count > 0 ? command->result.untagged[0] : NULL;

		client->connect_command = NULL;
		command_complete(command, IMAP_CLIENT_STATUS_OK, greeting != NULL ? greeting->code : NULL,
				 greeting != NULL && greeting->text != NULL ? greeting->text : "");
	}
	if (client->phase == PHASE_READY)
		client_send_more(client);
}

/* Names why the stream failed: certificate, TLS, or socket error. */
static void client_describe_error(struct imap_client *client, struct bufferevent *bev, char *buf,
				  size_t size)
{
	unsigned long ssl_error = client->ssl != NULL ? bufferevent_get_openssl_error(bev) : 0;
	int socket_error = EVUTIL_SOCKET_ERROR();

	if (client->ssl != NULL && client->phase == PHASE_TLS &&
	    SSL_get_verify_result(client->ssl) != X509_V_OK) {
		snprintf(buf, size, "TLS certificate verification failed for %s: %s", client->host,
			 X509_verify_cert_error_string(SSL_get_verify_result(client->ssl)));
	} else if (ssl_error != 0) {
		char reason[256];

		ERR_error_string_n(ssl_error, reason, sizeof(reason));
		snprintf(buf, size, "TLS error %s with %s:%u: %s", phase_name(client->phase),
			 client->host, client->settings.port, reason);
	} else {
		snprintf(buf, size, "connection to %s:%u failed %s: %s", client->host,
			 client->settings.port, phase_name(client->phase),
			 socket_error != 0 ? evutil_socket_error_to_string(socket_error) : "unknown error");
	}
}

static void client_event_cb(struct bufferevent *bev, short events, void *context)
{
	struct imap_client *client = context;

	client_enter(client);
	if (events & BEV_EVENT_CONNECTED) {
		if (client->phase == PHASE_TCP) {
			client_addresses_clear(client);
			client_set_nodelay(client);
			if (client->settings.tls_mode == IMAP_CLIENT_TLS_IMPLICIT)
				client_start_tls(client);
			else
				client->phase = PHASE_GREETING;
		} else if (client->phase == PHASE_TLS) {
			if (client->starttls_done) {
				client->phase = PHASE_SETUP;
				client_connect_step(client);
			} else {
				client->phase = PHASE_GREETING;
			}
			if (!client->free_pending && client->bev != NULL)
				client_read(client);
		}
	} else if ((events & BEV_EVENT_ERROR) && client->phase == PHASE_TCP && client->addresses != NULL) {
		client_attempt_failed(client, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	} else if (events & BEV_EVENT_ERROR) {
		char reason[IMAP_CLIENT_REASON_MAX];

		client_describe_error(client, bev, reason, sizeof(reason));
		client_abort_reason(client, reason);
	} else if (events & BEV_EVENT_EOF) {
		if (client->state == IMAP_CLIENT_STATE_LOGOUT && client->bye_received) {
			/* a server may hang up after BYE without the tagged OK:
			   LOGOUT still did what it was asked to */
			struct imap_client_command *command = client->head;

			while (command != NULL && strcmp(command->name, "LOGOUT") != 0)
				command = command->next;
			if (command != NULL)
				command_complete(command, IMAP_CLIENT_STATUS_OK, NULL, "connection closed after BYE");
			if (!client->free_pending)
				client_abort(client, "logged out");
		} else if (client->state == IMAP_CLIENT_STATE_LOGOUT && client->head == NULL)
			client_abort(client, "logged out");
		else
			client_abort(client, "%s:%u closed the connection %s", client->host,
				     client->settings.port, phase_name(client->phase));
	}
	client_leave(client);
}

/* Milliseconds of the connect timeout not yet used. */
static unsigned int client_connect_msecs_left(const struct imap_client *client)
{
	struct timespec now;
	uint64_t elapsed;

	clock_gettime(CLOCK_MONOTONIC, &now);
	elapsed = (uint64_t)(now.tv_sec - client->connect_started.tv_sec) * 1000 +
		  (uint64_t)((now.tv_nsec - client->connect_started.tv_nsec) / 1000000);
	return elapsed >= client->settings.connect_timeout_msecs ? 0 :
	       client->settings.connect_timeout_msecs - (unsigned int)elapsed;
}

/* "127.0.0.1:143" or "[::1]:143" into buf. */
static void client_format_address(const struct evutil_addrinfo *ai, unsigned int port, char *buf,
				  size_t size)
{
	char text[IMAP_CLIENT_ADDRESS_MAX];
	const void *raw = NULL;

	if (ai->ai_family == AF_INET)
		raw = &((const struct sockaddr_in *)(const void *)ai->ai_addr)->sin_addr;
	else if (ai->ai_family == AF_INET6)
		raw = &((const struct sockaddr_in6 *)(const void *)ai->ai_addr)->sin6_addr;
	if (raw == NULL || evutil_inet_ntop(ai->ai_family, raw, text, sizeof(text)) == NULL)
		snprintf(text, sizeof(text), "address family %d", ai->ai_family);
	snprintf(buf, size, ai->ai_family == AF_INET6 ? "[%s]:%u" : "%s:%u", text, port);
}

/* Starts a non-blocking connect to one address; false (with
   attempt_error set) when it failed at once. */
static bool client_connect_address(struct imap_client *client, const struct evutil_addrinfo *ai)
{
	unsigned int left = client->address_count - client->addresses_tried + 1; /* this one included */
	evutil_socket_t fd;

	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0) {
		snprintf(client->attempt_error, sizeof(client->attempt_error), "%s", strerror(errno));
		return false;
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
		snprintf(client->attempt_error, sizeof(client->attempt_error), "%s", strerror(errno));
		evutil_closesocket(fd);
		return false;
	}
	client->plain_bev = bufferevent_socket_new(client->base, fd,
						   BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (client->plain_bev == NULL) {
		evutil_closesocket(fd);
		snprintf(client->attempt_error, sizeof(client->attempt_error), "cannot create a socket buffer");
		return false;
	}
	client->bev = client->plain_bev;
	bufferevent_setcb(client->plain_bev, client_read_cb, client_write_cb, client_event_cb, client);
	client_set_write_watermark(client);
	bufferevent_enable(client->plain_bev, EV_READ | EV_WRITE);
	/* no address: wait for the connect already under way */
	if (bufferevent_socket_connect(client->plain_bev, NULL, 0) < 0) {
		snprintf(client->attempt_error, sizeof(client->attempt_error), "%s",
			 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		client_attempt_drop(client);
		return false;
	}
	if (left > 1) {
		/* the last address runs until the connect timer itself */
		unsigned int share = client_connect_msecs_left(client) / left;

		if (share < IMAP_CLIENT_CONNECT_ATTEMPT_MIN_MSECS)
			share = IMAP_CLIENT_CONNECT_ATTEMPT_MIN_MSECS;
		struct timeval tv = { .tv_sec = share / 1000, .tv_usec = (share % 1000) * 1000 };

		client->attempt_msecs = share;
		evtimer_add(client->attempt_timer, &tv);
	}
	return true;
}

/* Tries the addresses not tried yet, in order; aborts when none is left. */
static void client_connect_next(struct imap_client *client)
{
	while (client->next_address != NULL) {
		const struct evutil_addrinfo *ai = client->next_address;

		client->next_address = ai->ai_next;
		client->addresses_tried++;
		client_format_address(ai, client->settings.port, client->attempt_address,
				      sizeof(client->attempt_address));
		if (client_connect_address(client, ai))
			return;
		log_debug("imap-client %s: %s: %s", client->host, client->attempt_address,
			  client->attempt_error);
	}
	client_abort(client, "cannot connect to %s:%u (%u address%s): %s: %s", client->host,
		     client->settings.port, client->address_count, client->address_count == 1 ? "" : "es",
		     client->attempt_address, client->attempt_error);
}

/* The current address failed (why): on to the next one. */
static void client_attempt_failed(struct imap_client *client, const char *why)
{
	snprintf(client->attempt_error, sizeof(client->attempt_error), "%s", why);
	log_debug("imap-client %s: %s: %s", client->host, client->attempt_address, why);
	client_attempt_drop(client);
	client_connect_next(client);
}

static void client_attempt_timeout_cb(evutil_socket_t fd, short events, void *context)
{
	struct imap_client *client = context;
	char why[64];

	(void)fd;
	(void)events;
	client_enter(client);
	if (client->phase == PHASE_TCP && client->plain_bev != NULL && client->addresses != NULL) {
		snprintf(why, sizeof(why), "no answer within %u ms", client->attempt_msecs);
		client_attempt_failed(client, why);
	}
	client_leave(client);
}

static void client_lookup_done_cb(evutil_socket_t fd, short events, void *context)
{
	struct imap_client *client = context;

	(void)fd;
	(void)events;
	client_enter(client);
	if (client->phase == PHASE_TCP && client->resolving) {
		client->resolving = false;
		client->address_count = 0;
		for (const struct evutil_addrinfo *ai = client->addresses; ai != NULL; ai = ai->ai_next)
			client->address_count++;
		if (client->lookup_error != 0)
			client_abort(client, "cannot resolve %s: %s", client->host,
				     evutil_gai_strerror(client->lookup_error));
		else if (client->address_count == 0)
			client_abort(client, "cannot resolve %s: no address", client->host);
		else {
			client->next_address = client->addresses;
			client_connect_next(client);
		}
	}
	client_leave(client);
}

/* evdns's answer (maybe from inside evdns_getaddrinfo): kept for the loop. */
static void client_lookup_cb(int result, struct evutil_addrinfo *addresses, void *context)
{
	struct client_lookup *lookup = context;
	struct imap_client *client = lookup->client;

	free(lookup);
	if (client == NULL) {
		/* cancelled: the client is closed or gone */
		if (addresses != NULL)
			evutil_freeaddrinfo(addresses);
		return;
	}
	client->lookup = NULL;
	client->dns_request = NULL;
	client->lookup_error = result;
	client->addresses = addresses;
	event_active(client->lookup_done_event, EV_TIMEOUT, 0);
}

/* Looks the host up (every address, IPv4 and IPv6); goes on in client_lookup_done_cb. */
static void client_lookup_start(struct imap_client *client)
{
	struct evutil_addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_protocol = IPPROTO_TCP,
	};
	struct evdns_getaddrinfo_request *request;
	char port[IMAP_CLIENT_PORT_TEXT_MAX];
	struct client_lookup *lookup;

	snprintf(port, sizeof(port), "%u", client->settings.port);
	clock_gettime(CLOCK_MONOTONIC, &client->connect_started);
	client->resolving = true;
	client->lookup_error = 0;
	client->address_count = client->addresses_tried = 0;
	client->attempt_address[0] = '\0';
	client->attempt_error[0] = '\0';
	if (client->settings.dns_base == NULL) {
		struct evutil_addrinfo *addresses = NULL;

		client->lookup_error = evutil_getaddrinfo(client->host, port, &hints, &addresses);
		client->addresses = addresses;
		event_active(client->lookup_done_event, EV_TIMEOUT, 0);
		return;
	}
	lookup = xcalloc(1, sizeof(*lookup));
	lookup->client = client;
	client->lookup = lookup;
	request = evdns_getaddrinfo(client->settings.dns_base, client->host, port, &hints,
				    client_lookup_cb, lookup);
	if (client->lookup != lookup)
		return; /* answered already (an address, a hosts file entry, an error) */
	if (request == NULL) {
		/* libevent calls back before returning NULL; never leave the client waiting */
		client->lookup = NULL;
		free(lookup);
		client->lookup_error = EVUTIL_EAI_FAIL;
		event_active(client->lookup_done_event, EV_TIMEOUT, 0);
		return;
	}
	client->dns_request = request;
}

/* Starts a connection on fd (-1: connect to the configured host). */
static struct imap_client_command *client_connect_start(struct imap_client *client, evutil_socket_t fd,
							imap_client_command_fn *callback, void *context)
{
	struct imap_client_command *command = command_new(client, 0, callback, context);
	struct timeval tv = {
		.tv_sec = client->settings.connect_timeout_msecs / 1000,
		.tv_usec = (client->settings.connect_timeout_msecs % 1000) * 1000,
	};

	assert(client->phase == PHASE_IDLE && client->connect_command == NULL);
	command->is_connect = true;
	snprintf(command->name, sizeof(command->name), "CONNECT");
	command->next = client->head;
	if (client->head != NULL)
		client->head->prev = command;
	else
		client->tail = command;
	client->head = command;
	client->connect_command = command;
	client->abort_reason[0] = '\0';
	free(client->capabilities);
	client->capabilities = NULL;
	client->read_only = false;

	if (fd < 0) {
		client->phase = PHASE_TCP;
		client->state = IMAP_CLIENT_STATE_CONNECTING;
		evtimer_add(client->connect_timer, &tv);
		client_lookup_start(client);
		return command;
	}
	evutil_make_socket_nonblocking(fd);
	client->plain_bev = bufferevent_socket_new(client->base, fd,
						   BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (client->plain_bev == NULL) {
		evutil_closesocket(fd);
		snprintf(client->abort_reason, sizeof(client->abort_reason), "cannot create a socket");
		client_defer_abort_commands(client);
		return command;
	}
	client->bev = client->plain_bev;
	bufferevent_setcb(client->plain_bev, client_read_cb, client_write_cb, client_event_cb, client);
	client_set_write_watermark(client);
	bufferevent_enable(client->plain_bev, EV_READ | EV_WRITE);
	client->phase = PHASE_TCP;
	client->state = IMAP_CLIENT_STATE_CONNECTING;
	evtimer_add(client->connect_timer, &tv);
	/* already connected: go on as TCP's "connected" event would */
	if (client->settings.tls_mode == IMAP_CLIENT_TLS_IMPLICIT)
		client_start_tls(client);
	else
		client->phase = PHASE_GREETING;
	return command;
}

struct imap_client_command *imap_client_connect(struct imap_client *client,
						imap_client_command_fn *callback, void *context)
{
	return client_connect_start(client, -1, callback, context);
}

struct imap_client_command *imap_client_connect_fd(struct imap_client *client, int fd,
						   imap_client_command_fn *callback, void *context)
{
	assert(fd >= 0);
	return client_connect_start(client, fd, callback, context);
}

/* ---- IDLE ---- */

static int client_idle_continuation(struct imap_client *client, struct imap_client_command *command,
				    const char *text, void *context)
{
	(void)client;
	(void)text;
	(void)context;
	if (command->idle_done_wanted) {
		command->idle_done_wanted = false;
		imap_client_command_continue(command, "DONE");
	}
	return 0;
}

struct imap_client_command *imap_client_idle(struct imap_client *client, imap_client_command_fn *callback,
					     void *context)
{
	return imap_client_command_send_continued(client, "IDLE", client_idle_continuation, NULL, callback,
						  context);
}

void imap_client_idle_done(struct imap_client_command *command)
{
	assert(command->idle);
	if (command->client == NULL || command->state == COMMAND_DONE)
		return;
	if (command->idle_accepted)
		imap_client_command_continue(command, "DONE");
	else
		command->idle_done_wanted = true;
}

bool imap_client_idle_is_accepted(const struct imap_client_command *command)
{
	return command->idle && command->idle_accepted;
}

/* ---- the client object ---- */

struct imap_client *imap_client_new(struct event_base *base, const struct imap_client_settings *settings,
				    const char **error_r)
{
	struct imap_client *client = xcalloc(1, sizeof(*client));
	struct imap_parser_limits limits;

	assert(settings->host != NULL && settings->port > 0 && settings->port <= 65535);
	client->base = base;
	client->settings = *settings;
	client->host = xstrdup(settings->host);
	client->settings.host = client->host;
	client->ca_file = settings->ca_file != NULL ? xstrdup(settings->ca_file) : NULL;
	client->settings.ca_file = client->ca_file;
	if (client->settings.connect_timeout_msecs == 0)
		client->settings.connect_timeout_msecs = IMAP_CLIENT_DEFAULT_CONNECT_TIMEOUT_MSECS;
	if (client->settings.command_timeout_msecs == 0)
		client->settings.command_timeout_msecs = IMAP_CLIENT_DEFAULT_COMMAND_TIMEOUT_MSECS;
	if (settings->tag_prefix != NULL) {
		assert(strlen(settings->tag_prefix) <= IMAP_CLIENT_TAG_PREFIX_MAX);
		snprintf(client->tag_prefix, sizeof(client->tag_prefix), "%s", settings->tag_prefix);
	} else {
		unsigned short r = 0;

		if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
			r = (unsigned short)getpid();
		char prefix[IMAP_UTIL_INT2AP_SIZE];

		/* imaplib: Int2AP(random.randint(4096, 65535)), four letters A-P */
		imap_util_int2ap(4096 + r % (65536 - 4096), prefix);
		snprintf(client->tag_prefix, sizeof(client->tag_prefix), "%s", prefix);
	}
	client->settings.tag_prefix = client->tag_prefix;
	if (settings->tls_mode != IMAP_CLIENT_TLS_NONE) {
		if (settings->ssl_ctx != NULL) {
			client->ssl_ctx = settings->ssl_ctx;
		} else {
			client->ssl_ctx = tls_client_context_get(settings->ca_file, !settings->tls_no_verify,
								 error_r);
			if (client->ssl_ctx == NULL)
				goto fail;
			client->own_ssl_ctx = true;
		}
	}
	client->parser = imap_parser_new();
	client->raw_line = evbuffer_new();
	if (client->parser == NULL || client->raw_line == NULL)
		abort();
	imap_parser_set_mode(client->parser, IMAP_PARSER_MODE_RESPONSE);
	imap_parser_get_limits(client->parser, &limits);
	if (settings->max_inline_literal != 0)
		limits.max_inline_literal = settings->max_inline_literal;
	imap_parser_set_limits(client->parser, &limits);
	imap_parser_set_literal_callback(client->parser, client_literal_cb, client);
	client->connect_timer = evtimer_new(base, client_connect_timeout_cb, client);
	client->command_timer = evtimer_new(base, client_command_timeout_cb, client);
	client->deferred_abort_event = event_new(base, -1, 0, client_deferred_abort_cb, client);
	client->lookup_done_event = event_new(base, -1, 0, client_lookup_done_cb, client);
	client->attempt_timer = evtimer_new(base, client_attempt_timeout_cb, client);
	if (client->connect_timer == NULL || client->command_timer == NULL ||
	    client->deferred_abort_event == NULL || client->lookup_done_event == NULL ||
	    client->attempt_timer == NULL)
		abort();
	return client;
fail:
	free(client->host);
	free(client->ca_file);
	free(client);
	return NULL;
}

static void client_release(struct imap_client *client)
{
	client->free_pending = true; /* no callback runs from here on */
	client_abort_reason(client, "client freed");
	imap_client_untagged_pool_clear(&client->pool);
	imap_parser_free(&client->parser);
	evbuffer_free(client->raw_line);
	client->raw_line = NULL;
	event_free(client->connect_timer);
	event_free(client->command_timer);
	event_free(client->deferred_abort_event);
	event_free(client->lookup_done_event);
	event_free(client->attempt_timer);
	if (client->own_ssl_ctx)
		tls_context_free(&client->ssl_ctx);
	free(client->capabilities);
	free(client->host);
	free(client->ca_file);
	free(client);
}

void imap_client_free(struct imap_client **clientp)
{
	struct imap_client *client = *clientp;

	if (client == NULL)
		return;
	*clientp = NULL;
	client->free_pending = true;
	if (client->callback_depth == 0)
		client_release(client);
}

void imap_client_set_untagged_callback(struct imap_client *client, imap_client_untagged_fn *callback,
				       void *context)
{
	client->untagged_callback = callback;
	client->untagged_context = context;
}

void imap_client_set_literal_callback(struct imap_client *client, imap_client_literal_fn *callback,
				      void *context)
{
	client->literal_callback = callback;
	client->literal_context = context;
}

void imap_client_set_reading_paused(struct imap_client *client, bool paused)
{
	if (client->reading_paused == paused)
		return;
	client->reading_paused = paused;
	if (client->bev != NULL) {
		if (paused) {
			bufferevent_disable(client->bev, EV_READ);
		} else {
			bufferevent_enable(client->bev, EV_READ);
			/* what was read before the pause is still waiting */
			if (evbuffer_get_length(bufferevent_get_input(client->bev)) > 0)
				bufferevent_trigger(client->bev, EV_READ,
						    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
		}
	}
	client_arm_timer(client, false);
}

bool imap_client_is_reading_paused(const struct imap_client *client)
{
	return client->reading_paused;
}

enum imap_client_state imap_client_get_state(const struct imap_client *client)
{
	return client->state;
}

SSL *imap_client_get_ssl(const struct imap_client *client)
{
	return client->phase == PHASE_TLS ? NULL : client->ssl;
}

bool imap_client_is_read_only(const struct imap_client *client)
{
	return client->read_only;
}

const char *imap_client_get_tag_prefix(const struct imap_client *client)
{
	return client->tag_prefix;
}

/* ---- raw passthrough ---- */

void imap_client_set_raw_callback(struct imap_client *client, imap_client_raw_fn *callback, void *context)
{
	client->raw_callback = callback;
	client->raw_context = context;
}

void imap_client_set_output_drained_callback(struct imap_client *client, size_t low_water,
					     imap_client_output_drained_fn *callback, void *context)
{
	client->drained_callback = callback;
	client->drained_context = context;
	client->drained_low_water = low_water;
	client_set_write_watermark(client);
}

size_t imap_client_get_output_pending(const struct imap_client *client)
{
	size_t pending = client->bev != NULL ? evbuffer_get_length(bufferevent_get_output(client->bev)) : 0;

	for (const struct imap_client_command *c = client->send_cursor; c != NULL; c = c->next) {
		if (c->raw)
			pending += evbuffer_get_length(c->out);
	}
	return pending;
}

struct imap_client_command *imap_client_raw_command_new(struct imap_client *client, const char *tag,
							const char *name, imap_client_command_fn *callback,
							void *context)
{
	struct imap_client_command *command = command_new(client, 0, callback, context);

	assert(callback != NULL);
	command->raw = true;
	if (tag == NULL)
		snprintf(command->tag_inline, sizeof(command->tag_inline), "%s%llu", client->tag_prefix,
			 (unsigned long long)++client->tag_counter);
	else if (strlen(tag) < sizeof(command->tag_inline))
		memcpy(command->tag_inline, tag, strlen(tag) + 1);
	else
		command->tag = xstrdup(tag);
	for (size_t i = 0; name[i] != '\0' && i + 1 < sizeof(command->name); i++) {
		command->name[i] = (char)toupper((unsigned char)name[i]);
		command->name[i + 1] = '\0';
	}
	if (strcmp(command->name, "IDLE") == 0)
		command->idle = true;
	if (strcmp(command->name, "LOGOUT") == 0 && client->phase != PHASE_IDLE)
		client->state = IMAP_CLIENT_STATE_LOGOUT; /* its BYE is expected, not an abort */
	evbuffer_add(command->out, command->tag, strlen(command->tag));
	client_queue(client, command);
	return command;
}

/* Sends what can go now, unless the command is still waiting its turn. */
static void raw_command_flush(struct imap_client_command *command)
{
	struct imap_client *client = command->client;

	if (client != NULL && client->send_cursor == command && !client->aborting &&
	    !client->free_pending)
		client_send_more(client);
}

void imap_client_raw_command_write(struct imap_client_command *command, const void *data, size_t len)
{
	assert(command->raw && !command->raw_ended && command->state != COMMAND_DONE);
	if (command->idle && command->idle_accepted)
		command->idle_accepted = false; /* DONE: the tagged reply is due */
	evbuffer_add(command->out, data, len);
	raw_command_flush(command);
}

void imap_client_raw_command_write_buffer(struct imap_client_command *command, struct evbuffer *data)
{
	assert(command->raw && !command->raw_ended && command->state != COMMAND_DONE);
	if (command->idle && command->idle_accepted)
		command->idle_accepted = false;
	evbuffer_add_buffer(command->out, data);
	raw_command_flush(command);
}

void imap_client_raw_command_end(struct imap_client_command *command)
{
	struct imap_client *client = command->client;

	assert(command->raw && !command->raw_ended && command->state != COMMAND_DONE);
	command->raw_ended = true;
	raw_command_flush(command); /* frees a trailing command once its bytes are out */
	if (client != NULL)
		client_arm_timer(client, false);
}

bool imap_client_raw_command_is_answered(const struct imap_client_command *command)
{
	return command->state == COMMAND_TRAILING;
}

bool imap_client_command_is_raw(const struct imap_client_command *command)
{
	return command->raw;
}

void *imap_client_command_get_context(const struct imap_client_command *command)
{
	return command->context;
}

void imap_client_set_closed_callback(struct imap_client *client, imap_client_closed_fn *callback,
				     void *context)
{
	client->closed_callback = callback;
	client->closed_context = context;
}
