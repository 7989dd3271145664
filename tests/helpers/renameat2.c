/* renameat2.c - rename(2) with flags, for the tests: coreutils 9.1
 * (Debian 12) has no mv --exchange.
 *
 *   renameat2 exchange|noreplace|plain FROM TO
 *
 * Exit 0 on success, else 1 with strerror on stderr (and the errno name
 * on stdout, so a test can check which). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    unsigned flags;

    if (argc != 4) {
        fprintf(stderr, "usage: renameat2 exchange|noreplace|plain FROM TO\n");
        return 2;
    }
    if (strcmp(argv[1], "exchange") == 0)
        flags = RENAME_EXCHANGE;
    else if (strcmp(argv[1], "noreplace") == 0)
        flags = RENAME_NOREPLACE;
    else if (strcmp(argv[1], "plain") == 0)
        flags = 0;
    else {
        fprintf(stderr, "renameat2: unknown flag %s\n", argv[1]);
        return 2;
    }
    if (renameat2(AT_FDCWD, argv[2], AT_FDCWD, argv[3], flags) < 0) {
        int e = errno;
        printf("%s\n", e == EEXIST ? "EEXIST" : e == ENOENT ? "ENOENT" : "other");
        fprintf(stderr, "renameat2 %s %s: %s\n", argv[2], argv[3], strerror(e));
        return 1;
    }
    return 0;
}
