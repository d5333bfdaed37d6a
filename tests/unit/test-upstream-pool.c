/* SPDX-License-Identifier: MIT */
/* Unit tests for daemon/upstream-pool: keying, caps, eviction order, idle expiry, pooling off, freshness and taking a held connection at once, on fake connections and a fake clock. */
#include "config.h"
#include "unit.h"
#include "upstream-pool.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

/* A fake connection: records what the pool asked of it. */
struct fake_connection {
	int id;
	bool close_called;
	bool free_called;
};

struct fake_world {
	uint64_t now;
	unsigned int closes;
	unsigned int frees;
	bool forget_on_close; /* as the daemon's owner does once LOGOUT is done */
	struct upstream_pool *pool;
};

static struct fake_world world;

static void fake_close(void *connection, void *context)
{
	struct fake_connection *fake = connection;

	CU_ASSERT_PTR_EQUAL(context, &world);
	CU_ASSERT_FALSE(fake->close_called);
	fake->close_called = true;
	world.closes++;
	if (world.forget_on_close)
		CU_ASSERT_TRUE(upstream_pool_forget(world.pool, fake, "logged out"));
}

static void fake_free(void *connection, void *context)
{
	struct fake_connection *fake = connection;

	CU_ASSERT_PTR_EQUAL(context, &world);
	CU_ASSERT_FALSE(fake->free_called);
	fake->free_called = true;
	world.frees++;
}

static uint64_t fake_now(void *context)
{
	CU_ASSERT_PTR_EQUAL(context, &world);
	return world.now;
}

