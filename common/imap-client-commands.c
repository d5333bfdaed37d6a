/* SPDX-License-Identifier: MIT */
/* imap-client-commands: the imaplib command set as functions on the client core. */
#include "config.h"
#include "imap-client-commands.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define UID_PREFIX(uid) ((uid) ? "UID " : "")

struct imap_client_command *imap_client_capability(struct imap_client *client, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "CAPABILITY");
}

struct imap_client_command *imap_client_noop(struct imap_client *client, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "NOOP");
}

struct imap_client_command *imap_client_recent(struct imap_client *client, IMAP_CLIENT_CMD_ARGS)
{
	struct imap_client_command *command = imap_client_command_send(client, callback, context, "NOOP");

	imap_client_command_take_responses(command, "RECENT");
	return command;
}

struct imap_client_command *imap_client_check(struct imap_client *client, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "CHECK");
}

struct imap_client_command *imap_client_close(struct imap_client *client, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "CLOSE");
}

struct imap_client_command *imap_client_unselect(struct imap_client *client, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "UNSELECT");
}

struct imap_client_command *imap_client_expunge(struct imap_client *client, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "EXPUNGE");
}

struct imap_client_command *imap_client_uid_expunge(struct imap_client *client, const char *set,
						    IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "UID EXPUNGE %s", set);
}

struct imap_client_command *imap_client_logout(struct imap_client *client, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "LOGOUT");
}

struct imap_client_command *imap_client_namespace(struct imap_client *client, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "NAMESPACE");
}

struct imap_client_command *imap_client_login(struct imap_client *client, const char *user,
					      const char *password, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "LOGIN %a %a", user, password);
}

struct imap_client_command *imap_client_select(struct imap_client *client, const char *mailbox,
					       bool readonly,
					       const struct imap_client_select_params *params,
					       IMAP_CLIENT_CMD_ARGS)
{
	char extra[256] = "";

	if (params != NULL && params->qresync_uidvalidity != 0) {
		snprintf(extra, sizeof(extra), " (QRESYNC (%" PRIu32 " %" PRIu64 "%s%s))",
			 params->qresync_uidvalidity, params->qresync_modseq,
			 params->qresync_known_uids != NULL ? " " : "",
			 params->qresync_known_uids != NULL ? params->qresync_known_uids : "");
	} else if (params != NULL && params->condstore) {
		snprintf(extra, sizeof(extra), " (CONDSTORE)");
	}
	if (readonly)
		return imap_client_command_send(client, callback, context, "EXAMINE %a%s", mailbox, extra);
	return imap_client_command_send(client, callback, context, "SELECT %a%s", mailbox, extra);
}

struct imap_client_command *imap_client_create(struct imap_client *client, const char *mailbox,
					       IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "CREATE %a", mailbox);
}

struct imap_client_command *imap_client_delete(struct imap_client *client, const char *mailbox,
					       IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "DELETE %a", mailbox);
}

struct imap_client_command *imap_client_rename(struct imap_client *client, const char *old_mailbox,
					       const char *new_mailbox, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "RENAME %a %a", old_mailbox,
					new_mailbox);
}

struct imap_client_command *imap_client_subscribe(struct imap_client *client, const char *mailbox,
						  IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "SUBSCRIBE %a", mailbox);
}

struct imap_client_command *imap_client_unsubscribe(struct imap_client *client, const char *mailbox,
						    IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "UNSUBSCRIBE %a", mailbox);
}

struct imap_client_command *imap_client_list(struct imap_client *client, const char *reference,
					     const char *pattern, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "LIST %q %p", reference, pattern);
}

struct imap_client_command *imap_client_lsub(struct imap_client *client, const char *reference,
					     const char *pattern, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "LSUB %q %p", reference, pattern);
}

struct imap_client_command *imap_client_status(struct imap_client *client, const char *mailbox,
					       const char *items, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "STATUS %a %s", mailbox, items);
}

struct imap_client_command *imap_client_append(struct imap_client *client, const char *mailbox,
					       const char *flags, const char *date_time,
					       const void *message, size_t message_len,
					       IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "APPEND %a%s%s%s%s%s %L", mailbox,
					flags != NULL ? " " : "", flags != NULL ? flags : "",
					date_time != NULL ? " \"" : "", date_time != NULL ? date_time : "",
					date_time != NULL ? "\"" : "", message, message_len);
}

struct imap_client_command *imap_client_copy(struct imap_client *client, bool uid, const char *set,
					     const char *mailbox, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "%sCOPY %s %a", UID_PREFIX(uid), set,
					mailbox);
}

