/* SPDX-License-Identifier: MIT */
/* mime-buffer: a growable byte buffer, the output type of the MIME library. */
#include "config.h"
#include "mime-buffer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void mime_out_of_memory(size_t size)
{
	fprintf(stderr, "imapcache: out of memory allocating %zu bytes\n", size);
	abort();
}

void *mime_xmalloc(size_t size)
{
	void *ptr = malloc(size == 0 ? 1 : size);

	if (ptr == NULL)
		mime_out_of_memory(size);
	return ptr;
}

void *mime_xrealloc(void *ptr, size_t size)
{
	void *grown = realloc(ptr, size == 0 ? 1 : size);

	if (grown == NULL)
		mime_out_of_memory(size);
	return grown;
}

char *mime_xstrndup(const char *text, size_t len)
{
	char *copy = mime_xmalloc(len + 1);

	memcpy(copy, text, len);
	copy[len] = '\0';
	return copy;
}

char *mime_xstrdup(const char *text)
{
	return mime_xstrndup(text, strlen(text));
}

static void mime_buffer_reserve(struct mime_buffer *buffer, size_t extra)
{
	size_t need = buffer->len + extra + 1;

	if (need < extra)
		mime_out_of_memory(extra);
	if (need <= buffer->alloc)
		return;
	size_t alloc = buffer->alloc < 64 ? 64 : buffer->alloc;
	while (alloc < need)
		alloc = alloc * 2 < alloc ? need : alloc * 2;
	buffer->data = mime_xrealloc(buffer->data, alloc);
	buffer->alloc = alloc;
}

void mime_buffer_append_grow(struct mime_buffer *buffer, const void *data, size_t len)
{
	mime_buffer_reserve(buffer, len);
	if (len > 0)
		memcpy(buffer->data + buffer->len, data, len);
	buffer->len += len;
	buffer->data[buffer->len] = '\0';
}

void mime_buffer_append_str(struct mime_buffer *buffer, const char *text)
{
	mime_buffer_append(buffer, text, strlen(text));
}

void mime_buffer_append_uint(struct mime_buffer *buffer, size_t number)
{
	char digits[24];
	size_t pos = sizeof(digits);

	do {
		digits[--pos] = (char)('0' + number % 10);
		number /= 10;
	} while (number > 0);
	mime_buffer_append(buffer, digits + pos, sizeof(digits) - pos);
}

void mime_buffer_append_byte_grow(struct mime_buffer *buffer, unsigned char byte)
{
	mime_buffer_reserve(buffer, 1);
	buffer->data[buffer->len++] = byte;
	buffer->data[buffer->len] = '\0';
}

void mime_buffer_printf(struct mime_buffer *buffer, const char *format, ...)
{
	va_list args;
	char small[256];

	va_start(args, format);
	int len = vsnprintf(small, sizeof(small), format, args);
	va_end(args);
	if (len < 0)
		return;
	if ((size_t)len < sizeof(small)) {
		mime_buffer_append(buffer, small, (size_t)len);
		return;
	}
	mime_buffer_reserve(buffer, (size_t)len);
	va_start(args, format);
	vsnprintf((char *)buffer->data + buffer->len, (size_t)len + 1, format, args);
	va_end(args);
	buffer->len += (size_t)len;
}

void mime_buffer_truncate(struct mime_buffer *buffer, size_t len)
{
	if (len >= buffer->len)
		return;
	buffer->len = len;
	buffer->data[len] = '\0';
}

void mime_buffer_reset(struct mime_buffer *buffer)
{
	buffer->len = 0;
	if (buffer->data != NULL)
		buffer->data[0] = '\0';
}

void mime_buffer_free(struct mime_buffer *buffer)
{
	free(buffer->data);
	buffer->data = NULL;
	buffer->len = buffer->alloc = 0;
}

char *mime_buffer_steal(struct mime_buffer *buffer, size_t *len_r)
{
	if (buffer->data == NULL) {
		mime_buffer_reserve(buffer, 0);
		buffer->data[0] = '\0';
	}
	char *data = (char *)buffer->data;
	if (len_r != NULL)
		*len_r = buffer->len;
	buffer->data = NULL;
	buffer->len = buffer->alloc = 0;
	return data;
}
