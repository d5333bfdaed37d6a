/* SPDX-License-Identifier: MIT */
/* unit-cache: a throwaway store of one account, its INBOX and a view of it, for the suites of the cache's users. */
#ifndef IMAPCACHED_UNIT_CACHE_H
#define IMAPCACHED_UNIT_CACHE_H

#include "cache.h"
#include "mailbox-view.h"

#include <stdint.h>

struct unit_cache {
	char base_dir[64];       /* /tmp/NAME-XXXXXX, removed by unit_cache_close */
	char cache_dir[128];     /* base_dir/cache: the store's directory */
	struct cache *cache;     /* account "alice" on upstream "up" */
	int64_t mailbox_id;      /* INBOX, UIDVALIDITY 7 */
	struct mailbox_view *view; /* the uids given, flags and MODSEQ not known */
};

/* Makes store: a new directory named after name, the store in it under
   settings (its dir is set here), INBOX and a view of count uids. Logs
   only warnings. A step that fails fails the test there (CUnit FATAL). */
void unit_cache_open(struct unit_cache *store, const char *name, struct cache_settings settings,
		     const uint32_t *uids, uint32_t count);
/* Frees store's view and store (the ones in it now: a test may have
   replaced them) and removes its directory. */
void unit_cache_close(struct unit_cache *store);

#endif
