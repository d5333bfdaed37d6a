/* SPDX-License-Identifier: MIT */
/* Unit tests for common/imap-sasl: base64 and the PLAIN, XOAUTH2 and OAUTHBEARER mechanisms. */
#include "config.h"
#include "unit.h"
#include "imap-sasl.h"

#include <stdlib.h>
#include <string.h>

/* RFC 4648 section 10 test vectors. */
static const struct {
	const char *plain, *encoded;
} base64_vectors[] = {
	{ "", "" },         { "f", "Zg==" },         { "fo", "Zm8=" },         { "foo", "Zm9v" },
	{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
};

static void test_base64_vectors(void)
{
	for (size_t i = 0; i < sizeof(base64_vectors) / sizeof(base64_vectors[0]); i++) {
		const char *plain = base64_vectors[i].plain;
		char *encoded = imap_sasl_base64_encode((const unsigned char *)plain, strlen(plain));
		unsigned char *decoded;
		size_t len = 99;

		CU_ASSERT_STRING_EQUAL(encoded, base64_vectors[i].encoded);
		decoded = imap_sasl_base64_decode(base64_vectors[i].encoded, &len);
		CU_ASSERT_PTR_NOT_NULL_FATAL(decoded);
		CU_ASSERT_EQUAL(len, strlen(plain));
		CU_ASSERT_EQUAL(memcmp(decoded, plain, len), 0);
		free(encoded);
		free(decoded);
	}
}

static void test_base64_binary_round_trip(void)
{
	unsigned char bytes[256];
	char *encoded;
	unsigned char *decoded;
	size_t len;

	for (unsigned int i = 0; i < sizeof(bytes); i++)
		bytes[i] = (unsigned char)(255 - i);
	for (size_t n = 0; n <= sizeof(bytes); n += 37) {
		encoded = imap_sasl_base64_encode(bytes, n);
		decoded = imap_sasl_base64_decode(encoded, &len);
		CU_ASSERT_PTR_NOT_NULL_FATAL(decoded);
		CU_ASSERT_EQUAL(len, n);
		CU_ASSERT_EQUAL(memcmp(decoded, bytes, n), 0);
		free(encoded);
		free(decoded);
	}
}

static void test_base64_rejects_garbage(void)
{
	size_t len;

	CU_ASSERT_PTR_NULL(imap_sasl_base64_decode("Zm9", &len));       /* not a multiple of 4 */
	CU_ASSERT_PTR_NULL(imap_sasl_base64_decode("Zm9v!A==", &len));  /* bad character */
	CU_ASSERT_PTR_NULL(imap_sasl_base64_decode("Zm=vYg==", &len));  /* padding inside */
	CU_ASSERT_PTR_NULL(imap_sasl_base64_decode("Zm9v YmFy", &len)); /* space */
}

/* Runs the initial step and returns its response (malloc'd). */
static unsigned char *initial_response(struct imap_sasl_mechanism *mechanism, size_t *len_r)
{
	unsigned char *response = NULL;

	CU_ASSERT_EQUAL(mechanism->step(mechanism, true, NULL, 0, &response, len_r), IMAP_SASL_STEP_RESPONSE);
	return response;
}

static void test_plain(void)
{
	struct imap_sasl_mechanism *mechanism = imap_sasl_plain_new(NULL, "tim", "tanstaaftanstaaf");
	unsigned char *response;
	size_t len;

	CU_ASSERT_PTR_NOT_NULL_FATAL(mechanism);
	CU_ASSERT_STRING_EQUAL(mechanism->name, "PLAIN");
	response = initial_response(mechanism, &len);
	/* RFC 4616 section 4's example */
	CU_ASSERT_EQUAL(len, 21);
	CU_ASSERT_EQUAL(memcmp(response, "\0tim\0tanstaaftanstaaf", 21), 0);
	free(response);
	response = NULL;
	/* PLAIN has one step: another challenge cancels */
	CU_ASSERT_EQUAL(mechanism->step(mechanism, false, (const unsigned char *)"x", 1, &response, &len),
			IMAP_SASL_STEP_CANCEL);
	CU_ASSERT_PTR_NULL(response);
	imap_sasl_mechanism_free(&mechanism);
	CU_ASSERT_PTR_NULL(mechanism);

	mechanism = imap_sasl_plain_new("Ursel", "Kurt", "xipj3plmq");
	response = initial_response(mechanism, &len);
	CU_ASSERT_EQUAL(len, 20);
	CU_ASSERT_EQUAL(memcmp(response, "Ursel\0Kurt\0xipj3plmq", 20), 0);
	free(response);
	imap_sasl_mechanism_free(&mechanism);
}

static void test_xoauth2(void)
{
	struct imap_sasl_mechanism *mechanism = imap_sasl_xoauth2_new("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg");
	static const char expected[] = "user=someuser@example.com\1auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\1\1";
	unsigned char *response;
	char *encoded;
	size_t len;

	CU_ASSERT_STRING_EQUAL(mechanism->name, "XOAUTH2");
	response = initial_response(mechanism, &len);
	CU_ASSERT_EQUAL(len, sizeof(expected) - 1);
	CU_ASSERT_EQUAL(memcmp(response, expected, len), 0);
	/* Google's documented base64 form of this exact example */
	encoded = imap_sasl_base64_encode(response, len);
	CU_ASSERT_STRING_EQUAL(encoded, "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ==");
	free(encoded);
	free(response);
	/* an error challenge gets an empty answer */
	response = NULL;
	CU_ASSERT_EQUAL(mechanism->step(mechanism, false, (const unsigned char *)"{\"status\":\"401\"}", 16,
					&response, &len), IMAP_SASL_STEP_RESPONSE);
	CU_ASSERT_EQUAL(len, 0);
	free(response);
	imap_sasl_mechanism_free(&mechanism);
}

static void test_oauthbearer(void)
{
	struct imap_sasl_mechanism *mechanism = imap_sasl_oauthbearer_new("user@example.com", "server.example.com",
									  143, "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==");
	/* RFC 7628 section 4.1's example */
	static const char expected[] = "n,a=user@example.com,\1host=server.example.com\1port=143\1"
				       "auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\1\1";
	unsigned char *response;
	size_t len;

	CU_ASSERT_STRING_EQUAL(mechanism->name, "OAUTHBEARER");
	response = initial_response(mechanism, &len);
	CU_ASSERT_EQUAL(len, sizeof(expected) - 1);
	CU_ASSERT_EQUAL(memcmp(response, expected, len), 0);
	free(response);
	response = NULL;
	CU_ASSERT_EQUAL(mechanism->step(mechanism, false, (const unsigned char *)"{}", 2, &response, &len),
			IMAP_SASL_STEP_RESPONSE);
	CU_ASSERT_EQUAL(len, 1);
	CU_ASSERT_EQUAL(response[0], 1); /* RFC 7628 3.2.3: %x01 ends a failed exchange */
	free(response);
	imap_sasl_mechanism_free(&mechanism);

	mechanism = imap_sasl_oauthbearer_new("u", NULL, 0, "t");
	response = initial_response(mechanism, &len);
	CU_ASSERT_EQUAL(len, sizeof("n,a=u,\1auth=Bearer t\1\1") - 1);
	CU_ASSERT_EQUAL(memcmp(response, "n,a=u,\1auth=Bearer t\1\1", len), 0);
	free(response);
	imap_sasl_mechanism_free(&mechanism);
	imap_sasl_mechanism_free(&mechanism); /* NULL is fine */
}

static void test_cram_md5(void)
{
	struct imap_sasl_mechanism *mechanism = imap_sasl_cram_md5_new("tim", "tanstaaftanstaaf");
	static const char challenge[] = "<1896.697170952@postoffice.reston.mci.net>";
	unsigned char *response = NULL;
	size_t len = 0;

	CU_ASSERT_STRING_EQUAL(mechanism->name, "CRAM-MD5");
	CU_ASSERT_EQUAL(mechanism->step(mechanism, true, NULL, 0, &response, &len),
			IMAP_SASL_STEP_NO_INITIAL_RESPONSE);
	CU_ASSERT_EQUAL(mechanism->step(mechanism, false, (const unsigned char *)challenge, strlen(challenge),
					&response, &len), IMAP_SASL_STEP_RESPONSE);
	/* RFC 2195 section 2's example */
	CU_ASSERT_EQUAL(len, 36);
	CU_ASSERT_EQUAL(memcmp(response, "tim b913a602c7eda7a495b4e6e7334d3890", 36), 0);
	free(response);
	imap_sasl_mechanism_free(&mechanism);
}

static enum imap_sasl_user_result user_of(const char *mechanism, const char *response, size_t len,
					  char *user, size_t size)
{
	return imap_sasl_initial_response_user(mechanism, (const unsigned char *)response, len, user, size);
}

static void test_initial_response_user(void)
{
	char user[32];

	CU_ASSERT_EQUAL(user_of("plain", "\0alice@example.com\0secret", 25, user, sizeof(user)),
			IMAP_SASL_USER_FOUND);
	CU_ASSERT_STRING_EQUAL(user, "alice@example.com");
	CU_ASSERT_EQUAL(user_of("PLAIN", "admin\0bob\0pw", 12, user, sizeof(user)), IMAP_SASL_USER_FOUND);
	CU_ASSERT_STRING_EQUAL(user, "admin"); /* the authzid: bob acts as admin, so admin's cache */
	CU_ASSERT_EQUAL(user_of("PLAIN", "\0bob\0pw", 7, user, sizeof(user)), IMAP_SASL_USER_FOUND);
	CU_ASSERT_STRING_EQUAL(user, "bob"); /* no authzid: the authcid */
	CU_ASSERT_EQUAL(user_of("PLAIN", "admin\0\0pw", 9, user, sizeof(user)), IMAP_SASL_USER_MALFORMED);
	CU_ASSERT_EQUAL(user_of("XOAUTH2", "user=carol@x\001auth=Bearer t\001\001", 29, user, sizeof(user)),
			IMAP_SASL_USER_FOUND);
	CU_ASSERT_STRING_EQUAL(user, "carol@x");
	CU_ASSERT_EQUAL(user_of("OAUTHBEARER", "n,a=d=2Cn=3Dx@y,\001host=h\001auth=Bearer t\001\001", 41, user,
				sizeof(user)), IMAP_SASL_USER_FOUND);
	CU_ASSERT_STRING_EQUAL(user, "d,n=x@y");
	CU_ASSERT_EQUAL(user_of("login", "erin@example.org", 16, user, sizeof(user)), IMAP_SASL_USER_FOUND);
	CU_ASSERT_STRING_EQUAL(user, "erin@example.org"); /* LOGIN's first answer is the name itself */

	/* bad input: each is a typed refusal, never a guess */
	CU_ASSERT_EQUAL(user_of("PLAIN", "nouser", 6, user, sizeof(user)), IMAP_SASL_USER_MALFORMED);
	CU_ASSERT_EQUAL(user_of("PLAIN", "\0bob", 4, user, sizeof(user)), IMAP_SASL_USER_MALFORMED);
	CU_ASSERT_EQUAL(user_of("PLAIN", "\0\0pw", 4, user, sizeof(user)), IMAP_SASL_USER_MALFORMED);
	CU_ASSERT_EQUAL(user_of("PLAIN", "\0averyveryveryverylongusernamethatdoesnotfit\0pw", 47, user,
				sizeof(user)), IMAP_SASL_USER_MALFORMED);
	CU_ASSERT_EQUAL(user_of("XOAUTH2", "auth=Bearer t\001\001", 15, user, sizeof(user)),
			IMAP_SASL_USER_MALFORMED);
	CU_ASSERT_EQUAL(user_of("XOAUTH2", "user=\001auth=x\001\001", 14, user, sizeof(user)),
			IMAP_SASL_USER_MALFORMED);
	CU_ASSERT_EQUAL(user_of("OAUTHBEARER", "n,,\001auth=Bearer t\001\001", 19, user, sizeof(user)),
			IMAP_SASL_USER_MALFORMED);
	CU_ASSERT_EQUAL(user_of("OAUTHBEARER", "n,a=x=2", 7, user, sizeof(user)), IMAP_SASL_USER_MALFORMED);
	CU_ASSERT_EQUAL(user_of("OAUTHBEARER", "n,a=x=41,", 9, user, sizeof(user)), IMAP_SASL_USER_MALFORMED);
	CU_ASSERT_EQUAL(user_of("CRAM-MD5", "x", 1, user, sizeof(user)), IMAP_SASL_USER_UNKNOWN_MECHANISM);
	CU_ASSERT_EQUAL(user_of("PLAIN", "", 0, user, sizeof(user)), IMAP_SASL_USER_MALFORMED);
	CU_ASSERT_EQUAL(user_of("LOGIN", "", 0, user, sizeof(user)), IMAP_SASL_USER_MALFORMED);
	CU_ASSERT_EQUAL(user_of("LOGIN", "a\0b", 3, user, sizeof(user)), IMAP_SASL_USER_MALFORMED);
	CU_ASSERT_EQUAL(user_of("LOGIN", "averyveryveryverylongusernamethatdoesnotfit", 43, user, sizeof(user)),
			IMAP_SASL_USER_MALFORMED);
}

static void test_user_mechanism_is_known(void)
{
	CU_ASSERT_TRUE(imap_sasl_user_mechanism_is_known("PLAIN"));
	CU_ASSERT_TRUE(imap_sasl_user_mechanism_is_known("login"));
	CU_ASSERT_TRUE(imap_sasl_user_mechanism_is_known("XOAUTH2"));
	CU_ASSERT_TRUE(imap_sasl_user_mechanism_is_known("OAuthBearer"));
	CU_ASSERT_FALSE(imap_sasl_user_mechanism_is_known("CRAM-MD5"));
	CU_ASSERT_FALSE(imap_sasl_user_mechanism_is_known("SCRAM-SHA-256"));
	CU_ASSERT_FALSE(imap_sasl_user_mechanism_is_known("PLAINX"));
	CU_ASSERT_FALSE(imap_sasl_user_mechanism_is_known(""));
}

const char unit_suite_name[] = "imap-sasl";
const struct unit_test unit_tests[] = {
	{ "base64: RFC 4648 vectors", test_base64_vectors },
	{ "base64: binary round trip", test_base64_binary_round_trip },
	{ "base64: garbage refused", test_base64_rejects_garbage },
	{ "PLAIN: RFC 4616 examples, one step", test_plain },
	{ "XOAUTH2: documented example, empty answer to an error", test_xoauth2 },
	{ "OAUTHBEARER: RFC 7628 example, ^A answer to an error", test_oauthbearer },
	{ "CRAM-MD5: RFC 2195 example", test_cram_md5 },
	{ "the user in a client's initial response (proxy side)", test_initial_response_user },
	{ "the mechanisms whose user the proxy can read", test_user_mechanism_is_known },
	{ NULL, NULL },
};
