/* Unit tests (test process) of plugin/link/ack.c: which reason codes on_publish_v5 reports mean that the cloud
 * refused a forwarded message. */
#include <check.h>
#include <stdlib.h>

#include <mqtt_protocol.h>

#include "ack.h"

/* PUBACK (QoS 1): success and "no matching subscribers" are delivered, every code >= 0x80 refused,
 * 0x92 too (no PUBACK reason code: not taken as a PUBCOMP's). */
START_TEST(ack_puback_refuses_only_errors)
{
	ck_assert(!fb_ack_rejected(1, MQTT_RC_SUCCESS));
	ck_assert(!fb_ack_rejected(1, MQTT_RC_NO_MATCHING_SUBSCRIBERS));
	ck_assert(!fb_ack_rejected(1, 0x7f));
	ck_assert(fb_ack_rejected(1, MQTT_RC_UNSPECIFIED));
	ck_assert(fb_ack_rejected(1, MQTT_RC_NOT_AUTHORIZED));
	ck_assert(fb_ack_rejected(1, MQTT_RC_QUOTA_EXCEEDED));
	ck_assert(fb_ack_rejected(1, MQTT_RC_PACKET_ID_NOT_FOUND));
}
END_TEST

/* QoS 2: a PUBREC >= 0x80 is a refusal; a PUBCOMP 0x92 (Packet Identifier not found) follows a
 * PUBREC that took the message: delivered, like a PUBCOMP 0x00. */
START_TEST(ack_pubcomp_packet_id_not_found_is_delivered)
{
	ck_assert(!fb_ack_rejected(2, MQTT_RC_SUCCESS));
	ck_assert(!fb_ack_rejected(2, MQTT_RC_PACKET_ID_NOT_FOUND));
	ck_assert(fb_ack_rejected(2, MQTT_RC_UNSPECIFIED));
	ck_assert(fb_ack_rejected(2, MQTT_RC_NOT_AUTHORIZED));
	ck_assert(fb_ack_rejected(2, MQTT_RC_PACKET_ID_IN_USE));
	ck_assert(fb_ack_rejected(2, MQTT_RC_PAYLOAD_FORMAT_INVALID));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("ack");
	TCase *tc = tcase_create("ack");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, ack_puback_refuses_only_errors);
	tcase_add_test(tc, ack_pubcomp_packet_id_not_found_is_delivered);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
