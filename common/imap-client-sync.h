/* SPDX-License-Identifier: MIT */
/* imap-client-sync: a blocking wrapper that drives the asynchronous client core on its own event loop, for tools and tests. */
#ifndef IMAPCACHE_IMAP_CLIENT_SYNC_H
#define IMAPCACHE_IMAP_CLIENT_SYNC_H

#include "imap-client.h"

struct imap_client_sync;

/* A client on a private event_base. Sets SIGPIPE to be ignored for the
   process, so that a server hanging up gives abort. Returns NULL with *error_r when the
   client can't be made (see imap_client_new). */
struct imap_client_sync *imap_client_sync_new(const struct imap_client_settings *settings,
					      const char **error_r);
/* Frees the client and the loop; sets *sync to NULL. */
void imap_client_sync_free(struct imap_client_sync **sync);

/* The client, to queue commands on (with callback NULL) and to ask for
   state and capabilities. */
struct imap_client *imap_client_sync_get_client(struct imap_client_sync *sync);

/* Connects and waits for the outcome. The result is valid until the next
   imap_client_sync_* call. Returns its status. */
enum imap_client_status imap_client_sync_connect(struct imap_client_sync *sync,
						 const struct imap_client_result **result_r);

/*
 * Runs the loop until command (queued with callback NULL on this sync's
 * client) completes, and takes ownership of it. Returns its status;
 * *result_r (may be NULL) is valid until the next imap_client_sync_* call.
 * Always ends: the client's connect and command timeouts bound the wait.
 * e.g. imap_client_sync_wait(sync, imap_client_noop(client, NULL, NULL), &result)
 */
enum imap_client_status imap_client_sync_wait(struct imap_client_sync *sync,
					      struct imap_client_command *command,
					      const struct imap_client_result **result_r);

/* Called once the server has accepted IDLE (e.g. to tell another party
   that changes will now be pushed). */
typedef void imap_client_sync_idle_fn(void *context);

/* IDLE until the server sends an untagged response or timeout_msecs pass,
   then DONE; waits for the tagged reply. accepted (may be NULL) is called
   once the server's "+" came. *woken_r tells whether untagged data came
   while idling (it is in the result). */
enum imap_client_status imap_client_sync_idle(struct imap_client_sync *sync, unsigned int timeout_msecs,
					      imap_client_sync_idle_fn *accepted, void *accepted_context,
					      bool *woken_r,
					      const struct imap_client_result **result_r);

#endif
