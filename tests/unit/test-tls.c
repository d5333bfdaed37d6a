/* SPDX-License-Identifier: MIT */
/* Unit tests for common/tls: contexts, SNI and host-name verification. */
#include "config.h"
#include "unit.h"
#include "tls.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HANDSHAKE_ROUNDS 64 /* a TLS 1.3 handshake needs a handful */

static char tmpdir[] = "/tmp/test-tls.XXXXXX";
static char ca_path[256], other_ca_path[256], cert_path[256], key_path[256];
static char other_key_path[256];

/* Writes a PEM file of a key or a certificate. */
static int write_pem(const char *path, EVP_PKEY *key, X509 *cert)
{
	FILE *f = fopen(path, "w");
	int ok;

	if (f == NULL)
		return -1;
	ok = key != NULL ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) :
			   PEM_write_X509(f, cert);
	return fclose(f) == 0 && ok == 1 ? 0 : -1;
}

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;

	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
}

/* A certificate for key, signed by issuer_key (self-signed when issuer is NULL). */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
		       const char *san, long serial)
{
	X509 *cert = X509_new();
	X509_NAME *name = X509_NAME_new();

	X509_set_version(cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), serial);
	X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
	X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
	X509_set_pubkey(cert, key);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_subject_name(cert, name);
	X509_set_issuer_name(cert, issuer != NULL ? X509_get_subject_name(issuer) : name);
	X509_NAME_free(name);
	if (san == NULL) {
		add_ext(cert, issuer != NULL ? issuer : cert, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(cert, issuer != NULL ? issuer : cert, NID_key_usage, "critical,keyCertSign,cRLSign");
	} else {
		add_ext(cert, issuer, NID_subject_alt_name, san);
	}
	X509_sign(cert, issuer_key != NULL ? issuer_key : key, EVP_sha256());
	return cert;
}

static int suite_init(void)
{
	EVP_PKEY *ca_key, *other_key, *server_key;
	X509 *ca, *other, *server;
	int status = 0;

	if (mkdtemp(tmpdir) == NULL)
		return -1;
	snprintf(ca_path, sizeof(ca_path), "%s/ca.pem", tmpdir);
	snprintf(other_ca_path, sizeof(other_ca_path), "%s/other-ca.pem", tmpdir);
	snprintf(cert_path, sizeof(cert_path), "%s/server.pem", tmpdir);
	snprintf(key_path, sizeof(key_path), "%s/server.key", tmpdir);
	snprintf(other_key_path, sizeof(other_key_path), "%s/other.key", tmpdir);
	ca_key = EVP_EC_gen("P-256");
	other_key = EVP_EC_gen("P-256");
	server_key = EVP_EC_gen("P-256");
	if (ca_key == NULL || other_key == NULL || server_key == NULL)
		return -1;
	ca = make_cert(ca_key, "test CA", NULL, NULL, NULL, 1);
	other = make_cert(other_key, "other CA", NULL, NULL, NULL, 2);
	server = make_cert(server_key, "localhost", ca, ca_key,
			   "DNS:localhost,DNS:mail.example.org,IP:127.0.0.1,IP:::1", 3);
	if (write_pem(ca_path, NULL, ca) < 0 || write_pem(other_ca_path, NULL, other) < 0 ||
	    write_pem(cert_path, NULL, server) < 0 || write_pem(key_path, server_key, NULL) < 0 ||
	    write_pem(other_key_path, other_key, NULL) < 0)
		status = -1;
	X509_free(ca);
	X509_free(other);
	X509_free(server);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(other_key);
	EVP_PKEY_free(server_key);
	return status;
}

static int suite_cleanup(void)
{
	unlink(ca_path);
	unlink(other_ca_path);
	unlink(cert_path);
	unlink(key_path);
	unlink(other_key_path);
	rmdir(tmpdir);
	return 0;
}

int unit_suite_init(void)
{
	return suite_init();
}

int unit_suite_cleanup(void)
{
	return suite_cleanup();
}

/* Runs a handshake between a client for host and the test server over a
   BIO pair. Returns 1 when both ends finished, 0 when either failed;
   *verify_r gets the client's verification result. */
