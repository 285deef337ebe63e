/* Wine 8 lacks bcryptprimitives.dll, whose ProcessPrng Rust's standard library imports on
 * Windows. This stand-in forwards it to BCryptGenRandom (which Wine has). Test use only: it is
 * copied into the Wine prefix by scripts/wine/setup, never shipped. */
#include <windows.h>
#include <bcrypt.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    return BCryptGenRandom(NULL, data, (ULONG)len, BCRYPT_USE_SYSTEM_PREFERRED_RNG) == 0;
}
