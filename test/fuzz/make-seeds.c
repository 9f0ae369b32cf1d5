/* Writes the generated seeds of the fuzz corpora (a command run by hand, in the build folder:
 * test/fuzz/make-seeds SOURCE/test/fuzz/corpus): spool records and property lists made by the
 * plugin's own encoder, and staging files made by fb_stage_append(). The seeds are committed; run
 * this again when the record or staging format changes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "record.h"
#include "stage.h"

static const char *out_dir;

static void write_seed(const char *sub, const char *name, uint8_t lead, const void *buf, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s/%s", out_dir, sub, name);
	f = fopen(path, "wb");
	if(f == NULL || fwrite(&lead, 1, 1, f) != 1 || (len && fwrite(buf, 1, len, f) != len) || fclose(f)){
		perror(path);
		exit(1);
	}
}

/* One record with properties PROPS (encoded) as record seed NAME, and its properties as a
 * property seed. */
static void record_seed(const char *name, int qos, bool retain, const char *topic, const uint8_t *props,
		uint32_t props_len, const char *payload)
{
	struct fb_record r = {
		.qos = (uint8_t)qos, .retain = retain, .enqueue_ms = 1764412800000ull,
		.expiry_ms = qos ? 1764416400000ull : 0, .topic = topic, .topic_len = (uint16_t)strlen(topic),
		.props = props, .props_len = props_len, .payload = payload,
		.payload_len = (uint32_t)strlen(payload),
	};
	size_t n = fb_record_size(&r);
	uint8_t *buf = malloc(n);
	char pname[128];

	if(buf == NULL || fb_record_encode(&r, buf) != n){
		exit(1);
	}
	write_seed("record", name, 0, buf, n);
	if(props_len){
		snprintf(pname, sizeof(pname), "props-%s", name);
		write_seed("record", pname, 1, props, props_len);
	}
	free(buf);
}

int main(int argc, char **argv)
{
	mosquitto_property *list = NULL;
	static const char *const origin[] = { FB_ORIGIN_PROPERTY, "site-A", "edge-site-id", "site-A" };
	uint8_t *props = NULL;
	uint32_t props_len = 0;

	if(argc != 2){
		fprintf(stderr, "usage: make-seeds CORPUS_DIR\n");
		return 2;
	}
	out_dir = argv[1];

	record_seed("plain", 1, false, "edge/site-A/telemetry/t1", NULL, 0, "21.5");
	record_seed("empty", 0, false, "a", NULL, 0, "");
	if(fb_props_encode(NULL, origin, 2, &props, &props_len) != 0){
		return 1;
	}
	record_seed("origin", 1, true, "edge/site-A/telemetry/t2", props, props_len, "{\"v\":1}");
	free(props);
	mosquitto_property_add_byte(&list, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, 1);
	mosquitto_property_add_string(&list, MQTT_PROP_CONTENT_TYPE, "application/json");
	mosquitto_property_add_string(&list, MQTT_PROP_RESPONSE_TOPIC, "reply/to/me");
	mosquitto_property_add_binary(&list, MQTT_PROP_CORRELATION_DATA, "\x01\x02\x03\x04", 4);
	mosquitto_property_add_string_pair(&list, MQTT_PROP_USER_PROPERTY, "k", "v");
	mosquitto_property_add_string_pair(&list, MQTT_PROP_USER_PROPERTY, "k", "second");
	mosquitto_property_add_int32(&list, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, 60); /* skipped */
	if(fb_props_encode(list, origin, 1, &props, &props_len) != 0){
		return 1;
	}
	record_seed("all-props", 2, false, "cloud/x/y", props, props_len, "payload bytes");
	free(props);
	mosquitto_property_free_all(&list);

	/* Staging files: records from seq 1 and from a later seq, as the writer leaves them. */
	static const size_t counts[] = { 1, 3, 12 };
	static const uint64_t first_seq[] = { 1, 1000, 7 };
	for(size_t k = 0; k < 3; k++){
		char path[4096], name[64];
		struct fb_stage *st;
		FILE *f;
		uint8_t *buf = malloc(4096);

		snprintf(path, sizeof(path), "%s/stage/tmp-stage", out_dir);
		unlink(path);
		if(buf == NULL || fb_stage_open(path, 4096, &st) != 0){
			return 1;
		}
		for(size_t i = 0; i < counts[k]; i++){
			char val[64];
			int n = snprintf(val, sizeof(val), "record %zu of file %zu%s", i, k, i % 2 ? "" : "!!");
			if(fb_stage_append(st, first_seq[k] + i, val, (size_t)n) != 0){
				return 1;
			}
		}
		fb_stage_close(st);
		f = fopen(path, "rb");
		/* only the used part and a little zero tail: the target pads to 4096 */
		size_t used = fread(buf, 1, 4096, f);
		fclose(f);
		unlink(path);
		while(used > 16 && buf[used - 1] == 0){
			used--;
		}
		used = (used + 7) & ~(size_t)7;
		snprintf(name, sizeof(name), "records-%zu", counts[k]);
		write_seed("stage", name, 0, buf, used);
		free(buf);
	}
	return 0;
}
