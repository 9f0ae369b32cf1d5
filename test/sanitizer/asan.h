/* Tests (any process): FB_ASAN is 1 in an AddressSanitizer build (gcc or clang), else 0. Tests
 * whose figures an ASan build cannot give (heap sizes, latency bounds) skip them and say why. */
#ifndef FB_TEST_ASAN_H
#define FB_TEST_ASAN_H

#if defined(__SANITIZE_ADDRESS__)
#define FB_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FB_ASAN 1
#endif
#endif
#ifndef FB_ASAN
#define FB_ASAN 0
#endif

#endif
