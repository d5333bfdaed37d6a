/* SPDX-License-Identifier: MIT */
/* imap-client: the client object, its tags, its pipelined command queue and the responses it reads (set-up in imap-client-connect.c, the raw passthrough in imap-client-raw.c). */
#include "config.h"
#include "imap-client-private.h"
#include "imap-util.h"
#include "log.h"
#include "net-read.h"
#include "tls.h"

#include <assert.h>
#include <ctype.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define IMAP_CLIENT_LINES_PER_READ 256 /* lines per read callback, so one server can't starve the loop */
#define IMAP_CLIENT_LITERAL_MINUS_MAX 4096 /* RFC 7888: LITERAL- allows {n+} only up to 4096 bytes */

static void client_release(struct imap_client *client);

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

/* ---- command life cycle ---- */

struct imap_client_command *command_new(struct imap_client *client, unsigned int flags,
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
void client_arm_timer(struct imap_client *client, bool activity)
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

void client_enter(struct imap_client *client)
{
	client->callback_depth++;
}

/* Returns true when the client was freed meanwhile (don't touch it). */
bool client_leave(struct imap_client *client)
{
	assert(client->callback_depth > 0);
	if (--client->callback_depth == 0 && client->free_pending) {
		client_release(client);
		return true;
	}
	return client->free_pending;
}

/* Whether the server has seen command and owes it a tagged reply. */
bool command_awaits_reply(const struct imap_client_command *command)
{
	return !command->is_connect && (command->state == COMMAND_SENT ||
					(command->state == COMMAND_QUEUED && command->piece_index > 0));
}

/* Finishes command: removes it, applies its effects, tells its owner. */
void command_complete(struct imap_client_command *command, enum imap_client_status status,
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

void client_queue(struct imap_client *client, struct imap_client_command *command)
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
void client_send_more(struct imap_client *client)
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
struct imap_client_command *client_current_command(struct imap_client *client)
{
	for (struct imap_client_command *c = client->head; c != NULL; c = c->next) {
		if (command_awaits_reply(c) || c->is_connect)
			return c;
	}
	return NULL;
}

/* A raw line's response for the untagged callback, borrowed from the
   parser: raw lines are never kept (no result, no pool), so the copy
   imap_client_untagged_new makes is not needed. Returns false when it
   must be made after all (a BYE, whose handling follows; a keyword too
   long to borrow). */
static bool client_handle_raw_untagged(struct imap_client *client, struct imap_client_command *command,
				       const char *keyword, bool has_number, uint32_t number,
				       const struct imap_arg *args, unsigned int count, unsigned int first,
				       const char *code, const char *text)
{
	struct imap_client_untagged untagged;
	struct imap_arg line;
	char upper[32];

	if (strcasecmp(keyword, "BYE") == 0 ||
	    !imap_client_untagged_borrow(&untagged, &line, upper, sizeof(upper), keyword, has_number, number, args,
					 count, first, code, text))
		return false;
	if (client->untagged_callback != NULL) {
		client_enter(client);
		client->untagged_callback(client, command, &untagged, client->untagged_context);
		client_leave(client);
	}
	return true;
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
	if (raw && client_handle_raw_untagged(client, command, keyword, has_number, number, args, count, first,
					      code, text))
		return;
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
		bool early = client->raw_line_early;

		client->raw_line_active = false;
		client->raw_line_early = false;
		client->raw_line_stray = false;
		if (!early && (client_raw_deliver_line(client, args, count) < 0 || client->raw_line_stray))
			return;
		if (client->raw_line_handled) {
			client->raw_line_handled = false;
			if (count >= 3 && imap_arg_atom_equals(&args[2], "FETCH"))
				return; /* its data went to the raw callback, which took it */
		}
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

/* Takes what the socket holds past libevent's 4 KiB a read (net-read.h).
   Under TLS the bytes go to the socket's bufferevent, under the filter,
   which is then told to decrypt them: this callback comes again with them. */
static void client_read_waiting(struct imap_client *client, struct evbuffer *input)
{
	size_t have = evbuffer_get_length(input);

	if (client->reading_paused || have >= IMAP_CLIENT_READ_MAX)
		return;
	if (client->bev == client->plain_bev) {
		(void)net_read_waiting(client->plain_bev, IMAP_CLIENT_READ_MAX - have);
		return;
	}
	if (client->phase == PHASE_READY && client->plain_bev != NULL &&
	    net_read_waiting(client->plain_bev, IMAP_CLIENT_READ_MAX - have) > 0)
		bufferevent_trigger(client->plain_bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

void client_read(struct imap_client *client)
{
	struct evbuffer *input;

	if (client->bev == NULL || (client->phase != PHASE_GREETING && client->phase != PHASE_SETUP &&
				    client->phase != PHASE_READY))
		return;
	input = bufferevent_get_input(client->bev);
	client_read_waiting(client, input);
	if (evbuffer_get_length(input) > 0)
		client_arm_timer(client, true); /* any bytes, even mid-literal, are a sign of life */
	client_enter(client);
	for (unsigned int lines = 0; lines < IMAP_CLIENT_LINES_PER_READ; lines++) {
		struct bufferevent *bev = client->bev;
		enum imap_parser_result result;
		enum client_raw_offer offer;

		if (bev == NULL || evbuffer_get_length(input) == 0)
			break;
		offer = client_raw_offer_fetch(client, input);
		if (offer == CLIENT_RAW_OFFER_GONE)
			break;
		if (offer == CLIENT_RAW_OFFER_TAKEN) {
			client_arm_timer(client, true);
			if (client->free_pending || client->bev != bev || client->reading_paused)
				break;
			continue;
		}
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

void client_read_cb(struct bufferevent *bev, void *context)
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

/* ---- aborting ---- */

/* Closes the connection and completes every pending command with abort. */
void client_abort_reason(struct imap_client *client, const char *reason)
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

void client_abort(struct imap_client *client, const char *format, ...)
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

void client_defer_abort_commands(struct imap_client *client)
{
	event_active(client->deferred_abort_event, EV_TIMEOUT, 0);
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
	limits.max_line = IMAP_CLIENT_MAX_RESPONSE_LINE;
	limits.max_args = IMAP_CLIENT_MAX_RESPONSE_ARGS;
	limits.max_depth = IMAP_CLIENT_MAX_RESPONSE_DEPTH;
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
