/* SPDX-License-Identifier: MIT */
/* imap-sasl: SASL mechanisms for AUTHENTICATE (PLAIN, XOAUTH2, OAUTHBEARER, CRAM-MD5; LOGIN on the server side) and the caller-supplied mechanism interface. */
#ifndef IMAPCACHE_IMAP_SASL_H
#define IMAPCACHE_IMAP_SASL_H

#include <stdbool.h>
#include <stddef.h>

#define IMAP_SASL_MAX_RESPONSE (64 * 1024) /* an OAuth token is a few KiB; more is a bug */

enum imap_sasl_step_result {
	/* *response_r holds the answer (may be empty). */
	IMAP_SASL_STEP_RESPONSE,
	/* Only for the initial step: the mechanism speaks second, wait for
	   the server's first challenge. */
	IMAP_SASL_STEP_NO_INITIAL_RESPONSE,
	/* Give up: the client sends "*" and the server answers BAD. */
	IMAP_SASL_STEP_CANCEL,
};

struct imap_sasl_mechanism;

/*
 * One step of a mechanism. initial is true for the first call, made
 * before anything is sent (challenge is then NULL); later calls get each
 * decoded server challenge. The answer is malloc'd into *response_r /
 * *response_len_r; the caller wipes and frees it.
 */
typedef enum imap_sasl_step_result
imap_sasl_step_fn(struct imap_sasl_mechanism *mechanism, bool initial,
		  const unsigned char *challenge, size_t challenge_len,
		  unsigned char **response_r, size_t *response_len_r);

/* A mechanism: its name as the server lists it after AUTH=, its step
   function and state. A caller-supplied mechanism fills these in. */
struct imap_sasl_mechanism {
	const char *name;
	imap_sasl_step_fn *step;
	void (*free_context)(void *context); /* wipes credentials; may be NULL */
	void *context;
};

/* PLAIN (RFC 4616): authzid (NULL: none) NUL user NUL password. */
struct imap_sasl_mechanism *imap_sasl_plain_new(const char *authzid, const char *user,
						const char *password);
/* XOAUTH2 (Google/Microsoft): "user=U^Aauth=Bearer T^A^A"; an error
   challenge (JSON) is answered with an empty response, as the protocol
   asks, so the server can send its tagged NO. */
struct imap_sasl_mechanism *imap_sasl_xoauth2_new(const char *user, const char *token);
/* OAUTHBEARER (RFC 7628): "n,a=U,^Ahost=H^Aport=P^Aauth=Bearer T^A^A";
   host may be NULL (then host and port are left out). An error challenge
   is answered with "^A" (RFC 7628 3.2.3). */
struct imap_sasl_mechanism *imap_sasl_oauthbearer_new(const char *user, const char *host,
						      unsigned int port, const char *token);
/* CRAM-MD5 (RFC 2195): no initial response; answers the challenge with
   "user " and the hex HMAC-MD5 of it keyed with the password. */
struct imap_sasl_mechanism *imap_sasl_cram_md5_new(const char *user, const char *password);
/* Wipes and frees a mechanism made by the functions above, or a
   caller's one that was malloc'd; sets *mechanism to NULL. */
void imap_sasl_mechanism_free(struct imap_sasl_mechanism **mechanism);

/* Base64 (RFC 4648, with padding). encode returns a malloc'd NUL-terminated
   string; decode returns malloc'd bytes (NUL-terminated too, not counted)
   and the length, or NULL for input that is not base64. */
char *imap_sasl_base64_encode(const unsigned char *data, size_t len);
unsigned char *imap_sasl_base64_decode(const char *text, size_t *len_r);

/* The server's two challenges of the LOGIN mechanism
   (draft-murchison-sasl-login), base64 as they go on the "+" line: the
   prompts "Username:" and "Password:" that Dovecot, Cyrus and Exchange
   send, and that some clients check. */
#define IMAP_SASL_LOGIN_USER_CHALLENGE "VXNlcm5hbWU6"
#define IMAP_SASL_LOGIN_PASSWORD_CHALLENGE "UGFzc3dvcmQ6"

/* Why a client's initial response names no user. */
enum imap_sasl_user_result {
	IMAP_SASL_USER_FOUND,
	IMAP_SASL_USER_UNKNOWN_MECHANISM, /* not PLAIN, LOGIN, XOAUTH2 or OAUTHBEARER */
	IMAP_SASL_USER_MALFORMED,         /* the response breaks the mechanism's format */
};
/* Whether imap_sasl_initial_response_user knows mechanism
   (case-insensitive): PLAIN, LOGIN, XOAUTH2 or OAUTHBEARER. */
bool imap_sasl_user_mechanism_is_known(const char *mechanism);
/* For a proxy: the login name inside a client's decoded initial response
   of mechanism (case-insensitive name): PLAIN's authzid, or its authcid
   when the authzid is empty (the account the session acts as, whose
   cache it may use: a master user logging in as another), XOAUTH2's
   "user=", OAUTHBEARER's gs2 "a=" (with =2C and =3D undone), and the
   whole of LOGIN's (its answer to the user name challenge). Writes a
   NUL-terminated copy into user (size bytes); a name that does not fit,
   is empty or holds a NUL is MALFORMED. Reads nothing else (the secret
   is left alone). */
enum imap_sasl_user_result imap_sasl_initial_response_user(const char *mechanism,
							   const unsigned char *response, size_t len,
							   char *user, size_t size);

#endif