struct imap_client_command *imap_client_move(struct imap_client *client, bool uid, const char *set,
					     const char *mailbox, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "%sMOVE %s %a", UID_PREFIX(uid), set,
					mailbox);
}

struct imap_client_command *imap_client_fetch(struct imap_client *client, bool uid, const char *set,
					      const char *items, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "%sFETCH %s %s", UID_PREFIX(uid), set,
					items);
}

struct imap_client_command *imap_client_partial(struct imap_client *client, uint32_t number,
						const char *part, uint64_t start, uint64_t length,
						IMAP_CLIENT_CMD_ARGS)
{
	const char *section = part;

	if (strcasecmp(part, "RFC822") == 0)
		section = "BODY[]";
	else if (strcasecmp(part, "RFC822.HEADER") == 0)
		section = "BODY.PEEK[HEADER]";
	else if (strcasecmp(part, "RFC822.TEXT") == 0)
		section = "BODY[TEXT]";
	else if (strcasecmp(part, "RFC822.PEEK") == 0)
		section = "BODY.PEEK[]";
	return imap_client_command_send(client, callback, context, "FETCH %u (%s<%U.%U>)",
					(unsigned int)number, section, start, length);
}

struct imap_client_command *imap_client_store(struct imap_client *client, bool uid, const char *set,
					      const char *command, const char *flags,
					      IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "%sSTORE %s %s %s", UID_PREFIX(uid),
					set, command, flags);
}

struct imap_client_command *imap_client_search(struct imap_client *client, bool uid, const char *charset,
					       const char *criteria, IMAP_CLIENT_CMD_ARGS)
{
	if (charset != NULL)
		return imap_client_command_send(client, callback, context, "%sSEARCH CHARSET %a %s",
						UID_PREFIX(uid), charset, criteria);
	return imap_client_command_send(client, callback, context, "%sSEARCH %s", UID_PREFIX(uid),
					criteria);
}

struct imap_client_command *imap_client_uid(struct imap_client *client, const char *command,
					    const char *args, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "UID %s %s", command, args);
}

struct imap_client_command *imap_client_xatom(struct imap_client *client, const char *name,
					      const char *args, IMAP_CLIENT_CMD_ARGS)
{
	if (args == NULL)
		return imap_client_command_send(client, callback, context, "%s", name);
	return imap_client_command_send(client, callback, context, "%s %s", name, args);
}

struct imap_client_command *imap_client_enable(struct imap_client *client, const char *capabilities,
					       IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "ENABLE %s", capabilities);
}

struct imap_client_command *imap_client_id(struct imap_client *client, const char *const *fields,
					   IMAP_CLIENT_CMD_ARGS)
{
	struct evbuffer *buf;
	struct imap_client_command *command;
	size_t len;
	char *line;

	if (fields == NULL || fields[0] == NULL)
		return imap_client_command_send(client, callback, context, "ID NIL");
	/* quoted strings only: RFC 2971 limits fields to 1024 bytes */
	buf = evbuffer_new();
	evbuffer_add_printf(buf, "ID (");
	for (unsigned int i = 0; fields[i] != NULL && fields[i + 1] != NULL; i += 2) {
		for (unsigned int j = 0; j < 2; j++) {
			const char *s = fields[i + j];

			evbuffer_add_printf(buf, "%s\"", i + j > 0 ? " " : "");
			for (; *s != '\0'; s++) {
				if (*s == '\r' || *s == '\n')
					continue;
				if (*s == '"' || *s == '\\')
					evbuffer_add(buf, "\\", 1);
				evbuffer_add(buf, s, 1);
			}
			evbuffer_add(buf, "\"", 1);
		}
	}
	evbuffer_add(buf, ")", 1);
	len = evbuffer_get_length(buf);
	line = malloc(len + 1);
	if (line == NULL)
		abort();
	evbuffer_remove(buf, line, len);
	line[len] = '\0';
	evbuffer_free(buf);
	command = imap_client_command_send(client, callback, context, "%s", line);
	free(line);
	return command;
}

static struct imap_client_command *authenticate_start(struct imap_client *client,
						     struct imap_sasl_mechanism *mechanism, bool owns_mechanism,
						     IMAP_CLIENT_CMD_ARGS);

struct imap_client_command *imap_client_sort(struct imap_client *client, bool uid, const char *criteria,
					     const char *charset, const char *search, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "%sSORT %s %a %s", UID_PREFIX(uid), criteria,
					charset, search);
}

