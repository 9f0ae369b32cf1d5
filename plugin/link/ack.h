/* flowmq-bridge: what the cloud's acknowledgement of a forwarded PUBLISH means (link process,
 * worker thread; pure).
 *
 * libmosquitto 2.0.11 reports one reason code per QoS 1 or 2 PUBLISH to on_publish_v5: a QoS 1
 * PUBLISH's PUBACK reason (0x00 Success, 0x10 No matching subscribers, or >= 0x80 an error); for
 * QoS 2, the PUBREC's reason only when it is >= 0x80 (the exchange ends there), else the
 * PUBCOMP's: 0x00, or 0x92 Packet Identifier not found, which says that the server no longer
 * holds the PUBREL's packet id. It sent PUBREC before, so it has the message: 0x92 is not a
 * refusal of it (MQTT 5, 4.3.3; 0x92 is no PUBREC or PUBACK reason code, so a QoS 2 PUBLISH's 0x92
 * is its PUBCOMP's).
 */
#ifndef FB_ACK_H
#define FB_ACK_H

#include <stdbool.h>

/* Whether REASON, as on_publish_v5 reports it for a PUBLISH of QOS (1 or 2), means the cloud
 * refused the message (it goes to dead letters); false: the cloud has it (counted forwarded). */
bool fb_ack_rejected(int qos, int reason);

#endif
