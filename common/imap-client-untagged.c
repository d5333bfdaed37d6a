/* SPDX-License-Identifier: MIT */
/* imap-client-untagged: untagged responses kept as shared, self-contained copies, and the imaplib-style response pool. */
#include "config.h"
#include "imap-client-untagged.h"

#include <assert.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define IMAP_CLIENT_UNTAGGED_POOL_FIRST 8 /* a login leaves a few codes and CAPABILITY */

static void args_measure(const struct imap_arg *args, unsigned int count, size_t *nargs, size_t *nbytes)
{
	for (unsigned int i = 0; i < count; i++) {
		const struct imap_arg *arg = &args[i];

		(*nargs)++;
		if (arg->type == IMAP_ARG_LIST)
			args_measure(arg->list, arg->list_count, nargs, nbytes);
		else if (arg->type != IMAP_ARG_NIL && arg->type != IMAP_ARG_LITERAL_STREAMED)
			*nbytes += (size_t)arg->len + 1;
	}
}

/* Copies args into dst (count slots), children into *pool, bytes into *bytes. */
static void args_copy(struct imap_arg *dst, const struct imap_arg *args, unsigned int count,
		      struct imap_arg **pool, char **bytes)
{
	for (unsigned int i = 0; i < count; i++) {
		const struct imap_arg *arg = &args[i];
		struct imap_arg *copy = &dst[i];

		*copy = *arg;
		if (arg->type == IMAP_ARG_LIST) {
			struct imap_arg *children = *pool;

			*pool += arg->list_count;
			args_copy(children, arg->list, arg->list_count, pool, bytes);
			copy->list = children;
		} else if (arg->type != IMAP_ARG_NIL && arg->type != IMAP_ARG_LITERAL_STREAMED) {
			memcpy(*bytes, arg->str, (size_t)arg->len);
			(*bytes)[arg->len] = '\0';
			copy->str = *bytes;
			*bytes += arg->len + 1;
		}
	}
}

/* One allocation holding the response, the whole line's args (count of
   them; the data starts at first) and all their bytes. */
struct imap_client_untagged *imap_client_untagged_new(const char *keyword, bool has_number, uint32_t number,
						 const struct imap_arg *args, unsigned int count,
						 unsigned int first, const char *code, const char *text)
{
	size_t nargs = count > 0 ? 1 : 0, nbytes = strlen(keyword) + 1;
	struct imap_client_untagged *untagged;
	struct imap_arg *pool;
	char *bytes;

	args_measure(args, count, &nargs, &nbytes);
	if (code != NULL)
		nbytes += strlen(code) + 1;
	if (text != NULL)
		nbytes += strlen(text) + 1;
	untagged = calloc(1, sizeof(*untagged) + nargs * sizeof(struct imap_arg) + nbytes);
	if (untagged == NULL)
		abort(); /* tier 2: out of memory is not a peer's doing */
	pool = (struct imap_arg *)(untagged + 1);
	bytes = (char *)(pool + nargs);
	if (count > 0) {
		struct imap_arg *line = pool++, *top = pool;

		pool += count;
		args_copy(top, args, count, &pool, &bytes);
		line->type = IMAP_ARG_LIST;
		line->list = top;
		line->list_count = count;
		untagged->line = line;
		untagged->args = top + first;
		untagged->args_count = count - first;
	}
	untagged->keyword = bytes;
	for (const char *p = keyword; *p != '\0'; p++)
		*bytes++ = (char)toupper((unsigned char)*p);
	*bytes++ = '\0';
	if (code != NULL) {
		untagged->code = bytes;
		bytes = stpcpy(bytes, code) + 1;
	}
	if (text != NULL) {
		untagged->text = bytes;
		bytes = stpcpy(bytes, text) + 1;
	}
	untagged->has_number = has_number;
	untagged->number = number;
	untagged->refcount = 1;
	return untagged;
}

bool imap_client_untagged_borrow(struct imap_client_untagged *untagged, struct imap_arg *line, char *keyword_buf,
				 size_t keyword_size, const char *keyword, bool has_number, uint32_t number,
				 const struct imap_arg *line_args, unsigned int count, unsigned int first,
				 const char *code, const char *text)
{
	size_t len = strlen(keyword);

	if (len >= keyword_size || count == 0)
		return false;
	for (size_t i = 0; i <= len; i++)
		keyword_buf[i] = (char)toupper((unsigned char)keyword[i]);
	*line = (struct imap_arg){ .type = IMAP_ARG_LIST, .str = "", .list = line_args, .list_count = count };
	*untagged = (struct imap_client_untagged){
		.line = line, .keyword = keyword_buf, .has_number = has_number, .number = number,
		.args = line_args + first, .args_count = count - first, .code = code, .text = text, .refcount = 1,
	};
	return true;
}

void imap_client_untagged_unref(struct imap_client_untagged **untagged)
{
	if (*untagged == NULL)
		return;
	assert((*untagged)->refcount > 0);
	if (--(*untagged)->refcount == 0)
		free(*untagged);
	*untagged = NULL;
}

void imap_client_untagged_ref(struct imap_client_untagged *untagged)
{
	assert(untagged->refcount > 0);
	untagged->refcount++;
}

void imap_client_untagged_pool_add(struct imap_client_untagged_pool *pool,
				   struct imap_client_untagged *untagged)
{
	if (pool->count == IMAP_CLIENT_UNTAGGED_POOL_MAX) {
		imap_client_untagged_unref(&pool->entries[0]);
		memmove(&pool->entries[0], &pool->entries[1], (pool->count - 1) * sizeof(pool->entries[0]));
		pool->count--;
	}
	if (pool->count == pool->capacity) {
		unsigned int capacity = pool->capacity == 0 ? IMAP_CLIENT_UNTAGGED_POOL_FIRST :
							      pool->capacity * 2;
		struct imap_client_untagged **entries;

		if (capacity > IMAP_CLIENT_UNTAGGED_POOL_MAX)
			capacity = IMAP_CLIENT_UNTAGGED_POOL_MAX;
		entries = realloc(pool->entries, capacity * sizeof(*entries));
		if (entries == NULL)
			abort(); /* tier 2: out of memory is not a peer's doing */
		pool->entries = entries;
		pool->capacity = capacity;
	}
	imap_client_untagged_ref(untagged);
	pool->entries[pool->count++] = untagged;
}

struct imap_client_untagged *imap_client_untagged_pool_pop(struct imap_client_untagged_pool *pool,
							   const char *keyword)
{
	for (unsigned int i = 0; i < pool->count; i++) {
		struct imap_client_untagged *untagged = pool->entries[i];

		if (strcasecmp(untagged->keyword, keyword) != 0)
			continue;
		memmove(&pool->entries[i], &pool->entries[i + 1], (pool->count - i - 1) * sizeof(pool->entries[0]));
		pool->count--;
		return untagged;
	}
	return NULL;
}

void imap_client_untagged_pool_clear(struct imap_client_untagged_pool *pool)
{
	for (unsigned int i = 0; i < pool->count; i++)
		imap_client_untagged_unref(&pool->entries[i]);
	free(pool->entries);
	pool->entries = NULL;
	pool->count = 0;
	pool->capacity = 0;
}
