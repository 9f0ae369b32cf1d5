/* Unit test of plugin/common/route.c: an unmatched lookup (and a drop rule) allocates nothing.
 *
 * It counts allocations by replacing malloc, which a sanitizer build cannot do (ASan owns malloc;
 * our replacement would hand ASan's memory to glibc's free): there the program exits 77 and says
 * so. Every other test of route.c is test-route.c. */
#include <check.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "route.h"

#include "../sanitizer/asan.h"

#if !FB_ASAN

/* ---- allocation counter ---------------------------------------------------------------------- */

/* glibc lets a program replace malloc (glibc manual, "Replacing malloc"): these forward to glibc's
 * own allocator and count the calls made while alloc_counting is set. glibc's internal callers
 * (strdup, ...) reach them too. Not compatible with sanitizer builds, which replace malloc. */
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);

static bool alloc_counting;
static unsigned long alloc_count;

void *malloc(size_t size)
{
	alloc_count += alloc_counting;
	return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
	alloc_count += alloc_counting;
	return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
	alloc_count += alloc_counting;
	return __libc_realloc(p, size);
}

void free(void *p)
{
	__libc_free(p);
}

/* ---- helpers --------------------------------------------------------------------------------- */

/* A configuration holding only rules. Strings are borrowed (literals or test-owned buffers). */
struct rules {
	struct fb_config cfg;
	struct fb_e2c_rule e2c[400];
};

static struct rules *rules_new(void)
{
	struct rules *r = calloc(1, sizeof(*r));
	ck_assert_ptr_nonnull(r);
	r->cfg.site_id = "site-A";
	r->cfg.e2c = r->e2c;
	return r;
}

static void e2c_add(struct rules *r, const char *local, const char *cloud, bool drop)
{
	ck_assert_uint_lt(r->cfg.e2c_count, 400);
	struct fb_e2c_rule *e = &r->e2c[r->cfg.e2c_count++];
	e->local = (char *)local;
	e->cloud = (char *)cloud;
	e->drop = drop;
	e->qos = 1;
}

static struct fb_routes *build(const struct rules *r)
{
	struct fb_routes *routes = NULL;
	ck_assert_int_eq(fb_routes_build(&r->cfg, &routes), 0);
	ck_assert_ptr_nonnull(routes);
	return routes;
}

/* ---- no allocation --------------------------------------------------------------------------- */

START_TEST(test_unmatched_lookup_allocates_nothing)
{
	enum { N = 300 };
	static char local[N][40];
	struct rules *r = rules_new();

	for(int i = 0; i < N; i++){
		snprintf(local[i], sizeof(local[i]), "site/%d/+/+/temp/#", i);
		e2c_add(r, local[i], NULL, true);
	}
	e2c_add(r, "+/+/+/+/+/x", "y", false);
	e2c_add(r, "$SYS/+/never", "y", false);
	struct fb_routes *routes = build(r);
	const char *miss[] = { "site/1/a/b/hum", "site/x/a/b/temp", "site/1/a", "other/1/2/3/4/5",
		"a/b/c/d/e/f/x", "$SYS/a/b/c/d/x", "$SYS/1/x", "", "/", "site" };
	struct fb_route_result res;

	/* warm up anything lazily allocated (there should be nothing) */
	for(size_t j = 0; j < sizeof(miss) / sizeof(*miss); j++){
		ck_assert_int_eq(fb_route_match(routes, FB_ROUTE_E2C, miss[j], &res), 0);
	}
	/* the counter works: a rewrite allocates its result */
	alloc_count = 0;
	alloc_counting = true;
	int rc = fb_route_match(routes, FB_ROUTE_E2C, "a/b/c/d/e/x", &res);
	alloc_counting = false;
	ck_assert_int_eq(rc, 1);
	ck_assert_str_eq(res.topic, "y");
	free(res.topic);
	/* valgrind replaces malloc, ours included: there only mallinfo2() below and memcheck judge */
	const char *preload = getenv("LD_PRELOAD");
	bool valgrind = preload && strstr(preload, "vgpreload");
	if(!valgrind){
		ck_assert_uint_eq(alloc_count, 1);
	}

	struct mallinfo2 before = mallinfo2();
	alloc_count = 0;
	alloc_counting = true;
	for(int i = 0; i < 5000; i++){
		for(size_t j = 0; j < sizeof(miss) / sizeof(*miss); j++){
			if(fb_route_match(routes, FB_ROUTE_E2C, miss[j], &res) != 0){
				ck_abort_msg("'%s' matched", miss[j]);
			}
		}
		/* drop rules match without allocating either */
		if(fb_route_match(routes, FB_ROUTE_E2C, "site/7/a/b/temp", &res) != 1 || res.topic){
			ck_abort_msg("drop rule not matched");
		}
	}
	alloc_counting = false;
	struct mallinfo2 after = mallinfo2();
	if(!valgrind){
		ck_assert_uint_eq(alloc_count, 0);
	}
	ck_assert_uint_eq(after.uordblks, before.uordblks);
	ck_assert_uint_eq(after.hblkhd, before.hblkhd);
	fb_routes_free(routes);
	free(r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("route-alloc");
	TCase *tc = tcase_create("no allocation");
	tcase_add_test(tc, test_unmatched_lookup_allocates_nothing);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#else

int main(void)
{
	printf("SKIP: route-alloc counts allocations by replacing malloc, which ASan owns in this "
			"sanitizer build\n");
	return 77;
}

#endif
