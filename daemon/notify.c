/* SPDX-License-Identifier: MIT */
/* notify: tells the service manager (sd_notify) about readiness, reloads, shutdown and the session count. */
#include "config.h"
#include "notify.h"
#include "log.h"

#include <stdio.h>
#include <string.h>
#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

/* Sends one notification; state is sd_notify(3)'s newline-separated text. */
static void notify_send(const char *state)
{
#ifdef HAVE_SYSTEMD
	int result = sd_notify(0, state);

	if (result < 0)
		log_debug("sd_notify failed: %s", strerror(-result));
#else
	(void)state;
#endif
}

void notify_ready(unsigned int sessions)
{
	char state[128];

	snprintf(state, sizeof(state), "READY=1\nSTATUS=Serving, %u session%s", sessions,
		 sessions == 1 ? "" : "s");
	notify_send(state);
}

void notify_reloading(void)
{
	notify_send("RELOADING=1\nSTATUS=Reloading the configuration");
}

void notify_stopping(unsigned int sessions)
{
	char state[128];

	snprintf(state, sizeof(state), "STOPPING=1\nSTATUS=Stopping, waiting for %u session%s", sessions,
		 sessions == 1 ? "" : "s");
	notify_send(state);
}

void notify_status(unsigned int sessions)
{
	char state[128];

	snprintf(state, sizeof(state), "STATUS=Serving, %u session%s", sessions, sessions == 1 ? "" : "s");
	notify_send(state);
}
