/* SPDX-License-Identifier: MIT */
/* imap-util: the small conversions Python's imaplib offers (dates, tags, flags, quoting), with the same results. */
#include "config.h"
#include "imap-util.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SECONDS_PER_DAY 86400

static const char *const month_names[12] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

/* Days from 1970-01-01 to year-month-01 of the proleptic Gregorian calendar. */
static int64_t days_from_civil(int64_t year, unsigned int month)
{
	year -= month <= 2;
	int64_t era = (year >= 0 ? year : year - 399) / 400;
	int64_t year_of_era = year - era * 400;
	int64_t day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5;
	int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
	return era * 146097 + day_of_era - 719468;
}

/* The civil date of a day counted from 1970-01-01. */
static void civil_from_days(int64_t days, int64_t *year_r, unsigned int *month_r, unsigned int *day_r)
{
	days += 719468;
	int64_t era = (days >= 0 ? days : days - 146096) / 146097;
	int64_t day_of_era = days - era * 146097;
	int64_t year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
	int64_t day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
	int64_t mp = (5 * day_of_year + 2) / 153;
	*day_r = (unsigned int)(day_of_year - (153 * mp + 2) / 5 + 1);
	*month_r = (unsigned int)(mp < 10 ? mp + 3 : mp - 9);
	*year_r = year_of_era + era * 400 + (*month_r <= 2);
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int two_digits(const char *p)
{
	return (p[0] == ' ' ? 0 : (p[0] - '0') * 10) + (p[1] - '0');
}

/* Matches DD-Mon-YYYY HH:MM:SS +HHMM at p (26 bytes), and the '"' after it if quote_follows. */
static bool match_date(const char *p, bool quote_follows, time_t *utc_r, int *zone_minutes_r)
{
	unsigned int month = 0;

	if (!(p[0] == ' ' || (p[0] >= '0' && p[0] <= '3')) || !is_digit(p[1]) || p[2] != '-')
		return false;
	for (unsigned int i = 0; i < 12; i++) {
		if (memcmp(p + 3, month_names[i], 3) == 0)
			month = i + 1;
	}
	if (month == 0 || p[6] != '-' || p[11] != ' ' || p[14] != ':' || p[17] != ':' ||
	    p[20] != ' ' || (p[21] != '+' && p[21] != '-') || (quote_follows && p[26] != '"'))
		return false;
	static const int digit_positions[] = { 7, 8, 9, 10, 12, 13, 15, 16, 18, 19, 22, 23, 24, 25 };
	for (size_t i = 0; i < sizeof(digit_positions) / sizeof(digit_positions[0]); i++) {
		if (!is_digit(p[digit_positions[i]]))
			return false;
	}
	int64_t year = (p[7] - '0') * 1000 + (p[8] - '0') * 100 + (p[9] - '0') * 10 + (p[10] - '0');
	int64_t zone = (two_digits(p + 22) * 60 + two_digits(p + 24)) * (p[21] == '-' ? -1 : 1);
	int64_t seconds = (days_from_civil(year, month) + two_digits(p) - 1) * SECONDS_PER_DAY +
			  two_digits(p + 12) * 3600 + two_digits(p + 15) * 60 + two_digits(p + 18);
	*utc_r = (time_t)(seconds - zone * 60);
	if (zone_minutes_r != NULL)
		*zone_minutes_r = (int)zone;
	return true;
}

bool imap_util_internaldate_parse(const char *resp, size_t len, time_t *utc_r, int *zone_minutes_r)
{
	static const char prefix[] = "INTERNALDATE \"";
	const size_t prefix_len = sizeof(prefix) - 1, date_len = 27;
	const char *newline = memchr(resp, '\n', len);
	size_t first_line = newline != NULL ? (size_t)(newline - resp) : len;

	if (first_line < prefix_len)
		return false;
	/* imaplib's ".*" is greedy: the last place that matches wins. */
	for (size_t start = first_line - prefix_len + 1; start-- > 0;) {
		if (memcmp(resp + start, prefix, prefix_len) != 0)
			continue;
		if (len - start - prefix_len >= date_len &&
		    match_date(resp + start + prefix_len, true, utc_r, zone_minutes_r))
			return true;
	}
	return false;
}

bool imap_util_date_time_parse(const char *str, size_t len, time_t *utc_r, int *zone_minutes_r)
{
	return len == 26 && match_date(str, false, utc_r, zone_minutes_r);
}

bool imap_util_internaldate2tuple(const char *resp, size_t len, struct tm *local_r)
{
	time_t utc;

	if (!imap_util_internaldate_parse(resp, len, &utc, NULL))
		return false;
	return localtime_r(&utc, local_r) != NULL;
}

void imap_util_time2internaldate(time_t utc, int zone_minutes, char out[IMAP_UTIL_INTERNALDATE_SIZE])
{
	int64_t local = (int64_t)utc + (int64_t)zone_minutes * 60;
	int64_t days = local >= 0 ? local / SECONDS_PER_DAY : -((-local + SECONDS_PER_DAY - 1) / SECONDS_PER_DAY);
	int64_t second_of_day = local - days * SECONDS_PER_DAY;
	int64_t year;
	unsigned int month, day;
	unsigned int zone = (unsigned int)(zone_minutes < 0 ? -zone_minutes : zone_minutes);

	civil_from_days(days, &year, &month, &day);
	snprintf(out, IMAP_UTIL_INTERNALDATE_SIZE, "\"%02u-%s-%04d %02d:%02d:%02d %c%02u%02u\"", day,
		 month_names[month - 1], (int)year, (int)(second_of_day / 3600),
		 (int)(second_of_day / 60 % 60), (int)(second_of_day % 60), zone_minutes < 0 ? '-' : '+',
		 zone / 60 % 100, zone % 60);
}

void imap_util_time2internaldate_local(time_t utc, char out[IMAP_UTIL_INTERNALDATE_SIZE])
{
	struct tm local;

	if (localtime_r(&utc, &local) == NULL)
		memset(&local, 0, sizeof(local));
	imap_util_time2internaldate(utc, (int)(local.tm_gmtoff / 60), out);
}

size_t imap_util_int2ap(int64_t num, char out[IMAP_UTIL_INT2AP_SIZE])
{
	uint64_t value = num >= 0 ? (uint64_t)num : (uint64_t)(-(num + 1)) + 1;
	char reversed[IMAP_UTIL_INT2AP_SIZE];
	size_t len = 0;

	while (value != 0) {
		reversed[len++] = (char)('A' + value % 16);
		value /= 16;
	}
	for (size_t i = 0; i < len; i++)
		out[i] = reversed[len - 1 - i];
	out[len] = '\0';
	return len;
}

static bool is_python_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\x0b' || c == '\x0c';
}

