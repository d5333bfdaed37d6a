/* SPDX-License-Identifier: MIT */
/* unit-cache: a throwaway store of one account, its INBOX and a view of it, for the suites of the cache's users. */
#include "config.h"
#include "unit-cache.h"
#include "log.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>

void unit_cache_open(struct unit_cache *store, const char *name, struct cache_settings settings,
		     const uint32_t *uids, uint32_t count)
{
	struct cache_mailbox mailbox;
	const char *error;

	snprintf(store->base_dir, sizeof(store->base_dir), "/tmp/%s-XXXXXX", name);
	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(store->base_dir));
	snprintf(store->cache_dir, sizeof(store->cache_dir), "%s/cache", store->base_dir);
	settings.dir = store->cache_dir;
	log_set_level(LOG_LEVEL_WARNING);
	store->cache = cache_open(&settings, "up", "alice", &error);
	CU_ASSERT_PTR_NOT_NULL_FATAL(store->cache);
	CU_ASSERT_EQUAL_FATAL(cache_mailbox_open(store->cache, "INBOX", 7, &mailbox, NULL), 0);
	store->mailbox_id = mailbox.id;
	store->view = mailbox_view_new();
	CU_ASSERT_PTR_NOT_NULL_FATAL(store->view);
	CU_ASSERT_EQUAL_FATAL(mailbox_view_load(store->view, uids, count), 0);
}

void unit_cache_close(struct unit_cache *store)
{
	char rm[128];

	mailbox_view_free(&store->view);
	cache_unref(&store->cache);
	snprintf(rm, sizeof(rm), "rm -rf '%s'", store->base_dir);
	CU_ASSERT_EQUAL(system(rm), 0);
}
