/* SPDX-License-Identifier: MIT */
/* mime-scan: fast byte scans for line ends, eight bytes at a time. */
#ifndef IMAPCACHE_MIME_SCAN_H
#define IMAPCACHE_MIME_SCAN_H

#include <stddef.h>

/* Index of the first CR or LF in data[0..len), or len when there is none. */
size_t mime_scan_line_end(const unsigned char *data, size_t len);

/* Counts the LFs in data[0..len) into *lf_r and, of those, the ones
   preceded by a CR (also counting a CR just before data when prev_cr). */
void mime_scan_count_lines(const unsigned char *data, size_t len, int prev_cr,
			   size_t *lf_r, size_t *crlf_r);

#endif
