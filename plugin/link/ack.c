/* flowmq-bridge: what the cloud's acknowledgement of a forwarded PUBLISH means (see ack.h); link
 * process, worker thread. */
#include <mqtt_protocol.h>

#include "ack.h"

bool fb_ack_rejected(int qos, int reason)
{
	if(qos == 2 && reason == MQTT_RC_PACKET_ID_NOT_FOUND){
		return false; /* PUBCOMP: PUBREC came first, the cloud has the message */
	}
	return reason >= 0x80;
}
