/* flowmq-bridge: the uplink caps, a token bucket (see rate.h); link process, worker thread. */
#include "rate.h"

void fb_rate_init(struct fb_rate *r, uint64_t msgs_per_s, uint64_t bytes_per_s, uint64_t now_ms)
{
	*r = (struct fb_rate){
		.on = msgs_per_s || bytes_per_s,
		.msgs_per_s = msgs_per_s,
		.bytes_per_s = bytes_per_s,
		.last_ms = now_ms,
	};
	/* tokens in thousandths per second = thousandths per ms of the rate: FB_RATE_BURST_MS of it */
	r->msgs_max = (int64_t)(msgs_per_s * FB_RATE_BURST_MS);
	if(r->msgs_max < 2000){
		r->msgs_max = 2000; /* room for what fills between two looks: low rates stay exact */
	}
	r->bytes_max = (int64_t)(bytes_per_s * FB_RATE_BURST_MS);
	if(r->bytes_max < 1){
		r->bytes_max = 1;
	}
	r->msgs = r->msgs_max;
	r->bytes = r->bytes_max;
}

static void fill(struct fb_rate *r, uint64_t now_ms)
{
	uint64_t dt, most = 2 * FB_RATE_BURST_MS;

	if(now_ms <= r->last_ms){
		return;
	}
	dt = now_ms - r->last_ms;
	if(r->bytes_per_s && r->bytes < 0){
		most += (uint64_t)(-r->bytes) / r->bytes_per_s + 1; /* a debt is paid over time, idle or not */
	}
	if(dt > most){
		dt = most; /* more fills the buckets anyway; keeps the products small */
	}
	r->last_ms = now_ms;
	if(r->msgs_per_s){
		r->msgs += (int64_t)(dt * r->msgs_per_s);
		if(r->msgs > r->msgs_max){
			r->msgs = r->msgs_max;
		}
	}
	if(r->bytes_per_s){
		r->bytes += (int64_t)(dt * r->bytes_per_s);
		if(r->bytes > r->bytes_max){
			r->bytes = r->bytes_max;
		}
	}
}

bool fb_rate_spent(const struct fb_rate *r)
{
	return (r->msgs_per_s && r->msgs < 1000) || (r->bytes_per_s && r->bytes <= 0);
}

uint64_t fb_rate_cap(struct fb_rate *r, uint64_t allowed, uint64_t now_ms)
{
	fill(r, now_ms);
	if(fb_rate_spent(r)){
		return 0;
	}
	if(r->msgs_per_s && (uint64_t)(r->msgs / 1000) < allowed){
		allowed = (uint64_t)(r->msgs / 1000);
	}
	return allowed;
}

bool fb_rate_take(struct fb_rate *r, size_t bytes)
{
	if(r->msgs_per_s){
		r->msgs -= 1000;
	}
	if(r->bytes_per_s){
		r->bytes -= (int64_t)bytes * 1000;
	}
	return fb_rate_spent(r);
}

/* Milliseconds until a bucket that fills at RATE (thousandths per ms) and holds HAVE reaches
 * NEED (rounded up). */
static uint64_t ms_until(int64_t have, int64_t need, uint64_t rate)
{
	return have >= need ? 0 : (uint64_t)(need - have + (int64_t)rate - 1) / rate;
}

uint64_t fb_rate_next_ms(const struct fb_rate *r)
{
	uint64_t wait = 0, w;

	if(r->msgs_per_s){
		int64_t need = (int64_t)(r->msgs_per_s * FB_RATE_QUANTUM_MS);
		if(need < 1000){
			need = 1000;
		}
		if(need > r->msgs_max){
			need = r->msgs_max;
		}
		w = ms_until(r->msgs, need, r->msgs_per_s);
		wait = w > wait ? w : wait;
	}
	if(r->bytes_per_s){
		int64_t need = (int64_t)(r->bytes_per_s * FB_RATE_QUANTUM_MS);
		if(need < 1){
			need = 1;
		}
		w = ms_until(r->bytes, need, r->bytes_per_s);
		wait = w > wait ? w : wait;
	}
	return r->last_ms + wait;
}
