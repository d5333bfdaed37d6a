/* SPDX-License-Identifier: MIT */
/* link: what the daemon has measured of the link to each upstream (its round trip, its transfer rate), for choices that trade bytes against round trips. */
#ifndef IMAPCACHED_LINK_H
#define IMAPCACHED_LINK_H

#include <stdint.h>

/*
 * Some choices cost bytes one way and a round trip the other: a plain
 * client's sync learns keywords by a second flight of searches or by
 * every message's FLAGS (sync.h); prefetch sizes its first batch. Which
 * is cheaper depends on the link, which only measuring tells: 400 KB
 * take 160 ms at 20 Mbit/s and 3 ms on a LAN, a round trip 1 ms on a LAN
 * and 40 ms or more across a continent.
 *
 * Each upstream (by its name in the config) keeps a moving average of
 * both, from what the sessions see: the time from a SELECT's flight to
 * its answer (a round trip and the server's work, so never less than a
 * round trip; only when nothing else was on its way), and the rate of the
 * proxy's own FETCHes of at least LINK_TRANSFER_MIN_BYTES whose server
 * work is light (the sync's FLAGS, whole messages; not header batches,
 * which make Dovecot parse every message), from their first line to
 * their tagged reply. Zero means not measured yet.
 * All of it runs on the event loop's thread.
 */

#define LINK_TRANSFER_MIN_BYTES (32 * 1024) /* smaller responses time the server, not the link */
#define LINK_UPSTREAMS_MAX 64               /* upstreams remembered; the least recently noted goes first */
#define LINK_AVERAGE_SHIFT 2                /* each sample moves the average a quarter of the way */

struct link_facts {
	uint64_t round_trip_usec; /* 0: not measured */
	uint64_t bytes_per_sec;   /* 0: not measured */
};

/* What is known of upstream's link (zeros when nothing). */
struct link_facts link_facts_get(const char *upstream);

/* A command's round trip: usec from sending to its answer. */
void link_note_round_trip(const char *upstream, uint64_t usec);

/* A response of bytes that took usec from its first line to its tagged
   reply; ignored under LINK_TRANSFER_MIN_BYTES or with usec 0. */
void link_note_transfer(const char *upstream, uint64_t bytes, uint64_t usec);

/* Microseconds the link takes to carry bytes at its measured rate (0 when
   the rate is not known). */
uint64_t link_transfer_usec(const struct link_facts *facts, uint64_t bytes);

/* Forgets every upstream (tests). */
void link_forget_all(void);

#endif
