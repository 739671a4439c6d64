/* Test driver for the C SDK's JSON (built natively by the e2e tests): each
 * stdin line is a JSON document, printed back as cairn_json_dump writes it,
 * or as "error: ..." when it does not parse. With `--double`, each line is a
 * number given to cairn_json_double instead. */

#include "cairn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    bool doubles = argc > 1 && strcmp(argv[1], "--double") == 0;
    char line[65536];
    while (fgets(line, sizeof line, stdin)) {
        size_t len = strcspn(line, "\n");
        line[len] = 0;
        char *error = NULL;
        cairn_json *value = doubles ? cairn_json_double(strtod(line, NULL)) : cairn_json_parse(line, len, &error);
        if (value == NULL) {
            printf("error: %s\n", error);
            free(error);
            continue;
        }
        char *text = cairn_json_dump(value);
        printf("%s\n", text);
        free(text);
        cairn_json_free(value);
    }
    return 0;
}
