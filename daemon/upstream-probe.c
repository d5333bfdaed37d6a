/* SPDX-License-Identifier: MIT */
/* upstream-probe: what each upstream offers before login, learned by connecting to it, for the proxy's own pre-login CAPABILITY. */
#include "config.h"
#include "upstream-probe.h"
#include "imap-client-commands.h"
#include "log.h"
#include "upstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

/* One upstream server and what it was last seen to offer. */
struct upstream_probe_server {
	TAILQ_ENTRY(upstream_probe_server) link;
	struct upstream_probe *probe;
	char *name;                   /* the upstream's name in the config last seen, for the log */
	char *host;
	unsigned int port;
	enum conf_tls tls;
	char *capabilities;           /* NULL: not known */
	struct imap_client *client;   /* a probe running, or NULL */
	long long last_start;         /* monotonic seconds when the last probe started; 0: never */
};

struct upstream_probe {
	struct event_base *base;
	TAILQ_HEAD(upstream_probe_server_list, upstream_probe_server) servers; /* most recently recorded or probed first */
	unsigned int count;
};

static long long upstream_probe_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec + 1; /* never 0, which means "never" */
}

struct upstream_probe *upstream_probe_new(struct event_base *base)
{
	struct upstream_probe *probe = calloc(1, sizeof(*probe));

	if (probe == NULL)
		return NULL;
	probe->base = base;
	TAILQ_INIT(&probe->servers);
	return probe;
}

static void upstream_probe_server_free(struct upstream_probe_server **server_p)
{
	struct upstream_probe_server *server = *server_p;

	TAILQ_REMOVE(&server->probe->servers, server, link);
	server->probe->count--;
	imap_client_free(&server->client);
	free(server->name);
	free(server->host);
	free(server->capabilities);
	free(server);
	*server_p = NULL;
}

void upstream_probe_free(struct upstream_probe **probe_p)
{
	struct upstream_probe *probe = *probe_p;

	if (probe == NULL)
		return;
	while (!TAILQ_EMPTY(&probe->servers)) {
		struct upstream_probe_server *server = TAILQ_FIRST(&probe->servers);

		upstream_probe_server_free(&server);
	}
	free(probe);
	*probe_p = NULL;
}

static struct upstream_probe_server *upstream_probe_find(const struct upstream_probe *probe,
							 const struct conf_upstream *upstream)
{
	struct upstream_probe_server *server;

	TAILQ_FOREACH(server, &probe->servers, link) {
		if (server->port == upstream->port && server->tls == upstream->tls &&
		    strcasecmp(server->host, upstream->host) == 0)
			return server;
	}
	return NULL;
}

/* The server of upstream, made (and the oldest idle one forgotten past
   UPSTREAM_PROBE_SERVERS_MAX) when new, moved to the front. NULL when out
   of memory or every slot has a probe running. */
static struct upstream_probe_server *upstream_probe_get(struct upstream_probe *probe,
							const struct conf_upstream *upstream)
{
	struct upstream_probe_server *server = upstream_probe_find(probe, upstream);
	char *name;

	if (server == NULL) {
		if (probe->count >= UPSTREAM_PROBE_SERVERS_MAX) {
			struct upstream_probe_server *oldest = TAILQ_LAST(&probe->servers, upstream_probe_server_list);

			if (oldest == NULL || oldest->client != NULL)
				return NULL;
			upstream_probe_server_free(&oldest);
		}
		server = calloc(1, sizeof(*server));
		if (server == NULL || (server->host = strdup(upstream->host)) == NULL) {
			free(server);
			return NULL;
		}
		server->probe = probe;
		server->port = upstream->port;
		server->tls = upstream->tls;
		TAILQ_INSERT_HEAD(&probe->servers, server, link);
		probe->count++;
	} else if (server != TAILQ_FIRST(&probe->servers)) {
		TAILQ_REMOVE(&probe->servers, server, link);
		TAILQ_INSERT_HEAD(&probe->servers, server, link);
	}
	if (server->name == NULL || strcmp(server->name, upstream->name) != 0) {
		name = strdup(upstream->name);
		if (name != NULL) {
			free(server->name);
			server->name = name;
		}
	}
	return server;
}

/* Keeps capabilities as the server's list; logs it when it changed. */
static void upstream_probe_store(struct upstream_probe_server *server, const char *capabilities)
{
	char *copy;

	if (server->capabilities != NULL && strcmp(server->capabilities, capabilities) == 0)
		return;
	copy = strdup(capabilities);
	if (copy == NULL)
		return; /* the old list (or none) stays: a smaller promise, never a wrong one */
	free(server->capabilities);
	server->capabilities = copy;
	log_info("upstream %s: offers before login: %s", server->name != NULL ? server->name : server->host,
		 capabilities);
}

