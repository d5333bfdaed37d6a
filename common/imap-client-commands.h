/* SPDX-License-Identifier: MIT */
/* imap-client-commands: one function per IMAP command, as Python's imaplib offers them, on the client core. */
#ifndef IMAPCACHE_IMAP_CLIENT_COMMANDS_H
#define IMAPCACHE_IMAP_CLIENT_COMMANDS_H

#include "imap-client.h"
#include "imap-sasl.h"

/*
 * Common contract: each function queues its command on client and returns
 * it (never NULL); callback and context are as for
 * imap_client_command_send (callback NULL: the caller owns the command).
 * The result is the status (OK/NO/BAD/abort) with the tagged code and
 * text, and the untagged data collected while it ran.
 *
 * Arguments named mailbox, user, password, reference and pattern are
 * strings, quoted or sent as literals as needed. Arguments named set
 * (a sequence set "1:*", "2,4:7"), items, flags, criteria and params are
 * IMAP syntax written as is, e.g. items "(UID FLAGS BODY.PEEK[])", flags
 * "(\\Seen \\Flagged)". With uid set, FETCH/STORE/SEARCH/COPY/MOVE are
 * sent as their UID forms and set holds UIDs.
 */
#define IMAP_CLIENT_CMD_ARGS imap_client_command_fn *callback, void *context