static int handshake(SSL_CTX *client_ctx, const char *host, long *verify_r, char *sni_r,
		     size_t sni_size)
{
	const char *error;
	SSL_CTX *server_ctx = tls_server_context_new(cert_path, key_path, &error);
	SSL *client, *server;
	BIO *client_bio, *server_bio;
	int client_done = 0, server_done = 0, failed = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(server_ctx);
	client = tls_client_ssl_new(client_ctx, host, &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(client);
	server = SSL_new(server_ctx);
	SSL_set_accept_state(server);
	CU_ASSERT_EQUAL_FATAL(BIO_new_bio_pair(&client_bio, 0, &server_bio, 0), 1);
	SSL_set_bio(client, client_bio, client_bio);
	SSL_set_bio(server, server_bio, server_bio);
	for (int round = 0; round < HANDSHAKE_ROUNDS && !failed &&
			    !(client_done && server_done); round++) {
		if (!client_done) {
			int r = SSL_do_handshake(client);
			if (r == 1)
				client_done = 1;
			else if (SSL_get_error(client, r) != SSL_ERROR_WANT_READ)
				failed = 1;
		}
		if (!server_done && !failed) {
			int r = SSL_do_handshake(server);
			if (r == 1)
				server_done = 1;
			else if (SSL_get_error(server, r) != SSL_ERROR_WANT_READ)
				failed = 1;
		}
	}
	ERR_clear_error();
	*verify_r = SSL_get_verify_result(client);
	if (sni_r != NULL) {
		const char *sni = SSL_get_servername(server, TLSEXT_NAMETYPE_host_name);
		snprintf(sni_r, sni_size, "%s", sni != NULL ? sni : "");
	}
	SSL_free(client);
	SSL_free(server);
	tls_context_free(&server_ctx);
	return client_done && server_done && !failed;
}

static void test_trusted_name_accepted(void)
{
	const char *error = NULL;
	SSL_CTX *ctx = tls_client_context_new(ca_path, 1, &error);
	char sni[256];
	long verify;

	CU_ASSERT_PTR_NOT_NULL_FATAL(ctx);
	CU_ASSERT_EQUAL(handshake(ctx, "localhost", &verify, sni, sizeof(sni)), 1);
	CU_ASSERT_EQUAL(verify, X509_V_OK);
	CU_ASSERT_STRING_EQUAL(sni, "localhost");
	CU_ASSERT_EQUAL(handshake(ctx, "mail.example.org", &verify, sni, sizeof(sni)), 1);
	CU_ASSERT_STRING_EQUAL(sni, "mail.example.org");
	tls_context_free(&ctx);
	CU_ASSERT_PTR_NULL(ctx);
}

static void test_ip_literal_verified_without_sni(void)
{
	const char *error = NULL;
	SSL_CTX *ctx = tls_client_context_new(ca_path, 1, &error);
	char sni[256];
	long verify;

	CU_ASSERT_PTR_NOT_NULL_FATAL(ctx);
	CU_ASSERT_EQUAL(handshake(ctx, "127.0.0.1", &verify, sni, sizeof(sni)), 1);
	CU_ASSERT_STRING_EQUAL(sni, "");
	CU_ASSERT_EQUAL(handshake(ctx, "[::1]", &verify, sni, sizeof(sni)), 1);
	CU_ASSERT_STRING_EQUAL(sni, "");
	CU_ASSERT_EQUAL(handshake(ctx, "127.0.0.2", &verify, NULL, 0), 0);
	CU_ASSERT_EQUAL(verify, X509_V_ERR_IP_ADDRESS_MISMATCH);
	tls_context_free(&ctx);
}

static void test_wrong_name_refused(void)
{
	const char *error = NULL;
	SSL_CTX *ctx = tls_client_context_new(ca_path, 1, &error);
	long verify;

	CU_ASSERT_PTR_NOT_NULL_FATAL(ctx);
	CU_ASSERT_EQUAL(handshake(ctx, "imap.example.net", &verify, NULL, 0), 0);
	CU_ASSERT_EQUAL(verify, X509_V_ERR_HOSTNAME_MISMATCH);
	/* no partial match: a suffix of a listed name is not that name */
	CU_ASSERT_EQUAL(handshake(ctx, "example.org", &verify, NULL, 0), 0);
	tls_context_free(&ctx);
}

static void test_untrusted_ca_refused(void)
{
	const char *error = NULL;
	SSL_CTX *ctx = tls_client_context_new(other_ca_path, 1, &error);
	long verify;

	CU_ASSERT_PTR_NOT_NULL_FATAL(ctx);
	CU_ASSERT_EQUAL(handshake(ctx, "localhost", &verify, NULL, 0), 0);
	CU_ASSERT_NOT_EQUAL(verify, X509_V_OK);
	tls_context_free(&ctx);
}

static void test_no_verify_accepts_anything(void)
{
	const char *error = NULL;
	SSL_CTX *ctx = tls_client_context_new(other_ca_path, 0, &error);
	long verify;

	CU_ASSERT_PTR_NOT_NULL_FATAL(ctx);
	CU_ASSERT_EQUAL(handshake(ctx, "imap.example.net", &verify, NULL, 0), 1);
	tls_context_free(&ctx);
	ctx = tls_client_context_new(NULL, 0, &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(ctx);
	CU_ASSERT_EQUAL(handshake(ctx, "localhost", &verify, NULL, 0), 1);
	tls_context_free(&ctx);
}

static void test_minimum_version(void)
{
	const char *error = NULL;
	SSL_CTX *ctx = tls_client_context_new(NULL, 1, &error);

	CU_ASSERT_PTR_NOT_NULL_FATAL(ctx);
	CU_ASSERT_EQUAL(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
	CU_ASSERT_TRUE(SSL_CTX_get_verify_mode(ctx) & SSL_VERIFY_PEER);
	tls_context_free(&ctx);
	ctx = tls_server_context_new(cert_path, key_path, &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(ctx);
	CU_ASSERT_EQUAL(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
	tls_context_free(&ctx);
	tls_context_free(&ctx); /* NULL is fine */
}

static void test_errors_name_the_file(void)
{
	const char *error = NULL;
	SSL_CTX *ctx;

	ctx = tls_client_context_new("/nonexistent/ca.pem", 1, &error);
	CU_ASSERT_PTR_NULL(ctx);
	CU_ASSERT_PTR_NOT_NULL_FATAL(error);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "/nonexistent/ca.pem"));
	error = NULL;
	ctx = tls_server_context_new("/nonexistent/cert.pem", key_path, &error);
	CU_ASSERT_PTR_NULL(ctx);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "certificate /nonexistent/cert.pem"));
	ctx = tls_server_context_new(cert_path, "/nonexistent/key.pem", &error);
	CU_ASSERT_PTR_NULL(ctx);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "private key /nonexistent/key.pem"));
	ctx = tls_server_context_new(cert_path, other_key_path, &error);
	CU_ASSERT_PTR_NULL(ctx);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, other_key_path));
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "mismatch"));
	/* each failure drained the queue: nothing stale is left behind */
	CU_ASSERT_STRING_EQUAL(tls_error_string(), "no OpenSSL error");
}