/* A pool on base (NULL: no timers) with the fake clock at 1000. */
static struct upstream_pool *pool_new_on(struct event_base *base, unsigned int size, unsigned int idle_timeout,
					 unsigned int global_max)
{
	static const struct upstream_pool_callbacks callbacks = {
		.close = fake_close, .free = fake_free, .now = fake_now,
	};
	const char *error = NULL;

	memset(&world, 0, sizeof(world));
	world.now = 1000;
	world.pool = upstream_pool_new(base, &callbacks, &world, &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(world.pool);
	upstream_pool_set_limits(world.pool, size, idle_timeout, global_max);
	return world.pool;
}

static struct upstream_pool *pool_new(unsigned int size, unsigned int idle_timeout, unsigned int global_max)
{
	return pool_new_on(NULL, size, idle_timeout, global_max);
}

static void key(struct upstream_pool *pool, const char *upstream, const char *user, const char *password,
		struct upstream_pool_key *key_r)
{
	upstream_pool_make_key(pool, upstream, "imap.example.com", 993, user, "LOGIN", password,
			       strlen(password), key_r);
}

/* Takes with key; returns the connection (NULL when none), checking the
   kept capabilities and text came along; *fresh_r as the take said. */
static struct fake_connection *take_fresh(struct upstream_pool *pool, struct upstream_pool_key *k, bool *fresh_r)
{
	char capabilities[64], text[64];
	struct fake_connection *fake;

	fake = upstream_pool_take(pool, k, capabilities, sizeof(capabilities), text, sizeof(text), fresh_r);
	if (fake != NULL) {
		CU_ASSERT_STRING_EQUAL(capabilities, "IMAP4rev1 IDLE");
		CU_ASSERT_STRING_EQUAL(text, "Logged in");
	}
	return fake;
}

static struct fake_connection *take(struct upstream_pool *pool, struct upstream_pool_key *k)
{
	bool fresh;

	return take_fresh(pool, k, &fresh);
}

static enum upstream_pool_put_result put(struct upstream_pool *pool, const struct upstream_pool_key *k,
					 struct fake_connection *fake)
{
	return upstream_pool_put(pool, k, fake, "IMAP4rev1 IDLE", "Logged in");
}

static void test_key_digests(void)
{
	struct upstream_pool *pool = pool_new(4, 300, 100), *other;
	struct upstream_pool_key a, b;
	const char *secret = "s3cret-password";

	key(pool, "example", "alice", secret, &a);
	key(pool, "example", "alice", secret, &b);
	CU_ASSERT_EQUAL(memcmp(&a.account, &b.account, sizeof(a.account)), 0);
	CU_ASSERT_EQUAL(memcmp(&a.credential, &b.credential, sizeof(a.credential)), 0);
	/* no trace of the secret in the key */
	CU_ASSERT_PTR_NULL(memmem(&a, sizeof(a), secret, strlen(secret)));
	CU_ASSERT_PTR_NOT_NULL(strstr(a.label, "alice"));
	CU_ASSERT_PTR_NULL(strstr(a.label, secret));
	/* the mechanism is part of the credential, not of the account */
	upstream_pool_make_key(pool, "example", "imap.example.com", 993, "alice", "PLAIN", secret, strlen(secret), &b);
	CU_ASSERT_EQUAL(memcmp(&a.account, &b.account, sizeof(a.account)), 0);
	CU_ASSERT_NOT_EQUAL(memcmp(&a.credential, &b.credential, sizeof(a.credential)), 0);
	/* fields can't slide into each other: "ab"+"c" is not "a"+"bc" */
	upstream_pool_make_key(pool, "ab", "c", 993, "alice", "LOGIN", secret, strlen(secret), &a);
	upstream_pool_make_key(pool, "a", "bc", 993, "alice", "LOGIN", secret, strlen(secret), &b);
	CU_ASSERT_NOT_EQUAL(memcmp(&a.account, &b.account, sizeof(a.account)), 0);
	/* another process (pool) has another digest key */
	key(pool, "example", "alice", secret, &a);
	other = pool;
	world.pool = NULL;
	pool = pool_new(4, 300, 100);
	key(pool, "example", "alice", secret, &b);
	CU_ASSERT_NOT_EQUAL(memcmp(&a.account, &b.account, sizeof(a.account)), 0);
	upstream_pool_free(&other);
	upstream_pool_free(&pool);
	CU_ASSERT_PTR_NULL(pool);
}

static void test_take_matches(void)
{
	struct upstream_pool *pool = pool_new(4, 300, 100);
	struct fake_connection one = { .id = 1 };
	struct upstream_pool_key k, same;

	key(pool, "example", "alice", "pw", &k);
	CU_ASSERT_PTR_NULL(take(pool, &k)); /* empty */
	CU_ASSERT_EQUAL(put(pool, &k, &one), UPSTREAM_POOL_PUT_POOLED);
	CU_ASSERT_EQUAL(upstream_pool_idle_count(pool, &k), 1);
	CU_ASSERT_EQUAL(upstream_pool_busy_count(pool), 0);
	key(pool, "example", "alice", "pw", &same);
	CU_ASSERT_PTR_EQUAL(take(pool, &same), &one);
	CU_ASSERT_EQUAL(upstream_pool_idle_count(pool, NULL), 0);
	CU_ASSERT_PTR_NULL(take(pool, &same)); /* taken once only */
	CU_ASSERT_FALSE(upstream_pool_forget(pool, &one, "gone")); /* the caller's again */
	upstream_pool_free(&pool);
	CU_ASSERT_EQUAL(world.closes + world.frees, 0); /* the pool no longer had it */
}

static void test_mismatch(void)
{
	struct upstream_pool *pool = pool_new(4, 300, 100);
	struct fake_connection one = { .id = 1 };
	struct upstream_pool_key k, wrong;

	key(pool, "example", "alice", "pw", &k);
	put(pool, &k, &one);
	key(pool, "example", "alice", "wrong", &wrong);
	CU_ASSERT_PTR_NULL(take(pool, &wrong)); /* another password */
	key(pool, "example", "bob", "pw", &wrong);
	CU_ASSERT_PTR_NULL(take(pool, &wrong)); /* another user, same password */
	key(pool, "other", "alice", "pw", &wrong);
	CU_ASSERT_PTR_NULL(take(pool, &wrong)); /* another upstream name */
	upstream_pool_make_key(pool, "example", "imap2.example.com", 993, "alice", "LOGIN", "pw", 2, &wrong);
	CU_ASSERT_PTR_NULL(take(pool, &wrong)); /* another host */
	upstream_pool_make_key(pool, "example", "imap.example.com", 143, "alice", "LOGIN", "pw", 2, &wrong);
	CU_ASSERT_PTR_NULL(take(pool, &wrong)); /* another port */
	upstream_pool_make_key(pool, "example", "imap.example.com", 993, "alice", "XOAUTH2", "pw", 2, &wrong);
	CU_ASSERT_PTR_NULL(take(pool, &wrong)); /* another mechanism */
	upstream_pool_make_key(pool, "example", "imap.example.com", 993, "Alice", "LOGIN", "pw", 2, &wrong);
	CU_ASSERT_PTR_NULL(take(pool, &wrong)); /* user names are compared exactly */
	CU_ASSERT_EQUAL(upstream_pool_idle_count(pool, &k), 1); /* still there, untouched */
	CU_ASSERT_EQUAL(world.closes, 0);
	CU_ASSERT_PTR_EQUAL(take(pool, &k), &one);
	upstream_pool_free(&pool);
}

static void test_account_cap_oldest_first(void)
{
	struct upstream_pool *pool = pool_new(2, 300, 100);
	struct fake_connection c[4] = { { .id = 0 }, { .id = 1 }, { .id = 2 }, { .id = 3 } };
	struct upstream_pool_key alice, alice_new_password, bob;

	key(pool, "example", "alice", "pw", &alice);
	key(pool, "example", "alice", "changed", &alice_new_password);
	key(pool, "example", "bob", "pw", &bob);
	CU_ASSERT_EQUAL(put(pool, &alice, &c[0]), UPSTREAM_POOL_PUT_POOLED);
	world.now++;
	CU_ASSERT_EQUAL(put(pool, &bob, &c[1]), UPSTREAM_POOL_PUT_POOLED);
	world.now++;
	CU_ASSERT_EQUAL(put(pool, &alice, &c[2]), UPSTREAM_POOL_PUT_POOLED);
	CU_ASSERT_EQUAL(world.closes, 0);
	world.now++;
	/* a third of alice's (even with another password: the cap is per
	   account) closes her oldest, not bob's */
	CU_ASSERT_EQUAL(put(pool, &alice_new_password, &c[3]), UPSTREAM_POOL_PUT_POOLED);
	CU_ASSERT_TRUE(c[0].close_called);
	CU_ASSERT_FALSE(c[1].close_called || c[2].close_called || c[3].close_called);
	CU_ASSERT_EQUAL(upstream_pool_idle_count(pool, &alice), 2);
	CU_ASSERT_EQUAL(upstream_pool_idle_count(pool, &bob), 1);
	CU_ASSERT_EQUAL(upstream_pool_busy_count(pool), 1); /* closing until forgotten */
	CU_ASSERT_TRUE(upstream_pool_forget(pool, &c[0], "logged out"));
	CU_ASSERT_EQUAL(upstream_pool_busy_count(pool), 0);
	/* the matching credential is taken, the newest first */
	CU_ASSERT_PTR_EQUAL(take(pool, &alice), &c[2]);
	CU_ASSERT_PTR_NULL(take(pool, &alice));
	CU_ASSERT_PTR_EQUAL(take(pool, &alice_new_password), &c[3]);
	upstream_pool_free(&pool);
	/* freeing frees what is left, without a close */
	CU_ASSERT_TRUE(c[1].free_called && !c[1].close_called);
	CU_ASSERT_FALSE(c[2].free_called); /* taken: the caller's */
}

static void test_global_cap(void)
{
	struct upstream_pool *pool = pool_new(4, 300, 3);
	struct fake_connection c[4] = { { .id = 0 }, { .id = 1 }, { .id = 2 }, { .id = 3 } };
	struct upstream_pool_key k[4];
	char user[8];

	world.forget_on_close = true;
	for (int i = 0; i < 4; i++) {
		snprintf(user, sizeof(user), "u%d", i);
		key(pool, "example", user, "pw", &k[i]);
		put(pool, &k[i], &c[i]);
		world.now++;
	}
	CU_ASSERT_TRUE(c[0].close_called); /* the oldest of all */
	CU_ASSERT_EQUAL(world.closes, 1);
	CU_ASSERT_EQUAL(upstream_pool_idle_count(pool, NULL), 3);
	CU_ASSERT_PTR_NULL(take(pool, &k[0]));
	CU_ASSERT_PTR_EQUAL(take(pool, &k[3]), &c[3]);
	/* lower limits close the oldest now over them */
	upstream_pool_set_limits(pool, 4, 300, 1);
	CU_ASSERT_TRUE(c[1].close_called);
	CU_ASSERT_FALSE(c[2].close_called);
	upstream_pool_free(&pool);
	CU_ASSERT_TRUE(c[2].free_called);
}

static void test_idle_expiry(void)
{
	struct upstream_pool *pool = pool_new(4, 300, 100);
	struct fake_connection old = { .id = 1 }, young = { .id = 2 };
	struct upstream_pool_key a, b;

	world.forget_on_close = true;
	key(pool, "example", "alice", "pw", &a);
	key(pool, "example", "bob", "pw", &b);
	put(pool, &a, &old);
	world.now += 200;
	put(pool, &b, &young);
	world.now += 99; /* old: 299 s */
	upstream_pool_expire(pool);
	CU_ASSERT_EQUAL(world.closes, 0);
	world.now += 1; /* old: 300 s */
	upstream_pool_expire(pool);
	CU_ASSERT_TRUE(old.close_called);
	CU_ASSERT_FALSE(young.close_called);
	CU_ASSERT_PTR_NULL(take(pool, &a));
	world.now += 200; /* young: 300 s */
	upstream_pool_expire(pool);
	CU_ASSERT_TRUE(young.close_called);
	CU_ASSERT_EQUAL(upstream_pool_idle_count(pool, NULL), 0);
	CU_ASSERT_EQUAL(upstream_pool_busy_count(pool), 0);
	upstream_pool_free(&pool);
	CU_ASSERT_EQUAL(world.frees, 0);
}

/* A login's age counts from its real upstream login, across reuses. */
static void test_max_age(void)
{
	struct upstream_pool *pool = pool_new(4, 300, 100);
	struct fake_connection conn = { .id = 1 }, other = { .id = 2 };
	struct upstream_pool_key first, again, later;

	world.forget_on_close = true;
	upstream_pool_set_max_age(pool, 1000);
	key(pool, "example", "alice", "pw", &first); /* logged in upstream at 1000 */
	world.now += 250;
	CU_ASSERT_EQUAL(put(pool, &first, &conn), UPSTREAM_POOL_PUT_POOLED);
	/* a chain of reuses, each within idle_timeout: the age goes on */
	for (int round = 0; round < 3; round++) {
		world.now += 200;
		key(pool, "example", "alice", "pw", &again);
		CU_ASSERT_EQUAL(again.authenticated_at, world.now); /* fresh until a take */
		CU_ASSERT_PTR_EQUAL(take(pool, &again), &conn);
		CU_ASSERT_EQUAL(again.authenticated_at, 1000); /* the connection's own login */
		CU_ASSERT_EQUAL(put(pool, &again, &conn), UPSTREAM_POOL_PUT_POOLED);
	}
	/* pooled again at 1850, logged in at 1000: gone at 2000 (150 s idle), not at 2150 */
	world.now = 1999;
	upstream_pool_expire(pool);
	CU_ASSERT_FALSE(conn.close_called);
	world.now = 2000;
	key(pool, "example", "alice", "pw", &later);
	CU_ASSERT_PTR_NULL(take(pool, &later)); /* too old to take, even before the timer */
	upstream_pool_expire(pool);
	CU_ASSERT_TRUE(conn.close_called);
	/* a session that logged in max_age ago gives its connection back: closed */
	key(pool, "example", "bob", "pw", &first);
	world.now += 1000;
	CU_ASSERT_EQUAL(put(pool, &first, &other), UPSTREAM_POOL_PUT_CLOSING);
	CU_ASSERT_TRUE(other.close_called);
	/* 0: no limit */
	upstream_pool_set_max_age(pool, 0);
	struct fake_connection third = { .id = 3 };
	key(pool, "example", "carol", "pw", &first);
	world.now += 100000;
	CU_ASSERT_EQUAL(put(pool, &first, &third), UPSTREAM_POOL_PUT_POOLED);
	upstream_pool_free(&pool);
}

static void test_disabled(void)
{
	struct upstream_pool *pool = pool_new(0, 300, 100);
	struct fake_connection one = { .id = 1 }, two = { .id = 2 };
	struct upstream_pool_key k;

	CU_ASSERT_FALSE(upstream_pool_is_enabled(pool));
	key(pool, "example", "alice", "pw", &k);
	/* off: handed straight to close */
	CU_ASSERT_EQUAL(put(pool, &k, &one), UPSTREAM_POOL_PUT_CLOSING);
	CU_ASSERT_TRUE(one.close_called);
	CU_ASSERT_PTR_NULL(take(pool, &k));
	CU_ASSERT_TRUE(upstream_pool_forget(pool, &one, "logged out"));
	/* turning it off (a reload with size = 0) closes what is pooled */
	upstream_pool_set_limits(pool, 1, 300, 100);
	CU_ASSERT_TRUE(upstream_pool_is_enabled(pool));
	CU_ASSERT_EQUAL(put(pool, &k, &two), UPSTREAM_POOL_PUT_POOLED);
	upstream_pool_set_limits(pool, 0, 300, 100);
	CU_ASSERT_TRUE(two.close_called);
	CU_ASSERT_PTR_NULL(take(pool, &k));
	upstream_pool_free(&pool);
	CU_ASSERT_TRUE(two.free_called); /* still closing: freed with the pool */
}

static void count_idle_call(void *context)
{
	(*(unsigned int *)context)++;
}

static void test_hold_retire_flush(void)
{
	struct upstream_pool *pool = pool_new(4, 300, 100);
	struct fake_connection cleaning = { .id = 1 }, bad = { .id = 2 }, idle = { .id = 3 };
	struct upstream_pool_key k;
	unsigned int idle_calls = 0;

	key(pool, "example", "alice", "pw", &k);
	/* held (UNSELECT running): owned, counted busy, never taken */
	upstream_pool_hold(pool, &cleaning, &k);
	CU_ASSERT_EQUAL(upstream_pool_busy_count(pool), 1);
	CU_ASSERT_PTR_NULL(take(pool, &k));
	CU_ASSERT_EQUAL(put(pool, &k, &cleaning), UPSTREAM_POOL_PUT_POOLED);
	CU_ASSERT_EQUAL(upstream_pool_busy_count(pool), 0);
	/* held then retired (UNSELECT failed) */
	upstream_pool_hold(pool, &bad, &k);
	upstream_pool_retire(pool, &bad, "UNSELECT failed");
	CU_ASSERT_TRUE(bad.close_called);
	CU_ASSERT_EQUAL(upstream_pool_busy_count(pool), 1);
	/* the one put after cleaning is takeable, the retired one never */
	CU_ASSERT_PTR_EQUAL(take(pool, &k), &cleaning);
	CU_ASSERT_PTR_NULL(take(pool, &k));
	put(pool, &k, &cleaning);
	put(pool, &k, &idle);
	/* flush closes every idle one; the idle callback tells when the last
	   closing one is gone */
	upstream_pool_flush(pool, "configuration reloaded");
	CU_ASSERT_TRUE(cleaning.close_called && idle.close_called);
	CU_ASSERT_EQUAL(upstream_pool_idle_count(pool, NULL), 0);
	CU_ASSERT_EQUAL(upstream_pool_busy_count(pool), 3);
	upstream_pool_set_idle_callback(pool, count_idle_call, &idle_calls);
	upstream_pool_forget(pool, &bad, "logged out");
	upstream_pool_forget(pool, &cleaning, "logged out");
	CU_ASSERT_EQUAL(upstream_pool_busy_count(pool), 1);
	CU_ASSERT_EQUAL(idle_calls, 0);
	upstream_pool_forget(pool, &idle, "logged out");
	CU_ASSERT_EQUAL(upstream_pool_busy_count(pool), 0);
	CU_ASSERT_EQUAL(idle_calls, 1);
	upstream_pool_free(&pool);
	CU_ASSERT_EQUAL(world.frees, 0);
}

static void test_flush_ends_old_keys(void)
{
	struct upstream_pool *pool = pool_new(4, 300, 100);
	struct fake_connection before = { .id = 1 }, held = { .id = 2 }, after = { .id = 3 };
	struct upstream_pool_key old_key, new_key;

	world.forget_on_close = true;
	key(pool, "example", "alice", "pw", &old_key);
	upstream_pool_hold(pool, &held, &old_key); /* UNSELECT running across the reload */
	upstream_pool_flush(pool, "configuration reloaded");
	/* a session logged in under the old configuration logs out now */
	CU_ASSERT_EQUAL(put(pool, &old_key, &before), UPSTREAM_POOL_PUT_CLOSING);
	CU_ASSERT_TRUE(before.close_called);
	CU_ASSERT_EQUAL(put(pool, &old_key, &held), UPSTREAM_POOL_PUT_CLOSING);
	CU_ASSERT_TRUE(held.close_called);
	/* a login after the reload pools as usual, and the old key takes nothing */
	key(pool, "example", "alice", "pw", &new_key);
	CU_ASSERT_EQUAL(put(pool, &new_key, &after), UPSTREAM_POOL_PUT_POOLED);
	CU_ASSERT_PTR_NULL(take(pool, &old_key));
	CU_ASSERT_PTR_EQUAL(take(pool, &new_key), &after);
	CU_ASSERT_EQUAL(upstream_pool_busy_count(pool), 0);
	upstream_pool_free(&pool);
}

/* A connection pooled within UPSTREAM_POOL_FRESH_SECS answered too
   recently to need a check; an older one does not. */
static void test_take_fresh(void)
{
	struct upstream_pool *pool = pool_new(4, 300, 100);
	struct fake_connection one = { .id = 1 };
	struct upstream_pool_key k;
	bool fresh = false;

	key(pool, "example", "alice", "pw", &k);
	put(pool, &k, &one);
	CU_ASSERT_PTR_EQUAL(take_fresh(pool, &k, &fresh), &one);
	CU_ASSERT_TRUE(fresh);
	put(pool, &k, &one);
	world.now += UPSTREAM_POOL_FRESH_SECS;
	CU_ASSERT_PTR_EQUAL(take_fresh(pool, &k, &fresh), &one);
	CU_ASSERT_TRUE(fresh);
	put(pool, &k, &one);
	world.now += UPSTREAM_POOL_FRESH_SECS + 1;
	CU_ASSERT_PTR_EQUAL(take_fresh(pool, &k, &fresh), &one);
	CU_ASSERT_FALSE(fresh);
	upstream_pool_free(&pool);
}

/* A held connection marked with held data (its cleaning command on the
   wire) is taken at once by a matching login, data and all; one without
   data, or of another account, is not; a take leaves it the caller's. */
static void test_take_held(void)
{
	struct upstream_pool *pool = pool_new(4, 300, 100);
	struct fake_connection held = { .id = 1 }, plain = { .id = 2 };
	struct upstream_pool_key first, next, other;
	int data = 7;
	void *taken_data = NULL;

	key(pool, "example", "alice", "pw", &first); /* logged in upstream at 1000 */
	world.now += 50;
	CU_ASSERT_TRUE(upstream_pool_hold(pool, &plain, &first));
	key(pool, "example", "alice", "pw", &next);
	CU_ASSERT_PTR_NULL(upstream_pool_take_held(pool, &next, &taken_data)); /* no held data: not takeable */
	CU_ASSERT_TRUE(upstream_pool_hold(pool, &held, &first));
	CU_ASSERT_TRUE(upstream_pool_set_held_data(pool, &held, &data));
	CU_ASSERT_FALSE(upstream_pool_set_held_data(pool, &data, &data)); /* not the pool's */
	key(pool, "example", "bob", "pw", &other);
	CU_ASSERT_PTR_NULL(upstream_pool_take_held(pool, &other, &taken_data)); /* another account's */
	CU_ASSERT_EQUAL(upstream_pool_busy_count(pool), 2);
	CU_ASSERT_PTR_EQUAL(upstream_pool_take_held(pool, &next, &taken_data), &held);
	CU_ASSERT_PTR_EQUAL(taken_data, &data);
	CU_ASSERT_EQUAL(next.authenticated_at, 1000); /* max_age goes on from the first login */
	CU_ASSERT_EQUAL(upstream_pool_busy_count(pool), 1);
	CU_ASSERT_FALSE(upstream_pool_forget(pool, &held, "gone")); /* the taker's now */
	CU_ASSERT_PTR_NULL(upstream_pool_take_held(pool, &next, &taken_data)); /* taken once only */
	/* put back after its cleaning, the data is gone with the cleaning */
	CU_ASSERT_EQUAL(put(pool, &first, &plain), UPSTREAM_POOL_PUT_POOLED);
	CU_ASSERT_PTR_NULL(upstream_pool_take_held(pool, &next, &taken_data));
	upstream_pool_free(&pool);
}

const char unit_suite_name[] = "upstream-pool";
const struct unit_test unit_tests[] = {
	{ "keys are keyed digests of account and credential", test_key_digests },
	{ "a matching key takes the pooled connection", test_take_matches },
	{ "user, password, upstream or mechanism mismatch takes nothing", test_mismatch },
	{ "per-account cap closes the account's oldest", test_account_cap_oldest_first },
	{ "global cap closes the oldest of all", test_global_cap },
	{ "idle connections expire after idle_timeout", test_idle_expiry },
	{ "max_age counts from the upstream login, across reuses", test_max_age },
	{ "size 0 turns pooling off", test_disabled },
	{ "held, retired and flushed connections", test_hold_retire_flush },
	{ "a flush (reload) ends the keys made before it", test_flush_ends_old_keys },
	{ "a connection pooled just now is taken as fresh", test_take_fresh },
	{ "a held connection with data is taken at once", test_take_held },
	{ NULL, NULL },
};
