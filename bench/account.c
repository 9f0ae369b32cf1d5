/* account: the accounting of received messages shared by loadgen's sub mode and cloudsink (see
 * account.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "account.h"

int64_t now_ns(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

void account_header(struct hdr *h, const void *payload, size_t len)
{
	if(len >= HDR_LEN){
		memcpy(h, payload, sizeof(*h));
	}else{
		h->magic = 0;
	}
}

void account_connected(struct account *a)
{
	a->arrived = false;
}

static bool mark_seen(struct stream *st, uint32_t seq)
{
	size_t w = seq / 64;
	uint64_t bit = 1ull << (seq % 64);

	if(w >= st->words){
		size_t n = st->words ? st->words : 1024;
		while(n <= w){
			n *= 2;
		}
		st->seen = realloc(st->seen, n * sizeof(*st->seen));
		memset(st->seen + st->words, 0, (n - st->words) * sizeof(*st->seen));
		st->words = n;
	}
	if(st->seen[w] & bit){
		return false;
	}
	st->seen[w] |= bit;
	return true;
}

void account_message(struct account *a, const struct hdr *h, int64_t t)
{
	struct stream *st;

	a->received++;
	if(a->first_ns == 0){
		a->first_ns = t;
	}
	if(!a->arrived){
		/* The first message since a connection, with what arrived before it: where a drain resumes. */
		a->arrived = true;
		if(a->first_file){
			char tmp[4096];
			FILE *f;
			snprintf(tmp, sizeof(tmp), "%s.tmp", a->first_file);
			if((f = fopen(tmp, "w")) != NULL){  /* renamed when complete: a reader never sees half */
				fprintf(f, "unique=%ld ns=%lld\n", a->unique, (long long)t);
				fclose(f);
				rename(tmp, a->first_file);
			}
		}
	}
	a->last_ns = t;
	if(h->magic != MAGIC || h->conn >= MAX_CONNS){  /* also every payload shorter than the header */
		a->foreign++;
		return;
	}
	st = &a->streams[h->conn];
	if(st->words == 0){
		st->last = -1;
	}
	if(!mark_seen(st, h->seq)){
		a->dups++;
		return;
	}
	if((int64_t)h->seq < st->last){
		a->reorder++;
	}else{
		st->last = h->seq;
	}
	a->unique++;
	if(a->nlat == a->caplat){
		a->caplat = a->caplat ? a->caplat * 2 : 65536;
		a->lat = realloc(a->lat, a->caplat * sizeof(*a->lat));
	}
	a->lat[a->nlat++] = t - h->sent_ns;
}

bool account_idle(const struct account *a, double idle)
{
	return a->first_ns && now_ns(CLOCK_REALTIME) - a->last_ns > (int64_t)(idle * 1e9);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static double pct_ms(const int64_t *v, size_t n, double p)
{
	size_t i;
	if(n == 0){
		return 0;
	}
	i = (size_t)(p / 100 * (double)(n - 1) + 0.5);
	return v[i] / 1e6;
}

void account_print(struct account *a, const char *lat_file)
{
	double secs;

	if(lat_file && a->nlat){
		FILE *f = fopen(lat_file, "w");
		for(size_t i = 0; f && i < a->nlat; i++){
			fprintf(f, "%.3f\n", a->lat[i] / 1e3);
		}
		if(f){
			fclose(f);
		}
	}
	qsort(a->lat, a->nlat, sizeof(*a->lat), cmp_i64);
	secs = a->received > 1 ? (a->last_ns - a->first_ns) / 1e9 : 0;
	printf("received=%ld unique=%ld dups=%ld reorder=%ld foreign=%ld secs=%.3f rate=%.0f "
			"p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f first_ns=%lld last_ns=%lld cpu_s=%.3f",
			a->received, a->unique, a->dups, a->reorder, a->foreign, secs,
			secs > 0 ? (a->received - 1) / secs : 0,
			pct_ms(a->lat, a->nlat, 50), pct_ms(a->lat, a->nlat, 90), pct_ms(a->lat, a->nlat, 99),
			pct_ms(a->lat, a->nlat, 100), (long long)a->first_ns, (long long)a->last_ns, cpu_seconds());
}