static void test_ssl_new_rejects_bad_hosts(void)
{
	const char *error = NULL;
	SSL_CTX *ctx = tls_client_context_new(ca_path, 1, &error);
	char long_name[400];

	CU_ASSERT_PTR_NOT_NULL_FATAL(ctx);
	CU_ASSERT_PTR_NULL(tls_client_ssl_new(ctx, NULL, &error));
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "needs the host name"));
	CU_ASSERT_PTR_NULL(tls_client_ssl_new(ctx, "", &error));
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "invalid TLS host name"));
	memset(long_name, 'a', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	CU_ASSERT_PTR_NULL(tls_client_ssl_new(ctx, long_name, &error));
	tls_context_free(&ctx);
}

static void test_error_string_drains_queue(void)
{
	ERR_raise(ERR_LIB_SSL, SSL_R_NO_CERTIFICATE_ASSIGNED);
	ERR_raise(ERR_LIB_SSL, SSL_R_UNKNOWN_PROTOCOL);
	const char *line = tls_error_string();
	CU_ASSERT_PTR_NOT_NULL(strstr(line, "no certificate assigned"));
	CU_ASSERT_PTR_NOT_NULL(strstr(line, "; "));
	CU_ASSERT_PTR_NOT_NULL(strstr(line, "unknown protocol"));
	CU_ASSERT_STRING_EQUAL(tls_error_string(), "no OpenSSL error");
}