void upstream_probe_record(struct upstream_probe *probe, const struct conf_upstream *upstream,
			   const char *capabilities)
{
	struct upstream_probe_server *server;

	if (probe == NULL || upstream == NULL)
		return;
	server = upstream_probe_get(probe, upstream);
	if (server != NULL)
		upstream_probe_store(server, capabilities);
}

static void upstream_probe_logged_out(struct imap_client *client, struct imap_client_command *command,
				      const struct imap_client_result *result, void *context)
{
	struct upstream_probe_server *server = context;

	(void)client;
	(void)command;
	(void)result;
	imap_client_free(&server->client); /* safe inside its own callback */
}

static void upstream_probe_connected(struct imap_client *client, struct imap_client_command *command,
				     const struct imap_client_result *result, void *context)
{
	struct upstream_probe_server *server = context;
	const char *name = server->name != NULL ? server->name : server->host;

	(void)command;
	if (result->status != IMAP_CLIENT_STATUS_OK) {
		log_info("upstream %s: cannot learn what it offers before login (asked again within %d s of "
			 "the next client): %s", name, UPSTREAM_PROBE_RETRY_SECS, result->text);
		imap_client_free(&server->client);
		return;
	}
	if (imap_client_get_state(client) != IMAP_CLIENT_STATE_NOT_AUTHENTICATED) {
		log_warning("upstream %s: logged in without credentials (PREAUTH): its capabilities are not "
			    "offered before login", name);
		imap_client_free(&server->client);
		return;
	}
	upstream_probe_store(server, imap_client_get_capabilities(client));
	imap_client_logout(client, upstream_probe_logged_out, server);
}

/* Connects to upstream (server's) to learn its list. */
static void upstream_probe_connect(struct upstream_probe *probe, struct upstream_probe_server *server,
				   const struct conf *conf, const struct conf_upstream *upstream)
{
	const char *error;

	server->last_start = upstream_probe_now();
	server->client = upstream_client_new(probe->base, conf, upstream, &error);
	if (server->client == NULL) {
		log_error("upstream %s: cannot learn what it offers before login: %s", upstream->name, error);
		return;
	}
	log_debug("upstream %s: asking what it offers before login", upstream->name);
	imap_client_connect(server->client, upstream_probe_connected, server);
}

void upstream_probe_start(struct upstream_probe *probe, const struct conf *conf)
{
	long long now = upstream_probe_now();

	if (probe == NULL)
		return;
	for (size_t i = 0; i < conf->upstreams_count; i++) {
		const struct conf_upstream *upstream = &conf->upstreams[i];
		struct upstream_probe_server *server = upstream_probe_find(probe, upstream);

		if (server != NULL && (server->capabilities != NULL || server->client != NULL ||
				       (server->last_start != 0 && now - server->last_start < UPSTREAM_PROBE_RETRY_SECS)))
			continue;
		server = upstream_probe_get(probe, upstream);
		if (server != NULL)
			upstream_probe_connect(probe, server, conf, upstream);
	}
}

/* The known lists of conf's upstreams, in config order, into lists_r
   (room for UPSTREAM_PROBE_SERVERS_MAX). Returns how many, or 0 unless
   every one is known. */
static size_t upstream_probe_lists(const struct upstream_probe *probe, const struct conf *conf,
				   const char **lists_r)
{
	if (probe == NULL || conf->upstreams_count == 0 || conf->upstreams_count > UPSTREAM_PROBE_SERVERS_MAX)
		return 0;
	for (size_t i = 0; i < conf->upstreams_count; i++) {
		const struct upstream_probe_server *server = upstream_probe_find(probe, &conf->upstreams[i]);

		if (server == NULL || server->capabilities == NULL)
			return 0;
		lists_r[i] = server->capabilities;
	}
	return conf->upstreams_count;
}

void upstream_probe_format_capability(const struct upstream_probe *probe, const struct conf *conf,
				      bool offer_starttls, bool plaintext_refused, char *buf, size_t size)
{
	const char *lists[UPSTREAM_PROBE_SERVERS_MAX];
	size_t count = upstream_probe_lists(probe, conf, lists);

	upstream_format_prelogin_capabilities(lists, count, offer_starttls, plaintext_refused, buf, size);
}

bool upstream_probe_refuses_mechanism(const struct upstream_probe *probe, const struct conf *conf,
				      const char *mechanism)
{
	const char *lists[UPSTREAM_PROBE_SERVERS_MAX];
	size_t count = upstream_probe_lists(probe, conf, lists);
	char word[64];

	if (count == 0)
		return false;
	snprintf(word, sizeof(word), " AUTH=%s ", mechanism);
	for (size_t i = 0; i < count; i++) {
		char padded[UPSTREAM_CAPABILITY_MAX + 2];

		snprintf(padded, sizeof(padded), " %s ", lists[i]);
		if (strcasestr(padded, word) != NULL)
			return false;
	}
	return true;
}
