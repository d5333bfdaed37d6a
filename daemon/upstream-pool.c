/* SPDX-License-Identifier: MIT */
/* upstream-pool: clean, logged-in upstream connections kept after a client's LOGOUT for the next session of the same account. */
#include "config.h"
#include "upstream-pool.h"
#include "imap-client-commands.h"
#include "imap-client.h"
#include "log.h"

#include <assert.h>
#include <event2/event.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#define UPSTREAM_POOL_SECRET_SIZE 32 /* as long as the HMAC-SHA256 output */

enum upstream_pool_entry_state {
	UPSTREAM_POOL_ENTRY_IDLE,    /* pooled: may be taken */
	UPSTREAM_POOL_ENTRY_HELD,    /* owned, being cleaned (UNSELECT) */
	UPSTREAM_POOL_ENTRY_CLOSING, /* handed to the close callback */
};

struct upstream_pool_entry {
	TAILQ_ENTRY(upstream_pool_entry) link;
	enum upstream_pool_entry_state state;
	void *connection;
	struct upstream_pool_key key;
	uint64_t pooled_at;            /* when it was put: it had just answered */
	char *capabilities;
	char *text;
	void *held_data;               /* upstream_pool_set_held_data's: it may be taken while held */
};

TAILQ_HEAD(upstream_pool_entry_list, upstream_pool_entry);

struct upstream_pool {
	struct upstream_pool_callbacks callbacks;
	void *context;
	struct event_base *base;       /* NULL in tests without a loop */
	struct event *expire_timer;    /* NULL without an event base */
	unsigned char secret[UPSTREAM_POOL_SECRET_SIZE];
	unsigned int size;
	unsigned int idle_timeout;
	unsigned int max_age;          /* 0: no limit */
	unsigned int global_max;
	unsigned int generation;       /* counts flushes */
	/* Oldest first; idle, held and closing entries alike. */
	struct upstream_pool_entry_list entries;
	unsigned int busy;
	void (*idle_callback)(void *context);
	void *idle_context;
	bool freeing;
};

static uint64_t upstream_pool_now(const struct upstream_pool *pool);

/* When an idle entry must go: idle too long, or logged in too long ago. */
static uint64_t upstream_pool_deadline(const struct upstream_pool *pool, const struct upstream_pool_entry *entry)
{
	uint64_t idle_end = entry->pooled_at + pool->idle_timeout;
	uint64_t age_end = pool->max_age > 0 ? entry->key.authenticated_at + pool->max_age : UINT64_MAX;

	return idle_end < age_end ? idle_end : age_end;
}

static bool upstream_pool_too_old(const struct upstream_pool *pool, const struct upstream_pool_key *key,
				  uint64_t now)
{
	return pool->max_age > 0 && now - key->authenticated_at >= pool->max_age;
}

static uint64_t upstream_pool_now(const struct upstream_pool *pool)
{
	struct timespec ts;

	if (pool->callbacks.now != NULL)
		return pool->callbacks.now(pool->context);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec;
}

static void upstream_pool_expire_timer(evutil_socket_t fd, short what, void *context)
{
	(void)fd;
	(void)what;
	upstream_pool_expire(context);
}