static void test_client_context_shared(void)
{
	const char *error = NULL;
	char copy_path[300];
	SSL_CTX *a, *b, *other, *unverified, *changed, *missing;
	struct timespec times[2] = { { .tv_sec = 1000000000 }, { .tv_sec = 1000000000 } };
	FILE *in, *out;
	int c;

	/* a copy of the CA, so that it can be changed under the cache */
	snprintf(copy_path, sizeof(copy_path), "%s/ca-copy.pem", tmpdir);
	in = fopen(ca_path, "r");
	out = fopen(copy_path, "w");
	CU_ASSERT_FATAL(in != NULL && out != NULL);
	while ((c = fgetc(in)) != EOF)
		fputc(c, out);
	fclose(in);
	CU_ASSERT_EQUAL_FATAL(fclose(out), 0);

	a = tls_client_context_get(copy_path, 1, &error);
	b = tls_client_context_get(copy_path, 1, &error);
	other = tls_client_context_get(other_ca_path, 1, &error);
	unverified = tls_client_context_get(copy_path, 0, &error);
	CU_ASSERT_FATAL(a != NULL && b != NULL && other != NULL && unverified != NULL);
	CU_ASSERT_PTR_EQUAL(a, b);          /* same settings: one context */
	CU_ASSERT_PTR_NOT_EQUAL(a, other);  /* another CA: its own */
	CU_ASSERT_PTR_NOT_EQUAL(a, unverified);
	CU_ASSERT_EQUAL(SSL_CTX_get_verify_mode(unverified) & SSL_VERIFY_PEER, 0);
	CU_ASSERT_TRUE(SSL_CTX_get_mode(a) & SSL_MODE_RELEASE_BUFFERS);

	/* the shared context verifies like a new one */
	long verify = -1;
	char sni[64];
	CU_ASSERT_TRUE(handshake(b, "localhost", &verify, sni, sizeof(sni)));
	CU_ASSERT_EQUAL(verify, X509_V_OK);

	/* the file replaced on disk (another mtime): a new context from then on */
	CU_ASSERT_EQUAL_FATAL(utimensat(AT_FDCWD, copy_path, times, 0), 0);
	changed = tls_client_context_get(copy_path, 1, &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(changed);
	CU_ASSERT_PTR_NOT_EQUAL(changed, a);
	/* each holder frees its own reference; the old context lives until then */
	tls_context_free(&a);
	CU_ASSERT_TRUE(handshake(b, "localhost", &verify, sni, sizeof(sni)));
	tls_context_free(&b);
	tls_context_free(&changed);
	tls_context_free(&other);
	tls_context_free(&unverified);

	/* a missing file is the same clear error as without the cache */
	unlink(copy_path);
	missing = tls_client_context_get(copy_path, 1, &error);
	CU_ASSERT_PTR_NULL(missing);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, copy_path));
	tls_client_context_cache_clear();
	tls_client_context_cache_clear(); /* twice is harmless */
}

const char unit_suite_name[] = "tls";
const struct unit_test unit_tests[] = {
	{ "trusted CA and matching name accepted, SNI sent", test_trusted_name_accepted },
	{ "IP literal verified against IP SAN, no SNI", test_ip_literal_verified_without_sni },
	{ "wrong host name refused", test_wrong_name_refused },
	{ "untrusted CA refused", test_untrusted_ca_refused },
	{ "verify off accepts any certificate", test_no_verify_accepts_anything },
	{ "TLS 1.2 minimum, verification on", test_minimum_version },
	{ "errors name the file that failed", test_errors_name_the_file },
	{ "bad host arguments refused", test_ssl_new_rejects_bad_hosts },
	{ "error string drains the queue", test_error_string_drains_queue },
	{ "client contexts shared per CA file and verify", test_client_context_shared },
	{ NULL, NULL },
};
