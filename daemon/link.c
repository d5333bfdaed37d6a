/* SPDX-License-Identifier: MIT */
/* link: what the daemon has measured of the link to each upstream (its round trip, its transfer rate), for choices that trade bytes against round trips. */
#include "config.h"
#include "link.h"

#include <stdlib.h>
#include <string.h>

struct link_entry {
	char *upstream;
	struct link_facts facts;
	uint64_t noted;   /* link_clock when last noted: the oldest goes when the table is full */
};

static struct link_entry link_entries[LINK_UPSTREAMS_MAX];
static uint64_t link_clock;

static struct link_entry *link_find(const char *upstream)
{
	for (unsigned int i = 0; upstream != NULL && i < LINK_UPSTREAMS_MAX; i++) {
		if (link_entries[i].upstream != NULL && strcmp(link_entries[i].upstream, upstream) == 0)
			return &link_entries[i];
	}
	return NULL;
}

/* upstream's entry, made (in a free slot, or the least recently noted)
   when new; NULL when upstream is NULL or memory runs out. */
static struct link_entry *link_entry(const char *upstream)
{
	struct link_entry *entry = link_find(upstream), *oldest = &link_entries[0];
	char *name;

	if (entry != NULL || upstream == NULL)
		return entry;
	for (unsigned int i = 0; i < LINK_UPSTREAMS_MAX; i++) {
		if (link_entries[i].upstream == NULL) {
			oldest = &link_entries[i];
			break;
		}
		if (link_entries[i].noted < oldest->noted)
			oldest = &link_entries[i];
	}
	if ((name = strdup(upstream)) == NULL)
		return NULL;
	free(oldest->upstream);
	*oldest = (struct link_entry){ .upstream = name };
	return oldest;
}

/* The moving average after sample (the sample itself when first). */
static uint64_t link_average(uint64_t average, uint64_t sample)
{
	if (average == 0)
		return sample;
	if (sample >= average)
		return average + ((sample - average) >> LINK_AVERAGE_SHIFT);
	return average - ((average - sample) >> LINK_AVERAGE_SHIFT);
}

/* value * scale / divisor (divisor nonzero), UINT64_MAX past it. */
static uint64_t link_scaled(uint64_t value, uint64_t scale, uint64_t divisor)
{
	if (value <= UINT64_MAX / scale)
		return value * scale / divisor;
	return value / divisor <= UINT64_MAX / scale ? value / divisor * scale : UINT64_MAX;
}

struct link_facts link_facts_get(const char *upstream)
{
	const struct link_entry *entry = link_find(upstream);

	return entry != NULL ? entry->facts : (struct link_facts){ 0, 0 };
}

void link_note_round_trip(const char *upstream, uint64_t usec)
{
	struct link_entry *entry = usec > 0 ? link_entry(upstream) : NULL;

	if (entry == NULL)
		return;
	entry->facts.round_trip_usec = link_average(entry->facts.round_trip_usec, usec);
	entry->noted = ++link_clock;
}

void link_note_transfer(const char *upstream, uint64_t bytes, uint64_t usec)
{
	struct link_entry *entry = bytes >= LINK_TRANSFER_MIN_BYTES && usec > 0 ? link_entry(upstream) : NULL;
	uint64_t rate;

	if (entry == NULL)
		return;
	rate = link_scaled(bytes, 1000000, usec);
	entry->facts.bytes_per_sec = link_average(entry->facts.bytes_per_sec, rate > 0 ? rate : 1);
	entry->noted = ++link_clock;
}

uint64_t link_transfer_usec(const struct link_facts *facts, uint64_t bytes)
{
	return facts->bytes_per_sec == 0 ? 0 : link_scaled(bytes, 1000000, facts->bytes_per_sec);
}

void link_forget_all(void)
{
	for (unsigned int i = 0; i < LINK_UPSTREAMS_MAX; i++) {
		free(link_entries[i].upstream);
		link_entries[i] = (struct link_entry){ 0 };
	}
	link_clock = 0;
}
