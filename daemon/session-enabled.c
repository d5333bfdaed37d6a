/* SPDX-License-Identifier: MIT */
/* session-enabled: what a client's commands enable upstream (CONDSTORE,
   QRESYNC, other extensions) and which of them leave the upstream
   connection in a state the pool can't undo. */
#include "config.h"
#include "session-private.h"
#include "fetch-fill.h"
#include "imap-command.h"
#include "imap-response.h"
#include "log.h"
#include "sync.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* The upstream has CONDSTORE enabled on the client's connection: it said
   ENABLED, or a client's command other than SELECT got an untagged
   HIGHESTMODSEQ or NOMODSEQ, which Dovecot sends as it enables CONDSTORE
   with a mailbox selected (a FETCH whose MODSEQ item came before a bad
   one gets BAD, and CONDSTORE is enabled all the same). A SELECT's says
   only that the mailbox's index keeps MODSEQs: once a session enabled
   CONDSTORE there, Dovecot sends it to every SELECT. */
static void session_condstore_confirmed(struct session *session)
{
	session->client_condstore = true;
	session->condstore_tentative = NULL;
}

static bool session_code_says_condstore(const char *code)
{
	return code != NULL && (strncasecmp(code, "HIGHESTMODSEQ ", 14) == 0 || strcasecmp(code, "NOMODSEQ") == 0);
}

/* The tagged reply of a command that made client_condstore true at its
   sending: a BAD enabled nothing (Dovecot checks a FETCH's set, a
   SEARCH's program, a STORE's modifiers before it enables CONDSTORE). */
void session_enabled_answered(struct session *session, struct imap_client_command *command,
			      enum imap_client_status status)
{
	if (command != session->condstore_tentative)
		return;
	session->condstore_tentative = NULL;
	if (status != IMAP_CLIENT_STATUS_BAD)
		return;
	session->client_condstore = false;
	log_debug("session %lu: the command that would have enabled CONDSTORE got BAD: not enabled", session->id);
}

/* The cache gives the answers of a session that enabled CONDSTORE or
   QRESYNC at most. Another extension enabled (IMAP4rev2, UTF8=ACCEPT,
   UIDONLY: each changes answers the store would give, SEARCH's form,
   \Recent, the strings of ENVELOPE, sequence numbers) makes the session
   a plain proxy from then on: its view is left, nothing is answered
   here or stored from it, and no sync goes behind its SELECTs. */
static void session_note_enabled(struct session *session, const struct imap_client_untagged *untagged)
{
	for (unsigned int i = 0; i < untagged->args_count; i++) {
		const struct imap_arg *arg = &untagged->args[i];
		bool qresync = imap_arg_atom_equals(arg, "QRESYNC");
		const char *name = NULL;

		if (qresync || imap_arg_atom_equals(arg, "CONDSTORE")) {
			session_condstore_confirmed(session);
			session->client_qresync |= qresync;
			continue;
		}
		if (session->client_enabled_other)
			continue;
		(void)imap_arg_get_atom(arg, &name);
		log_info("session %lu: the client enabled %s, which the cache's answers do not follow: forwarding only",
			 session->id, name != NULL ? name : "an extension");
		session->client_enabled_other = true;
		sync_deselect(session->sync);
		fetch_fill_set_mailbox(session->fill, NULL, 0, NULL);
	}
}

/* Whether a search program uses MODSEQ (RFC 7162: it enables CONDSTORE). */
static bool session_search_uses_modseq(const struct imap_search_key *key)
{
	for (; key != NULL; key = key->next) {
		if (key->type == IMAP_SEARCH_MODSEQ || session_search_uses_modseq(key->children))
			return true;
	}
	return false;
}

/* Whether a parsed command leaves the upstream connection in a state that
   UNSELECT can't undo, so that it must not serve another session: ENABLE,
   a LOGIN or AUTHENTICATE after login, and RFC 7162's CONDSTORE-enabling
   commands. */
bool session_enabled_changes_state(const struct imap_command *command)
{
	switch (command->name) {
	case IMAP_COMMAND_ENABLE:
	case IMAP_COMMAND_LOGIN:
	case IMAP_COMMAND_AUTHENTICATE:
		return true;
	case IMAP_COMMAND_SELECT:
	case IMAP_COMMAND_EXAMINE:
		return command->u.select.condstore || command->u.select.qresync;
	case IMAP_COMMAND_FETCH:
		for (unsigned int i = 0; i < command->u.fetch.attr_count; i++) {
			if (command->u.fetch.attrs[i].type == IMAP_FETCH_ATTR_MODSEQ)
				return true;
		}
		return command->u.fetch.changedsince_given || command->u.fetch.vanished;
	case IMAP_COMMAND_STORE:
		return command->u.store.unchangedsince_given;
	case IMAP_COMMAND_SEARCH:
		return session_search_uses_modseq(command->u.search.program);
	case IMAP_COMMAND_STATUS:
		return (command->u.status.items & IMAP_STATUS_HIGHESTMODSEQ) != 0;
	case IMAP_COMMAND_LIST:
		/* LIST-STATUS (RFC 5819) with HIGHESTMODSEQ: Dovecot enables it too */
		for (unsigned int i = 0; command->u.list.extended && i + 1 < command->arg_count; i++) {
			if (imap_arg_atom_equals(&command->args[i], "RETURN"))
				return imap_command_args_enable_condstore(&command->args[i + 1], 1);
		}
		return false;
	default:
		return false;
	}
}

/* Whether a parsed command enables CONDSTORE upstream (RFC 7162 3.1)
   once it is answered other than BAD. A SELECT's QRESYNC parameter
   before ENABLE QRESYNC gets BAD, and enables nothing. */
static bool session_command_enables_condstore(const struct session *session, const struct imap_command *command)
{
	switch (command->name) {
	case IMAP_COMMAND_LOGIN:
	case IMAP_COMMAND_AUTHENTICATE:
	case IMAP_COMMAND_ENABLE:
		return false; /* ENABLE's own answer says what it enabled (session_note_enabled) */
	case IMAP_COMMAND_SELECT:
	case IMAP_COMMAND_EXAMINE:
		return command->u.select.condstore || (command->u.select.qresync && session->client_qresync);
	default:
		return session_enabled_changes_state(command);
	}
}

bool session_enabled_sent(struct session *session, const struct imap_command *command)
{
	bool tentative = false;

	if (session_command_enables_condstore(session, command)) {
		/* a second enabler in flight: which one enabled it can't be told */
		tentative = !session->client_condstore;
		session->client_condstore = true;
		session->condstore_tentative = NULL;
	}
	return tentative;
}

void session_enabled_untagged(struct session *session, struct imap_client_command *command,
			      const struct imap_client_untagged *untagged)
{
	if (strcmp(untagged->keyword, "FLAGS") == 0 && command != session->select_command && session->pool_key_valid)
		/* the mailbox's keywords changed under a selected mailbox: one
		   a SEARCH or a refused STORE named may live in this upstream
		   process's memory alone, and the next session's SELECT would
		   list it (a helper's sweep, session 29) */
		session->pool_state_changed = true;
	if (strcmp(untagged->keyword, "ENABLED") == 0)
		session_note_enabled(session, untagged);
	else if (command != NULL && command != session->select_command && !session_own_runs(session, command) &&
		 session_code_says_condstore(untagged->code))
		session_condstore_confirmed(session);
}
