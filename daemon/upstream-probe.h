/* SPDX-License-Identifier: MIT */
/* upstream-probe: what each upstream offers before login, learned by connecting to it, for the proxy's own pre-login CAPABILITY. */
#ifndef IMAPCACHED_UPSTREAM_PROBE_H
#define IMAPCACHED_UPSTREAM_PROBE_H

#include "conf.h"

#include <stdbool.h>
#include <stddef.h>

struct event_base;

#define UPSTREAM_PROBE_RETRY_SECS 60 /* an upstream that could not be asked is asked again at most this often */
#define UPSTREAM_PROBE_SERVERS_MAX 64 /* servers remembered (host, port, TLS); a config names a handful */

/* Remembers, per upstream server (host, port and TLS mode), the
   capabilities it lists before login once its TLS is up (implicit or
   after STARTTLS; before STARTTLS a server may hide AUTH= behind
   LOGINDISABLED). */
struct upstream_probe;

/* An empty store whose probes run on base. NULL when out of memory. */
struct upstream_probe *upstream_probe_new(struct event_base *base);

/* Closes the probes still running (no LOGOUT), frees *probe and sets it
   to NULL. NULL is fine. */
void upstream_probe_free(struct upstream_probe **probe);

/* Starts, without waiting for it, a probe of each upstream of conf whose
   list is not known, unless one is running or the last one started less
   than UPSTREAM_PROBE_RETRY_SECS ago: a connection made as a login's is
   (upstream_client_new: TLS or STARTTLS, certificate checks and the
   connect timeout as configured), whose capabilities are recorded as
   upstream_probe_record does, then LOGOUT. Logs each failure (and an
   upstream that greets with PREAUTH, whose list is not used). conf is
   only read during the call. probe NULL: nothing. */
void upstream_probe_start(struct upstream_probe *probe, const struct conf *conf);

/* Records capabilities (space-separated, as imap_client_get_capabilities
   gives them once connected, before login) as what upstream offers now,
   replacing what was known; logs the list when it changed. probe or
   upstream NULL: nothing. */
void upstream_probe_record(struct upstream_probe *probe, const struct conf_upstream *upstream,
			   const char *capabilities);

/* Writes into buf (size bytes) the pre-login capability list for a
   client of conf: upstream_format_prelogin_capabilities with the lists
   of all of conf's upstreams when every one is known (so with several
   upstreams, what they all offer), else with none (the fallback).
   probe NULL: nothing is known. */
void upstream_probe_format_capability(const struct upstream_probe *probe, const struct conf *conf,
				      bool offer_starttls, bool plaintext_refused, char *buf, size_t size);

/* Whether AUTHENTICATE mechanism can only fail upstream for a client of
   conf: the list of every upstream of conf is known and none of them
   lists AUTH=mechanism (case-insensitive). */
bool upstream_probe_refuses_mechanism(const struct upstream_probe *probe, const struct conf *conf,
				      const char *mechanism);

#endif
