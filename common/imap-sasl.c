/* SPDX-License-Identifier: MIT */
/* imap-sasl: PLAIN, XOAUTH2, OAUTHBEARER and CRAM-MD5 client mechanisms, base64, and the user in a client's initial response. */
#include "config.h"
#include "imap-sasl.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The whole first message, built once; later challenges are errors. */
struct sasl_single {
	unsigned char *initial;
	size_t initial_len;
	const char *error_answer; /* answer to an error challenge; NULL: cancel */
	size_t error_answer_len;
};

static void sasl_single_free(void *context)
{
	struct sasl_single *single = context;

	if (single == NULL)
		return;
	OPENSSL_clear_free(single->initial, single->initial_len);
	free(single);
}

static enum imap_sasl_step_result sasl_single_step(struct imap_sasl_mechanism *mechanism, bool initial,
						   const unsigned char *challenge, size_t challenge_len,
						   unsigned char **response_r, size_t *response_len_r)
{
	struct sasl_single *single = mechanism->context;
	const unsigned char *answer = initial ? single->initial : (const unsigned char *)single->error_answer;
	size_t len = initial ? single->initial_len : single->error_answer_len;

	(void)challenge;
	(void)challenge_len;
	if (!initial && single->error_answer == NULL)
		return IMAP_SASL_STEP_CANCEL;
	*response_r = malloc(len + 1);
	if (*response_r == NULL)
		return IMAP_SASL_STEP_CANCEL;
	memcpy(*response_r, answer, len);
	*response_len_r = len;
	return IMAP_SASL_STEP_RESPONSE;
}

static struct imap_sasl_mechanism *sasl_single_new(const char *name, unsigned char *initial, size_t len,
						   const char *error_answer)
{
	struct imap_sasl_mechanism *mechanism = calloc(1, sizeof(*mechanism));
	struct sasl_single *single = calloc(1, sizeof(*single));

	if (mechanism == NULL || single == NULL) {
		free(mechanism);
		free(single);
		OPENSSL_clear_free(initial, len);
		return NULL;
	}
	single->initial = initial;
	single->initial_len = len;
	single->error_answer = error_answer;
	single->error_answer_len = error_answer != NULL ? strlen(error_answer) : 0;
	mechanism->name = name;
	mechanism->step = sasl_single_step;
	mechanism->free_context = sasl_single_free;
	mechanism->context = single;
	return mechanism;
}

/* Concatenates parts (NULL-terminated list of strings, "\1" etc. allowed;
   a part of exactly "" adds a NUL byte). */
static unsigned char *sasl_join(size_t *len_r, const char *const *parts)
{
	size_t len = 0;
	unsigned char *buf, *p;

	for (const char *const *part = parts; *part != NULL; part++)
		len += **part == '\0' ? 1 : strlen(*part);
	buf = p = malloc(len + 1);
	if (buf == NULL)
		return NULL;
	for (const char *const *part = parts; *part != NULL; part++) {
		if (**part == '\0') {
			*p++ = '\0';
		} else {
			memcpy(p, *part, strlen(*part));
			p += strlen(*part);
		}
	}
	*len_r = len;
	return buf;
}

struct imap_sasl_mechanism *imap_sasl_plain_new(const char *authzid, const char *user,
						const char *password)
{
	size_t authzid_len = authzid != NULL ? strlen(authzid) : 0;
	size_t user_len = strlen(user), password_len = strlen(password);
	size_t len = authzid_len + 1 + user_len + 1 + password_len;
	unsigned char *buf = malloc(len + 1);

	if (buf == NULL)
		return NULL;
	memcpy(buf, authzid != NULL ? authzid : "", authzid_len);
	buf[authzid_len] = '\0';
	memcpy(buf + authzid_len + 1, user, user_len);
	buf[authzid_len + 1 + user_len] = '\0';
	memcpy(buf + authzid_len + 2 + user_len, password, password_len);
	return sasl_single_new("PLAIN", buf, len, NULL); /* PLAIN has no second step */
}

struct imap_sasl_mechanism *imap_sasl_xoauth2_new(const char *user, const char *token)
{
	const char *parts[] = { "user=", user, "\1auth=Bearer ", token, "\1\1", NULL };
	size_t len = 0;
	unsigned char *buf = sasl_join(&len, parts);

	return buf == NULL ? NULL : sasl_single_new("XOAUTH2", buf, len, "");
}

