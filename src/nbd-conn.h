/* nbd-conn.h - connections to an NBD server, through libnbd.
 *
 * What target-nbd.c needs of the NBD protocol and nothing of the mirror: a
 * connection to one export (conn_open checks that it answers, is writable
 * and is large enough), the commands of one call issued together and waited
 * for (a waiter), ranges split into requests the server accepts, and a look
 * at which parts of a range may not read as zero (block status).  Which
 * export, when to reconnect, what a shrunk image's tail needs and how to
 * make an export read as zero are target-nbd.c's business.
 *
 * Concurrency.  libnbd's synchronous calls hold the handle's lock for the
 * whole round trip: threads sharing a handle would take turns, one request
 * in flight.  So every command is asynchronous (nbd_aio_*), its completion
 * wakes the caller's waiter, and once conn_start has run one dispatcher
 * thread per connection polls the socket and drives libnbd's state machine,
 * which runs the completions.  Any number of threads then have requests in
 * flight on one connection.  Before conn_start (before the daemon forks:
 * threads do not survive a fork) the calling thread drives the handle
 * itself: pass drive = true.
 *
 * Failures.  No command waits forever: when commands are in flight and no
 * reply came for the stall timeout (conn_set_stall_timeout), the connection
 * is declared dead and its socket shut, which makes libnbd fail every
 * command in flight.  A dead connection stays dead (conn_dead); the caller
 * opens a new one.
 *
 * Locking.  libnbd runs completions with the handle's lock held.  The
 * completions here take nothing but their waiter's lock and touch atomics,
 * and nothing here calls libnbd while holding a waiter's lock or a
 * connection's own lock (which only guards starting its dispatcher).  So
 * the callers may hold any lock of theirs across every call below: these
 * locks come after all of target-nbd.c's (doc/design.md, "Locks").
 *
 * Lifetime: a connection is reference counted (conn_open returns one
 * reference); the last conn_unref says goodbye to the server, stops the
 * dispatcher and closes the handle.  A waiter is reference counted too: the
 * caller's reference and one per command in flight.
 *
 * Functions return 0 or -errno unless they say otherwise.
 */
#ifndef MIRRORFS_NBD_CONN_H
#define MIRRORFS_NBD_CONN_H

#include <stdbool.h>
#include <stdint.h>

struct _GArray;

/* Connecting and the handshake, when the caller has no deadline of its own. */
#define CONN_CONNECT_TIMEOUT_NS ((uint64_t)10 * 1000 * 1000 * 1000)

struct conn;
struct waiter;

/* What the server told at the handshake; fixed for the connection's life. */
struct conn_info {
    uint64_t size;        /* the export's */
    uint32_t min_block;   /* 1 when the server has no constraint */
    uint32_t max_payload; /* the most one write carries, a multiple of min_block */
    bool can_zero, can_fast_zero, can_trim, can_flush, can_block_status;
};

enum conn_op {
    OP_READ,
    OP_WRITE,
    OP_ZERO,      /* write zeroes, the server may deallocate */
    OP_FAST_ZERO, /* the same, or ENOTSUP when the server cannot do it quickly */
    OP_TRIM,
    OP_FLUSH,
    OP_STATUS, /* block status: see conn_nonzero_parts */
};

/* Commands in flight with no reply for ns: the server is stuck.  Set once,
 * before any connection is opened. */
void conn_set_stall_timeout(uint64_t ns);

/* Reach the server at uri and stop at option negotiation: it answers and
 * speaks NBD (no export is looked at).  The calling thread drives the
 * handshake, for at most CONN_CONNECT_TIMEOUT_NS.  0 or -errno with *msg
 * set to one line (-EINVAL: a URI that libnbd cannot parse). */
int conn_probe_server(const char *uri, char **msg);

/* Connect to uri and check the export: it answers, is writable and holds at
 * least need bytes.  The calling thread drives the handshake, for at most
 * timeout_ns.  0 with *out (one reference, no dispatcher yet), or -errno
 * with *msg set to one line that starts with the uri: ENOENT no such
 * export, EROFS read-only, ENOSPC smaller than need, ECONNREFUSED or
 * ETIMEDOUT no server. */
int conn_open(const char *uri, uint64_t need, uint64_t timeout_ns, struct conn **out,
              char **msg);

struct conn *conn_ref(struct conn *c);
/* NULL is accepted. */
void conn_unref(struct conn *c);

const struct conn_info *conn_info(const struct conn *c);

/* Whether the connection died (the server went away, or it stalled): every
 * command on it fails from now on. */
bool conn_dead(struct conn *c);

/* From here on the connection's dispatcher drives the handle (idempotent);
 * drive = false for every later call. */
int conn_start(struct conn *c);

/* ---- commands -------------------------------------------------------------- */

/* A waiter for one call's commands on c.  drive: no dispatcher runs, the
 * waiting thread drives the handle itself. */
struct waiter *waiter_new(struct conn *c, bool drive);
void waiter_unref(struct waiter *w);
/* Issue one command for w over [off, off+len) (buf: what OP_READ fills and
 * OP_WRITE sends; len is ignored for OP_FLUSH).  0, or -errno when libnbd
 * refused it (then it never completes).  Not OP_STATUS. */
int waiter_issue(struct waiter *w, enum conn_op op, void *buf, uint64_t len,
                 uint64_t off);
/* Wait for every command of w: 0 or the first error.  Never forever (the
 * stall timeout). */
int waiter_wait(struct waiter *w);

/* Issue op over [off, off+len) in pieces of at most piece bytes, all in
 * flight at once, and wait for them.  buf advances with the pieces (NULL:
 * no data). */
int conn_run_pieces(struct conn *c, bool drive, enum conn_op op, const char *buf,
                    uint64_t len, uint64_t off, uint64_t piece);

/* The most one zero, trim or block-status request covers, a multiple of the
 * minimum block size. */
uint64_t conn_zero_piece(const struct conn *c);

/* Write buf (NULL: zeroes) to a range of len bytes at off that lies inside
 * one minimum block, by reading the block, patching it and writing it back.
 * The caller keeps other writes to that block out meanwhile. */
int conn_rmw_block(struct conn *c, bool drive, const char *buf, uint64_t len,
                   uint64_t off);

/* Write buf, or zeroes when buf is NULL (with the zero command where the
 * server has one, which may deallocate; written zeroes otherwise), to a
 * range aligned to the server's minimum block size. */
int conn_write_aligned(struct conn *c, bool drive, const char *buf, uint64_t len,
                       uint64_t off);

/* The parts of [from, to) that may not read as zero, as pairs of uint64_t
 * (offset, length) in a new array (the whole range when the server has no
 * block status). */
int conn_nonzero_parts(struct conn *c, bool drive, uint64_t from, uint64_t to,
                       struct _GArray **out);

#endif