struct imap_client_command *imap_client_capability(struct imap_client *client, IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_noop(struct imap_client *client, IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_check(struct imap_client *client, IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_close(struct imap_client *client, IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_unselect(struct imap_client *client, IMAP_CLIENT_CMD_ARGS);
/* EXPUNGE: the EXPUNGE responses (sequence numbers, in server order) are
   the untagged "EXPUNGE" entries of the result. */
struct imap_client_command *imap_client_expunge(struct imap_client *client, IMAP_CLIENT_CMD_ARGS);
/* UID EXPUNGE set (UIDPLUS). */
struct imap_client_command *imap_client_uid_expunge(struct imap_client *client, const char *set,
						    IMAP_CLIENT_CMD_ARGS);
/* LOGOUT: the server's BYE is expected and lands in the result. */
struct imap_client_command *imap_client_logout(struct imap_client *client, IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_namespace(struct imap_client *client, IMAP_CLIENT_CMD_ARGS);
/* LOGIN user password (the server answers NO when it advertises
   LOGINDISABLED). Capabilities are refreshed after. */
struct imap_client_command *imap_client_login(struct imap_client *client, const char *user,
					      const char *password, IMAP_CLIENT_CMD_ARGS);
/* AUTHENTICATE with mechanism (owned by the caller, who must keep it
   until the callback; free it after with imap_sasl_mechanism_free). The
   initial response goes on the command line when the server has SASL-IR
   (an empty one as "="), else after the first "+". Responses are base64
   encoded and wiped after sending. */
struct imap_client_command *imap_client_authenticate(struct imap_client *client,
						     struct imap_sasl_mechanism *mechanism,
						     IMAP_CLIENT_CMD_ARGS);

/* Options of SELECT/EXAMINE (RFC 7162); zero for none. */
struct imap_client_select_params {
	bool condstore;              /* (CONDSTORE) */
	uint32_t qresync_uidvalidity;/* nonzero: (QRESYNC (uidvalidity modseq [known-uids])) */
	uint64_t qresync_modseq;
	const char *qresync_known_uids; /* may be NULL */
};
/* SELECT, or EXAMINE when readonly (imaplib's select(mailbox, readonly)).
   After OK, imap_client_is_read_only() tells whether the server made it
   read-only ([READ-ONLY], or EXAMINE). params may be NULL. */
struct imap_client_command *imap_client_select(struct imap_client *client, const char *mailbox,
					       bool readonly,
					       const struct imap_client_select_params *params,
					       IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_create(struct imap_client *client, const char *mailbox,
					       IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_delete(struct imap_client *client, const char *mailbox,
					       IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_rename(struct imap_client *client, const char *old_mailbox,
					       const char *new_mailbox, IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_subscribe(struct imap_client *client, const char *mailbox,
						  IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_unsubscribe(struct imap_client *client, const char *mailbox,
						    IMAP_CLIENT_CMD_ARGS);
/* LIST / LSUB reference pattern (imaplib's defaults are "" and "*"). */
struct imap_client_command *imap_client_list(struct imap_client *client, const char *reference,
					     const char *pattern, IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_lsub(struct imap_client *client, const char *reference,
					     const char *pattern, IMAP_CLIENT_CMD_ARGS);
/* STATUS mailbox items, items e.g. "(MESSAGES UIDNEXT UIDVALIDITY)". */
struct imap_client_command *imap_client_status(struct imap_client *client, const char *mailbox,
					       const char *items, IMAP_CLIENT_CMD_ARGS);
/* APPEND mailbox [flags] [date_time] {message}. flags: "(\\Seen)" or NULL;
   date_time: an IMAP date-time without quotes ("17-Jul-1996 02:44:25 -0700")
   or NULL. With UIDPLUS the code is "APPENDUID uidvalidity uid". */
struct imap_client_command *imap_client_append(struct imap_client *client, const char *mailbox,
					       const char *flags, const char *date_time,
					       const void *message, size_t message_len,
					       IMAP_CLIENT_CMD_ARGS);
/* COPY / MOVE set mailbox. With UIDPLUS the code is
   "COPYUID uidvalidity source-uids dest-uids" (MOVE sends it untagged
   in an OK: it is in the result's untagged "OK" entries and the pool). */
struct imap_client_command *imap_client_copy(struct imap_client *client, bool uid, const char *set,
					     const char *mailbox, IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_move(struct imap_client *client, bool uid, const char *set,
					     const char *mailbox, IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_fetch(struct imap_client *client, bool uid, const char *set,
					      const char *items, IMAP_CLIENT_CMD_ARGS);
/* imaplib's partial(num, part, start, length) as FETCH num
   (BODY[section]<start.length>) since RFC 3501 dropped PARTIAL. part is
   RFC822, RFC822.HEADER, RFC822.TEXT, or a BODY[...] / BODY.PEEK[...] item. */
struct imap_client_command *imap_client_partial(struct imap_client *client, uint32_t number,
						const char *part, uint64_t start, uint64_t length,
						IMAP_CLIENT_CMD_ARGS);
/* STORE set command flags, command e.g. "+FLAGS.SILENT", flags "(\\Deleted)". */
struct imap_client_command *imap_client_store(struct imap_client *client, bool uid, const char *set,
					      const char *command, const char *flags,
					      IMAP_CLIENT_CMD_ARGS);
/* SEARCH [CHARSET charset] criteria; charset may be NULL. */
struct imap_client_command *imap_client_search(struct imap_client *client, bool uid, const char *charset,
					       const char *criteria, IMAP_CLIENT_CMD_ARGS);
/* imaplib's uid(command, args): "UID command args" with args as is. */
struct imap_client_command *imap_client_uid(struct imap_client *client, const char *command,
					    const char *args, IMAP_CLIENT_CMD_ARGS);
/* imaplib's recent(), which returns and clears the RECENT responses: a
   NOOP whose result holds the RECENT responses stored in the pool (oldest
   first), then those the NOOP brings; none of them stays in the pool.
   Unlike imaplib it always sends the NOOP, even when the pool had one. */
struct imap_client_command *imap_client_recent(struct imap_client *client, IMAP_CLIENT_CMD_ARGS);
/* imaplib's xatom(name, args): any command; args may be NULL. */
struct imap_client_command *imap_client_xatom(struct imap_client *client, const char *name,
					      const char *args, IMAP_CLIENT_CMD_ARGS);
/* ENABLE capabilities (space-separated, e.g. "CONDSTORE QRESYNC"). */
struct imap_client_command *imap_client_enable(struct imap_client *client, const char *capabilities,
					       IMAP_CLIENT_CMD_ARGS);
/* ID (RFC 2971): fields is NULL (sent as NIL) or a NULL-terminated list
   of name, value pairs (a NULL value... is not allowed: use ""). */
struct imap_client_command *imap_client_id(struct imap_client *client, const char *const *fields,
					   IMAP_CLIENT_CMD_ARGS);

/* The rest of imaplib's commands (RFC 5256 SORT/THREAD, RFC 4314 ACL,
   RFC 9208 QUOTA, RFC 5464 METADATA-style annotations as imaplib sends
   them, PROXYAUTH). Arguments in parentheses are IMAP syntax as is. */
/* SORT (criteria) charset search-criteria, e.g. "(REVERSE DATE)", "UTF-8", "ALL". */
struct imap_client_command *imap_client_sort(struct imap_client *client, bool uid, const char *criteria,
					     const char *charset, const char *search, IMAP_CLIENT_CMD_ARGS);
/* THREAD algorithm charset search-criteria, e.g. "REFERENCES", "UTF-8", "ALL". */
struct imap_client_command *imap_client_thread(struct imap_client *client, bool uid, const char *algorithm,
					       const char *charset, const char *search, IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_getacl(struct imap_client *client, const char *mailbox,
					       IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_setacl(struct imap_client *client, const char *mailbox,
					       const char *who, const char *what, IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_deleteacl(struct imap_client *client, const char *mailbox,
						  const char *who, IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_myrights(struct imap_client *client, const char *mailbox,
						 IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_getquota(struct imap_client *client, const char *root,
						 IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_getquotaroot(struct imap_client *client, const char *mailbox,
						     IMAP_CLIENT_CMD_ARGS);
/* SETQUOTA root limits, limits e.g. "(STORAGE 512)". */
struct imap_client_command *imap_client_setquota(struct imap_client *client, const char *root,
						 const char *limits, IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_getannotation(struct imap_client *client, const char *mailbox,
						      const char *entry, const char *attribute,
						      IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_setannotation(struct imap_client *client, const char *mailbox,
						      const char *annotations, IMAP_CLIENT_CMD_ARGS);
struct imap_client_command *imap_client_proxyauth(struct imap_client *client, const char *user,
						  IMAP_CLIENT_CMD_ARGS);
/* imaplib's login_cram_md5: AUTHENTICATE CRAM-MD5 (RFC 2195) with a
   mechanism that lives as long as the command. */
struct imap_client_command *imap_client_login_cram_md5(struct imap_client *client, const char *user,
						       const char *password, IMAP_CLIENT_CMD_ARGS);

/* Parses "APPENDUID uidvalidity uid" from a result's code. */
bool imap_client_result_get_appenduid(const struct imap_client_result *result,
				      uint32_t *uidvalidity_r, uint32_t *uid_r);
/* Finds "COPYUID uidvalidity src dst" in the tagged code or an untagged
   OK of the result; *source_r and *dest_r point into a static buffer
   valid until the next call in the same thread. */
bool imap_client_result_get_copyuid(const struct imap_client_result *result, uint32_t *uidvalidity_r,
				    const char **source_r, const char **dest_r);

#endif
