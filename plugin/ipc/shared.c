/* flowmq-bridge: the shared region (see shared.h): created by the broker thread, attached by the
 * link process at its start. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shared.h"

int fb_shared_create(struct fb_shared **out, int *out_fd)
{
	struct fb_shared *sh;
	int fd, rc;

	*out = NULL;
	*out_fd = -1;
	fd = memfd_create("flowmq-bridge-shared", MFD_CLOEXEC);
	if(fd < 0){
		return -errno;
	}
	if(ftruncate(fd, sizeof(*sh)) < 0){
		rc = -errno;
		close(fd);
		return rc;
	}
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if(sh == MAP_FAILED){
		rc = -errno;
		close(fd);
		return rc;
	}
	sh->hdr.magic = FB_IPC_MAGIC;
	sh->hdr.version = FB_IPC_VERSION;
	sh->hdr.size = sizeof(*sh);
	*out = sh;
	*out_fd = fd;
	return 0;
}

int fb_shared_attach(int fd, uint32_t version, struct fb_shared **out)
{
	struct fb_shared_header *hdr;
	struct stat st;
	void *mem;

	*out = NULL;
	if(fstat(fd, &st) < 0){
		return -errno;
	}
	if((size_t)st.st_size < sizeof(*hdr)){
		return -EPROTO;
	}
	mem = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if(mem == MAP_FAILED){
		return -errno;
	}
	hdr = mem;
	hdr->link_version = version;
	if(hdr->magic != FB_IPC_MAGIC || hdr->version != version || hdr->size != sizeof(struct fb_shared)
			|| (size_t)st.st_size != sizeof(struct fb_shared)){
		munmap(mem, (size_t)st.st_size);
		return -EPROTO;
	}
	*out = mem;
	return 0;
}

void fb_shared_unmap(struct fb_shared *sh)
{
	if(sh){
		munmap(sh, sizeof(*sh));
	}
}
