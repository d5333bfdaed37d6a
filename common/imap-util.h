/* SPDX-License-Identifier: MIT */
/* imap-util: the small conversions Python's imaplib offers (dates, tags, flags, quoting), with the same results. */
#ifndef IMAPCACHE_IMAP_UTIL_H
#define IMAPCACHE_IMAP_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct evbuffer;

/* "\"DD-Mon-YYYY HH:MM:SS +HHMM\"" and its NUL. */
#define IMAP_UTIL_INTERNALDATE_SIZE 29
/* Longer strings go as literals: a quoted string must fit in a line and
   stay readable in logs; mailbox names and passwords are far shorter. */
#define IMAP_UTIL_MAX_QUOTED 1024
/* Int2AP of any uint64_t: 16 letters, and the NUL. */
#define IMAP_UTIL_INT2AP_SIZE 17

/* A piece of a caller's buffer. */
struct imap_util_span {
	const char *data;
	size_t len;
};

/*
 * imaplib.Internaldate2tuple: finds INTERNALDATE "DD-Mon-YYYY HH:MM:SS
 * +HHMM" in the first line of resp (the last such that matches, like
 * imaplib's greedy pattern; the day may be " 7"; the month is case
 * sensitive) and gives the moment as seconds since the epoch (*utc_r) and
 * the zone's offset east of UTC in minutes (*zone_minutes_r; may be NULL).
 * Out-of-range fields (day 39, hour 25) are carried over as Python's
 * calendar.timegm does. Returns false, outputs untouched, when nothing
 * matches (imaplib's None).
 */
bool imap_util_internaldate_parse(const char *resp, size_t len, time_t *utc_r, int *zone_minutes_r);
/* The value alone, as a FETCH INTERNALDATE or APPEND date-time string holds
   it: exactly "DD-Mon-YYYY HH:MM:SS +HHMM" (26 bytes), same rules. */
bool imap_util_date_time_parse(const char *str, size_t len, time_t *utc_r, int *zone_minutes_r);
/* Same as imap_util_internaldate_parse, and the result as local time, exactly what Internaldate2tuple gives. */
bool imap_util_internaldate2tuple(const char *resp, size_t len, struct tm *local_r);

/* imaplib.Time2Internaldate for an aware datetime: utc shown in the zone
   zone_minutes east of UTC, with the quotes, e.g. "\"07-Jul-2024 10:00:00
   +0200\"". The day has a leading zero as imaplib writes it. */
void imap_util_time2internaldate(time_t utc, int zone_minutes, char out[IMAP_UTIL_INTERNALDATE_SIZE]);
/* imaplib.Time2Internaldate for a number: utc in the local time zone. */
void imap_util_time2internaldate_local(time_t utc, char out[IMAP_UTIL_INTERNALDATE_SIZE]);

/* imaplib.Int2AP: |num| in base 16 with the digits A..P, "" for 0 (the
   client core makes tag prefixes from it). Returns the length. */
size_t imap_util_int2ap(int64_t num, char out[IMAP_UTIL_INT2AP_SIZE]);

/* imaplib.ParseFlags: the words between the parentheses of the last
   "FLAGS (" in the first line of resp that a ')' follows (the words may
   continue over line ends), split at ASCII white space. Fills up to max
   spans pointing into resp and returns how many words there are (more
   than max means some were left out); 0 when nothing matches. */
unsigned int imap_util_parse_flags(const char *resp, size_t len, struct imap_util_span *flags_r,
				   unsigned int max);

/* How an astring must be sent. */
enum imap_util_astring_form {
	IMAP_UTIL_ASTRING_ATOM,    /* non-empty, only ASTRING-CHARs, not "NIL" */
	IMAP_UTIL_ASTRING_QUOTED,  /* 7-bit without NUL, CR, LF, at most IMAP_UTIL_MAX_QUOTED */
	IMAP_UTIL_ASTRING_LITERAL, /* anything else: 8-bit, NUL, CR, LF, or long */
};
enum imap_util_astring_form imap_util_astring_form(const char *str, size_t len);

/* imaplib's _quote: str in double quotes with '\' and '"' escaped. The
   caller must have checked that the string may be quoted. Returns 0, or -1
   if the evbuffer could not grow. */
int imap_util_append_quoted(struct evbuffer *out, const char *str, size_t len);
/* Appends str as an atom or a quoted string and returns the form used.
   For IMAP_UTIL_ASTRING_LITERAL it appends nothing: the caller sends a
   literal ({n} and a continuation wait, or {n+}). *error_r is set to -1
   when the evbuffer could not grow (0 otherwise). */
enum imap_util_astring_form imap_util_append_astring(struct evbuffer *out, const char *str,
						     size_t len, int *error_r);

#endif
