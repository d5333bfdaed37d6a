/* SPDX-License-Identifier: MIT */
/* imap-seqset: IMAP sequence sets ("1:3,5,7:*", "$") parsed into ranges. */
#include "config.h"
#include "imap-seqset.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads a seq-number at *pos: digits or "*" (*star_r). Returns 0 or an error. */
static enum imap_seqset_error read_number(const char *str, size_t len, size_t *pos, unsigned int allow,
					  uint32_t *number_r, bool *star_r)
{
	size_t start = *pos;
	uint64_t value = 0;

	*star_r = false;
	if (*pos < len && str[*pos] == '*') {
		if ((allow & IMAP_SEQSET_ALLOW_STAR) == 0)
			return IMAP_SEQSET_ERROR_STAR;
		(*pos)++;
		*number_r = IMAP_SEQSET_STAR;
		*star_r = true;
		return IMAP_SEQSET_ERROR_NONE;
	}
	while (*pos < len && str[*pos] >= '0' && str[*pos] <= '9') {
		value = value * 10 + (uint64_t)(str[*pos] - '0');
		if (value > UINT32_MAX)
			return IMAP_SEQSET_ERROR_OVERFLOW;
		(*pos)++;
	}
	if (*pos == start)
		return *pos == len || str[*pos] == ',' ? IMAP_SEQSET_ERROR_EMPTY : IMAP_SEQSET_ERROR_SYNTAX;
	if (value == 0)
		return IMAP_SEQSET_ERROR_ZERO;
	*number_r = (uint32_t)value;
	return IMAP_SEQSET_ERROR_NONE;
}

static enum imap_seqset_error add_range(struct imap_seqset *set, uint32_t first, bool first_star, uint32_t last,
				       bool last_star)
{
	/* "*" is the larger end, even beside the largest number */
	bool swap = first > last || (first == last && first_star && !last_star);

	if (set->count >= IMAP_SEQSET_MAX_RANGES)
		return IMAP_SEQSET_ERROR_TOO_MANY;
	if (set->count == set->capacity) {
		unsigned int capacity = set->capacity == 0 ? 16 : set->capacity * 2;
		struct imap_seqset_range *ranges = realloc(set->ranges, capacity * sizeof(*ranges));
		if (ranges == NULL)
			return IMAP_SEQSET_ERROR_OUT_OF_MEMORY;
		set->ranges = ranges;
		set->capacity = capacity;
	}
	set->ranges[set->count].first = swap ? last : first;
	set->ranges[set->count].first_star = swap ? last_star : first_star;
	set->ranges[set->count].last = swap ? first : last;
	set->ranges[set->count].last_star = swap ? first_star : last_star;
	set->count++;
	return IMAP_SEQSET_ERROR_NONE;
}

int imap_seqset_parse(struct imap_seqset *set, const char *str, size_t len, unsigned int allow,
		      enum imap_seqset_error *error_r)
{
	enum imap_seqset_error error = IMAP_SEQSET_ERROR_NONE;
	size_t pos = 0;

	set->count = 0;
	set->saved = false;
	if (len == 1 && str[0] == '$') {
		if ((allow & IMAP_SEQSET_ALLOW_SAVED) == 0) {
			error = IMAP_SEQSET_ERROR_SAVED;
			goto fail;
		}
		set->saved = true;
		*error_r = IMAP_SEQSET_ERROR_NONE;
		return 0;
	}
	if (len == 0) {
		error = IMAP_SEQSET_ERROR_EMPTY;
		goto fail;
	}
	for (;;) {
		uint32_t first, last;
		bool first_star, last_star;
		if ((error = read_number(str, len, &pos, allow, &first, &first_star)) != IMAP_SEQSET_ERROR_NONE)
			goto fail;
		last = first;
		last_star = first_star;
		if (pos < len && str[pos] == ':') {
			pos++;
			if ((error = read_number(str, len, &pos, allow, &last, &last_star)) != IMAP_SEQSET_ERROR_NONE) {
				if (error == IMAP_SEQSET_ERROR_EMPTY)
					error = IMAP_SEQSET_ERROR_SYNTAX;
				goto fail;
			}
		}
		if ((error = add_range(set, first, first_star, last, last_star)) != IMAP_SEQSET_ERROR_NONE)
			goto fail;
		if (pos == len)
			break;
		if (str[pos] != ',') {
			error = IMAP_SEQSET_ERROR_SYNTAX;
			goto fail;
		}
		pos++;
	}
	*error_r = IMAP_SEQSET_ERROR_NONE;
	return 0;
fail:
	set->count = 0;
	set->saved = false;
	*error_r = error;
	return -1;
}