struct imap_client_command *imap_client_thread(struct imap_client *client, bool uid, const char *algorithm,
					       const char *charset, const char *search, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "%sTHREAD %s %a %s", UID_PREFIX(uid),
					algorithm, charset, search);
}

struct imap_client_command *imap_client_getacl(struct imap_client *client, const char *mailbox,
					       IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "GETACL %a", mailbox);
}

struct imap_client_command *imap_client_setacl(struct imap_client *client, const char *mailbox,
					       const char *who, const char *what, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "SETACL %a %a %a", mailbox, who, what);
}

struct imap_client_command *imap_client_deleteacl(struct imap_client *client, const char *mailbox,
						  const char *who, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "DELETEACL %a %a", mailbox, who);
}

struct imap_client_command *imap_client_myrights(struct imap_client *client, const char *mailbox,
						 IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "MYRIGHTS %a", mailbox);
}

struct imap_client_command *imap_client_getquota(struct imap_client *client, const char *root,
						 IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "GETQUOTA %q", root);
}

struct imap_client_command *imap_client_getquotaroot(struct imap_client *client, const char *mailbox,
						     IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "GETQUOTAROOT %a", mailbox);
}

struct imap_client_command *imap_client_setquota(struct imap_client *client, const char *root,
						 const char *limits, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "SETQUOTA %q %s", root, limits);
}

struct imap_client_command *imap_client_getannotation(struct imap_client *client, const char *mailbox,
						      const char *entry, const char *attribute,
						      IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "GETANNOTATION %a %s %s", mailbox, entry,
					attribute);
}

struct imap_client_command *imap_client_setannotation(struct imap_client *client, const char *mailbox,
						      const char *annotations, IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "SETANNOTATION %a %s", mailbox,
					annotations);
}

struct imap_client_command *imap_client_proxyauth(struct imap_client *client, const char *user,
						  IMAP_CLIENT_CMD_ARGS)
{
	return imap_client_command_send(client, callback, context, "PROXYAUTH %a", user);
}

struct imap_client_command *imap_client_login_cram_md5(struct imap_client *client, const char *user,
						       const char *password, IMAP_CLIENT_CMD_ARGS)
{
	struct imap_sasl_mechanism *mechanism = imap_sasl_cram_md5_new(user, password);
	struct imap_client_command *command;

	if (mechanism == NULL)
		abort();
	command = authenticate_start(client, mechanism, true, callback, context);
	return command;
}

/* ---- AUTHENTICATE ---- */

struct authenticate_state {
	struct imap_sasl_mechanism *mechanism;
	bool owns_mechanism;
	char *pending_initial; /* base64 initial response to send on the first "+" */
	bool initial_sent;
};

static void authenticate_state_free(void *context)
{
	struct authenticate_state *state = context;

	if (state->pending_initial != NULL)
		OPENSSL_clear_free(state->pending_initial, strlen(state->pending_initial));
	if (state->owns_mechanism)
		imap_sasl_mechanism_free(&state->mechanism);
	free(state);
}

/* Sends a response base64-encoded, then wipes it. */
static void authenticate_send(struct imap_client_command *command, unsigned char *response, size_t len)
{
	char *encoded = imap_sasl_base64_encode(response, len);

	imap_client_command_continue(command, encoded);
	OPENSSL_clear_free(encoded, strlen(encoded));
	OPENSSL_clear_free(response, len);
}

static int authenticate_continuation(struct imap_client *client, struct imap_client_command *command,
				     const char *text, void *context)
{
	struct authenticate_state *state = context;
	unsigned char *challenge, *response = NULL;
	size_t challenge_len = 0, response_len = 0;
	enum imap_sasl_step_result result;

	(void)client;
	if (!state->initial_sent && state->pending_initial != NULL) {
		state->initial_sent = true;
		imap_client_command_continue(command, state->pending_initial);
		OPENSSL_clear_free(state->pending_initial, strlen(state->pending_initial));
		state->pending_initial = NULL;
		return 0;
	}
	challenge = imap_sasl_base64_decode(text, &challenge_len);
	if (challenge == NULL) {
		imap_client_command_continue(command, "*"); /* not base64: cancel (RFC 3501 6.2.2) */
		return 0;
	}
	result = state->mechanism->step(state->mechanism, false, challenge, challenge_len, &response,
					&response_len);
	OPENSSL_clear_free(challenge, challenge_len);
	if (result != IMAP_SASL_STEP_RESPONSE || response_len > IMAP_SASL_MAX_RESPONSE) {
		if (response != NULL)
			OPENSSL_clear_free(response, response_len);
		imap_client_command_continue(command, "*");
		return 0;
	}
	authenticate_send(command, response, response_len);
	return 0;
}

