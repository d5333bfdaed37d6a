/* SPDX-License-Identifier: MIT */
/* fetch: decides whether a FETCH can be answered from the view and the store, and writes that answer as Dovecot would. */
#ifndef IMAPCACHED_FETCH_H
#define IMAPCACHED_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cache;
struct evbuffer;
struct fetch_answer;
struct fetch_splice;
struct imap_command;
struct mailbox_view;

/* The tagged reply's text after "OK " of a FETCH answered here. Dovecot
   writes "Fetch completed (0.001 + 0.000 secs)."; the proxy measures no
   such times and does not pretend to. */
#define FETCH_OK_TEXT "Fetch completed."
#define FETCH_LOOKUP_CHUNK 1000 /* messages per store lookup: one statement stays in milliseconds */
#define FETCH_CHECKED_FIRST 100 /* messages of an answer the tables of keys prove checked value by value before its first line */
#define FETCH_DOVECOT_BINARY_CACHE_USEC (61 * 1000000ull) /* Dovecot 2.3 keeps a BINARY stream 60 s after its last use (MAIL_BINARY_CACHE_EXPIRE_MSECS) */
#define FETCH_LOCAL_MAX_MESSAGES 100000 /* a larger set goes upstream: the plan's memory stays a few MB */

/* A message of the proxy's STORE of \Seen for the FETCH, with its MODSEQ
   from before (0: none known). Where the STORE changed it, Dovecot's
   answer shows the old MODSEQ in the FETCH line, its new FLAGS, and the
   new MODSEQ after. */
struct fetch_seen {
	uint32_t uid;
	uint64_t old_modseq;
	bool changed;       /* the STORE reported it: its \Seen was set now */
	bool outside;       /* its flags changed otherwise too (another client) */
};

/*
 * What the session knows when a FETCH or UID FETCH comes. The command's
 * line is needed for what the parsed command no longer tells: whether
 * the client wrote a HEADER.FIELDS name quoted (Dovecot echoes a quoted
 * or literal name as a quoted string, in upper case; our parser writes it
 * as an atom when it can be one).
 */
struct fetch_facts {
	struct cache *cache;                /* NULL: nothing is local */
	int64_t mailbox_id;
	const struct mailbox_view *view;    /* the client's numbering, flags and MODSEQ */
	bool read_only;                     /* EXAMINE, or [READ-ONLY]: no fetch sets \Seen */
	bool condstore;                     /* the client enabled CONDSTORE or QRESYNC upstream */
	bool qresync;                       /* it enabled QRESYNC: a MODSEQ update names the UID */
	/* The \Seen step (fetch_answer_unseen): after the proxy's STORE of
	   \Seen was answered upstream. */
	bool peek_only;                     /* the STORE got NO: every body item is as if .PEEK */
	bool seen_stored;                   /* the STORE said OK: a message it did not report had \Seen */
	/* A BINARY or BINARY.SIZE went upstream lately: Dovecot may then
	   keep a message's whole BINARY stream (a message's first
	   BINARY.SIZE makes one, each use keeps it 60 s more), and sends
	   BINARY[] of it as "~{n}" even when nothing was decoded; such a
	   BINARY[] goes upstream. */
	bool binary_marked;
	/* Dovecot 2.3 keeps one such stream (its storage's binary cache: one
	   message): after the proxy's own splice FETCH of BINARY items, only
	   its last message's (0: none). */
	uint32_t binary_marked_uid;
	const struct fetch_seen *seen;      /* what the STORE asked for (ascending UIDs), or NULL */
	size_t seen_count;
	/* Partly stored: up to half of the messages may lack what is asked
	   (fetch_answer_missing); the caller fetches that and plans again. */
	bool fill_missing;
	/* The store's HIGHESTMODSEQ, which vouches for its flag rows (doc/cache.md:
	   a message unchanged since has its MODSEQ right there), 0: none, or
	   that step was taken. With it, when what messages lack is only their
	   MODSEQ, the missing fetch asks CHANGEDSINCE it for every message of
	   the view that lacks one (fetch_answer_missing_changedsince). */
	uint64_t vouched_modseq;
	uint64_t body_max_size;             /* a larger message is not stored: never asked for */
	/* Spliced: an item the store can't vouch for for a message (a
	   derived item of a message our library reads otherwise, BINARY.SIZE,
	   BINARY the upstream may write otherwise, RFC822 forms of those) no
	   longer sends the whole FETCH upstream: with splice_allowed the
	   answer marks it (fetch_answer_splice_groups), the caller fetches
	   those pairs alone and plans again with their values in splice
	   (fetch-splice.h), which the answer writes in place of the item's. */
	bool splice_allowed;
	const struct fetch_splice *splice;  /* NULL: none captured */
	/* The upstream ended the splice step with BYE part-way (Dovecot does
	   when it can't read a message it decodes: BINARY, BINARY.SIZE of
	   broken base64): the answer is what Dovecot writes before its BYE.
	   The messages in order up to the first one lacking a captured value;
	   that one's line ends before its first such item, and is "UID n"
	   when nothing comes before it. Only the caller's last word before
	   the upstream's BYE: the plan is LOCAL only when nothing is missing
	   and no \Seen is to be set. */
	bool splice_cut;
	/* The VANISHED modifier (UID FETCH set items (CHANGEDSINCE n VANISHED),
	   the client enabled QRESYNC): only the upstream knows which UIDs of
	   the set went since n. The answer then needs that step
	   (fetch_answer_needs_vanished): the caller asks the upstream
	   "UID FETCH set (UID) (CHANGEDSINCE n VANISHED)" and plans again with
	   what it said: its "* VANISHED (EARLIER)" lines (CRLF included; none
	   when nothing went), which the answer writes before its own, as
	   Dovecot does, and the UIDs its FETCH lines named (ascending), which
	   must be the answer's messages: else the view's MODSEQs are not the
	   upstream's, and the FETCH goes upstream. */
	bool vanished_known;
	const char *vanished_lines;
	size_t vanished_len;
	const uint32_t *vanished_uids;
	size_t vanished_uid_count;
	const char *line;                   /* the command line as the client sent it (up to a */
	size_t line_len;                    /* literal's "{n}"); NULL: HEADER.FIELDS goes upstream */
};