const char *imap_seqset_error_message(enum imap_seqset_error error)
{
	switch (error) {
	case IMAP_SEQSET_ERROR_NONE: return "No error";
	case IMAP_SEQSET_ERROR_EMPTY: return "Empty sequence set or element";
	case IMAP_SEQSET_ERROR_ZERO: return "0 is not a valid sequence number or UID";
	case IMAP_SEQSET_ERROR_OVERFLOW: return "Number in sequence set too large";
	case IMAP_SEQSET_ERROR_SYNTAX: return "Invalid sequence set";
	case IMAP_SEQSET_ERROR_STAR: return "'*' is not allowed in this set";
	case IMAP_SEQSET_ERROR_SAVED: return "'$' is not allowed here";
	case IMAP_SEQSET_ERROR_TOO_MANY: return "Sequence set has too many ranges";
	case IMAP_SEQSET_ERROR_OUT_OF_MEMORY: return "Out of memory";
	}
	return "Invalid sequence set";
}

uint32_t imap_seqset_range_first(const struct imap_seqset_range *range, uint32_t star)
{
	return range->first_star ? star : range->first;
}

uint32_t imap_seqset_range_last(const struct imap_seqset_range *range, uint32_t star)
{
	return range->last_star ? star : range->last;
}

bool imap_seqset_range_has_star(const struct imap_seqset_range *range)
{
	return range->first_star || range->last_star;
}

bool imap_seqset_contains(const struct imap_seqset *set, uint32_t number, uint32_t star)
{
	for (unsigned int i = 0; i < set->count; i++) {
		uint32_t a = imap_seqset_range_first(&set->ranges[i], star);
		uint32_t b = imap_seqset_range_last(&set->ranges[i], star);
		if ((a <= b && number >= a && number <= b) || (a > b && number >= b && number <= a))
			return true;
	}
	return false;
}

static int compare_ranges(const void *a, const void *b)
{
	const struct imap_seqset_range *x = a, *y = b;
	return x->first < y->first ? -1 : x->first > y->first;
}

struct imap_seqset_range *imap_seqset_resolve(const struct imap_seqset *set, uint32_t star, unsigned int *count_r)
{
	struct imap_seqset_range *ranges = malloc((set->count + 1) * sizeof(*ranges));
	unsigned int count = 0;

	if (ranges == NULL)
		return NULL;
	for (unsigned int i = 0; i < set->count; i++) {
		uint32_t a = imap_seqset_range_first(&set->ranges[i], star);
		uint32_t b = imap_seqset_range_last(&set->ranges[i], star);

		ranges[i] = (struct imap_seqset_range){ .first = a < b ? a : b, .last = a < b ? b : a };
	}
	qsort(ranges, set->count, sizeof(*ranges), compare_ranges);
	for (unsigned int i = 0; i < set->count; i++) {
		if (count > 0 && (uint64_t)ranges[i].first <= (uint64_t)ranges[count - 1].last + 1) {
			if (ranges[i].last > ranges[count - 1].last)
				ranges[count - 1].last = ranges[i].last;
		} else {
			ranges[count++] = ranges[i];
		}
	}
	*count_r = count;
	return ranges;
}

uint64_t imap_seqset_count(const struct imap_seqset *set, uint32_t star)
{
	unsigned int count;
	struct imap_seqset_range *ranges = imap_seqset_resolve(set, star, &count);
	uint64_t total = 0;

	if (ranges == NULL)
		return 0;
	for (unsigned int i = 0; i < count; i++)
		total += (uint64_t)ranges[i].last - ranges[i].first + 1;
	free(ranges);
	return total;
}

void imap_seqset_free(struct imap_seqset *set)
{
	free(set->ranges);
	set->ranges = NULL;
	set->count = 0;
	set->capacity = 0;
	set->saved = false;
}

size_t imap_seqset_format(char *buf, size_t size, const uint32_t *numbers, size_t count)
{
	size_t used = 0;

	if (size > 0)
		buf[0] = '\0';
	for (size_t i = 0; i < count;) {
		size_t last = i;
		int n;

		while (last + 1 < count && numbers[last + 1] == numbers[last] + 1)
			last++;
		if (last > i)
			n = snprintf(used < size ? buf + used : NULL, used < size ? size - used : 0,
				     "%s%" PRIu32 ":%" PRIu32, i > 0 ? "," : "", numbers[i], numbers[last]);
		else
			n = snprintf(used < size ? buf + used : NULL, used < size ? size - used : 0, "%s%" PRIu32,
				     i > 0 ? "," : "", numbers[i]);
		used += (size_t)n;
		i = last + 1;
	}
	return used;
}
