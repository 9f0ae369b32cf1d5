/* flowmq-bridge: whether the cloud is taking what the link sends (see upload.h); link process,
 * worker thread. Linux's tcp_info (the kernel's header: glibc's struct has no tcpi_bytes_acked). */
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>

#include "upload.h"

/* The bytes the peer acknowledged on socket FD, or -1 when the kernel does not say. */
static int64_t bytes_acked(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	if(fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0
			|| len < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof(ti.tcpi_bytes_acked)){
		return -1;
	}
	return (int64_t)ti.tcpi_bytes_acked;
}

void fb_upload_start(struct fb_upload *u, int fd, uint64_t now_ms)
{
	int64_t a = bytes_acked(fd);

	u->acked = a > 0 ? (uint64_t)a : 0;
	u->moved_ms = now_ms;
	u->looked_ms = now_ms;
}

void fb_upload_look(struct fb_upload *u, int fd, uint64_t now_ms, uint64_t every_ms)
{
	int64_t a;

	if(now_ms < u->looked_ms + every_ms){
		return;
	}
	u->looked_ms = now_ms;
	a = bytes_acked(fd);
	if(a >= 0 && (uint64_t)a != u->acked){
		u->acked = (uint64_t)a;
		u->moved_ms = now_ms;
	}
}

bool fb_upload_moving(struct fb_upload *u, int fd, bool unwritten, uint64_t now_ms, uint64_t within_ms)
{
	int queued = 0;

	fb_upload_look(u, fd, now_ms, 0);
	if(!unwritten && (ioctl(fd, SIOCOUTQ, &queued) != 0 || queued <= 0)){
		return false; /* everything sent was acknowledged: nothing of ours is under way */
	}
	return now_ms < u->moved_ms + within_ms;
}
