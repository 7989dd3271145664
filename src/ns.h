/* ns.h - the namespace and metadata of a directory target.
 *
 * Everything of SOURCE except the data of its regular files: the type of
 * every entry (directory, regular file, symlink, FIFO, socket, character
 * and block device), mode (setuid, setgid and sticky bits included),
 * owner, extended attributes (POSIX ACLs among them), symlink targets,
 * device numbers, hard-link groups, and the access and modification times.
 * A regular file of SOURCE is an image of the job; its entry on the target
 * is the image's target file (by inode), linked under every name the
 * source gives it.  The data itself is the images' business (mirror.c).
 *
 * Safety (doc/design.md, invariant 9): every target path is resolved
 * beneath the target's root with no symlink followed in any component
 * (tree.c), and every change is made relative to the directory that holds
 * the entry, with calls that do not follow it.  An entry of the wrong type
 * is removed and made again from the source, never followed.
 *
 * Threads: callers serialise (fs.c's ns_lock during the run; the drain
 * and the start-up have no guests).
 */
#ifndef MIRRORFS_NS_H
#define MIRRORFS_NS_H

#include <stdbool.h>

struct mirror_job;
struct ns;

/* The namespace mirror of job, from the source tree at src_root to the
 * target tree at tgt_root (O_PATH or O_RDONLY directory fds, borrowed). */
struct ns *ns_new(struct mirror_job *job, int src_root, int tgt_root);
void ns_free(struct ns *ns);

/* ns_sync: the target's entry at path made like the source's entry at
 * path: created, replaced, removed (when the source has none) or given
 * the source's metadata.  A directory's content is made only when the
 * directory had to be made (a new directory is empty on both sides unless
 * the target lost one) or with NS_DEEP.  The directory holding path gets
 * its times and metadata too (an entry made or removed changes them). */
#define NS_DEEP 1u
int ns_sync(struct ns *ns, const char *path, unsigned flags);

/* ns_sync of a symlink just made with target link (not read back from the
 * source: reading a symlink sets its access time). */
int ns_sync_symlink(struct ns *ns, const char *path, const char *link);

/* A rename made on the source (renameat2 flags: RENAME_NOREPLACE,
 * RENAME_EXCHANGE), made on the target the same way.  -errno when the
 * target refused; the caller then repairs with ns_sync(..., NS_DEEP). */
int ns_rename(struct ns *ns, const char *from, const char *to, unsigned flags);

/* A hard link made on the source: path is another name of existing.
 * Falls back to ns_sync(path) when existing cannot be linked. */
int ns_link(struct ns *ns, const char *existing, const char *path);

/* Compare the whole trees; with NS_REPAIR, make every difference right.
 * NS_FINAL: the job is clean, so the sizes of regular files must agree too
 * (while guests write, a size may lag behind).  Hard links are compared as
 * groups of names within the trees: a source file may have names outside
 * SOURCE, which the target has no place for.
 * Returns the number of differences found (0: the trees are equal), or
 * -errno when the comparison itself failed.  *first (g_free) names the
 * first difference or failure: "path: what".  Regular files whose data
 * must be copied again (a target file that was lost, a size that does not
 * match) are made dirty in their images: after a repair, wait for the job
 * to be clean again before comparing once more. */
#define NS_REPAIR 2u
#define NS_FINAL 4u
int ns_audit(struct ns *ns, unsigned flags, char **first);

#endif
