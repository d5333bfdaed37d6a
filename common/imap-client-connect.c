/* SPDX-License-Identifier: MIT */
/* imap-client-connect: the client core's connection set-up (host lookup, address by address, TLS, STARTTLS, greeting, capabilities) and tear-down. */
#include "config.h"
#include "imap-client-private.h"
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define IMAP_CLIENT_TLS_SOCKET_HIGH_WATER (64 * 1024) /* encrypted bytes queued on the socket */
#define IMAP_CLIENT_PORT_TEXT_MAX 8 /* "65535" and its NUL */

/* ---- capabilities ---- */

/* Replaces the capability list with the space-separated words of text. */
void client_set_capabilities(struct imap_client *client, const char *text)
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

void client_set_capabilities_args(struct imap_client *client, const struct imap_arg *args,
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

void client_close(struct imap_client *client)
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
	client->raw_line_early = false;
	client->raw_line_parted = false;
	if (client->raw_line != NULL)
		evbuffer_drain(client->raw_line, evbuffer_get_length(client->raw_line));
	if (client->parser != NULL)
		imap_parser_reset(client->parser);
}

void client_connect_timeout_cb(evutil_socket_t fd, short events, void *context)
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

int client_handle_greeting(struct imap_client *client, const struct imap_arg *args,
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
void client_connect_step(struct imap_client *client)
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
	/* libevent's 16 KiB a turn made a 10 MB answer 600 turns of the loop (its socket reads are 4 KiB each: client_read takes the rest, net-read.h) */
	bufferevent_set_max_single_read(client->plain_bev, IMAP_CLIENT_READ_MAX);
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

void client_attempt_timeout_cb(evutil_socket_t fd, short events, void *context)
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

void client_lookup_done_cb(evutil_socket_t fd, short events, void *context)
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
	/* libevent's 16 KiB a turn made a 10 MB answer 600 turns of the loop (its socket reads are 4 KiB each: client_read takes the rest, net-read.h) */
	bufferevent_set_max_single_read(client->plain_bev, IMAP_CLIENT_READ_MAX);
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
