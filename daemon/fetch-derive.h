/* SPDX-License-Identifier: MIT */
/* fetch-derive: the items a stored message yields, read as Dovecot 2.3 reads it. */
#ifndef IMAPCACHED_FETCH_DERIVE_H
#define IMAPCACHED_FETCH_DERIVE_H

#include <stdbool.h>
#include <stddef.h>

struct mime_buffer;
struct mime_message;

/* HEADER.FIELDS (.NOT) of a plain header block: the field list of section
   ("HEADER.FIELDS (A B)") applied by the MIME library, appended to out.
   Returns 0, or -1 when the block is not plain or the section is not
   one the library reads. */
int fetch_derive_fields(const unsigned char *header, size_t header_len, const char *section,
			struct mime_buffer *out);

/*
 * BODY[n...] of a message whose structure our library reads as the
 * upstream does (root parsed from raw): the part Dovecot's
 * imap_msgpart_find reaches by the numbers, its body, its MIME header, or,
 * of a message/rfc822 part, the enclosed message's HEADER, TEXT or
 * HEADER.FIELDS; an empty string where Dovecot finds nothing (no such
 * part, HEADER of a part that is no message). Returns 0, or -1 (with
 * *why_r set when the reason is not the structure) when only the upstream
 * can answer.
 */
int fetch_derive_part(struct mime_message *root, const unsigned char *raw, size_t raw_len, const char *section,
		      struct mime_buffer *out, const char **why_r);

/*
 * BINARY[section] of such a message, when it is what Dovecot sends: a
 * leaf's body decoded (*converted_r: base64 or quoted-printable, which
 * Dovecot sends as "~{n}"); a part Dovecot does not find, empty; the
 * whole message (section "") or a container as it is when nothing in it
 * is encoded and it holds no 0x80 or NUL byte. Returns 0, or -1 with
 * *why_r when only the upstream can answer.
 */
int fetch_derive_binary(struct mime_message *root, const unsigned char *raw, size_t raw_len, const char *section,
			struct mime_buffer *out, bool *converted_r, const char **why_r);

#endif