enum fetch_route {
	FETCH_ROUTE_UPSTREAM, /* forward the command as it is */
	FETCH_ROUTE_LOCAL,    /* write the answer with fetch_answer_write */
};

/*
 * Decides where command (IMAP_COMMAND_FETCH, with or without UID) is
 * answered. LOCAL only when every message of its set has a known UID in
 * the view, and everything it asks for each of them is there:
 *
 *   UID; FLAGS (the view's; not known: upstream); MODSEQ (the view's,
 *   once the client enabled CONDSTORE); INTERNALDATE, ENVELOPE,
 *   BODYSTRUCTURE, BODY (stored as the upstream wrote them);
 *   RFC822.SIZE (stored, or the size of the stored message);
 *   BODY[HEADER] and RFC822.HEADER (the stored header block);
 *   BODY[] and RFC822 (the stored message); BODY[TEXT], RFC822.TEXT (the
 *   message after its stored header block) -- each with a partial <o.l>;
 *   and, for a stored message whose BODYSTRUCTURE from our MIME library
 *   equals the upstream's (cache_set_structure_agrees), the derived
 *   items: BODY[n], BODY[n.MIME], BODY[n.HEADER], BODY[n.TEXT],
 *   BODY[n.HEADER.FIELDS (...)] and .NOT, BODY[HEADER], BODY[TEXT]
 *   without a stored header block, HEADER.FIELDS (.NOT) of the message,
 *   BINARY[n] and BINARY.PEEK[n] (n may be empty: the whole message).
 *
 * Part numbers are followed as Dovecot 2.3 follows them (its
 * imap_msgpart_find): n of a multipart is its n-th child; 1 of any other
 * part is that part, and the path ends there unless it is a
 * message/rfc822, whose enclosed message it goes on in; HEADER, TEXT and
 * HEADER.FIELDS of a numbered part need a message/rfc822. Where Dovecot
 * finds nothing, the answer is an empty string "{0}", as Dovecot's.
 *
 * HEADER.FIELDS is local only when the header block is plain RFC 5322
 * (every line a "Name: value" field or its continuation, CRLF, a blank
 * line at the end), no name holds '"' or '\', and the line shows how
 * each name was written (a literal name goes upstream). BINARY of a leaf
 * is local for 7bit/8bit/binary (or no) encoding without a byte 0x80 or
 * NUL, and base64 and quoted-printable that decode cleanly; BINARY of a
 * multipart, a message/rfc822 part or the whole message only when
 * nothing inside is encoded and it holds no 0x80 or NUL (it is then the
 * bytes as they are). Why 0x80: Dovecot's BODY[], where the stored
 * message came from, writes a NUL as 0x80, while BINARY sends the NUL
 * itself in "~{n}"; a stored 0x80 can't tell which it was.
 *
 * The set: for FETCH, "*" is the view's count and a number past it sends
 * the command upstream (for its BAD); for UID FETCH, "*" is the highest
 * UID and UIDs not in the view are skipped, as Dovecot does (a view with
 * messages of unknown UID sends UID FETCH upstream). "$" goes upstream.
 * An empty mailbox goes upstream. Messages are answered in ascending
 * order, each once.
 *
 * A non-PEEK body item (BODY[...], BINARY[...], RFC822, RFC822.TEXT) on a
 * read-write mailbox of a message without \Seen sets \Seen: the answer
 * is then LOCAL but fetch_answer_unseen lists those messages, and the
 * caller must first have the upstream set \Seen (STORE +FLAGS), then plan
 * again with facts->seen (what changed) or facts->peek_only (refused).
 * The new plan shows FLAGS where \Seen changed, after the buffered items,
 * and with CONDSTORE the new MODSEQs in lines of their own after the
 * last, as Dovecot does. Upstream: a message without \Seen whose
 * flags the view does not know; MODSEQ before the client enabled CONDSTORE (Dovecot
 * enables it then); the VANISHED modifier of a FETCH by number or before
 * the client enabled QRESYNC (with it, see fetch_facts.vanished_known),
 * and CHANGEDSINCE before the
 * client enabled CONDSTORE (with CONDSTORE, CHANGEDSINCE is local: only
 * messages of a greater MODSEQ, each with MODSEQ); ENVELOPE, BODY and
 * BODYSTRUCTURE the upstream never sent (not derived). BINARY.SIZE
 * (Dovecot 2.3 computes it from cached part sizes, which can differ from
 * its own BINARY literal's length) and PREVIEW are never written from the
 * store: with facts->splice_allowed they are spliced (see fetch_facts),
 * else the FETCH goes upstream.
 *
 * Returns LOCAL with *answer_r (free it with fetch_answer_free), or
 * UPSTREAM with *why_r (a static text, for a debug log line). The answer
 * holds the message numbers and flags as they are now; the caller must
 * pass no upstream line to the client until the answer is written.
 */
enum fetch_route fetch_plan(const struct imap_command *command, const struct fetch_facts *facts,
			    struct fetch_answer **answer_r, const char **why_r);

enum fetch_write_result {
	FETCH_WRITE_DONE,  /* the last "* n FETCH" line is written: send the tagged OK */
	FETCH_WRITE_MORE,  /* call again (from the output's low-water callback) */
	FETCH_WRITE_LOST,  /* a stored value went away since the plan (evicted, store error):
	                      what was written stands, the rest can't be; end the session with
	                      BYE, as Dovecot does when a FETCH fails mid-way */
};

/*
 * Appends the answer's "* n FETCH (...)" lines to out, byte for byte as
 * Dovecot 2.3 writes them for the same command: buffered items first
 * (UID, FLAGS, INTERNALDATE, RFC822.SIZE, MODSEQ, in the order asked;
 * UID FETCH puts UID first; CHANGEDSINCE adds MODSEQ after them), then
 * the others in the order asked; a repeated item without a section once,
 * repeated sections each time; sections as literals "{n}" (BINARY with
 * NUL: "~{n}"), named as Dovecot names them (upper case, "<o>" for a
 * partial). Whole messages only: it returns MORE once out has grown by
 * limit bytes or more since the call began (0: no limit). Writing all in
 * the callback that planned it rules LOST out.
 */
enum fetch_write_result fetch_answer_write(struct fetch_answer *answer, struct evbuffer *out, size_t limit);
/* With facts->fill_missing, the answer's messages that lack something it
   needs, in ascending order: their UIDs in uids_r and sequence numbers in
   seqs_r (malloc'd; NULL when none), and in items (size bytes) the items
   of a FETCH that gets what the store needs ("UID ENVELOPE BODY.PEEK[]";
   UID first, then no FLAGS or MODSEQ, so its answer lines tell themselves
   from unsolicited ones). Returns how many (0: none), -1 when memory runs
   out. The caller fetches them (the fill stores the answers) and plans
   again without fill_missing: what is still missing then goes upstream. */
long fetch_answer_missing(const struct fetch_answer *answer, uint32_t **uids_r, uint32_t **seqs_r, char *items,
			  size_t size);
