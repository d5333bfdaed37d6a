/* SPDX-License-Identifier: MIT */
/* ctl-verify: "imapcachectl verify", which compares what the cache would answer of a mailbox with what the upstream answers. */
#include "config.h"
#include "ctl-verify.h"

#include "conf.h"
#include "ctl-warm.h"
#include "imap-client-commands.h"
#include "imap-client-sync.h"
#include "imap-fetch-items.h"
#include "upstream.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sysexits.h>

#define CTL_VERIFY_HEX (2 * 32 + 1) /* a SHA-256 in hex, with its NUL */
#define CTL_VERIFY_MAX_COMMAND (64 * 1024) /* a UID set of CTL_VERIFY_BATCH UIDs and the items fit */

const char ctl_verify_usage[] = "verify [--password-file FILE] ACCOUNT MAILBOX";

/* The items compared, as the DIGEST answer names them and as IMAP does. */
enum ctl_verify_kind {
	CTL_VERIFY_INTERNALDATE,
	CTL_VERIFY_ENVELOPE,
	CTL_VERIFY_BODYSTRUCTURE,
	CTL_VERIFY_BODY,
	CTL_VERIFY_HEADER,
	CTL_VERIFY_FLAGS,
	CTL_VERIFY_SIZE,
	CTL_VERIFY_MESSAGE,
	CTL_VERIFY_PREVIEW,
	CTL_VERIFY_KINDS
};
#define CTL_VERIFY_HAS(kind) (1u << (kind))

static const struct {
	const char *name;   /* in the DIGEST answer */
	const char *item;   /* in a FETCH response, and in the report */
	const char *fetch;  /* in a FETCH command */
} ctl_verify_kinds[CTL_VERIFY_KINDS] = {
	[CTL_VERIFY_INTERNALDATE] = { "internaldate", "INTERNALDATE", "INTERNALDATE" },
	[CTL_VERIFY_ENVELOPE] = { "envelope", "ENVELOPE", "ENVELOPE" },
	[CTL_VERIFY_BODYSTRUCTURE] = { "bodystructure", "BODYSTRUCTURE", "BODYSTRUCTURE" },
	[CTL_VERIFY_BODY] = { "body", "BODY", "BODY" },
	[CTL_VERIFY_HEADER] = { "header", "BODY[HEADER]", "BODY.PEEK[HEADER]" },
	[CTL_VERIFY_FLAGS] = { "flags", "FLAGS", "FLAGS" },
	[CTL_VERIFY_SIZE] = { "size", "RFC822.SIZE", "RFC822.SIZE" },
	[CTL_VERIFY_MESSAGE] = { "message", "BODY[]", "BODY.PEEK[]" },
	[CTL_VERIFY_PREVIEW] = { "preview", "PREVIEW", "PREVIEW" }, /* as written: quoted or a literal */
};

/* What the store holds of one message, and what the upstream said of it. */
struct ctl_verify_message {
	uint32_t uid;
	unsigned int cached, damaged;   /* CTL_VERIFY_HAS() of each */
	unsigned int asked, brought, differ;
	bool seen;                      /* a FETCH line of the upstream named it */
	uint64_t size, modseq, upstream_modseq;
	char hex[CTL_VERIFY_KINDS][CTL_VERIFY_HEX]; /* SIZE: unused (size holds it) */
};

/* The FETCH line of the upstream being split. */
struct ctl_verify_line {
	uint32_t uid;
	unsigned int got;
	uint64_t size, modseq;
	char hex[CTL_VERIFY_KINDS][CTL_VERIFY_HEX];
	EVP_MD_CTX *message;            /* a whole message streaming in */
};

struct ctl_verify {
	const char *mailbox;
	struct ctl_verify_message *messages; /* in UID order */
	size_t count, capacity;
	uint32_t uidvalidity;
	uint64_t highestmodseq;         /* stored; 0: not known */
	bool condstore;                 /* the upstream gives MODSEQ */
	struct imap_fetch_items *splitter;
	struct ctl_verify_line line;
	unsigned int differ, damaged, stale, compared;
	FILE *out;
};

