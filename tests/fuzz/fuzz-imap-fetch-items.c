/* SPDX-License-Identifier: MIT */
/* fuzz-imap-fetch-items: any server line gives items or a clear result, the same however it is split. */
#include "config.h"
#include "imap-fetch-items.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A running FNV-1a digest of the events, literal pieces hashed as one stream. */
struct digest {
	uint64_t hash;
	size_t events;
};

static void mix(struct digest *digest, const void *data, size_t len)
{
	const unsigned char *bytes = data;

	for (size_t i = 0; i < len; i++) {
		digest->hash ^= bytes[i];
		digest->hash *= 1099511628211ULL;
	}
}

static void on_event(const struct imap_fetch_items_event *event, void *context)
{
	struct digest *digest = context;
	uint64_t number = event->type == IMAP_FETCH_ITEMS_EVENT_LITERAL_DATA ? 0 : event->type;

	/* touch every byte so that the sanitizers check the pointers */
	if (event->type != IMAP_FETCH_ITEMS_EVENT_LITERAL_DATA) {
		digest->events++;
		mix(digest, &number, sizeof(number));
		mix(digest, &event->seq, sizeof(event->seq));
		mix(digest, event->name, event->name_len + 1);
	}
	if (event->type == IMAP_FETCH_ITEMS_EVENT_ITEM) {
		if (event->content < event->value || event->content + event->content_len > event->value + event->value_len)
			abort(); /* the content lies inside the value */
		mix(digest, event->value, event->value_len);
	} else if (event->type == IMAP_FETCH_ITEMS_EVENT_LITERAL_DATA) {
		mix(digest, event->value, event->value_len);
	} else if (event->type == IMAP_FETCH_ITEMS_EVENT_LITERAL_BEGIN) {
		mix(digest, &event->literal_size, sizeof(event->literal_size));
	}
}

/* Feeds every line of data (each ends after an LF, the last at the end)
   in parts of part bytes; returns the digest with the results mixed in. */
static uint64_t run(const uint8_t *data, size_t size, size_t part, size_t *events_r)
{
	struct digest digest = { 14695981039346656037ULL, 0 };
	struct imap_fetch_items *items = imap_fetch_items_new(on_event, &digest);
	size_t start = 0;

	if (items == NULL)
		abort();
	while (start < size) {
		const uint8_t *lf = memchr(data + start, '\n', size - start);
		size_t end = lf != NULL ? (size_t)(lf - data) + 1 : size;

		for (size_t pos = start; pos < end;) {
			size_t n = end - pos < part ? end - pos : part;
			enum imap_fetch_items_result result = imap_fetch_items_feed(items, data + pos, n, pos + n == end);

			pos += n;
			if (result == IMAP_FETCH_ITEMS_COMPLETE && pos != end)
				abort(); /* complete only at the line's end */
			if (pos == end) {
				if (result == IMAP_FETCH_ITEMS_NEED_MORE)
					abort(); /* a line end always gives a verdict */
				mix(&digest, &result, sizeof(result));
			}
		}
		start = end;
	}
	imap_fetch_items_free(&items);
	*events_r = digest.events;
	return digest.hash;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t part, whole_events, split_events;
	uint64_t whole, split;

	if (size < 1)
		return 0;
	part = (size_t)data[0] % 17 + 1;
	whole = run(data + 1, size - 1, size, &whole_events);
	split = run(data + 1, size - 1, part, &split_events);
	if (whole != split || whole_events != split_events)
		abort(); /* a split changed what was reported */
	return 0;
}
