/* libFuzzer target (test/fuzz, runs in the fuzzer process): sending less (broker/reduce.c).
 *
 * Input: records of [op][topic][clock step][length][payload]. op & 3 chooses the rule: 0 and 1 a
 * throttle rule (deadband 0.5 on field "v.t" or on_change on the payload, both with min_interval
 * 100ms and heartbeat 1s), 2 an aggregate rule (window 1s, field "v.t"), 3 a tick; op & 4: the
 * channel turns away a message to send or hold (neither fb_reduce_sent() nor fb_reduce_hold()).
 * The clocks move by the step in ms. max_tracked_topics is 4, so the topics (one of 16) are
 * evicted all the time. Checked: nothing is lost or made up. For the throttle rules, every offer
 * ends as sent at once, turned away, sent later (held, then flushed, evicted or ticked out: each
 * at most once), suppressed or unparsable; for the aggregate rule, every parsable value is folded into exactly one published
 * window, whose counts add up to the aggregated counter.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "reduce.h"

static struct {
	uint64_t records, windows, window_count;
} got;

static int sink_record(void *ud, const uint8_t *rec, size_t len, bool wait)
{
	got.records++;
	return 0;
}

static int sink_window(void *ud, int rule, const char *topic, const char *json, size_t len, bool wait)
{
	unsigned long long count;

	if(rule != 2 || sscanf(json, "{\"count\":%llu,", &count) != 1 || count == 0 || strlen(json) != len){
		fprintf(stderr, "bad window from rule %d: %s\n", rule, json);
		abort();
	}
	got.windows++;
	got.window_count += count;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fb_e2c_rule rules[3];
	struct fb_config cfg;
	struct fb_counters ctr;
	struct fb_reduce *r = NULL;
	const struct fb_reduce_sink sink = { sink_record, sink_window, NULL };
	uint64_t mono = 1000, wall = 1700000000000ull, send = 0, held = 0, offers = 0, unparsable = 0;
	uint64_t agg_offers = 0, agg_unparsable = 0, refused = 0;
	char field[] = "v.t";

	memset(&cfg, 0, sizeof(cfg));
	memset(rules, 0, sizeof(rules));
	memset(&ctr, 0, sizeof(ctr));
	memset(&got, 0, sizeof(got));
	rules[0].reduce = (struct fb_reduce_opts){ .min_interval_ms = 100, .has_deadband = true, .deadband = 0.5,
		.field = field, .heartbeat_ms = 1000 };
	rules[1].reduce = (struct fb_reduce_opts){ .min_interval_ms = 100, .on_change = true, .heartbeat_ms = 1000 };
	rules[2].reduce = (struct fb_reduce_opts){ .window_ms = 1000, .agg_field = field, .emit = FB_AGG_ALL };
	cfg.e2c = rules;
	cfg.e2c_count = 3;
	cfg.spool.max_tracked_topics = 4;
	if(fb_reduce_new(&cfg, &sink, &ctr, &r) != 0 || r == NULL){
		abort();
	}
	while(size >= 4){
		unsigned op = data[0] & 3, len = data[3];
		bool turned_away = data[0] & 4;
		char topic[16];

		snprintf(topic, sizeof(topic), "t/%u", data[1] & 15);
		mono += data[2];
		wall += data[2];
		data += 4;
		size -= 4;
		if(len > size){
			len = (unsigned)size;
		}
		if(op == 3){
			fb_reduce_tick_at(r, mono, wall);
			continue;
		}
		uint64_t unp0 = atomic_load(&ctr.dropped_unparsable);
		int v = fb_reduce_offer(r, (int)op, topic, topic, data, len, mono, wall);
		if(op < 2){
			offers++;
			unparsable += atomic_load(&ctr.dropped_unparsable) - unp0;
		}else{
			agg_offers++;
			agg_unparsable += atomic_load(&ctr.dropped_unparsable) - unp0;
		}
		if((v == FB_REDUCE_SEND || v == FB_REDUCE_HOLD) && turned_away){
			refused++;
		}else if(v == FB_REDUCE_SEND){
			fb_reduce_sent(r);
			send++;
		}else if(v == FB_REDUCE_HOLD){
			uint8_t rec[8] = { 0 };
			if(fb_reduce_hold(r, rec, sizeof(rec)) != 0){
				abort();
			}
			held++;
		}else if(v != FB_REDUCE_TAKEN){
			abort();
		}
		data += len;
		size -= len;
		if(fb_reduce_tracked(r, FB_REDUCE_THROTTLE) > 4 || fb_reduce_tracked(r, FB_REDUCE_AGGREGATE) > 4){
			abort();
		}
	}
	fb_reduce_flush(r);
	/* A held message is sent later or replaced by a newer one (then counted as suppressed); one
	 * turned away is counted by the caller, not as suppressed. */
	if(offers != send + refused + got.records + atomic_load(&ctr.suppressed) + unparsable
			|| agg_offers != atomic_load(&ctr.aggregated) + agg_unparsable
			|| got.window_count != atomic_load(&ctr.aggregated) || atomic_load(&ctr.windows) != got.windows
			|| got.records > held){
		fprintf(stderr, "offers %llu: sent %llu, turned away %llu, later %llu (held %llu), suppressed %llu, "
				"unparsable %llu; aggregate offers %llu: aggregated %llu, unparsable %llu, windows %llu of "
				"%llu values\n",
				(unsigned long long)offers, (unsigned long long)send, (unsigned long long)refused,
				(unsigned long long)got.records, (unsigned long long)held,
				(unsigned long long)atomic_load(&ctr.suppressed), (unsigned long long)unparsable,
				(unsigned long long)agg_offers,
				(unsigned long long)atomic_load(&ctr.aggregated), (unsigned long long)agg_unparsable,
				(unsigned long long)got.windows, (unsigned long long)got.window_count);
		abort();
	}
	if(fb_reduce_tracked(r, FB_REDUCE_AGGREGATE) != 0){
		abort();
	}
	fb_reduce_free(r);
	return 0;
}
