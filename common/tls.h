/* SPDX-License-Identifier: MIT */
/* tls: OpenSSL client and server contexts with safe defaults, and client
   connections with SNI and host-name verification. */
#ifndef IMAPCACHE_TLS_H
#define IMAPCACHE_TLS_H

#include <openssl/ssl.h>

/* Error strings returned through error_r (and by tls_error_string) live
   in one per-thread buffer: valid until the next tls_* call in the same
   thread. Copy them if they must live longer. */
#define TLS_ERROR_MAX 512 /* one log line's worth; OpenSSL's queue is cut */

/* A client context: TLS 1.2 or newer. With verify set, the peer's
   certificate must chain to ca_file (a PEM bundle), or to the system
   store when ca_file is NULL; without it, any certificate is accepted
   (only for an upstream whose configuration says so in so many words).
   Returns the context (free with tls_context_free), or NULL with
   *error_r naming what failed. */
SSL_CTX *tls_client_context_new(const char *ca_file, int verify, const char **error_r);

/* The same as tls_client_context_new, shared: connections made with the
   same ca_file and verify get the same context (with a reference of
   their own; free it with tls_context_free), so the CA bundle is read
   and held once, not once per connection (about 13 KiB of heap for one
   CA, far more for the system store). A CA file replaced or changed on
   disk (device, inode, size or mtime) gives a new context from then on.
   The cache is process-wide and not locked: use it from one thread. */
SSL_CTX *tls_client_context_get(const char *ca_file, int verify, const char **error_r);

/* Drops the cache's references (contexts still in use live on). For
   tests and for a clean exit under a leak checker. */
void tls_client_context_cache_clear(void);

/* A server context: TLS 1.2 or newer, the certificate chain from
   cert_file (PEM, leaf first) and its private key from key_file; the key
   must match the certificate. Returns the context, or NULL with
   *error_r naming the file or the mismatch. */
SSL_CTX *tls_server_context_new(const char *cert_file, const char *key_file,
				const char **error_r);

/* A client connection on ctx for host (a DNS name or an IP literal,
   with or without brackets for IPv6). Names are sent as SNI; IP literals
   are not (RFC 6066). When ctx verifies, the certificate must match host:
   a DNS subjectAltName for a name, an IP subjectAltName for an address.
   host may be NULL only for a context that does not verify. Returns the
   SSL in client mode (caller owns it: SSL_free, or hand it to
   bufferevent_openssl with BEV_OPT_CLOSE_ON_FREE), or NULL with *error_r. */
SSL *tls_client_ssl_new(SSL_CTX *ctx, const char *host, const char **error_r);

/* Drains OpenSSL's error queue of this thread into one line
   ("reason; reason"), or "no OpenSSL error" when it is empty. */
const char *tls_error_string(void);

/* Frees *ctx (NULL is fine) and sets it to NULL. */
void tls_context_free(SSL_CTX **ctx);

#endif
