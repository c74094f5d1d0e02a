/*
 * check.h -- the C tests' one assertion: CHECK(cond) prints the file, line
 * and condition of the first failure and exits 1 (the tests run under
 * AddressSanitizer and UBSan, where abort() would add noise, not facts).
 */
#ifndef FIB_TEST_CHECK_H
#define FIB_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

#endif