/* How many of the answer's messages lack something (fetch_answer_missing). */
size_t fetch_answer_missing_count(const struct fetch_answer *answer);
/* When what the answer's messages lack is only MODSEQ and facts had a
   vouched_modseq (and CONDSTORE), that HIGHESTMODSEQ: the missing fetch
   then adds "(CHANGEDSINCE it)" and fetch_answer_missing names every
   message of the view without a MODSEQ (not only the answer's), so that
   one step fills the view. The upstream answers only the messages
   changed since; each other one's MODSEQ is the store's, when its stored
   flag row is that old and its flags the view's (the caller checks that
   after the tagged OK). 0: the plain form, for the answer's messages. */
uint64_t fetch_answer_missing_changedsince(const struct fetch_answer *answer);
#define FETCH_MISSING_ITEMS_MAX 128 /* "UID INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE BODY.PEEK[HEADER] BODY.PEEK[] MODSEQ" */

/* The splice step: the proxy's own FETCH of the (message, item) pairs
   the answer could not vouch for, grouped by identical item lists. */
#define FETCH_SPLICE_ITEMS_MAX 64  /* a message's spliced items are a 64-bit mask */
#define FETCH_SPLICE_GROUPS_MAX 16 /* own FETCH commands for one answer: more goes upstream whole */
struct fetch_splice_group {
	uint32_t *uids, *seqs;  /* the messages, ascending */
	size_t count;
	char *items;            /* "UID BODY.PEEK[1]<0.10> BINARY.SIZE[2]": UID first, PEEK forms */
};
/* The groups (malloc'd, free with fetch_splice_groups_free). Returns how
   many (0: nothing spliced, or more than FETCH_SPLICE_GROUPS_MAX), -1
   when memory runs out. */
long fetch_answer_splice_groups(const struct fetch_answer *answer, struct fetch_splice_group **groups_r);
void fetch_splice_groups_free(struct fetch_splice_group *groups, size_t count);
/* How many of the answer's messages have spliced items. */
size_t fetch_answer_spliced_count(const struct fetch_answer *answer);
/* Whether a spliced item decodes (BINARY, BINARY.SIZE) while the view
   shows a message of the answer without \Seen: Dovecot ends the
   connection with BYE on a part it can't decode, after setting \Seen on
   the messages it wrote; the proxy can't once the upstream is gone, so
   the caller sends such a FETCH upstream as it is when it sets \Seen. */
bool fetch_answer_splices_decoding_unseen(const struct fetch_answer *answer);
/* Why the first of them could not be written from the store (a static
   text, for a debug log line). */
const char *fetch_answer_splice_why(const struct fetch_answer *answer);
/* When the answer reads *splice (it was facts->splice), it takes it over
   (freed with the answer) and *splice becomes NULL: the answer's writing
   may outlive the caller's step. */
void fetch_answer_adopt_splice(struct fetch_answer *answer, struct fetch_splice **splice);

/* Whether the answer's fetch would set \Seen on a message (see
   fetch_answer_unseen). */
bool fetch_answer_needs_seen(const struct fetch_answer *answer);
/* Whether the answer waits for the VANISHED step (fetch_facts.vanished_known). */
bool fetch_answer_needs_vanished(const struct fetch_answer *answer);
/* The answer's messages whose \Seen its fetch would set, in ascending
   order: their UIDs in uids_r and sequence numbers in seqs_r (both
   malloc'd; NULL when none). Returns how many (0: nothing to set first),
   or -1 when memory runs out. */
long fetch_answer_unseen(const struct fetch_answer *answer, uint32_t **uids_r, uint32_t **seqs_r);
/* How many "* n FETCH" lines the answer has in all. */
size_t fetch_answer_count(const struct fetch_answer *answer);
/* Whether the plan cut the answer (fetch_facts.splice_cut), with the UID
   of the message it ends with, the one cut. */
bool fetch_answer_cut_uid(const struct fetch_answer *answer, uint32_t *uid_r);
/* Frees *answer and sets it to NULL; NULL is fine. */
void fetch_answer_free(struct fetch_answer **answer);

/* Whether, of the items written, the last that reads a BINARY stream in
   Dovecot's order was written from the store: in a session of its own
   Dovecot would have read it and let go of the stream it kept, which
   binary_marked and binary_marked_uid stand for; they no longer hold. */
bool fetch_answer_binary_last_local(const struct fetch_answer *answer);

/* Appends "TAG OK Fetch completed.\r\n". */
void fetch_write_tagged_ok(struct evbuffer *out, const char *tag);

#endif