/* ---- what the daemon's store holds ---- */

static void ctl_verify_sha256(const void *data, size_t size, char *hex)
{
	static const char digits[] = "0123456789abcdef";
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int length = 0;

	if (EVP_Digest(data, size, digest, &length, EVP_sha256(), NULL) != 1)
		length = 0;
	for (unsigned int i = 0; i < length; i++) {
		hex[2 * i] = digits[digest[i] >> 4];
		hex[2 * i + 1] = digits[digest[i] & 0xf];
	}
	hex[2 * length] = '\0';
}

static int ctl_verify_kind_named(const char *name)
{
	for (int kind = 0; kind < CTL_VERIFY_KINDS; kind++) {
		if (strcmp(ctl_verify_kinds[kind].name, name) == 0)
			return kind;
	}
	return -1;
}

/* The message of uid, added at the end when new (the answer is in UID order). */
static struct ctl_verify_message *ctl_verify_add(struct ctl_verify *verify, uint32_t uid)
{
	if (verify->count > 0 && verify->messages[verify->count - 1].uid == uid)
		return &verify->messages[verify->count - 1];
	if (verify->count > 0 && verify->messages[verify->count - 1].uid > uid)
		return NULL;
	if (verify->count == verify->capacity) {
		size_t capacity = verify->capacity == 0 ? 256 : verify->capacity * 2;
		struct ctl_verify_message *grown = realloc(verify->messages, capacity * sizeof(*grown));

		if (grown == NULL)
			return NULL;
		verify->messages = grown;
		verify->capacity = capacity;
	}
	memset(&verify->messages[verify->count], 0, sizeof(verify->messages[0]));
	verify->messages[verify->count].uid = uid;
	return &verify->messages[verify->count++];
}

/* Takes one VALUE or DAMAGED line (fields split). Returns 0 or -1. */
static int ctl_verify_take_value(struct ctl_verify *verify, char **f, int count)
{
	unsigned long long uid = strtoull(f[1], NULL, 10);
	struct ctl_verify_message *message;
	int kind;

	if (uid == 0 || uid > UINT32_MAX || (message = ctl_verify_add(verify, (uint32_t)uid)) == NULL)
		return -1;
	if (strcmp(f[2], "modseq") == 0 && count == 4) {
		message->modseq = strtoull(f[3], NULL, 10);
		return 0;
	}
	kind = ctl_verify_kind_named(f[2]);
	if (kind < 0)
		return 0; /* a kind this imapcachectl does not compare */
	if (strcmp(f[0], "DAMAGED") == 0) {
		message->damaged |= CTL_VERIFY_HAS(kind);
		return 0;
	}
	if (count != 4 || strlen(f[3]) >= CTL_VERIFY_HEX)
		return -1;
	message->cached |= CTL_VERIFY_HAS(kind);
	if (kind == CTL_VERIFY_SIZE)
		message->size = strtoull(f[3], NULL, 10);
	else
		strcpy(message->hex[kind], f[3]);
	return 0;
}

/* Takes one DIGEST answer; *next_r: the UID to ask from next (0: done).
   Returns 0, or -1 when it is malformed or contradicts the first. */
