/* SPDX-License-Identifier: MIT */
/* session-local: the commands after login answered here (CAPABILITY, STARTTLS, LOGOUT to the pool, refused extensions, SEARCH from the cache), and a STORE's mark on the view. */
#include "config.h"
#include "session-private.h"
#include "cache.h"
#include "imap-command.h"
#include "imap-seqset.h"
#include "log.h"
#include "mailbox-view.h"
#include "search.h"
#include "sync.h"
#include "upstream-pool.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <stdbool.h>
#include <stdint.h>

/* ---- the pool ---- */

/* Whether the upstream connection may go to the pool at the client's
   LOGOUT: pooling on, nothing half-sent, no state that can't be undone,
   and a mailbox (if one is selected) that UNSELECT can leave. */
static bool session_can_pool(const struct session *session)
{
	enum imap_client_state state = imap_client_get_state(session->upstream);

	return session_pool != NULL && upstream_pool_is_enabled(session_pool) && session->pool_key_valid &&
	       session->login_capabilities != NULL && !session->pool_state_changed &&
	       session->open_command == NULL &&
	       (state == IMAP_CLIENT_STATE_AUTHENTICATED ||
		(state == IMAP_CLIENT_STATE_SELECTED && imap_client_has_capability(session->upstream, "UNSELECT")));
}

/* Answers the client's LOGOUT here and hands the upstream connection to
   the pool (which leaves a selected mailbox with UNSELECT first). */
enum session_local session_answer_logout(struct session *session, const char *tag,
					 const struct imap_command *command)
{
	struct imap_client *client = session->upstream;

	(void)command;
	if (!session_can_pool(session))
		return SESSION_LOCAL_UPSTREAM;
	if (session->forwarded_pending > 0 || session->upstream_unproven)
		return SESSION_LOCAL_WAIT; /* a clean connection first: every answer is in, the proof's too */
	session_own_release_held(session, bufferevent_get_output(session->bev));
	session_send(session, "* BYE imapcached logging out\r\n%s OK LOGOUT completed\r\n", tag);
	session->upstream = NULL;
	upstream_pool_put_client(session_pool, &session->pool_key, client, session->login_capabilities,
				 session->login_text);
	session_close(session, "logged out (upstream connection to the pool)", NULL);
	return SESSION_LOCAL_ANSWERED;
}

/* ---- local answers ---- */

/* Whether a one-line answer may go now: no forwarded command before it
   is pending. Then what the upstream said meanwhile goes out first. */
static bool session_local_turn(struct session *session)
{
	if (session->forwarded_pending > 0)
		return false;
	session_own_release_held(session, bufferevent_get_output(session->bev));
	return true;
}

enum session_local session_answer_capability(struct session *session, const char *tag,
					     const struct imap_command *command)
{
	(void)command;
	if (!session_local_turn(session))
		return SESSION_LOCAL_WAIT;
	/* the login's list: the upstream's words in its own case */
	session_send(session, "* CAPABILITY %s\r\n%s OK Capability completed.\r\n",
		     session->login_capabilities != NULL ? session->login_capabilities : "IMAP4rev1", tag);
	return SESSION_LOCAL_ANSWERED;
}

enum session_local session_answer_starttls(struct session *session, const char *tag,
					   const struct imap_command *command)
{
	(void)command;
	if (!session_local_turn(session))
		return SESSION_LOCAL_WAIT;
	session_send(session, "%s BAD STARTTLS is not allowed after login\r\n", tag);
	return SESSION_LOCAL_ANSWERED;
}

enum session_local session_answer_cannot(struct session *session, const char *tag,
					 const struct imap_command *command)
{
	(void)command;
	if (!session_local_turn(session))
		return SESSION_LOCAL_WAIT;
	session_send(session, "%s NO [CANNOT] imapcached does not carry %s\r\n", tag, session->command_verb);
	return SESSION_LOCAL_ANSWERED;
}

/* SEARCH and UID SEARCH: answered from the view and the store when the
   cache can give the upstream's exact answer (search.h), else upstream.
   A STORE still pending upstream makes it wait: its flags are confirmed
   (or forgotten) first. */
enum session_local session_answer_search(struct session *session, const char *tag,
					 const struct imap_command *command)
{
	struct search_facts facts = {
		.cache = session->cache, .mailbox_id = sync_mailbox_id(session->sync), .view = session->view,
		.esearch = imap_client_has_capability(session->upstream, "ESEARCH"),
		.condstore = session->client_condstore,
	};
	struct evbuffer *answer;
	const char *why;

	if (!sync_is_ready(session->sync) || session_held_blocks_local(session) || session_news_blocks_local(session) ||
	    (answer = evbuffer_new()) == NULL)
		return SESSION_LOCAL_UPSTREAM;
	if (search_answer(command, tag, &facts, answer, &why) != SEARCH_ROUTE_LOCAL) {
		log_debug("session %lu: %s goes upstream: %s", session->id, session->command_verb, why);
		evbuffer_free(answer);
		return SESSION_LOCAL_UPSTREAM;
	}
	if (session->forwarded_pending > 0) {
		evbuffer_free(answer); /* answered again once they are done: the view may move */
		return SESSION_LOCAL_WAIT;
	}
	log_debug("session %lu: %s answered from the cache", session->id, session->command_verb);
	session->bytes_out += evbuffer_get_length(answer);
	evbuffer_add_buffer(bufferevent_get_output(session->bev), answer);
	session_own_release_held(session, bufferevent_get_output(session->bev)); /* after the data, as Dovecot */
	evbuffer_add_printf(answer, "%s OK %s\r\n", tag, SEARCH_OK_TEXT);
	session->bytes_out += evbuffer_get_length(answer);
	evbuffer_add_buffer(bufferevent_get_output(session->bev), answer);
	evbuffer_free(answer);
	return SESSION_LOCAL_ANSWERED;
}

/* A .SILENT STORE went upstream: the flags of its messages are not known
   here until the upstream tells them again. A STORE without .SILENT
   changes nothing here: the upstream answers it with the new flags of
   every message it changed (Dovecot leaves out the ones it did not), and
   the answers come in before any FETCH after it is answered here. */
void session_store_sent(struct session *session, const struct imap_command *command,
			struct imap_client_command *upstream)
{
	uint32_t count = mailbox_view_count(session->view);
	int64_t mailbox_id = sync_mailbox_id(session->sync);
	uint32_t run_first = 0, run_last = 0; /* UIDs of the store's rows to forget, a run of messages at a time */

	(void)upstream;
	if (!command->u.store.silent)
		return;
	for (uint32_t seq = 1; seq <= count + 1; seq++) {
		const struct mailbox_view_message *message = seq <= count ? mailbox_view_get(session->view, seq) : NULL;
		uint32_t number = message == NULL ? 0 : command->uid ? message->uid : seq;
		uint32_t star = command->uid ? mailbox_view_max_uid(session->view) : count;
		bool forget = message != NULL && (command->u.store.set->saved || (command->uid && number == 0) ||
						  (number != 0 && imap_seqset_contains(command->u.store.set, number, star)));

		if (forget)
			mailbox_view_forget_flags(session->view, seq);
		if (forget && message->uid != 0) {
			run_first = run_first == 0 ? message->uid : run_first;
			run_last = message->uid;
		} else if (run_first != 0) {
			/* nor may the store vouch for the old ones (doc/cache.md) */
			if (session->cache != NULL && mailbox_id != 0)
				(void)cache_forget_flags(session->cache, mailbox_id, run_first, run_last);
			run_first = 0;
		}
	}
}
