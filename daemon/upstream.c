/* SPDX-License-Identifier: MIT */
/* upstream: a client-core connection to the upstream server chosen for a login, and what the proxy may advertise before and after login. */
#include "config.h"
#include "upstream.h"
#include "imap-sasl.h"

#include <assert.h>
#include <event2/dns.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define UPSTREAM_WORD_MAX 256 /* no capability name is near this long */

static struct evdns_base *upstream_resolver;

void upstream_set_resolver(struct evdns_base *dns_base)
{
	upstream_resolver = dns_base;
}

void upstream_client_settings(const struct conf *conf, const struct conf_upstream *upstream,
			      struct imap_client_settings *settings_r)
{
	*settings_r = (struct imap_client_settings){
		.host = upstream->host,
		.port = upstream->port,
		.ca_file = upstream->ca_file,
		.tls_no_verify = !upstream->verify,
		.connect_timeout_msecs = conf->timeout_upstream_connect * 1000,
		.command_timeout_msecs = conf->timeout_upstream_command * 1000,
		.dns_base = upstream_resolver,
	};
	switch (upstream->tls) {
	case CONF_TLS_NONE:
		settings_r->tls_mode = IMAP_CLIENT_TLS_NONE;
		break;
	case CONF_TLS_STARTTLS:
		settings_r->tls_mode = IMAP_CLIENT_TLS_STARTTLS;
		break;
	case CONF_TLS_IMPLICIT:
		settings_r->tls_mode = IMAP_CLIENT_TLS_IMPLICIT;
		break;
	}
}

struct imap_client *upstream_client_new(struct event_base *base, const struct conf *conf,
					const struct conf_upstream *upstream, const char **error_r)
{
	struct imap_client_settings settings;

	upstream_client_settings(conf, upstream, &settings);
	return imap_client_new(base, &settings, error_r);
}

bool upstream_capability_is_carried(const char *capability)
{
	/* Each is commands and their tagged responses only (RFC 3501 and the
	   extensions' own RFCs), so forwarding bytes carries them. A name
	   ending in "=" stands for every value. */
	static const char *const carried[] = {
		"IMAP4REV1", "IMAP4REV2", "LITERAL+", "LITERAL-", "ID", "ENABLE", "IDLE", "NAMESPACE",
		"UIDPLUS", "UNSELECT", "CHILDREN", "MOVE", "CONDSTORE", "QRESYNC", "ESEARCH", "ESORT",
		"SEARCHRES", "WITHIN", "CONTEXT=SEARCH", "CONTEXT=SORT", "SORT", "SORT=DISPLAY", "THREAD=",
		"MULTIAPPEND", "CATENATE", "URL-PARTIAL", "BINARY", "LIST-EXTENDED", "LIST-STATUS",
		"LIST-MYRIGHTS", "SPECIAL-USE", "CREATE-SPECIAL-USE", "I18NLEVEL=", "LANGUAGE", "ACL",
		"RIGHTS=", "QUOTA", "QUOTA=", "QUOTASET", "METADATA", "METADATA-SERVER", "APPENDLIMIT",
		"APPENDLIMIT=", "OBJECTID", "REPLACE", "SAVEDATE", "STATUS=SIZE", "SNIPPET=", "PREVIEW",
		"PREVIEW=", "UTF8=ACCEPT", "UTF8=ONLY", "LOGIN-REFERRALS", "MAILBOX-REFERRALS", "ANNOTATE-EXPERIMENT-1",
		"PARTIAL", "UIDONLY", "INPROGRESS", "X-GM-EXT-1", "XLIST",
		NULL
	};
	size_t len = strlen(capability);

	for (const char *const *name = carried; *name != NULL; name++) {
		size_t name_len = strlen(*name);

		if ((*name)[name_len - 1] == '=') {
			if (len > name_len && strncasecmp(capability, *name, name_len) == 0)
				return true;
		} else if (strcasecmp(capability, *name) == 0) {
			return true;
		}
	}
	return false;
}

void upstream_filter_capabilities(const char *capabilities, char *buf, size_t size)
{
	size_t used = 0;
	bool has_version = false;
	const char *p = capabilities;

	buf[0] = '\0';
	while (*p != '\0') {
		char word[256];
		size_t len = 0;

		while (*p == ' ')
			p++;
		while (p[len] != '\0' && p[len] != ' ')
			len++;
		if (len == 0)
			break;
		if (len < sizeof(word)) {
			memcpy(word, p, len);
			word[len] = '\0';
			if (upstream_capability_is_carried(word) && used + len + 2 <= size) {
				if (strncasecmp(word, "IMAP4REV", 8) == 0)
					has_version = true;
				used += (size_t)snprintf(buf + used, size - used, "%s%s", used > 0 ? " " : "", word);
			}
		}
		p += len;
	}
	if (!has_version && size > 10) {
		/* never less than the protocol itself */
		memmove(buf + 10, buf, used + 1 > size - 10 ? size - 10 : used + 1);
		memcpy(buf, used > 0 ? "IMAP4rev1 " : "IMAP4rev1\0", 10);
		buf[size - 1] = '\0';
	}
}

