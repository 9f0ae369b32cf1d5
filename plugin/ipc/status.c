/* flowmq-bridge: status names (see status.h); either process, any thread. */
#include "status.h"

const char *fb_status_state_name(enum fb_link_state s)
{
	switch(s){
		case FB_LINK_CONNECTED: return "connected";
		case FB_LINK_CONNECTING: return "connecting";
		case FB_LINK_STALLED: return "stalled";
		default: return "disconnected";
	}
}
