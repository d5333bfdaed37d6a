/* SPDX-License-Identifier: MIT */
/* imap-client-raw: the client core's raw passthrough (the caller's command bytes out, the server's lines back as bytes, output back-pressure). */
#include "config.h"
#include "imap-client-private.h"

#include <assert.h>
#include <ctype.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define IMAP_CLIENT_RAW_FLUSH_SIZE (32 * 1024) /* an untagged line this long streams a literal: pass it on in parts */
#define IMAP_CLIENT_RAW_HELD_MAX (1024 * 1024) /* a tagged or "+" line carries no literal: longer is garbage */

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

/* A raw command answered before the caller wrote its last byte stays in
   the queue, holding the commands behind it, until imap_client_raw_command_end:
   it no longer waits for a reply, but the server still reads the rest. */
void command_answer_trailing(struct imap_client_command *command)
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

void client_set_write_watermark(struct imap_client *client)
{
	if (client->bev != NULL)
		bufferevent_setwatermark(client->bev, EV_WRITE, client->drained_low_water, 0);
}

void client_write_cb(struct bufferevent *bev, void *context)
{
	struct imap_client *client = context;

	(void)bev;
	if (client->drained_callback == NULL)
		return;
	client_enter(client);
	client->drained_callback(client, client->drained_context);
	client_leave(client);
}

/* ---- raw lines ---- */

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
	client->raw_line_handled = ret == IMAP_CLIENT_RAW_HANDLED && kind == IMAP_CLIENT_RAW_UNTAGGED && line_end;
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
int client_raw_deliver_line(struct imap_client *client, const struct imap_arg *args,
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
struct imap_client_command *client_tag_refused_command(struct imap_client *client,
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

/* The length of the line at data (its LF included) when it is whole
   within len bytes and reads "* n FETCH (" with no literal at its end;
   0 otherwise. */
static size_t client_fetch_line_length(const unsigned char *data, size_t len)
{
	const unsigned char *end = memchr(data, '\n', len);
	size_t at = 2, line;

	if (end == NULL || len < 2 || data[0] != '*' || data[1] != ' ')
		return 0;
	line = (size_t)(end - data) + 1;
	while (at < line && isdigit(data[at]))
		at++;
	if (at == 2 || line - at < 9 || strncasecmp((const char *)data + at, " FETCH (", 8) != 0)
		return 0;
	at = line - 1;
	if (at > 0 && data[at - 1] == '\r')
		at--;
	return at > 0 && data[at - 1] == '}' ? 0 : line;
}

enum client_raw_offer client_raw_offer_fetch(struct imap_client *client, struct evbuffer *input)
{
	struct evbuffer_iovec vec;
	size_t len;
	int ret;

	if (client->raw_line_active || imap_parser_is_mid_line(client->parser) || !client_line_is_raw(client) ||
	    evbuffer_peek(input, -1, NULL, &vec, 1) < 1)
		return CLIENT_RAW_OFFER_NONE;
	len = client_fetch_line_length(vec.iov_base,
				       vec.iov_len < IMAP_CLIENT_RAW_FLUSH_SIZE ? vec.iov_len : IMAP_CLIENT_RAW_FLUSH_SIZE);
	if (len == 0)
		return CLIENT_RAW_OFFER_NONE;
	client_enter(client);
	ret = client->raw_callback(client, client_current_command(client), IMAP_CLIENT_RAW_UNTAGGED, vec.iov_base, len,
				   true, client->raw_context);
	if (client_leave(client))
		return CLIENT_RAW_OFFER_GONE;
	if (ret < 0) {
		client_abort(client, "the raw data's consumer gave up");
		return CLIENT_RAW_OFFER_GONE;
	}
	if (client->phase == PHASE_IDLE)
		return CLIENT_RAW_OFFER_GONE;
	if (ret == IMAP_CLIENT_RAW_HANDLED) {
		evbuffer_drain(input, len);
		return CLIENT_RAW_OFFER_TAKEN;
	}
	client->raw_line_active = true;
	client->raw_line_parted = false;
	client->raw_line_early = true;
	return CLIENT_RAW_OFFER_PARSE;
}

/* imap_parser_feed, keeping a copy of the bytes of a raw line; a long
   untagged one (a streamed literal) is passed on in parts as it comes. */
enum imap_parser_result client_feed(struct imap_client *client, struct evbuffer *input)
{
	if (!client->raw_line_active && !imap_parser_is_mid_line(client->parser)) {
		client->raw_line_active = client_line_is_raw(client);
		client->raw_line_parted = false;
	}
	if (!client->raw_line_active || client->raw_line_early)
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
