/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer harness for thin.json (thin_parse): any input parses or is
 * refused with a message; whatever parses formats back into text that
 * parses to the same image (the canonical form is a fixed point).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thin/thin.h"

static void check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_thin: %s\n", what);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	thin_image img = {0};
	strata_error err = {0};
	int r = thin_parse((const char *)data, size, &img, &err);
	if (r < 0) {
		check(err.message[0] != '\0', "refused without a message");
		check(img.n == 0 && !img.layers, "refused but filled the image");
		return 0;
	}
	check(img.n >= 1 && img.n <= THIN_MAX_LAYERS, "layer count out of range");
	char *text = NULL;
	check(thin_format(&img, &text) == 0, "a parsed image does not format");
	thin_image again = {0};
	check(thin_parse(text, strlen(text), &again, &err) == 0, "formatted text does not parse");
	char *text2 = NULL;
	check(thin_format(&again, &text2) == 0, "a reparsed image does not format");
	check(!strcmp(text, text2), "the canonical form is not a fixed point");
	check(again.n == img.n, "layer count changed");
	for (size_t i = 0; i < img.n; i++)
		check(!strcmp(img.layers[i].digest, again.layers[i].digest) &&
			      !strcmp(img.layers[i].repo, again.layers[i].repo) &&
			      !strcmp(img.layers[i].path, again.layers[i].path),
		      "a layer changed");
	free(text);
	free(text2);
	thin_image_release(&img);
	thin_image_release(&again);
	return 0;
}
