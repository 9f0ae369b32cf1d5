/* flowmq-bridge: fb_log(); either process, any thread (see log.h). */
#include <stdarg.h>
#include <stdio.h>

#include "log.h"

void fb_log(const struct fb_logger *lg, int level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if(lg == NULL || lg->fn == NULL){
		return;
	}
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	lg->fn(lg->ud, level, line);
}

