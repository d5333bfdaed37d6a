/* SPDX-License-Identifier: MIT */
/* mime-scan: fast byte scans for line ends, 8, 16 or 32 bytes at a time. */
#ifndef IMAPCACHE_MIME_SCAN_H
#define IMAPCACHE_MIME_SCAN_H

#include <stddef.h>

/* Index of the first CR or LF in data[0..len), or len when there is none. */
size_t mime_scan_line_end(const unsigned char *data, size_t len);

/* Counts the LFs in data[0..len) into *lf_r and, of those, the ones
   preceded by a CR (also counting a CR just before data when prev_cr). */
void mime_scan_count_lines(const unsigned char *data, size_t len, int prev_cr,
			   size_t *lf_r, size_t *crlf_r);

/* What mime_scan_body_lines found in the lines it took. */
struct mime_scan_lines {
	size_t lf, crlf;        /* line ends that are LF, and of them CRLF */
	int last_lf, last_crlf; /* the last line's end */
};

/* The length of the complete lines at the start of data that can only be
   body text of a leaf: it stops before a line that starts with '-' (maybe
   a boundary), CR or LF (an empty line ends a delivery-status block),
   before an incomplete line and before one whose CR may get its LF in the
   next input. Line ends are CRLF, LF or a lone CR. data[0] is a line
   start. 32 (AVX2) or 16 bytes at a time where lines end in LF or CRLF. */
size_t mime_scan_body_lines(const unsigned char *data, size_t len, struct mime_scan_lines *lines_r);

enum mime_scan_path {
	MIME_SCAN_BEST,    /* AVX2 when the CPU has it, else SSE2 */
	MIME_SCAN_SSE2,    /* 16-byte blocks (where the compiler targets SSE2) */
	MIME_SCAN_SCALAR,  /* line by line */
};
/* mime_scan_body_lines with a chosen implementation; all give the same
   result (the unit tests compare them). */
size_t mime_scan_body_lines_with(const unsigned char *data, size_t len, enum mime_scan_path path,
				 struct mime_scan_lines *lines_r);

#endif
