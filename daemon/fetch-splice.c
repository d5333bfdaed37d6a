/* SPDX-License-Identifier: MIT */
/* fetch-splice: the values of the proxy's own FETCH of items a local answer can't vouch for, captured as the upstream wrote them. */
#include "config.h"
#include "fetch-splice.h"

#include "imap-fetch-items.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct splice_value {
	uint32_t uid;
	char *name;
	unsigned char *data;
	size_t len, alloc;
};

struct fetch_splice {
	struct imap_fetch_items *parser;
	struct splice_value *values;
	size_t count, alloc;
	size_t line_first;       /* values of the line being fed start here */
	uint32_t line_uid;       /* 0: the line named no UID (yet) */
	bool line_bad;           /* an item before its UID, or memory ran out */
	size_t bytes;
	bool overflow;           /* past FETCH_SPLICE_BYTES_MAX: nothing is kept */
};

static void splice_value_clear(struct splice_value *value)
{
	free(value->name);
	free(value->data);
	*value = (struct splice_value){ 0 };
}

/* Forgets the values from index first on. */
static void splice_truncate(struct fetch_splice *splice, size_t first)
{
	while (splice->count > first) {
		struct splice_value *value = &splice->values[--splice->count];

		splice->bytes -= value->len;
		splice_value_clear(value);
	}
}

/* Appends len bytes to the value being captured. Returns -1 past the
   limit or out of memory. */
static int splice_append(struct fetch_splice *splice, const void *data, size_t len)
{
	struct splice_value *value = &splice->values[splice->count - 1];

	if (splice->bytes + len > FETCH_SPLICE_BYTES_MAX) {
		splice->overflow = true;
		return -1;
	}
	if (value->len + len > value->alloc) {
		size_t alloc = value->alloc < 256 ? 256 : value->alloc;
		unsigned char *grown;

		while (alloc < value->len + len)
			alloc *= 2;
		grown = realloc(value->data, alloc);
		if (grown == NULL)
			return -1;
		value->data = grown;
		value->alloc = alloc;
	}
	memcpy(value->data + value->len, data, len);
	value->len += len;
	splice->bytes += len;
	return 0;
}

/* Starts a value of the line's message named name. Returns -1 out of memory. */
static int splice_begin(struct fetch_splice *splice, const char *name, size_t name_len)
{
	struct splice_value *value;

	if (splice->count == splice->alloc) {
		size_t alloc = splice->alloc < 16 ? 16 : splice->alloc * 2;
		struct splice_value *grown = realloc(splice->values, alloc * sizeof(*grown));

		if (grown == NULL)
			return -1;
		splice->values = grown;
		splice->alloc = alloc;
	}
	value = &splice->values[splice->count];
	*value = (struct splice_value){ .uid = splice->line_uid, .name = strndup(name, name_len) };
	if (value->name == NULL)
		return -1;
	splice->count++;
	return 0;
}

static void splice_event(const struct imap_fetch_items_event *event, void *context)
{
	struct fetch_splice *splice = context;
	char head[32];
	uint64_t uid;
	int ret = 0;

	if (splice->line_bad || splice->overflow)
		return;
	if (splice->line_uid == 0) {
		if (event->type == IMAP_FETCH_ITEMS_EVENT_ITEM && imap_fetch_items_name_is(event, "UID") &&
		    imap_fetch_items_parse_number(event->value, event->value_len, &uid) && uid > 0 && uid <= UINT32_MAX)
			splice->line_uid = (uint32_t)uid;
		else
			splice->line_bad = true;
		return;
	}
	switch (event->type) {
	case IMAP_FETCH_ITEMS_EVENT_ITEM:
		ret = splice_begin(splice, event->name, event->name_len);
		if (ret == 0)
			ret = splice_append(splice, event->value, event->value_len);
		break;
	case IMAP_FETCH_ITEMS_EVENT_LITERAL_BEGIN:
		snprintf(head, sizeof(head), "%s{%llu}\r\n", event->value_type == IMAP_FETCH_VALUE_LITERAL8 ? "~" : "",
			 (unsigned long long)event->literal_size);
		ret = splice_begin(splice, event->name, event->name_len);
		if (ret == 0)
			ret = splice_append(splice, head, strlen(head));
		break;
	case IMAP_FETCH_ITEMS_EVENT_LITERAL_DATA:
		ret = splice_append(splice, event->value, event->value_len);
		break;
	case IMAP_FETCH_ITEMS_EVENT_LITERAL_END:
		break;
	}
	if (ret < 0)
		splice->line_bad = true;
}

struct fetch_splice *fetch_splice_new(void)
{
	struct fetch_splice *splice = calloc(1, sizeof(*splice));

	if (splice == NULL)
		return NULL;
	splice->parser = imap_fetch_items_new(splice_event, splice);
	if (splice->parser == NULL) {
		free(splice);
		return NULL;
	}
	return splice;
}

void fetch_splice_free(struct fetch_splice **splice_p)
{
	struct fetch_splice *splice = *splice_p;

	if (splice == NULL)
		return;
	*splice_p = NULL;
	splice_truncate(splice, 0);
	free(splice->values);
	imap_fetch_items_free(&splice->parser);
	free(splice);
}

static int value_compare(const void *a, const void *b)
{
	const struct splice_value *x = a, *y = b;

	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

void fetch_splice_feed(struct fetch_splice *splice, const unsigned char *data, size_t len, bool line_end)
{
	enum imap_fetch_items_result result = imap_fetch_items_feed(splice->parser, data, len, line_end);

	if (result == IMAP_FETCH_ITEMS_NEED_MORE)
		return;
	if (result == IMAP_FETCH_ITEMS_COMPLETE && !splice->line_bad && !splice->overflow && splice->line_uid != 0) {
		/* kept in ascending UIDs for the lookup: the upstream answers so */
		if (splice->line_first > 0 && splice->count > splice->line_first &&
		    splice->values[splice->line_first - 1].uid > splice->line_uid)
			qsort(splice->values, splice->count, sizeof(*splice->values), value_compare);
		splice->line_first = splice->count;
	} else {
		splice_truncate(splice, splice->line_first);
	}
	if (!line_end) { /* an error seen mid-line: the parser skips the rest of it */
		splice->line_bad = true;
		return;
	}
	splice->line_uid = 0;
	splice->line_bad = false;
}

bool fetch_splice_lookup(const struct fetch_splice *splice, uint32_t uid, const char *name,
			 const unsigned char **value_r, size_t *len_r)
{
	size_t low = 0, high;

	if (splice == NULL || splice->overflow)
		return false;
	high = splice->line_first;
	while (low < high) {
		size_t middle = low + (high - low) / 2;

		if (splice->values[middle].uid < uid)
			low = middle + 1;
		else
			high = middle;
	}
	for (; low < splice->line_first && splice->values[low].uid == uid; low++) {
		if (strcmp(splice->values[low].name, name) == 0) {
			*value_r = splice->values[low].data != NULL ? splice->values[low].data :
								      (const unsigned char *)"";
			*len_r = splice->values[low].len;
			return true;
		}
	}
	return false;
}

size_t fetch_splice_count(const struct fetch_splice *splice)
{
	return splice->line_first;
}
