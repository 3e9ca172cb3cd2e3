// What every fuzz target uses to report a broken invariant: a crash, the
// only finding libFuzzer keeps. Unlike assert(), never compiled out.
#pragma once

#include <cstdio>
#include <cstdlib>

#define SB_FUZZ_CHECK(cond)                                                             \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                     \
    }                                                                                   \
  } while (false)