struct upstream_pool *upstream_pool_new(struct event_base *base, const struct upstream_pool_callbacks *callbacks,
					void *context, const char **error_r)
{
	struct upstream_pool *pool = calloc(1, sizeof(*pool));

	assert(callbacks->close != NULL && callbacks->free != NULL);
	if (pool == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	pool->callbacks = *callbacks;
	pool->context = context;
	pool->base = base;
	TAILQ_INIT(&pool->entries);
	pool->global_max = UPSTREAM_POOL_GLOBAL_MAX;
	if (RAND_bytes(pool->secret, sizeof(pool->secret)) != 1) {
		free(pool);
		*error_r = "no random bytes for the pool's digest key";
		return NULL;
	}
	if (base != NULL) {
		pool->expire_timer = evtimer_new(base, upstream_pool_expire_timer, pool);
		if (pool->expire_timer == NULL) {
			OPENSSL_cleanse(pool->secret, sizeof(pool->secret));
			free(pool);
			*error_r = "out of memory";
			return NULL;
		}
	}
	return pool;
}

static void upstream_pool_entry_free(struct upstream_pool *pool, struct upstream_pool_entry *entry)
{
	TAILQ_REMOVE(&pool->entries, entry, link);
	if (entry->state != UPSTREAM_POOL_ENTRY_IDLE)
		pool->busy--;
	free(entry->capabilities);
	free(entry->text);
	free(entry);
}

void upstream_pool_free(struct upstream_pool **pool_p)
{
	struct upstream_pool *pool = *pool_p;

	if (pool == NULL)
		return;
	pool->freeing = true;
	while (!TAILQ_EMPTY(&pool->entries)) {
		struct upstream_pool_entry *entry = TAILQ_FIRST(&pool->entries);
		void *connection = entry->connection;

		upstream_pool_entry_free(pool, entry);
		pool->callbacks.free(connection, pool->context);
	}
	if (pool->expire_timer != NULL)
		event_free(pool->expire_timer);
	OPENSSL_cleanse(pool->secret, sizeof(pool->secret));
	free(pool);
	*pool_p = NULL;
}

/* Arms the timer for the first idle entry to expire. */
static void upstream_pool_schedule(struct upstream_pool *pool)
{
	struct upstream_pool_entry *entry;
	uint64_t now, deadline;
	struct timeval delay = { 0, 0 };

	if (pool->expire_timer == NULL)
		return;
	deadline = UINT64_MAX;
	TAILQ_FOREACH(entry, &pool->entries, link) {
		if (entry->state == UPSTREAM_POOL_ENTRY_IDLE && upstream_pool_deadline(pool, entry) < deadline)
			deadline = upstream_pool_deadline(pool, entry);
	}
	if (deadline == UINT64_MAX) {
		evtimer_del(pool->expire_timer);
		return;
	}
	now = upstream_pool_now(pool);
	if (deadline > now)
		delay.tv_sec = (time_t)(deadline - now);
	evtimer_add(pool->expire_timer, &delay);
}

static struct upstream_pool_entry *upstream_pool_find(const struct upstream_pool *pool, const void *connection)
{
	struct upstream_pool_entry *entry;

	TAILQ_FOREACH(entry, &pool->entries, link) {
		if (entry->connection == connection)
			return entry;
	}
	return NULL;
}

/* Moves entry to closing and has the owner close its connection. */
static void upstream_pool_close_entry(struct upstream_pool *pool, struct upstream_pool_entry *entry,
				      const char *why)
{
	if (entry->state == UPSTREAM_POOL_ENTRY_CLOSING)
		return;
	if (why != NULL)
		log_info("upstream pool: closing the connection of %s: %s", entry->key.label, why);
	if (entry->state == UPSTREAM_POOL_ENTRY_IDLE)
		pool->busy++;
	entry->state = UPSTREAM_POOL_ENTRY_CLOSING;
	/* entry may be gone after this: the owner can forget it at once */
	pool->callbacks.close(entry->connection, pool->context);
}

static bool upstream_pool_same_account(const struct upstream_pool_key *a, const struct upstream_pool_key *b)
{
	return CRYPTO_memcmp(a->account, b->account, sizeof(a->account)) == 0;
}

/* Whether a connection under entry_key may serve a login with key: the
   same account and credential, both of the pool's generation, and its
   upstream login not max_age old. */
static bool upstream_pool_key_matches(const struct upstream_pool *pool, const struct upstream_pool_key *entry_key,
				      const struct upstream_pool_key *key, uint64_t now)
{
	return entry_key->generation == key->generation && key->generation == pool->generation &&
	       !upstream_pool_too_old(pool, entry_key, now) && upstream_pool_same_account(entry_key, key) &&
	       CRYPTO_memcmp(entry_key->credential, key->credential, sizeof(key->credential)) == 0;
}

/* Closes the oldest idle entries over the per-account and global caps. */
static void upstream_pool_enforce_limits(struct upstream_pool *pool)
{
	struct upstream_pool_entry *entry, *next;
	unsigned int total = upstream_pool_idle_count(pool, NULL);

	for (entry = TAILQ_FIRST(&pool->entries); entry != NULL; entry = next) {
		next = TAILQ_NEXT(entry, link);
		if (entry->state != UPSTREAM_POOL_ENTRY_IDLE)
			continue;
		if (pool->size == 0) {
			upstream_pool_close_entry(pool, entry, "pooling is off");
			total--;
		} else if (total > pool->global_max) {
			upstream_pool_close_entry(pool, entry, "the oldest over the pool's global cap");
			total--;
		} else if (upstream_pool_idle_count(pool, &entry->key) > pool->size) {
			upstream_pool_close_entry(pool, entry, "the oldest over the account's cap");
			total--;
		}
	}
	upstream_pool_schedule(pool);
}

void upstream_pool_set_limits(struct upstream_pool *pool, unsigned int size, unsigned int idle_timeout,
			      unsigned int global_max)
{
	pool->size = size;
	pool->idle_timeout = idle_timeout;
	pool->global_max = global_max;
	upstream_pool_enforce_limits(pool);
}

void upstream_pool_set_max_age(struct upstream_pool *pool, unsigned int max_age)
{
	pool->max_age = max_age;
	upstream_pool_expire(pool);
}

bool upstream_pool_is_enabled(const struct upstream_pool *pool)
{
	return pool->size > 0 && pool->global_max > 0;
}

/* Feeds one field, length first, so that no two field lists digest alike. */
static void upstream_pool_mac_field(EVP_MAC_CTX *mac, const void *data, size_t len)
{
	unsigned char length[8];

	for (int i = 0; i < 8; i++)
		length[i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
	EVP_MAC_update(mac, length, sizeof(length));
	if (len > 0)
		EVP_MAC_update(mac, data, len);
}

/* HMAC-SHA256 with the pool's secret over the fields (count pairs of
   data and length). Returns false on any failure: no digest, and never a
   stand-in that two logins could share. */
static bool upstream_pool_mac(const struct upstream_pool *pool, unsigned char digest[UPSTREAM_POOL_DIGEST_SIZE],
			      const void *const *fields, const size_t *lengths, size_t count)
{
	EVP_MAC *algorithm = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *mac = algorithm != NULL ? EVP_MAC_CTX_new(algorithm) : NULL;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	size_t out_len = 0;

	if (mac == NULL || EVP_MAC_init(mac, pool->secret, sizeof(pool->secret), params) != 1)
		goto fail;
	for (size_t i = 0; i < count; i++)
		upstream_pool_mac_field(mac, fields[i], lengths[i]);
	if (EVP_MAC_final(mac, digest, &out_len, UPSTREAM_POOL_DIGEST_SIZE) != 1 ||
	    out_len != UPSTREAM_POOL_DIGEST_SIZE)
		goto fail;
	EVP_MAC_CTX_free(mac);
	EVP_MAC_free(algorithm);
	return true;

fail:
	log_error("upstream pool: HMAC-SHA256 failed: this login cannot use the pool");
	OPENSSL_cleanse(digest, UPSTREAM_POOL_DIGEST_SIZE);
	EVP_MAC_CTX_free(mac);
	EVP_MAC_free(algorithm);
	return false;
}

bool upstream_pool_make_key(const struct upstream_pool *pool, const char *upstream_name, const char *host,
			    unsigned int port, const char *user, const char *mechanism, const void *secret,
			    size_t secret_len, struct upstream_pool_key *key_r)
{
	char port_text[16];
	const void *account_fields[4];
	size_t account_lengths[4];
	const void *credential_fields[3];
	size_t credential_lengths[3];

	snprintf(port_text, sizeof(port_text), "%u", port);
	account_fields[0] = upstream_name;
	account_fields[1] = host;
	account_fields[2] = port_text;
	account_fields[3] = user;
	for (int i = 0; i < 4; i++)
		account_lengths[i] = strlen(account_fields[i]);
	if (!upstream_pool_mac(pool, key_r->account, account_fields, account_lengths, 4))
		return false;
	credential_fields[0] = key_r->account;
	credential_lengths[0] = sizeof(key_r->account);
	credential_fields[1] = mechanism;
	credential_lengths[1] = strlen(mechanism);
	credential_fields[2] = secret;
	credential_lengths[2] = secret_len;
	if (!upstream_pool_mac(pool, key_r->credential, credential_fields, credential_lengths, 3))
		return false;
	snprintf(key_r->label, sizeof(key_r->label), "%s on upstream %s", user, upstream_name);
	key_r->generation = pool->generation;
	key_r->authenticated_at = upstream_pool_now(pool);
	return true;
}

unsigned int upstream_pool_generation(const struct upstream_pool *pool)
{
	return pool->generation;
}

/* Starts tracking connection as held by a session. Out of memory, it is
   closed through the callbacks and NULL returned. */
static struct upstream_pool_entry *upstream_pool_track(struct upstream_pool *pool, void *connection,
						       const struct upstream_pool_key *key)
{
	struct upstream_pool_entry *entry = calloc(1, sizeof(*entry));

	if (entry == NULL) {
		log_error("upstream pool: out of memory: closing the connection of %s", key->label);
		pool->callbacks.close(connection, pool->context);
		return NULL;
	}
	entry->connection = connection;
	entry->state = UPSTREAM_POOL_ENTRY_HELD;
	pool->busy++;
	TAILQ_INSERT_TAIL(&pool->entries, entry, link);
	return entry;
}

enum upstream_pool_put_result upstream_pool_put(struct upstream_pool *pool, const struct upstream_pool_key *key,
						void *connection, const char *capabilities, const char *text)
{
	struct upstream_pool_entry *entry = upstream_pool_find(pool, connection);
	enum upstream_pool_put_result result;

	if (entry == NULL && (entry = upstream_pool_track(pool, connection, key)) == NULL)
		return UPSTREAM_POOL_PUT_CLOSING; /* untracked: the owner frees it when it is gone */
	assert(entry->state == UPSTREAM_POOL_ENTRY_HELD);
	entry->key = *key;
	if (!upstream_pool_is_enabled(pool)) {
		upstream_pool_close_entry(pool, entry, "pooling is off");
		return UPSTREAM_POOL_PUT_CLOSING;
	}
	if (key->generation != pool->generation) {
		upstream_pool_close_entry(pool, entry, "logged in before the pool was emptied (reload)");
		return UPSTREAM_POOL_PUT_CLOSING;
	}
	if (upstream_pool_too_old(pool, key, upstream_pool_now(pool))) {
		upstream_pool_close_entry(pool, entry, "logged in upstream max_age or more ago");
		return UPSTREAM_POOL_PUT_CLOSING;
	}
	free(entry->capabilities);
	free(entry->text);
	entry->capabilities = strdup(capabilities);
	entry->text = strdup(text);
	if (entry->capabilities == NULL || entry->text == NULL) {
		upstream_pool_close_entry(pool, entry, "out of memory");
		return UPSTREAM_POOL_PUT_CLOSING;
	}
	/* newest last: the list stays in pooling order */
	TAILQ_REMOVE(&pool->entries, entry, link);
	TAILQ_INSERT_TAIL(&pool->entries, entry, link);
	entry->state = UPSTREAM_POOL_ENTRY_IDLE;
	entry->held_data = NULL; /* its cleaning is over */
	entry->pooled_at = upstream_pool_now(pool);
	pool->busy--;
	log_info("upstream pool: keeping the connection of %s (%u idle for the account, %u in all)",
		 entry->key.label, upstream_pool_idle_count(pool, key), upstream_pool_idle_count(pool, NULL));
	upstream_pool_enforce_limits(pool);
	result = entry->state == UPSTREAM_POOL_ENTRY_IDLE ? UPSTREAM_POOL_PUT_POOLED : UPSTREAM_POOL_PUT_CLOSING;
	if (pool->busy == 0 && pool->idle_callback != NULL)
		pool->idle_callback(pool->idle_context);
	return result;
}

/* The newest entry in state that a login with key may take (pooling on):
   an idle one, or a held one with held data. */
static struct upstream_pool_entry *upstream_pool_newest_match(const struct upstream_pool *pool,
							      const struct upstream_pool_key *key,
							      enum upstream_pool_entry_state state, uint64_t now)
{
	struct upstream_pool_entry *entry;

	if (!upstream_pool_is_enabled(pool))
		return NULL;
	TAILQ_FOREACH_REVERSE(entry, &pool->entries, upstream_pool_entry_list, link) {
		if (entry->state == state && upstream_pool_key_matches(pool, &entry->key, key, now) &&
		    (state == UPSTREAM_POOL_ENTRY_IDLE || entry->held_data != NULL))
			return entry;
	}
	return NULL;
}

/* Gives a taken entry's connection to the login with key (which takes
   the connection's authenticated_at); the entry is gone. */
static void *upstream_pool_hand_over(struct upstream_pool *pool, struct upstream_pool_entry *entry,
				     struct upstream_pool_key *key)
{
	bool was_busy = entry->state != UPSTREAM_POOL_ENTRY_IDLE;
	void *connection = entry->connection;

	key->authenticated_at = entry->key.authenticated_at;
	upstream_pool_entry_free(pool, entry);
	upstream_pool_schedule(pool);
	if (was_busy && pool->busy == 0 && pool->idle_callback != NULL)
		pool->idle_callback(pool->idle_context);
	return connection;
}

void *upstream_pool_take(struct upstream_pool *pool, struct upstream_pool_key *key,
			 char *capabilities_r, size_t capabilities_size, char *text_r, size_t text_size,
			 bool *fresh_r)
{
	struct upstream_pool_entry *entry;
	uint64_t now = upstream_pool_now(pool);

	entry = upstream_pool_newest_match(pool, key, UPSTREAM_POOL_ENTRY_IDLE, now);
	if (entry == NULL)
		return NULL;
	log_info("upstream pool: reusing the connection of %s after %llu s idle", entry->key.label,
		 (unsigned long long)(now - entry->pooled_at));
	snprintf(capabilities_r, capabilities_size, "%s", entry->capabilities);
	snprintf(text_r, text_size, "%s", entry->text);
	*fresh_r = now - entry->pooled_at <= UPSTREAM_POOL_FRESH_SECS;
	return upstream_pool_hand_over(pool, entry, key);
}

bool upstream_pool_set_held_data(struct upstream_pool *pool, void *connection, void *data)
{
	struct upstream_pool_entry *entry = upstream_pool_find(pool, connection);

	if (entry == NULL || entry->state != UPSTREAM_POOL_ENTRY_HELD)
		return false;
	entry->held_data = data;
	return true;
}

void *upstream_pool_take_held(struct upstream_pool *pool, struct upstream_pool_key *key, void **held_data_r)
{
	struct upstream_pool_entry *entry;
	uint64_t now = upstream_pool_now(pool);

	entry = upstream_pool_newest_match(pool, key, UPSTREAM_POOL_ENTRY_HELD, now);
	if (entry == NULL)
		return NULL;
	log_info("upstream pool: reusing the connection of %s at once, before its cleaning is answered",
		 entry->key.label);
	*held_data_r = entry->held_data;
	return upstream_pool_hand_over(pool, entry, key);
}

bool upstream_pool_hold(struct upstream_pool *pool, void *connection, const struct upstream_pool_key *key)
{
	struct upstream_pool_entry *entry = upstream_pool_find(pool, connection);

	if (entry == NULL) {
		if ((entry = upstream_pool_track(pool, connection, key)) == NULL)
			return false;
	} else if (entry->state == UPSTREAM_POOL_ENTRY_IDLE) {
		pool->busy++;
	}
	entry->key = *key;
	entry->state = UPSTREAM_POOL_ENTRY_HELD;
	entry->held_data = NULL;
	upstream_pool_schedule(pool);
	return true;
}

void upstream_pool_retire(struct upstream_pool *pool, void *connection, const char *reason)
{
	struct upstream_pool_entry *entry = upstream_pool_find(pool, connection);

	if (entry == NULL) {
		struct upstream_pool_key key = { .label = "an unpooled session" };

		if (!upstream_pool_hold(pool, connection, &key))
			return; /* out of memory: closed untracked */
		entry = upstream_pool_find(pool, connection);
	}
	upstream_pool_close_entry(pool, entry, reason);
	upstream_pool_schedule(pool);
}

bool upstream_pool_forget(struct upstream_pool *pool, void *connection, const char *reason)
{
	struct upstream_pool_entry *entry = upstream_pool_find(pool, connection);
	bool was_busy;

	if (entry == NULL || pool->freeing)
		return false;
	if (entry->state == UPSTREAM_POOL_ENTRY_IDLE)
		log_info("upstream pool: dropped the connection of %s: %s", entry->key.label, reason);
	was_busy = entry->state != UPSTREAM_POOL_ENTRY_IDLE;
	upstream_pool_entry_free(pool, entry);
	upstream_pool_schedule(pool);
	if (was_busy && pool->busy == 0 && pool->idle_callback != NULL)
		pool->idle_callback(pool->idle_context);
	return true;
}

void upstream_pool_expire(struct upstream_pool *pool)
{
	struct upstream_pool_entry *entry, *next;
	uint64_t now = upstream_pool_now(pool);

	for (entry = TAILQ_FIRST(&pool->entries); entry != NULL; entry = next) {
		next = TAILQ_NEXT(entry, link);
		if (entry->state != UPSTREAM_POOL_ENTRY_IDLE)
			continue;
		if (now - entry->pooled_at >= pool->idle_timeout) {
			log_info("upstream pool: the connection of %s expired after %llu s idle", entry->key.label,
				 (unsigned long long)(now - entry->pooled_at));
			upstream_pool_close_entry(pool, entry, NULL);
		} else if (upstream_pool_too_old(pool, &entry->key, now)) {
			log_info("upstream pool: the connection of %s expired: logged in upstream %llu s ago",
				 entry->key.label, (unsigned long long)(now - entry->key.authenticated_at));
			upstream_pool_close_entry(pool, entry, NULL);
		}
	}
	upstream_pool_schedule(pool);
}

void upstream_pool_flush(struct upstream_pool *pool, const char *reason)
{
	struct upstream_pool_entry *entry, *next;

	pool->generation++;
	for (entry = TAILQ_FIRST(&pool->entries); entry != NULL; entry = next) {
		next = TAILQ_NEXT(entry, link);
		if (entry->state == UPSTREAM_POOL_ENTRY_IDLE)
			upstream_pool_close_entry(pool, entry, reason);
	}
	upstream_pool_schedule(pool);
}

unsigned int upstream_pool_idle_count(const struct upstream_pool *pool, const struct upstream_pool_key *key)
{
	const struct upstream_pool_entry *entry;
	unsigned int count = 0;

	TAILQ_FOREACH(entry, &pool->entries, link) {
		if (entry->state == UPSTREAM_POOL_ENTRY_IDLE &&
		    (key == NULL || upstream_pool_same_account(&entry->key, key)))
			count++;
	}
	return count;
}

unsigned int upstream_pool_busy_count(const struct upstream_pool *pool)
{
	return pool->busy;
}

void upstream_pool_set_idle_callback(struct upstream_pool *pool, void (*callback)(void *context), void *context)
{
	pool->idle_callback = callback;
	pool->idle_context = context;
}

/* ---- the daemon's pool of client-core connections ---- */

/* What a client-core connection in the pool remembers while its
   cleaning command (UNSELECT, or NOOP) runs. */
struct upstream_pool_cleaning {
	struct upstream_pool *pool;
	struct upstream_pool_key key;
	const char *command_name;
	struct imap_client_command *command;
	char *capabilities;
	char *text;
	bool taken;                    /* a login took the connection before the answer */
};

static void upstream_pool_client_closed(struct imap_client *client, const char *reason, void *context)
{
	struct upstream_pool *pool = context;

	upstream_pool_forget(pool, client, reason);
	imap_client_free(&client); /* allowed inside its closed callback */
}

/* Untagged data for nobody (the client is gone): discarded. */
static int upstream_pool_client_raw(struct imap_client *client, struct imap_client_command *command,
				    enum imap_client_raw_kind kind, const unsigned char *data, size_t len,
				    bool line_end, void *context)
{
	(void)client;
	(void)command;
	(void)kind;
	(void)data;
	(void)len;
	(void)line_end;
	(void)context;
	return 0;
}

static void upstream_pool_client_logout_done(struct imap_client *client, struct imap_client_command *command,
					     const struct imap_client_result *result, void *context)
{
	/* the closed callback follows, once the upstream hangs up */
	(void)client;
	(void)command;
	(void)result;
	(void)context;
}

static void upstream_pool_client_close(void *connection, void *context)
{
	(void)context;
	imap_client_logout(connection, upstream_pool_client_logout_done, NULL);
}

static void upstream_pool_client_free(void *connection, void *context)
{
	struct imap_client *client = connection;

	(void)context;
	imap_client_free(&client);
}

struct upstream_pool *upstream_pool_new_clients(struct event_base *base, const char **error_r)
{
	static const struct upstream_pool_callbacks callbacks = {
		.close = upstream_pool_client_close,
		.free = upstream_pool_client_free,
	};

	return upstream_pool_new(base, &callbacks, NULL, error_r);
}

static void upstream_pool_cleaning_free(void *context)
{
	struct upstream_pool_cleaning *cleaning = context;

	free(cleaning->capabilities);
	free(cleaning->text);
	free(cleaning);
}

static void upstream_pool_client_cleaned(struct imap_client *client, struct imap_client_command *command,
					 const struct imap_client_result *result, void *context)
{
	struct upstream_pool_cleaning *cleaning = context;
	char why[64];

	(void)command;
	if (cleaning->taken || result->status == IMAP_CLIENT_STATUS_ABORT)
		return; /* the login that took it saw the answer; or the closed callback forgets and frees it */
	if (result->status != IMAP_CLIENT_STATUS_OK ||
	    imap_client_get_state(client) != IMAP_CLIENT_STATE_AUTHENTICATED) {
		snprintf(why, sizeof(why), "%s failed", cleaning->command_name);
		upstream_pool_retire(cleaning->pool, client, why);
		return;
	}
	upstream_pool_put(cleaning->pool, &cleaning->key, client, cleaning->capabilities, cleaning->text);
}

/* Sends the cleaning command (a raw one: a session that takes the
   connection before its answer pipelines its own raw commands behind it). */
static struct imap_client_command *upstream_pool_send_cleaning(struct imap_client *client,
								struct upstream_pool_cleaning *cleaning)
{
	struct imap_client_command *command;

	command = imap_client_raw_command_new(client, NULL, cleaning->command_name, upstream_pool_client_cleaned,
					      cleaning);
	imap_client_command_set_destroy(command, upstream_pool_cleaning_free, cleaning);
	imap_client_raw_command_write(command, " ", 1);
	imap_client_raw_command_write(command, cleaning->command_name, strlen(cleaning->command_name));
	imap_client_raw_command_write(command, "\r\n", 2);
	imap_client_raw_command_end(command);
	return command;
}

void upstream_pool_put_client(struct upstream_pool *pool, const struct upstream_pool_key *key,
			      struct imap_client *client, const char *capabilities, const char *text)
{
	struct upstream_pool_cleaning *cleaning;

	imap_client_set_closed_callback(client, upstream_pool_client_closed, pool);
	imap_client_set_raw_callback(client, upstream_pool_client_raw, pool);
	imap_client_set_output_drained_callback(client, 0, NULL, NULL);
	imap_client_set_untagged_callback(client, NULL, NULL);
	imap_client_set_literal_callback(client, NULL, NULL);
	imap_client_set_reading_paused(client, false); /* to see a BYE or a hang-up */
	if (!upstream_pool_hold(pool, client, key))
		return;
	if (!upstream_pool_is_enabled(pool)) {
		upstream_pool_retire(pool, client, "pooling is off");
		return;
	}
	if (imap_client_get_state(client) != IMAP_CLIENT_STATE_AUTHENTICATED &&
	    (imap_client_get_state(client) != IMAP_CLIENT_STATE_SELECTED ||
	     !imap_client_has_capability(client, "UNSELECT"))) {
		upstream_pool_retire(pool, client, "not in a state that can be pooled");
		return;
	}
	cleaning = calloc(1, sizeof(*cleaning));
	if (cleaning == NULL || (cleaning->capabilities = strdup(capabilities)) == NULL ||
	    (cleaning->text = strdup(text)) == NULL) {
		if (cleaning != NULL)
			upstream_pool_cleaning_free(cleaning);
		upstream_pool_retire(pool, client, "out of memory");
		return;
	}
	cleaning->pool = pool;
	cleaning->key = *key;
	/* Unselected, its session may have been silent for an hour: a NOOP
	   shows it alive, so that a login right after may trust it. */
	cleaning->command_name = imap_client_get_state(client) == IMAP_CLIENT_STATE_AUTHENTICATED ? "NOOP" :
				 "UNSELECT";
	cleaning->command = upstream_pool_send_cleaning(client, cleaning);
	upstream_pool_set_held_data(pool, client, cleaning);
}

struct imap_client *upstream_pool_take_cleaning_client(struct upstream_pool *pool, struct upstream_pool_key *key,
						       char *capabilities_r, size_t capabilities_size,
						       char *text_r, size_t text_size,
						       struct imap_client_command **cleaning_r)
{
	struct upstream_pool_cleaning *cleaning = NULL;
	struct imap_client *client = upstream_pool_take_held(pool, key, (void **)&cleaning);

	if (client == NULL)
		return NULL;
	cleaning->taken = true;
	snprintf(capabilities_r, capabilities_size, "%s", cleaning->capabilities);
	snprintf(text_r, text_size, "%s", cleaning->text);
	*cleaning_r = cleaning->command;
	return client;
}

struct imap_client *upstream_pool_take_client(struct upstream_pool *pool, struct upstream_pool_key *key,
					      char *capabilities_r, size_t capabilities_size, char *text_r,
					      size_t text_size, bool *fresh_r)
{
	return upstream_pool_take(pool, key, capabilities_r, capabilities_size, text_r, text_size, fresh_r);
}