struct imap_sasl_mechanism *imap_sasl_oauthbearer_new(const char *user, const char *host,
						      unsigned int port, const char *token)
{
	char port_text[16];
	size_t len = 0;
	unsigned char *buf;

	snprintf(port_text, sizeof(port_text), "%u", port);
	if (host != NULL) {
		const char *parts[] = { "n,a=", user, ",\1host=", host, "\1port=", port_text,
					"\1auth=Bearer ", token, "\1\1", NULL };
		buf = sasl_join(&len, parts);
	} else {
		const char *parts[] = { "n,a=", user, ",\1auth=Bearer ", token, "\1\1", NULL };
		buf = sasl_join(&len, parts);
	}
	return buf == NULL ? NULL : sasl_single_new("OAUTHBEARER", buf, len, "\1");
}

struct cram_md5 {
	char *user, *password;
};

static void cram_md5_free(void *context)
{
	struct cram_md5 *cram = context;

	OPENSSL_clear_free(cram->user, strlen(cram->user));
	OPENSSL_clear_free(cram->password, strlen(cram->password));
	free(cram);
}

static enum imap_sasl_step_result cram_md5_step(struct imap_sasl_mechanism *mechanism, bool initial,
						const unsigned char *challenge, size_t challenge_len,
						unsigned char **response_r, size_t *response_len_r)
{
	struct cram_md5 *cram = mechanism->context;
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;
	size_t user_len = strlen(cram->user);
	unsigned char *response;

	if (initial)
		return IMAP_SASL_STEP_NO_INITIAL_RESPONSE;
	if (HMAC(EVP_md5(), cram->password, (int)strlen(cram->password), challenge, challenge_len, digest,
		 &digest_len) == NULL)
		return IMAP_SASL_STEP_CANCEL;
	response = malloc(user_len + 1 + 2 * digest_len + 1);
	if (response == NULL)
		return IMAP_SASL_STEP_CANCEL;
	memcpy(response, cram->user, user_len);
	response[user_len] = ' ';
	for (unsigned int i = 0; i < digest_len; i++)
		snprintf((char *)response + user_len + 1 + 2 * i, 3, "%02x", digest[i]);
	*response_r = response;
	*response_len_r = user_len + 1 + 2 * digest_len;
	OPENSSL_cleanse(digest, sizeof(digest));
	return IMAP_SASL_STEP_RESPONSE;
}

struct imap_sasl_mechanism *imap_sasl_cram_md5_new(const char *user, const char *password)
{
	struct imap_sasl_mechanism *mechanism = calloc(1, sizeof(*mechanism));
	struct cram_md5 *cram = calloc(1, sizeof(*cram));

	if (mechanism == NULL || cram == NULL || (cram->user = strdup(user)) == NULL ||
	    (cram->password = strdup(password)) == NULL) {
		if (cram != NULL) {
			free(cram->user);
			free(cram);
		}
		free(mechanism);
		return NULL;
	}
	mechanism->name = "CRAM-MD5";
	mechanism->step = cram_md5_step;
	mechanism->free_context = cram_md5_free;
	mechanism->context = cram;
	return mechanism;
}

void imap_sasl_mechanism_free(struct imap_sasl_mechanism **mechanism)
{
	if (*mechanism == NULL)
		return;
	if ((*mechanism)->free_context != NULL)
		(*mechanism)->free_context((*mechanism)->context);
	free(*mechanism);
	*mechanism = NULL;
}

char *imap_sasl_base64_encode(const unsigned char *data, size_t len)
{
	size_t out_len = 4 * ((len + 2) / 3);
	char *out = malloc(out_len + 1);

	if (out == NULL || len > INT32_MAX)
		abort();
	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	out[out_len] = '\0';
	return out;
}

unsigned char *imap_sasl_base64_decode(const char *text, size_t *len_r)
{
	size_t len = strlen(text), padding = 0;
	unsigned char *out;
	int n;

	if (len % 4 != 0 || len > INT32_MAX)
		return NULL;
	if (len > 0 && text[len - 1] == '=')
		padding++;
	if (len > 1 && text[len - 2] == '=')
		padding++;
	for (size_t i = 0; i < len - padding; i++) {
		char c = text[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '+' || c == '/'))
			return NULL;
	}
	out = malloc(len / 4 * 3 + 1);
	if (out == NULL)
		abort();
	n = EVP_DecodeBlock(out, (const unsigned char *)text, (int)len);
	if (n < 0 || (size_t)n < padding) {
		free(out);
		return NULL;
	}
	*len_r = (size_t)n - padding;
	out[*len_r] = '\0';
	return out;
}

