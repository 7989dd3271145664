/* unit.h - what every unit-test program in tests/unit shares. */
#ifndef MIRRORFS_TESTS_UNIT_H
#define MIRRORFS_TESTS_UNIT_H

#include <check.h>
#include <stdlib.h>

/* Run suite s (the runner frees it); main()'s exit status: success when no
 * test failed. */
static inline int unit_run(Suite *s)
{
    SRunner *sr = srunner_create(s);

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif
