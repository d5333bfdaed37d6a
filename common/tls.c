/* SPDX-License-Identifier: MIT */
/* tls: OpenSSL contexts and client connections with verification on. */
#include "config.h"
#include "tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TLS_HOST_MAX 256 /* a DNS name is at most 253 bytes; brackets fit */
#define TLS_CLIENT_CONTEXT_CACHE_MAX 8 /* distinct upstream CA settings in one daemon; more only miss */

static _Thread_local char tls_error_buffer[TLS_ERROR_MAX];

/* Appends OpenSSL's queue to buf at len; the queue is left empty. */
static void tls_append_queue(char *buf, size_t size, size_t len)
{
	unsigned long code;
	int first = 1;

	while ((code = ERR_get_error()) != 0) {
		char reason[256];

		if (len + 3 >= size)
			continue; /* keep draining so stale errors don't leak */
		ERR_error_string_n(code, reason, sizeof(reason));
		int n = snprintf(buf + len, size - len, "%s%s", first ? "" : "; ", reason);
		if (n > 0)
			len += (size_t)n < size - len ? (size_t)n : size - len - 1;
		first = 0;
	}
	if (first)
		snprintf(buf + len, size - len, "no OpenSSL error");
}

const char *tls_error_string(void)
{
	tls_error_buffer[0] = '\0';
	tls_append_queue(tls_error_buffer, sizeof(tls_error_buffer), 0);
	return tls_error_buffer;
}

/* Sets *error_r to "what: OpenSSL's queue". */
static const char *tls_fail(const char *format, ...) __attribute__((format(printf, 1, 2)));
static const char *tls_fail(const char *format, ...)
{
	va_list args;
	int n;

	va_start(args, format);
	n = vsnprintf(tls_error_buffer, sizeof(tls_error_buffer) - 3, format, args);
	va_end(args);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(tls_error_buffer) - 4)
		n = (int)sizeof(tls_error_buffer) - 4;
	memcpy(tls_error_buffer + n, ": ", 3);
	tls_append_queue(tls_error_buffer, sizeof(tls_error_buffer), (size_t)n + 2);
	return tls_error_buffer;
}

/* Settings both sides share: TLS 1.2+, no compression or renegotiation. */
static int tls_context_harden(SSL_CTX *ctx)
{
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
		return -1;
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	/* An idle connection gives its 16 KiB read and write buffers back
	   (about 33 KiB of the heap per idle upstream connection) */
	SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	return 0;
}

SSL_CTX *tls_client_context_new(const char *ca_file, int verify, const char **error_r)
{
	SSL_CTX *ctx;

	ERR_clear_error();
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		*error_r = tls_fail("cannot create a TLS client context");
		return NULL;
	}
	if (tls_context_harden(ctx) < 0) {
		*error_r = tls_fail("cannot require TLS 1.2");
		goto fail;
	}
	if (ca_file != NULL) {
		if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
			*error_r = tls_fail("cannot load CA file %s", ca_file);
			goto fail;
		}
	} else if (verify && SSL_CTX_set_default_verify_paths(ctx) != 1) {
		*error_r = tls_fail("cannot load the system CA store");
		goto fail;
	}
	SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* One cached client context: the settings it was made for, and the CA
   file as it was on disk then, so a replaced file makes a new context. */
struct tls_client_context_entry {
	char *ca_file; /* NULL: the system store */
	int verify;
	dev_t device;
	ino_t inode;
	off_t size;
	struct timespec modified;
	SSL_CTX *ctx;  /* the cache's own reference */
};

static struct tls_client_context_entry tls_client_context_cache[TLS_CLIENT_CONTEXT_CACHE_MAX];
static unsigned int tls_client_context_next_evicted;

static void tls_client_context_entry_clear(struct tls_client_context_entry *entry)
{
	free(entry->ca_file);
	SSL_CTX_free(entry->ctx);
	memset(entry, 0, sizeof(*entry));
}

/* Whether entry was made for these settings from the file as st shows it. */
static int tls_client_context_entry_matches(const struct tls_client_context_entry *entry,
					    const char *ca_file, int verify, const struct stat *st)
{
	if (entry->ctx == NULL || entry->verify != verify)
		return 0;
	if ((entry->ca_file == NULL) != (ca_file == NULL))
		return 0;
	if (ca_file != NULL && strcmp(entry->ca_file, ca_file) != 0)
		return 0;
	return entry->device == st->st_dev && entry->inode == st->st_ino &&
	       entry->size == st->st_size && entry->modified.tv_sec == st->st_mtim.tv_sec &&
	       entry->modified.tv_nsec == st->st_mtim.tv_nsec;
}

