/* flowmq-bridge: the cloud connection's libmosquitto client (link process); see client.h. */
#include <errno.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "client.h"

static __thread bool refuse_pair;

__attribute__((visibility("default"))) int socketpair(int domain, int type, int protocol, int sv[2])
{
	if(refuse_pair){
		errno = EMFILE;
		return -1;
	}
	return (int)syscall(SYS_socketpair, domain, type, protocol, sv);
}

struct mosquitto *fb_client_new(const char *id, bool clean_start, void *obj)
{
	struct mosquitto *mosq;

	refuse_pair = true;
	mosq = mosquitto_new(id, clean_start, obj);
	refuse_pair = false;
	return mosq;
}