static int ctl_verify_take_answer(struct ctl_verify *verify, char *answer, bool first, uint32_t *next_r)
{
	char *save;

	*next_r = 0;
	for (char *line = strtok_r(answer, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		char *f[4];
		int count = 0;

		for (char *field = line; count < 4 && field != NULL; count++) {
			f[count] = field;
			field = strchr(field, '\t');
			if (field != NULL)
				*field++ = '\0';
		}
		if (strcmp(f[0], "MAILBOX") == 0 && count == 3) {
			uint32_t uidvalidity = (uint32_t)strtoul(f[1], NULL, 10);

			if (!first && uidvalidity != verify->uidvalidity)
				return -1;
			verify->uidvalidity = uidvalidity;
			verify->highestmodseq = strtoull(f[2], NULL, 10);
		} else if ((strcmp(f[0], "VALUE") == 0 || strcmp(f[0], "DAMAGED") == 0) && count >= 3) {
			if (ctl_verify_take_value(verify, f, count) < 0)
				return -1;
		} else if (strcmp(f[0], "NEXT") == 0 && count == 2) {
			*next_r = (uint32_t)strtoul(f[1], NULL, 10);
		}
	}
	return 0;
}

/* Asks the daemon for the digests of every stored message of mailbox. Returns 0 or a sysexits code. */
static int ctl_verify_collect(struct ctl_verify *verify, const char *socket_path, const char *account, FILE *err)
{
	uint32_t next = 1;
	bool first = true;

	while (next != 0) {
		char uid[16];
		const char *fields[4] = { "DIGEST", account, verify->mailbox, uid };
		char *answer;
		int code;

		snprintf(uid, sizeof(uid), "%" PRIu32, next);
		code = ctl_client_request(socket_path, fields, 4, &answer, err);
		if (code != 0)
			return code;
		code = ctl_verify_take_answer(verify, answer, first, &next);
		free(answer);
		if (code < 0) {
			fprintf(err, "imapcachectl: the daemon's answer about %s changed or made no sense; try again\n",
				verify->mailbox);
			return EX_TEMPFAIL;
		}
		first = false;
	}
	return 0;
}

/* ---- what the upstream answers ---- */

static void ctl_verify_got(struct ctl_verify_line *line, enum ctl_verify_kind kind, const void *data, size_t len)
{
	ctl_verify_sha256(data, len, line->hex[kind]);
	line->got |= CTL_VERIFY_HAS(kind);
}

/* FLAGS as the store keeps them: the text between the parentheses, and
   when it holds \Recent (which belongs to one session), the other flags
   joined by one space (cache_store_flags). */
static void ctl_verify_flags(struct ctl_verify_line *line, const unsigned char *data, size_t len)
{
	char *text = strndup((const char *)data, len);
	char *kept = text != NULL ? malloc(len + 1) : NULL;
	size_t used = 0;

	if (kept == NULL) {
		free(text);
		return;
	}
	if (strcasestr(text, "\\Recent") == NULL) {
		ctl_verify_got(line, CTL_VERIFY_FLAGS, data, len);
	} else {
		for (const char *p = text; *p != '\0';) {
			size_t n;

			p += strspn(p, " ");
			n = strcspn(p, " ");
			if (n > 0 && !(n == 7 && strncasecmp(p, "\\Recent", 7) == 0)) {
				if (used > 0)
					kept[used++] = ' ';
				memcpy(kept + used, p, n);
				used += n;
			}
			p += n;
		}
		ctl_verify_got(line, CTL_VERIFY_FLAGS, kept, used);
	}
	free(kept);
	free(text);
}

/* A string value as the store keeps it: a literal's bytes, a quoted
   string's without its escapes (fetch-fill's fill_keep_string). */
static void ctl_verify_string(struct ctl_verify_line *line, enum ctl_verify_kind kind,
			      const struct imap_fetch_items_event *event)
{
	unsigned char *copy;
	size_t out = 0;

	if (event->value_type == IMAP_FETCH_VALUE_LITERAL) {
		ctl_verify_got(line, kind, event->content, event->content_len);
		return;
	}
	if (event->value_type != IMAP_FETCH_VALUE_QUOTED || (copy = malloc(event->content_len + 1)) == NULL)
		return;
	for (size_t i = 0; i < event->content_len; i++) {
		if (event->content[i] == '\\' && i + 1 < event->content_len)
			i++;
		copy[out++] = event->content[i];
	}
	ctl_verify_got(line, kind, copy, out);
	free(copy);
}

/* One whole item of the line, kept as fetch-fill keeps it. */
static void ctl_verify_item(struct ctl_verify_line *line, const struct imap_fetch_items_event *event)
{
	bool list = event->value_type == IMAP_FETCH_VALUE_LIST;
	uint64_t number;

	if (imap_fetch_items_name_is(event, "UID")) {
		if (imap_fetch_items_parse_number(event->value, event->value_len, &number) && number <= UINT32_MAX)
			line->uid = (uint32_t)number;
	} else if (imap_fetch_items_name_is(event, "FLAGS") && list) {
		ctl_verify_flags(line, event->value + 1, event->value_len - 2);
	} else if (imap_fetch_items_name_is(event, "MODSEQ") && list) {
		if (imap_fetch_items_parse_number(event->value + 1, event->value_len - 2, &number))
			line->modseq = number;
	} else if (imap_fetch_items_name_is(event, "RFC822.SIZE")) {
		if (imap_fetch_items_parse_number(event->value, event->value_len, &line->size))
			line->got |= CTL_VERIFY_HAS(CTL_VERIFY_SIZE);
	} else if (imap_fetch_items_name_is(event, "INTERNALDATE") && event->value_type == IMAP_FETCH_VALUE_QUOTED) {
		ctl_verify_got(line, CTL_VERIFY_INTERNALDATE, event->value, event->value_len);
	} else if (imap_fetch_items_name_is(event, "ENVELOPE") && list) {
		ctl_verify_got(line, CTL_VERIFY_ENVELOPE, event->value, event->value_len);
	} else if (imap_fetch_items_name_is(event, "BODYSTRUCTURE") && list) {
		ctl_verify_got(line, CTL_VERIFY_BODYSTRUCTURE, event->value, event->value_len);
	} else if (imap_fetch_items_name_is(event, "BODY") && list) {
		ctl_verify_got(line, CTL_VERIFY_BODY, event->value, event->value_len);
	} else if (imap_fetch_items_name_is(event, "BODY[HEADER]")) {
		ctl_verify_string(line, CTL_VERIFY_HEADER, event);
	} else if (imap_fetch_items_name_is(event, "BODY[]") && event->value_type == IMAP_FETCH_VALUE_LITERAL) {
		ctl_verify_got(line, CTL_VERIFY_MESSAGE, event->content, event->content_len);
	} else if (imap_fetch_items_name_is(event, "PREVIEW") &&
		   (event->value_type == IMAP_FETCH_VALUE_QUOTED || event->value_type == IMAP_FETCH_VALUE_LITERAL)) {
		ctl_verify_got(line, CTL_VERIFY_PREVIEW, event->value, event->value_len);
	}
}

/* A whole message too large to come whole: hashed as it streams. */
static void ctl_verify_streamed(struct ctl_verify_line *line, const struct imap_fetch_items_event *event)
{
	static const char digits[] = "0123456789abcdef";
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int length = 0;

	if (!imap_fetch_items_name_is(event, "BODY[]"))
		return;
	if (event->type == IMAP_FETCH_ITEMS_EVENT_LITERAL_BEGIN) {
		EVP_MD_CTX_free(line->message);
		line->message = EVP_MD_CTX_new();
		if (line->message != NULL && EVP_DigestInit_ex(line->message, EVP_sha256(), NULL) != 1) {
			EVP_MD_CTX_free(line->message);
			line->message = NULL;
		}
	} else if (line->message != NULL && event->type == IMAP_FETCH_ITEMS_EVENT_LITERAL_DATA) {
		EVP_DigestUpdate(line->message, event->value, event->value_len);
	} else if (line->message != NULL && event->type == IMAP_FETCH_ITEMS_EVENT_LITERAL_END) {
		if (EVP_DigestFinal_ex(line->message, digest, &length) == 1) {
			for (unsigned int i = 0; i < length; i++) {
				line->hex[CTL_VERIFY_MESSAGE][2 * i] = digits[digest[i] >> 4];
				line->hex[CTL_VERIFY_MESSAGE][2 * i + 1] = digits[digest[i] & 0xf];
			}
			line->hex[CTL_VERIFY_MESSAGE][2 * length] = '\0';
			line->got |= CTL_VERIFY_HAS(CTL_VERIFY_MESSAGE);
		}
		EVP_MD_CTX_free(line->message);
		line->message = NULL;
	}
}

static void ctl_verify_event(const struct imap_fetch_items_event *event, void *context)
{
	struct ctl_verify *verify = context;

	if (event->type == IMAP_FETCH_ITEMS_EVENT_ITEM)
		ctl_verify_item(&verify->line, event);
	else
		ctl_verify_streamed(&verify->line, event);
}

static struct ctl_verify_message *ctl_verify_find(struct ctl_verify *verify, uint32_t uid)
{
	size_t low = 0, high = verify->count;

	while (low < high) {
		size_t middle = low + (high - low) / 2;

		if (verify->messages[middle].uid == uid)
			return &verify->messages[middle];
		if (verify->messages[middle].uid < uid)
			low = middle + 1;
		else
			high = middle;
	}
	return NULL;
}

/* A FETCH line ended: what it brought is compared with the store's. */
static void ctl_verify_line_complete(struct ctl_verify *verify)
{
	struct ctl_verify_line *line = &verify->line;
	struct ctl_verify_message *message = ctl_verify_find(verify, line->uid);

	if (message == NULL)
		return;
	message->seen = true;
	message->upstream_modseq = line->modseq != 0 ? line->modseq : message->upstream_modseq;
	for (int kind = 0; kind < CTL_VERIFY_KINDS; kind++) {
		unsigned int bit = CTL_VERIFY_HAS(kind);

		if ((line->got & bit) == 0 || (message->cached & bit) == 0)
			continue;
		message->brought |= bit;
		if (kind == CTL_VERIFY_SIZE ? line->size != message->size
					    : strcmp(line->hex[kind], message->hex[kind]) != 0)
			message->differ |= bit;
	}
}

static void ctl_verify_line_clear(struct ctl_verify_line *line)
{
	EVP_MD_CTX_free(line->message);
	memset(line, 0, sizeof(*line));
}

static int ctl_verify_raw(struct imap_client *client, struct imap_client_command *command,
			  enum imap_client_raw_kind kind, const unsigned char *data, size_t len, bool line_end,
			  void *context)
{
	struct ctl_verify *verify = context;
	enum imap_fetch_items_result result;

	(void)client;
	(void)command;
	if (kind != IMAP_CLIENT_RAW_UNTAGGED)
		return 0;
	result = imap_fetch_items_feed(verify->splitter, data, len, line_end);
	if (result == IMAP_FETCH_ITEMS_NEED_MORE)
		return 0;
	if (result == IMAP_FETCH_ITEMS_COMPLETE)
		ctl_verify_line_complete(verify);
	ctl_verify_line_clear(&verify->line);
	return 0;
}

static void ctl_verify_raw_done(struct imap_client *client, struct imap_client_command *command,
				const struct imap_client_result *result, void *context)
{
	enum imap_client_status *status = context;

	(void)client;
	(void)command;
	*status = result->status;
}

/* Sends "UID FETCH set items" raw and waits for its end. Returns 0 or -1. */
static int ctl_verify_fetch(struct imap_client_sync *sync, const char *set, const char *items, FILE *err)
{
	struct imap_client *client = imap_client_sync_get_client(sync);
	enum imap_client_status status = IMAP_CLIENT_STATUS_ABORT;
	struct imap_client_command *command = imap_client_raw_command_new(client, NULL, "UID FETCH",
									  ctl_verify_raw_done, &status);
	const struct imap_client_result *result;

	imap_client_raw_command_write(command, " UID FETCH ", 11);
	imap_client_raw_command_write(command, set, strlen(set));
	imap_client_raw_command_write(command, " (", 2);
	imap_client_raw_command_write(command, items, strlen(items));
	imap_client_raw_command_write(command, ")\r\n", 3);
	imap_client_raw_command_end(command);
	/* a command of the core's own behind it completes after it */
	if (imap_client_sync_wait(sync, imap_client_noop(client, NULL, NULL), &result) != IMAP_CLIENT_STATUS_OK ||
	    status != IMAP_CLIENT_STATUS_OK) {
		fprintf(err, "imapcachectl: the upstream's answer to UID FETCH %s (%s): %s\n", set, items,
			status != IMAP_CLIENT_STATUS_OK ? imap_client_status_name(status) : result->text);
		return -1;
	}
	return 0;
}

/* Appends uid to the UID set in set (size bytes), as a range when it follows the last. */
static void ctl_verify_set_add(char *set, size_t size, uint32_t *last, uint32_t *run_start, uint32_t uid)
{
	size_t used = strlen(set);

	if (*last != 0 && uid == *last + 1) {
		char *colon = strrchr(set, ':');
		char *comma = strrchr(set, ',');

		if (*run_start != *last && colon != NULL && (comma == NULL || colon > comma))
			used = (size_t)(colon - set);
		snprintf(set + used, size - used, ":%" PRIu32, uid);
	} else {
		snprintf(set + used, size - used, "%s%" PRIu32, used > 0 ? "," : "", uid);
		*run_start = uid;
	}
	*last = uid;
}

/* Fetches, a batch at a time, the items of kinds (a mask; MESSAGE alone
   in its batches) of the messages that have one of them cached. Returns 0 or -1. */
static int ctl_verify_fetch_all(struct ctl_verify *verify, struct imap_client_sync *sync, unsigned int kinds,
				size_t batch, FILE *err)
{
	static char set[CTL_VERIFY_MAX_COMMAND];
	char items[256];

	for (size_t i = 0; i < verify->count;) {
		unsigned int wanted = 0;
		uint32_t last = 0, run_start = 0;
		size_t taken = 0;

		set[0] = '\0';
		for (; i < verify->count && taken < batch; i++) {
			struct ctl_verify_message *message = &verify->messages[i];

			if ((message->cached & kinds) == 0)
				continue;
			ctl_verify_set_add(set, sizeof(set), &last, &run_start, message->uid);
			wanted |= message->cached & kinds;
			message->asked |= message->cached & kinds;
			taken++;
		}
		if (taken == 0)
			break;
		snprintf(items, sizeof(items), "UID");
		for (int kind = 0; kind < CTL_VERIFY_KINDS; kind++) {
			if (wanted & CTL_VERIFY_HAS(kind))
				snprintf(items + strlen(items), sizeof(items) - strlen(items), " %s",
					 ctl_verify_kinds[kind].fetch);
		}
		if ((wanted & CTL_VERIFY_HAS(CTL_VERIFY_FLAGS)) && verify->condstore)
			snprintf(items + strlen(items), sizeof(items) - strlen(items), " MODSEQ");
		if (ctl_verify_fetch(sync, set, items, err) < 0)
			return -1;
	}
	return 0;
}

/* ---- the report ---- */

/* Whether a flags difference is a fault: the upstream says the message
   did not change since the store's rows were vouched for (its MODSEQ is
   at most the stored HIGHESTMODSEQ, or the one stored with the flags). */
static bool ctl_verify_flags_vouched(const struct ctl_verify *verify, const struct ctl_verify_message *message)
{
	if (!verify->condstore || message->upstream_modseq == 0)
		return false;
	return (verify->highestmodseq != 0 && message->upstream_modseq <= verify->highestmodseq) ||
	       (message->modseq != 0 && message->upstream_modseq == message->modseq);
}

static void ctl_verify_report_message(struct ctl_verify *verify, const struct ctl_verify_message *message)
{
	FILE *out = verify->out;

	if (!message->seen && message->cached != 0) {
		fprintf(out, "UID %" PRIu32 " stale: expunged upstream since the daemon last synced the mailbox "
			"(dropped at its next SELECT)\n", message->uid);
		verify->stale++;
		return;
	}
	for (int kind = 0; kind < CTL_VERIFY_KINDS; kind++) {
		unsigned int bit = CTL_VERIFY_HAS(kind);
		const char *item = ctl_verify_kinds[kind].item;

		if (message->damaged & bit) {
			fprintf(out, "UID %" PRIu32 " %s damaged: the stored value fails its checksum (never served; "
				"the daemon has dropped it)\n", message->uid, item);
			verify->damaged++;
		}
		if ((message->cached & bit) == 0)
			continue;
		verify->compared++;
		if ((message->brought & bit) == 0) {
			fprintf(out, "UID %" PRIu32 " %s differs: cached, but the upstream sent none\n", message->uid,
				item);
			verify->differ++;
		} else if ((message->differ & bit) && kind == CTL_VERIFY_FLAGS &&
			   !ctl_verify_flags_vouched(verify, message)) {
			fprintf(out, "UID %" PRIu32 " FLAGS stale: changed upstream since the daemon last heard "
				"(refreshed at the next SELECT)\n", message->uid);
			verify->stale++;
		} else if (message->differ & bit) {
			fprintf(out, "UID %" PRIu32 " %s differs: the cached value is not the upstream's\n", message->uid,
				item);
			verify->differ++;
		}
	}
}

static int ctl_verify_report(struct ctl_verify *verify)
{
	for (size_t i = 0; i < verify->count; i++)
		ctl_verify_report_message(verify, &verify->messages[i]);
	fprintf(verify->out, "%s: %zu cached messages, %u values compared: %u differ, %u damaged, %u stale\n",
		verify->mailbox, verify->count, verify->compared, verify->differ, verify->damaged, verify->stale);
	if (fflush(verify->out) != 0)
		return EX_IOERR;
	return verify->differ + verify->damaged > 0 ? CTL_VERIFY_EXIT_DIFFERENT : 0;
}

/* ---- the upstream session ---- */

/* The UIDVALIDITY of an EXAMINE's result, or 0. */
static uint32_t ctl_verify_uidvalidity(const struct imap_client_result *result)
{
	for (unsigned int i = 0; i < result->untagged_count; i++) {
		const char *code = result->untagged[i]->code;

		if (code != NULL && strncasecmp(code, "UIDVALIDITY ", 12) == 0)
			return (uint32_t)strtoul(code + 12, NULL, 10);
	}
	return 0;
}

/* Logs in, EXAMINEs the mailbox and compares. Returns 0 or a sysexits code. */
static int ctl_verify_upstream(struct ctl_verify *verify, struct imap_client_sync *sync, const char *account,
			       const char *password, FILE *err)
{
	struct imap_client *client = imap_client_sync_get_client(sync);
	const struct imap_client_result *result;
	enum imap_client_status status;
	uint32_t uidvalidity;

	if (imap_client_sync_connect(sync, &result) != IMAP_CLIENT_STATUS_OK) {
		fprintf(err, "imapcachectl: the upstream can't be reached: %s\n", result->text);
		return EX_UNAVAILABLE;
	}
	status = imap_client_sync_wait(sync, imap_client_login(client, account, password, NULL, NULL), &result);
	if (status != IMAP_CLIENT_STATUS_OK) {
		fprintf(err, "imapcachectl: login as %s upstream: %s\n", account, result->text);
		return status == IMAP_CLIENT_STATUS_ABORT ? EX_UNAVAILABLE : EX_NOPERM;
	}
	status = imap_client_sync_wait(sync, imap_client_select(client, verify->mailbox, true, NULL, NULL, NULL),
				       &result);
	if (status != IMAP_CLIENT_STATUS_OK) {
		fprintf(err, "imapcachectl: %s upstream: %s\n", verify->mailbox, result->text);
		return status == IMAP_CLIENT_STATUS_ABORT ? EX_UNAVAILABLE : EX_DATAERR;
	}
	uidvalidity = ctl_verify_uidvalidity(result);
	if (uidvalidity != verify->uidvalidity) {
		fprintf(err, "imapcachectl: %s: UIDVALIDITY %" PRIu32 " upstream, %" PRIu32 " in the cache: "
			"nothing can be compared (the daemon drops the mailbox's cache at its next SELECT)\n", verify->mailbox,
			uidvalidity, verify->uidvalidity);
		return EX_TEMPFAIL;
	}
	verify->condstore = imap_client_has_capability(client, "CONDSTORE");
	imap_client_set_raw_callback(client, ctl_verify_raw, verify);
	if (ctl_verify_fetch_all(verify, sync, ~CTL_VERIFY_HAS(CTL_VERIFY_MESSAGE), CTL_VERIFY_BATCH, err) < 0 ||
	    ctl_verify_fetch_all(verify, sync, CTL_VERIFY_HAS(CTL_VERIFY_MESSAGE), CTL_VERIFY_BODY_BATCH, err) < 0)
		return EX_UNAVAILABLE;
	(void)imap_client_sync_wait(sync, imap_client_logout(client, NULL, NULL), NULL);
	return 0;
}

/* Connects to account's upstream as configured and compares. Returns 0 or a sysexits code. */
static int ctl_verify_against(struct ctl_verify *verify, const struct conf *config,
			      const struct conf_upstream *upstream, const char *account, const char *password_file,
			      FILE *err)
{
	char password[CTL_WARM_MAX_PASSWORD + 2];
	struct imap_client_settings settings;
	struct imap_client_sync *sync;
	const char *error;
	int code = ctl_warm_read_password(password_file, password, sizeof(password), err);

	if (code != 0)
		return code;
	upstream_client_settings(config, upstream, &settings);
	sync = imap_client_sync_new(&settings, &error);
	verify->splitter = imap_fetch_items_new(ctl_verify_event, verify);
	if (sync == NULL || verify->splitter == NULL) {
		fprintf(err, "imapcachectl: can't make a client for the upstream: %s\n",
			sync == NULL ? error : "memory");
		code = EX_SOFTWARE;
	} else {
		code = ctl_verify_upstream(verify, sync, account, password, err);
	}
	explicit_bzero(password, sizeof(password));
	imap_client_sync_free(&sync);
	ctl_verify_line_clear(&verify->line);
	imap_fetch_items_free(&verify->splitter);
	return code;
}

/* The configuration and the account's upstream in it. Returns 0 or a sysexits code. */
static int ctl_verify_config(const struct ctl_client_options *options, const char *account, struct conf **config_r,
			     const struct conf_upstream **upstream_r, FILE *err)
{
	const char *path = options->config_path != NULL ? options->config_path : CONF_DEFAULT_PATH;
	char *errors = NULL;

	*config_r = conf_load(path, &errors);
	if (*config_r == NULL) {
		fprintf(err, "imapcachectl: verify needs the configuration (for the upstream): %s", errors);
		free(errors);
		return EX_CONFIG;
	}
	*upstream_r = conf_upstream_for_user(*config_r, account);
	if (*upstream_r == NULL) {
		fprintf(err, "imapcachectl: no upstream in %s serves %s\n", path, account);
		conf_unref(config_r);
		return EX_NOUSER;
	}
	return 0;
}

int ctl_verify_run(const struct ctl_client_options *options, int argc, char **argv, FILE *out, FILE *err)
{
	struct ctl_verify verify = { .out = out };
	const char *password_file = NULL;
	const struct conf_upstream *upstream;
	struct conf *config = NULL;
	char *socket_path = NULL;
	int first = 1;
	int code;

	if (argc > 2 && strcmp(argv[1], "--password-file") == 0) {
		password_file = argv[2];
		first = 3;
	}
	if (argc - first != 2 || argv[first][0] == '-' || argv[first][0] == '\0' || argv[first + 1][0] == '\0' ||
	    strpbrk(argv[first], "\t\r\n") != NULL || strpbrk(argv[first + 1], "\t\r\n") != NULL) {
		fprintf(err, "usage: imapcachectl %s\n(names must not be empty or hold a TAB, CR or LF)\n",
			ctl_verify_usage);
		return EX_USAGE;
	}
	verify.mailbox = argv[first + 1];
	code = ctl_verify_config(options, argv[first], &config, &upstream, err);
	if (code == 0 && (socket_path = ctl_client_socket_path(options, err)) == NULL)
		code = EX_CONFIG;
	if (code == 0)
		code = ctl_verify_collect(&verify, socket_path, argv[first], err);
	if (code == 0)
		code = ctl_verify_against(&verify, config, upstream, argv[first], password_file, err);
	if (code == 0)
		code = ctl_verify_report(&verify);
	free(socket_path);
	free(verify.messages);
	conf_unref(&config);
	return code;
}
