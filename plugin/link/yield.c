/* flowmq-bridge: the link process gives way to a busy broker thread (see yield.h); link process,
 * worker thread. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#include "yield.h"

/* The first two fields of /proc/<pid>/schedstat: time on a CPU and time waiting for one, ns. */
static bool read_stat(int fd, uint64_t *run_ns, uint64_t *wait_ns)
{
	char buf[128];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	if(n <= 0){
		return false;
	}
	buf[n] = '\0';
	return sscanf(buf, "%" SCNu64 " %" SCNu64, run_ns, wait_ns) == 2;
}

/* CPU time of the whole machine from /proc/stat's first line, in clock ticks: all of it (user
 * to steal) and the idle part (idle and iowait). */
static bool read_cpu(int fd, uint64_t *total, uint64_t *idle)
{
	char buf[256];
	uint64_t v[8] = { 0 };
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	if(n <= 0){
		return false;
	}
	buf[n] = '\0';
	if(sscanf(buf, "cpu %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
			" %" SCNu64, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) < 5){
		return false;
	}
	*total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
	*idle = v[3] + v[4];
	return true;
}

bool fb_yield_init(struct fb_yield *y, pid_t pid, uint64_t now_ms)
{
	char path[64];

	*y = (struct fb_yield){ .fd = -1, .cpu_fd = -1, .start_ms = now_ms };
	if(pid <= 0){
		return false;
	}
	y->cpu_fd = open("/proc/stat", O_RDONLY | O_CLOEXEC);
	if(y->cpu_fd >= 0 && !read_cpu(y->cpu_fd, &y->cpu_total, &y->cpu_idle)){
		close(y->cpu_fd);
		y->cpu_fd = -1;
	}
	snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
	y->fd = open(path, O_RDONLY | O_CLOEXEC);
	if(y->fd < 0 || !read_stat(y->fd, &y->run_ns, &y->wait_ns)){
		fb_yield_cleanup(y); /* without the broker thread's figures there is nothing to decide */
		return false;
	}
	return true;
}

void fb_yield_cleanup(struct fb_yield *y)
{
	if(y->fd >= 0){
		close(y->fd);
	}
	if(y->cpu_fd >= 0){
		close(y->cpu_fd);
	}
	y->fd = -1;
	y->cpu_fd = -1;
	y->active = false;
}

void fb_yield_decide(struct fb_yield *y, uint64_t period_ns, uint64_t run_ns, uint64_t wait_ns,
		uint64_t cpu_total, uint64_t cpu_idle, uint64_t in)
{
	bool busy = run_ns + wait_ns >= period_ns / 2; /* it ran or wanted to, half the time */
	bool no_cpu = wait_ns >= period_ns / 20 || (cpu_total > 0 && cpu_idle * 4 < cpu_total);

	if(busy && no_cpu){
		y->active = true;
		y->budget = FB_YIELD_FLOOR + in + in / 4;
	}else if(y->active){
		y->budget += FB_YIELD_FLOOR;
		if(y->budget >= FB_YIELD_CAP){
			y->active = false;
		}
	}
	y->sent = 0;
}

void fb_yield_tick(struct fb_yield *y, uint64_t now_ms)
{
	uint64_t run, wait, total = 0, idle = 0;

	if(y->fd < 0 || now_ms < y->start_ms + FB_YIELD_PERIOD_MS){
		return;
	}
	if(!read_stat(y->fd, &run, &wait)){
		fb_yield_cleanup(y);
		return;
	}
	if(y->cpu_fd >= 0 && !read_cpu(y->cpu_fd, &total, &idle)){
		total = y->cpu_total;
		idle = y->cpu_idle;
	}
	fb_yield_decide(y, (now_ms - y->start_ms) * 1000000u, run - y->run_ns, wait - y->wait_ns,
			total - y->cpu_total, idle - y->cpu_idle, y->in);
	y->cpu_total = total;
	y->cpu_idle = idle;
	y->start_ms = now_ms;
	y->run_ns = run;
	y->wait_ns = wait;
	y->in = 0;
}