/* Copies len bytes into user if they fit, are non-empty and hold no NUL. */
static enum imap_sasl_user_result sasl_copy_user(const unsigned char *data, size_t len, char *user,
						 size_t size)
{
	if (len == 0 || len >= size || memchr(data, '\0', len) != NULL)
		return IMAP_SASL_USER_MALFORMED;
	memcpy(user, data, len);
	user[len] = '\0';
	return IMAP_SASL_USER_FOUND;
}

/* The value of "key" in a ^A-separated list of key=value fields. */
static const unsigned char *sasl_field(const unsigned char *data, size_t len, const char *key,
				       size_t *value_len_r)
{
	size_t key_len = strlen(key), pos = 0;

	while (pos < len) {
		const unsigned char *end = memchr(data + pos, 0x01, len - pos);
		size_t field_len = end != NULL ? (size_t)(end - (data + pos)) : len - pos;

		if (field_len > key_len && memcmp(data + pos, key, key_len) == 0) {
			*value_len_r = field_len - key_len;
			return data + pos + key_len;
		}
		pos += field_len + 1;
	}
	return NULL;
}

bool imap_sasl_user_mechanism_is_known(const char *mechanism)
{
	return strcasecmp(mechanism, "PLAIN") == 0 || strcasecmp(mechanism, "LOGIN") == 0 ||
	       strcasecmp(mechanism, "XOAUTH2") == 0 || strcasecmp(mechanism, "OAUTHBEARER") == 0;
}

enum imap_sasl_user_result imap_sasl_initial_response_user(const char *mechanism,
							   const unsigned char *response, size_t len,
							   char *user, size_t size)
{
	if (strcasecmp(mechanism, "PLAIN") == 0) {
		/* authzid NUL authcid NUL passwd */
		const unsigned char *first = memchr(response, '\0', len), *second;

		if (first == NULL)
			return IMAP_SASL_USER_MALFORMED;
		first++;
		second = memchr(first, '\0', len - (size_t)(first - response));
		if (second == NULL || second == first)
			return IMAP_SASL_USER_MALFORMED;
		/* The session acts as the authzid when there is one (a master
		   user logging in as someone else): that account's cache. */
		if (first - 1 > response)
			return sasl_copy_user(response, (size_t)(first - 1 - response), user, size);
		return sasl_copy_user(first, (size_t)(second - first), user, size);
	}
	if (strcasecmp(mechanism, "LOGIN") == 0)
		return sasl_copy_user(response, len, user, size);
	if (strcasecmp(mechanism, "XOAUTH2") == 0) {
		size_t value_len;
		const unsigned char *value = sasl_field(response, len, "user=", &value_len);

		return value == NULL ? IMAP_SASL_USER_MALFORMED : sasl_copy_user(value, value_len, user, size);
	}
	if (strcasecmp(mechanism, "OAUTHBEARER") == 0) {
		/* gs2-header: flag "," ["a=" saslname] "," ; saslname escapes , and = */
		const unsigned char *comma = memchr(response, ',', len), *start, *end;
		size_t out = 0;

		if (comma == NULL || len - (size_t)(comma - response) < 3 || comma[1] != 'a' || comma[2] != '=')
			return IMAP_SASL_USER_MALFORMED;
		start = comma + 3;
		end = memchr(start, ',', len - (size_t)(start - response));
		if (end == NULL)
			return IMAP_SASL_USER_MALFORMED;
		for (const unsigned char *p = start; p < end; p++) {
			unsigned char c = *p;

			if (c == '=') {
				if (end - p < 3)
					return IMAP_SASL_USER_MALFORMED;
				if (p[1] == '2' && p[2] == 'C')
					c = ',';
				else if (p[1] == '3' && p[2] == 'D')
					c = '=';
				else
					return IMAP_SASL_USER_MALFORMED;
				p += 2;
			}
			if (c == '\0' || out + 1 >= size)
				return IMAP_SASL_USER_MALFORMED;
			user[out++] = (char)c;
		}
		if (out == 0)
			return IMAP_SASL_USER_MALFORMED;
		user[out] = '\0';
		return IMAP_SASL_USER_FOUND;
	}
	return IMAP_SASL_USER_UNKNOWN_MECHANISM;
}
