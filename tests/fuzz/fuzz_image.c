/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer harness for image files (thin/image.h, thin/archive.h) and the
 * lower index (thin/index.h): any input, as a docker save or OCI archive,
 * opens or is refused with a message; what opens has each layer read
 * (hashed only) and refused or not, without crashing; the input read as a
 * layer tar is indexed or refused with a message.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "thin/image.h"
#include "thin/index.h"

static void check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_image: %s\n", what);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int tmp_dir = -1;
	if (tmp_dir < 0)
		tmp_dir = open("/var/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int fd = memfd_create("image", MFD_CLOEXEC);
	check(fd >= 0, "memfd_create");
	check(write(fd, data, size) == (ssize_t)size, "write the input");
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

	image img = {0};
	strata_error err = {0};
	int r = image_open(path, tmp_dir, NULL, &img, &err);
	if (r < 0) {
		check(err.message[0] != '\0', "refused without a message");
	} else {
		check(img.n_layers <= THIN_MAX_LAYERS, "too many layers accepted");
		for (size_t i = 0; i < img.n_layers; i++) {
			char digest[THIN_DIGEST_LEN + 1];
			uint64_t bytes = 0;
			err.message[0] = '\0';
			if (image_layer_read(&img, i, -1, digest, &bytes, &err) < 0)
				check(err.message[0] != '\0', "a layer refused without a message");
		}
		image_release(&img);
	}

	lower_index *x = NULL;
	check(lower_index_new(&x) == 0, "lower_index_new");
	err.message[0] = '\0';
	size_t entries = 0;
	r = lower_index_add_tar(x, fd, &entries, &err);
	check(r == 0 || r == -ENOMEM || err.message[0] != '\0', "a layer tar refused without a message");
	char **names = NULL;
	check(lower_index_list(x, "", &names) == 0, "list the root");
	for (size_t i = 0; names[i]; i++)
		free(names[i]);
	free(names);
	lower_index_free(x);
	close(fd);
	return 0;
}
