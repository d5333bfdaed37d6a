/* SPDX-License-Identifier: MIT */
/* imap-client-sync: runs the client core's loop until one command is done. */
#include "config.h"
#include "imap-client-sync.h"

#include <assert.h>
#include <event2/event.h>
#include <signal.h>
#include <stdlib.h>

struct imap_client_sync {
	struct event_base *base;
	struct imap_client *client;
	struct imap_client_command *last; /* the command whose result was handed out */
	unsigned int untagged_seen;
	bool idle_timed_out;
};

static void sync_untagged_cb(struct imap_client *client, struct imap_client_command *command,
			     const struct imap_client_untagged *untagged, void *context)
{
	struct imap_client_sync *sync = context;

	(void)client;
	(void)command;
	(void)untagged;
	sync->untagged_seen++;
}

struct imap_client_sync *imap_client_sync_new(const struct imap_client_settings *settings,
					      const char **error_r)
{
	struct imap_client_sync *sync = calloc(1, sizeof(*sync));

	if (sync == NULL)
		abort();
	/* a server that hangs up must give abort, not kill the tool */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		abort();
	sync->base = event_base_new();
	if (sync->base == NULL) {
		*error_r = "cannot create an event loop";
		free(sync);
		return NULL;
	}
	sync->client = imap_client_new(sync->base, settings, error_r);
	if (sync->client == NULL) {
		event_base_free(sync->base);
		free(sync);
		return NULL;
	}
	imap_client_set_untagged_callback(sync->client, sync_untagged_cb, sync);
	return sync;
}

void imap_client_sync_free(struct imap_client_sync **syncp)
{
	struct imap_client_sync *sync = *syncp;

	if (sync == NULL)
		return;
	*syncp = NULL;
	imap_client_command_free(&sync->last);
	imap_client_free(&sync->client);
	event_base_free(sync->base);
	free(sync);
}

struct imap_client *imap_client_sync_get_client(struct imap_client_sync *sync)
{
	return sync->client;
}

/* Runs the loop until command is done. */
static void sync_run(struct imap_client_sync *sync, struct imap_client_command *command)
{
	while (!imap_client_command_is_done(command)) {
		/* the client's timers keep this finite: every pending command
		   ends by reply, connection loss or timeout */
		if (event_base_loop(sync->base, EVLOOP_ONCE) < 0)
			break;
	}
}

static enum imap_client_status sync_finish(struct imap_client_sync *sync,
					   struct imap_client_command *command,
					   const struct imap_client_result **result_r)
{
	const struct imap_client_result *result;

	sync_run(sync, command);
	result = imap_client_command_get_result(command);
	assert(result != NULL);
	imap_client_command_free(&sync->last);
	sync->last = command;
	if (result_r != NULL)
		*result_r = result;
	return result->status;
}

enum imap_client_status imap_client_sync_connect(struct imap_client_sync *sync,
						 const struct imap_client_result **result_r)
{
	return sync_finish(sync, imap_client_connect(sync->client, NULL, NULL), result_r);
}

enum imap_client_status imap_client_sync_wait(struct imap_client_sync *sync,
					      struct imap_client_command *command,
					      const struct imap_client_result **result_r)
{
	return sync_finish(sync, command, result_r);
}

static void sync_idle_timeout_cb(evutil_socket_t fd, short events, void *context)
{
	struct imap_client_sync *sync = context;

	(void)fd;
	(void)events;
	sync->idle_timed_out = true;
}

enum imap_client_status imap_client_sync_idle(struct imap_client_sync *sync, unsigned int timeout_msecs,
					      imap_client_sync_idle_fn *accepted, void *accepted_context,
					      bool *woken_r, const struct imap_client_result **result_r)
{
	struct imap_client_command *command = imap_client_idle(sync->client, NULL, NULL);
	struct event *timer = evtimer_new(sync->base, sync_idle_timeout_cb, sync);
	struct timeval tv = { .tv_sec = timeout_msecs / 1000, .tv_usec = (timeout_msecs % 1000) * 1000 };
	unsigned int seen_at_start;

	if (timer == NULL)
		abort();
	/* wait for the server's "+" so untagged data counted is IDLE's own */
	while (!imap_client_command_is_done(command) && !imap_client_idle_is_accepted(command)) {
		if (event_base_loop(sync->base, EVLOOP_ONCE) < 0)
			break;
	}
	seen_at_start = sync->untagged_seen;
	if (accepted != NULL && imap_client_idle_is_accepted(command))
		accepted(accepted_context);
	sync->idle_timed_out = false;
	evtimer_add(timer, &tv);
	while (!imap_client_command_is_done(command) && !sync->idle_timed_out &&
	       sync->untagged_seen == seen_at_start) {
		if (event_base_loop(sync->base, EVLOOP_ONCE) < 0)
			break;
	}
	event_free(timer);
	*woken_r = sync->untagged_seen != seen_at_start;
	imap_client_idle_done(command);
	return sync_finish(sync, command, result_r);
}
