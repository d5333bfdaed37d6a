/* SPDX-License-Identifier: MIT */
/* mime-header: header values: unfolding, folding, quoting, parameters and RFC 2231. */
#ifndef IMAPCACHE_MIME_HEADER_H
#define IMAPCACHE_MIME_HEADER_H

#include "mime-buffer.h"

/* One parameter of a structured header, as email.message.get_params gives
   it. The first item of a list is the value before the first ';' (the
   content type) with an empty value. */
struct mime_param {
	char *name;       /* lower-cased when it came as name=value */
	char *value;      /* unquoted; for RFC 2231 the percent-decoded bytes */
	char *charset;    /* RFC 2231 only: NULL when the value had no ticks */
	char *language;   /* RFC 2231 only: NULL when the value had no ticks */
	int rfc2231;      /* the value came from name* or name*N* sections */
};

struct mime_param_list {
	struct mime_param *items;
	size_t count;
};

/* Parses value as email.message._parseparam and utils.decode_params do:
   split on ';' outside quotes, lower-cased names, RFC 2231 sections
   (name*, name*0, name*0*, ...) joined in number order and appended after
   the plain parameters. Never fails. */
void mime_header_params_parse(const char *value, struct mime_param_list *list_r);
void mime_header_params_free(struct mime_param_list *list);
/* The first parameter named name (case-insensitive) after the first item,
   or NULL. */
const struct mime_param *mime_header_params_find(const struct mime_param_list *list,
						 const char *name);

/* collapse_rfc2231_value: an RFC 2231 value converted from its charset
   (us-ascii when it had none; raw bytes as Latin-1 when iconv doesn't know
   the charset) to UTF-8; a plain value unquoted once more. Malloc'ed. */
char *mime_header_param_collapse(const struct mime_param *param);

/* utils.unquote: strips one pair of "..." (undoing \\ and \") or <...>. */
char *mime_header_unquote(const char *text);
/* utils.quote: backslash before \ and ". Appends to out. */
void mime_header_quote(const char *text, struct mime_buffer *out);

/* _formatparam: appends name=value, name="value" (quoted when requote or
   when value has tspecials), or name*=charset'language'%XX.. when charset
   is given or value is not ASCII (utf-8 then). An empty or NULL value
   gives the bare name. */
void mime_header_param_format(struct mime_buffer *out, const char *name, const char *value,
			      const char *charset, const char *language, int requote);

/* Removes the line breaks of folded lines (RFC 5322 2.2.3), keeping the
   white space after them. Malloc'ed. */
char *mime_header_unfold(const char *value, size_t len);

/* Appends "name: value" and linesep. Existing folds are kept (with their
   line ends rewritten to linesep); a value without folds whose line would
   pass max_line_len (0: never) is folded at white space. */
void mime_header_write(struct mime_buffer *out, const char *name, const char *value,
		       size_t max_line_len, const char *linesep);

/* Python's str.strip() set for ASCII: space, \t, \n, \r, \v, \f, \x1c-\x1f. */
int mime_header_is_space(unsigned char ch);

#endif
