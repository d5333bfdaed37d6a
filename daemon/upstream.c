/* SPDX-License-Identifier: MIT */
/* upstream: a client-core connection to the upstream server chosen for a login, and what the proxy may advertise once logged in. */
#include "config.h"
#include "upstream.h"

#include <event2/dns.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static struct evdns_base *upstream_resolver;

void upstream_set_resolver(struct evdns_base *dns_base)
{
	upstream_resolver = dns_base;
}

struct imap_client *upstream_client_new(struct event_base *base, const struct conf *conf,
					const struct conf_upstream *upstream, const char **error_r)
{
	struct imap_client_settings settings = {
		.host = upstream->host,
		.port = upstream->port,
		.ca_file = upstream->ca_file,
		.tls_no_verify = !upstream->verify,
		.connect_timeout_msecs = conf->timeout_upstream_connect * 1000,
		.dns_base = upstream_resolver,
	};

	switch (upstream->tls) {
	case CONF_TLS_NONE:
		settings.tls_mode = IMAP_CLIENT_TLS_NONE;
		break;
	case CONF_TLS_STARTTLS:
		settings.tls_mode = IMAP_CLIENT_TLS_STARTTLS;
		break;
	case CONF_TLS_IMPLICIT:
		settings.tls_mode = IMAP_CLIENT_TLS_IMPLICIT;
		break;
	}
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