unsigned int imap_util_parse_flags(const char *resp, size_t len, struct imap_util_span *flags_r,
				   unsigned int max)
{
	static const char prefix[] = "FLAGS (";
	const size_t prefix_len = sizeof(prefix) - 1;
	const char *newline = memchr(resp, '\n', len);
	size_t first_line = newline != NULL ? (size_t)(newline - resp) : len;
	const char *inside = NULL, *close = NULL;

	if (first_line < prefix_len)
		return 0;
	for (size_t start = first_line - prefix_len + 1; start-- > 0;) {
		if (memcmp(resp + start, prefix, prefix_len) != 0)
			continue;
		inside = resp + start + prefix_len;
		close = memchr(inside, ')', len - start - prefix_len);
		if (close != NULL)
			break;
	}
	if (close == NULL)
		return 0;
	unsigned int count = 0;
	for (const char *p = inside; p < close;) {
		while (p < close && is_python_space(*p))
			p++;
		if (p == close)
			break;
		const char *word = p;
		while (p < close && !is_python_space(*p))
			p++;
		if (count < max) {
			flags_r[count].data = word;
			flags_r[count].len = (size_t)(p - word);
		}
		count++;
	}
	return count;
}

static bool is_astring_char(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return false;
	return strchr("(){%*\"\\", c) == NULL;
}

enum imap_util_astring_form imap_util_astring_form(const char *str, size_t len)
{
	bool atom = len > 0 && !(len == 3 && strncasecmp(str, "NIL", 3) == 0);

	if (len > IMAP_UTIL_MAX_QUOTED)
		return IMAP_UTIL_ASTRING_LITERAL;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)str[i];
		if (c == '\0' || c == '\r' || c == '\n' || c >= 0x80)
			return IMAP_UTIL_ASTRING_LITERAL;
		if (!is_astring_char(c))
			atom = false;
	}
	return atom ? IMAP_UTIL_ASTRING_ATOM : IMAP_UTIL_ASTRING_QUOTED;
}

int imap_util_append_quoted(struct evbuffer *out, const char *str, size_t len)
{
	size_t start = 0;

	if (evbuffer_add(out, "\"", 1) < 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (str[i] != '"' && str[i] != '\\')
			continue;
		if (evbuffer_add(out, str + start, i - start) < 0 || evbuffer_add(out, "\\", 1) < 0)
			return -1;
		start = i;
	}
	if (evbuffer_add(out, str + start, len - start) < 0 || evbuffer_add(out, "\"", 1) < 0)
		return -1;
	return 0;
}

enum imap_util_astring_form imap_util_append_astring(struct evbuffer *out, const char *str,
						     size_t len, int *error_r)
{
	enum imap_util_astring_form form = imap_util_astring_form(str, len);

	*error_r = 0;
	if (form == IMAP_UTIL_ASTRING_ATOM)
		*error_r = evbuffer_add(out, str, len) < 0 ? -1 : 0;
	else if (form == IMAP_UTIL_ASTRING_QUOTED)
		*error_r = imap_util_append_quoted(out, str, len);
	return form;
}
