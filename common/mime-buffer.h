/* SPDX-License-Identifier: MIT */
/* mime-buffer: a growable byte buffer, the output type of the MIME library. */
#ifndef IMAPCACHE_MIME_BUFFER_H
#define IMAPCACHE_MIME_BUFFER_H

#include <stddef.h>
#include <string.h>

/* data is always NUL-terminated (the NUL is not counted in len), so text
   can be used as a C string. A zeroed struct is an empty buffer. */
struct mime_buffer {
	unsigned char *data;
	size_t len;
	size_t alloc;
};

/* The slow path of mime_buffer_append: grows the buffer first. */
void mime_buffer_append_grow(struct mime_buffer *buffer, const void *data, size_t len);
/* Appending aborts only when memory is exhausted (tier 2: resource failure).
   Inline: the IMAP writers append many short pieces. */
static inline void mime_buffer_append(struct mime_buffer *buffer, const void *data, size_t len)
{
	if (len < buffer->alloc - buffer->len) {
		if (len > 0)
			memcpy(buffer->data + buffer->len, data, len);
		buffer->len += len;
		buffer->data[buffer->len] = '\0';
	} else {
		mime_buffer_append_grow(buffer, data, len);
	}
}
void mime_buffer_append_str(struct mime_buffer *buffer, const char *text);
/* Appends number in decimal (the BODYSTRUCTURE sizes, without printf). */
void mime_buffer_append_uint(struct mime_buffer *buffer, size_t number);
/* The slow path of mime_buffer_append_byte: grows the buffer first. */
void mime_buffer_append_byte_grow(struct mime_buffer *buffer, unsigned char byte);
/* Inline: the IMAP writers append most of their output a byte at a time. */
static inline void mime_buffer_append_byte(struct mime_buffer *buffer, unsigned char byte)
{
	if (buffer->len + 1 < buffer->alloc) {
		buffer->data[buffer->len++] = byte;
		buffer->data[buffer->len] = '\0';
	} else {
		mime_buffer_append_byte_grow(buffer, byte);
	}
}
void mime_buffer_printf(struct mime_buffer *buffer, const char *format, ...)
	__attribute__((format(printf, 2, 3)));
/* Cuts the buffer back to its first len bytes (len <= buffer->len). */
void mime_buffer_truncate(struct mime_buffer *buffer, size_t len);
/* Empties the buffer but keeps its memory. */
void mime_buffer_reset(struct mime_buffer *buffer);
/* Frees the memory; the buffer is empty again afterwards. */
void mime_buffer_free(struct mime_buffer *buffer);
/* Hands the data (malloc'ed, NUL-terminated, never NULL) to the caller. */
char *mime_buffer_steal(struct mime_buffer *buffer, size_t *len_r);

/* Allocation helpers that abort with a message when memory runs out. */
void *mime_xmalloc(size_t size);
void *mime_xrealloc(void *ptr, size_t size);
char *mime_xstrdup(const char *text);
char *mime_xstrndup(const char *text, size_t len);

#endif