SSL_CTX *tls_client_context_get(const char *ca_file, int verify, const char **error_r)
{
	struct tls_client_context_entry *entry;
	const char *identity_file = ca_file;
	struct stat st;
	SSL_CTX *ctx;

	if (identity_file == NULL)
		identity_file = X509_get_default_cert_file();
	if (stat(identity_file, &st) < 0) {
		if (ca_file != NULL) /* not cached: let OpenSSL say what is wrong */
			return tls_client_context_new(ca_file, verify, error_r);
		memset(&st, 0, sizeof(st)); /* no default bundle: only the directory */
	}
	for (unsigned int i = 0; i < TLS_CLIENT_CONTEXT_CACHE_MAX; i++) {
		entry = &tls_client_context_cache[i];
		if (tls_client_context_entry_matches(entry, ca_file, verify, &st)) {
			SSL_CTX_up_ref(entry->ctx);
			return entry->ctx;
		}
	}
	ctx = tls_client_context_new(ca_file, verify, error_r);
	if (ctx == NULL)
		return NULL;
	/* Replace the entry for the same settings (its file changed), else
	   the oldest; connections using a replaced context keep their own
	   reference. */
	entry = NULL;
	for (unsigned int i = 0; i < TLS_CLIENT_CONTEXT_CACHE_MAX && entry == NULL; i++) {
		struct tls_client_context_entry *candidate = &tls_client_context_cache[i];

		if (candidate->ctx == NULL ||
		    (candidate->verify == verify && (candidate->ca_file == NULL) == (ca_file == NULL) &&
		     (ca_file == NULL || strcmp(candidate->ca_file, ca_file) == 0)))
			entry = candidate;
	}
	if (entry == NULL) {
		entry = &tls_client_context_cache[tls_client_context_next_evicted];
		tls_client_context_next_evicted =
			(tls_client_context_next_evicted + 1) % TLS_CLIENT_CONTEXT_CACHE_MAX;
	}
	tls_client_context_entry_clear(entry);
	if (ca_file != NULL) {
		entry->ca_file = strdup(ca_file);
		if (entry->ca_file == NULL)
			return ctx; /* out of memory: the context works, only uncached */
	}
	entry->verify = verify;
	entry->device = st.st_dev;
	entry->inode = st.st_ino;
	entry->size = st.st_size;
	entry->modified = st.st_mtim;
	SSL_CTX_up_ref(ctx);
	entry->ctx = ctx;
	return ctx;
}

void tls_client_context_cache_clear(void)
{
	for (unsigned int i = 0; i < TLS_CLIENT_CONTEXT_CACHE_MAX; i++)
		tls_client_context_entry_clear(&tls_client_context_cache[i]);
	tls_client_context_next_evicted = 0;
}

SSL_CTX *tls_server_context_new(const char *cert_file, const char *key_file,
				const char **error_r)
{
	SSL_CTX *ctx;

	ERR_clear_error();
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		*error_r = tls_fail("cannot create a TLS server context");
		return NULL;
	}
	if (tls_context_harden(ctx) < 0) {
		*error_r = tls_fail("cannot require TLS 1.2");
		goto fail;
	}
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		*error_r = tls_fail("cannot load certificate %s", cert_file);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		/* OpenSSL also fails here when the key is not the certificate's */
		*error_r = tls_fail("cannot load private key %s for certificate %s",
				    key_file, cert_file);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		*error_r = tls_fail("private key %s does not match certificate %s",
				    key_file, cert_file);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* Copies host without IPv6 brackets into buf; returns 1 for an IP
   literal, 0 for a name, -1 when it does not fit or is empty. */
static int tls_host_classify(const char *host, char *buf, size_t size)
{
	size_t len = strlen(host);
	unsigned char addr[16];

	if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
		host++;
		len -= 2;
	}
	if (len == 0 || len >= size)
		return -1;
	memcpy(buf, host, len);
	buf[len] = '\0';
	if (inet_pton(AF_INET, buf, addr) == 1 || inet_pton(AF_INET6, buf, addr) == 1)
		return 1;
	return 0;
}

SSL *tls_client_ssl_new(SSL_CTX *ctx, const char *host, const char **error_r)
{
	int verify = (SSL_CTX_get_verify_mode(ctx) & SSL_VERIFY_PEER) != 0;
	char name[TLS_HOST_MAX];
	int is_ip = 0;
	SSL *ssl;

	ERR_clear_error();
	if (host != NULL) {
		is_ip = tls_host_classify(host, name, sizeof(name));
		if (is_ip < 0) {
			snprintf(tls_error_buffer, sizeof(tls_error_buffer),
				 "invalid TLS host name (empty or longer than %d bytes)",
				 TLS_HOST_MAX - 1);
			*error_r = tls_error_buffer;
			return NULL;
		}
	} else if (verify) {
		snprintf(tls_error_buffer, sizeof(tls_error_buffer),
			 "a verifying TLS context needs the host name to check");
		*error_r = tls_error_buffer;
		return NULL;
	}
	ssl = SSL_new(ctx);
	if (ssl == NULL) {
		*error_r = tls_fail("cannot create a TLS connection");
		return NULL;
	}
	SSL_set_connect_state(ssl);
	if (host != NULL && !is_ip && SSL_set_tlsext_host_name(ssl, name) != 1) {
		*error_r = tls_fail("cannot set SNI %s", name);
		goto fail;
	}
	if (verify) {
		X509_VERIFY_PARAM *param = SSL_get0_param(ssl);

		X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name) != 1 :
			    SSL_set1_host(ssl, name) != 1) {
			*error_r = tls_fail("cannot set %s as the name to verify", name);
			goto fail;
		}
	}
	return ssl;
fail:
	SSL_free(ssl);
	return NULL;
}

void tls_context_free(SSL_CTX **ctx)
{
	SSL_CTX_free(*ctx);
	*ctx = NULL;
}
