/* SPDX-License-Identifier: Apache-2.0 */
/* As in git: functions whose use is a bug waiting to happen become compile
 * errors.  Use snprintf / strdup / asprintf / memcpy with explicit sizes. */
#pragma once

#define BANNED(func) sorry_##func##_is_a_banned_function

#undef strcpy
#define strcpy(x, y) BANNED(strcpy)
#undef strcat
#define strcat(x, y) BANNED(strcat)
#undef strncpy
#define strncpy(x, y, n) BANNED(strncpy)
#undef strncat
#define strncat(x, y, n) BANNED(strncat)
#undef sprintf
#define sprintf(...) BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) BANNED(vsprintf)
#undef strtok
#define strtok(x, y) BANNED(strtok)
#undef gets
#define gets(x) BANNED(gets)
#undef getpwnam
#define getpwnam(x) BANNED(getpwnam)
#undef getgrnam
#define getgrnam(x) BANNED(getgrnam)
