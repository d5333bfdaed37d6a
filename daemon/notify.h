/* SPDX-License-Identifier: MIT */
/* notify: tells the service manager (sd_notify) about readiness, reloads, shutdown and the session count. */
#ifndef IMAPCACHED_NOTIFY_H
#define IMAPCACHED_NOTIFY_H

/* Each is a no-op when built without libsystemd or when NOTIFY_SOCKET is
   not set; a failed notification is logged at debug level, never fatal. */

/* READY=1 with a STATUS line: the listeners are bound. */
void notify_ready(unsigned int sessions);

/* RELOADING=1 at the start of a reload; notify_ready() ends it. */
void notify_reloading(void);

/* STOPPING=1: no more connections are accepted. */
void notify_stopping(unsigned int sessions);

/* STATUS=... with the number of sessions. */
void notify_status(unsigned int sessions);

#endif