/* Whether list (space-separated) has word (len bytes), case-insensitively. */
static bool upstream_list_has_word(const char *list, const char *word, size_t len)
{
	for (const char *p = list; *p != '\0';) {
		size_t word_len = 0;

		while (*p == ' ')
			p++;
		while (p[word_len] != '\0' && p[word_len] != ' ')
			word_len++;
		if (word_len == len && strncasecmp(p, word, len) == 0)
			return true;
		p += word_len;
	}
	return false;
}

/* Whether the proxy offers word before login, when every list has it. */
static bool upstream_prelogin_keeps(const char *const *lists, size_t count, const char *word,
				    bool plaintext_refused)
{
	size_t len = strlen(word);
	bool wanted;

	if (strncasecmp(word, "AUTH=", 5) == 0)
		wanted = !plaintext_refused && imap_sasl_user_mechanism_is_known(word + 5);
	else
		wanted = strcasecmp(word, "SASL-IR") == 0 || upstream_capability_is_carried(word);
	for (size_t i = 1; wanted && i < count; i++)
		wanted = upstream_list_has_word(lists[i], word, len);
	return wanted;
}

/* Appends word (and a space before it) when it fits whole. */
static void upstream_append_word(char *buf, size_t size, size_t *used, const char *word)
{
	size_t len = strlen(word);

	if (*used + len + 2 > size)
		return;
	*used += (size_t)snprintf(buf + *used, size - *used, "%s%s", *used > 0 ? " " : "", word);
}

static void upstream_append_tls_words(char *buf, size_t size, size_t *used, bool offer_starttls,
				      bool plaintext_refused)
{
	if (offer_starttls)
		upstream_append_word(buf, size, used, "STARTTLS");
	if (plaintext_refused)
		upstream_append_word(buf, size, used, "LOGINDISABLED");
}

/* Reads the word of list at *pos into word (longer words are skipped);
   returns false at the end of list. */
static bool upstream_next_word(const char *list, size_t *pos, char word[UPSTREAM_WORD_MAX])
{
	for (;;) {
		size_t len = 0;

		while (list[*pos] == ' ')
			(*pos)++;
		while (list[*pos + len] != '\0' && list[*pos + len] != ' ')
			len++;
		if (len == 0)
			return false;
		*pos += len;
		if (len < UPSTREAM_WORD_MAX) {
			memcpy(word, list + *pos - len, len);
			word[len] = '\0';
			return true;
		}
	}
}

void upstream_format_prelogin_capabilities(const char *const *learned, size_t count, bool offer_starttls,
					   bool plaintext_refused, char *buf, size_t size)
{
	const char *fallback = UPSTREAM_PRELOGIN_FALLBACK;
	const char *const *lists = count > 0 ? learned : &fallback;
	char word[UPSTREAM_WORD_MAX];
	bool has_version = false, has_id = false, tls_words_placed = false;
	size_t used = 0, pos = 0;

	if (count == 0)
		count = 1;
	assert(size > 0);
	buf[0] = '\0';
	while (upstream_next_word(lists[0], &pos, word)) {
		if (!upstream_prelogin_keeps(lists, count, word, plaintext_refused))
			continue;
		has_version = has_version || strncasecmp(word, "IMAP4REV", 8) == 0;
		has_id = has_id || strcasecmp(word, "ID") == 0;
	}
	if (!has_version) {
		upstream_append_word(buf, size, &used, "IMAP4rev1");
		if (!has_id)
			upstream_append_word(buf, size, &used, "ID");
	}
	pos = 0;
	while (upstream_next_word(lists[0], &pos, word)) {
		bool is_version = strncasecmp(word, "IMAP4REV", 8) == 0;

		if (!upstream_prelogin_keeps(lists, count, word, plaintext_refused))
			continue;
		if (!tls_words_placed && strncasecmp(word, "AUTH=", 5) == 0) {
			upstream_append_tls_words(buf, size, &used, offer_starttls, plaintext_refused);
			tls_words_placed = true;
		}
		if (is_version)
			memcpy(word + 5, "rev", 3); /* as RFC 3501 and 9051 write it */
		upstream_append_word(buf, size, &used, word);
		if (is_version && !has_id) {
			upstream_append_word(buf, size, &used, "ID");
			has_id = true;
		}
	}
	if (!tls_words_placed)
		upstream_append_tls_words(buf, size, &used, offer_starttls, plaintext_refused);
}