struct imap_client_command *imap_client_authenticate(struct imap_client *client,
						     struct imap_sasl_mechanism *mechanism,
						     IMAP_CLIENT_CMD_ARGS)
{
	return authenticate_start(client, mechanism, false, callback, context);
}

static struct imap_client_command *authenticate_start(struct imap_client *client,
						     struct imap_sasl_mechanism *mechanism, bool owns_mechanism,
						     IMAP_CLIENT_CMD_ARGS)
{
	struct authenticate_state *state = calloc(1, sizeof(*state));
	unsigned char *initial = NULL;
	size_t initial_len = 0;
	enum imap_sasl_step_result result;
	char *line;
	struct imap_client_command *command;

	if (state == NULL)
		abort();
	state->mechanism = mechanism;
	state->owns_mechanism = owns_mechanism;
	result = mechanism->step(mechanism, true, NULL, 0, &initial, &initial_len);
	if (result == IMAP_SASL_STEP_CANCEL || initial_len > IMAP_SASL_MAX_RESPONSE) {
		if (initial != NULL)
			OPENSSL_clear_free(initial, initial_len);
		initial = NULL;
		result = IMAP_SASL_STEP_NO_INITIAL_RESPONSE;
	}
	if (result == IMAP_SASL_STEP_RESPONSE) {
		char *encoded = imap_sasl_base64_encode(initial, initial_len);

		OPENSSL_clear_free(initial, initial_len);
		if (imap_client_has_capability(client, "SASL-IR")) {
			size_t len = strlen(mechanism->name) + strlen(encoded) + 32;

			line = malloc(len);
			if (line == NULL)
				abort();
			/* RFC 4959: an empty initial response is sent as "=" */
			snprintf(line, len, "AUTHENTICATE %s %s", mechanism->name,
				 encoded[0] != '\0' ? encoded : "=");
			OPENSSL_clear_free(encoded, strlen(encoded));
			state->initial_sent = true;
			command = imap_client_command_send_continued(client, line, authenticate_continuation,
								     state, callback, context);
			imap_client_command_set_destroy(command, authenticate_state_free, state);
			OPENSSL_clear_free(line, strlen(line));
			return command;
		}
		state->pending_initial = encoded;
	}
	line = malloc(strlen(mechanism->name) + 16);
	if (line == NULL)
		abort();
	sprintf(line, "AUTHENTICATE %s", mechanism->name);
	command = imap_client_command_send_continued(client, line, authenticate_continuation, state,
						     callback, context);
	imap_client_command_set_destroy(command, authenticate_state_free, state);
	free(line);
	return command;
}

/* ---- response codes ---- */

bool imap_client_result_get_appenduid(const struct imap_client_result *result,
				      uint32_t *uidvalidity_r, uint32_t *uid_r)
{
	unsigned long uidvalidity, uid;
	int end = 0;

	if (result->code == NULL ||
	    sscanf(result->code, "APPENDUID %lu %lu%n", &uidvalidity, &uid, &end) != 2 ||
	    result->code[end] != '\0' || uidvalidity == 0 || uidvalidity > UINT32_MAX || uid == 0 ||
	    uid > UINT32_MAX)
		return false;
	*uidvalidity_r = (uint32_t)uidvalidity;
	*uid_r = (uint32_t)uid;
	return true;
}

static bool parse_copyuid(const char *code, uint32_t *uidvalidity_r, const char **source_r,
			  const char **dest_r)
{
	static _Thread_local char source[1024], dest[1024];
	unsigned long uidvalidity;

	if (code == NULL || strncasecmp(code, "COPYUID ", 8) != 0 ||
	    sscanf(code + 8, "%lu %1023s %1023s", &uidvalidity, source, dest) != 3 ||
	    uidvalidity == 0 || uidvalidity > UINT32_MAX)
		return false;
	*uidvalidity_r = (uint32_t)uidvalidity;
	*source_r = source;
	*dest_r = dest;
	return true;
}

bool imap_client_result_get_copyuid(const struct imap_client_result *result, uint32_t *uidvalidity_r,
				    const char **source_r, const char **dest_r)
{
	const struct imap_client_untagged *untagged;
	unsigned int index = 0;

	if (parse_copyuid(result->code, uidvalidity_r, source_r, dest_r))
		return true;
	while ((untagged = imap_client_result_next(result, "OK", &index)) != NULL) {
		if (parse_copyuid(untagged->code, uidvalidity_r, source_r, dest_r))
			return true;
	}
	return false;
}
