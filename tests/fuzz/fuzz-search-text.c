/* SPDX-License-Identifier: MIT */
/* libFuzzer target for daemon/search-text: a stored message read as BODY and TEXT search it, whatever its bytes. */
#include "config.h"
#include "mime-buffer.h"
#include "search-text.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Whether text is what the index and the matcher may hold: valid UTF-8
   (the casemap form) without NUL, each part's text ending in LF. */
static bool text_is_clean(const struct mime_buffer *text)
{
	const unsigned char *p = (const unsigned char *)text->data;
	size_t i = 0;

	if (text->len > 0 && p[text->len - 1] != '\n')
		return false;
	while (i < text->len) {
		unsigned char c = p[i];
		size_t need = c < 0x80 ? 0 : c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 :
			c >= 0xf0 && c <= 0xf4 ? 3 : SIZE_MAX;

		if (c == '\0' || need == SIZE_MAX || (need > 0 && i + need >= text->len))
			return false;
		for (size_t k = 1; k <= need; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
		}
		i += need + 1;
	}
	return true;
}

/* The input is a message as BODY[] stores it. search_text_extract either
   gives up (-1: the SEARCH goes upstream) or gives text that is clean
   (text_is_clean); either way
   no read or write leaves its buffers (ASan), and the text it gives up on
   is never looked at. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mime_buffer head = { 0 }, body = { 0 };
	struct mime_buffer needle = { 0 };

	if (search_text_extract(data, size, &head, &body) == 0) {
		if (!text_is_clean(&head) || !text_is_clean(&body))
			abort();
		/* the matcher on it: a line of it holds itself */
		if (body.len > 1) {
			const char *end = memchr(body.data, '\n', body.len);

			mime_buffer_append(&needle, body.data, (size_t)(end - (const char *)body.data));
			if (needle.len > 0 && !search_text_contains((const unsigned char *)body.data, body.len, &needle))
				abort();
		}
	}
	mime_buffer_free(&head);
	mime_buffer_free(&body);
	mime_buffer_free(&needle);
	return 0;
}
